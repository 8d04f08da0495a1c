"""Helpers the benchmarks share: a free loopback port, a one-line description of the machine,
printing and saving a markdown report."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{n} CPU cores ({cpu}), {platform.system()} {platform.release()}"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, *, path: str = "gradio_api/info", poll_s: float = 0.5) -> None:
    """Until GET url+path answers 200: RuntimeError if the server process exits first, TimeoutError
    after `timeout` seconds."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + path, timeout=2) as r:  # noqa: S310 - loopback
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"the server was not ready in {timeout:.0f} s")


def publish(lines: list[str], out: str | os.PathLike) -> str:
    """Join report lines, print the report and write it to `out`; returns the text."""
    report = "\n".join(lines) + "\n"
    print(report)
    Path(out).write_text(report, encoding="utf-8")
    return report
