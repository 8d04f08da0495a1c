"""Run app.py as `python app.py ARGS` with every host-name lookup of the process written to the
file named by $APA_NETGUARD_LOG, and any lookup of a name that is not local refused.

    python tests/netguard.py [--fake] [app.py's arguments]

`--fake`: a fake scorer (bench.load_test.FakeScorer) instead of loading the model. Used by
tests/test_security.py; nothing here is imported by the app.
"""

from __future__ import annotations

import os
import runpy
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", "none"}


def is_local(name: str) -> bool:
    return name.lower() in LOCAL_NAMES or name.startswith("127.")


def install(log_path: str) -> None:
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - open for the life of the process

    def record(host) -> str:
        name = host.decode() if isinstance(host, bytes) else str(host)
        log.write(name + "\n")
        log.flush()
        if not is_local(name):
            import traceback

            with open(log_path + ".stacks", "a", encoding="utf-8") as f:
                f.write(f"--- {name}\n{''.join(traceback.format_stack())}\n")
            raise socket.gaierror(socket.EAI_NONAME, f"lookup of {name!r} refused by tests/netguard.py")
        return name

    real_getaddrinfo, real_byname, real_byname_ex = socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex

    def getaddrinfo(host, *args, **kwargs):
        record(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host):
        record(host)
        return real_byname(host)

    def gethostbyname_ex(host):
        record(host)
        return real_byname_ex(host)

    socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = getaddrinfo, gethostbyname, gethostbyname_ex


def main() -> None:
    install(os.environ["APA_NETGUARD_LOG"])
    args = sys.argv[1:]
    sys.path.insert(0, str(REPO))
    if "--fake" in args:
        args.remove("--fake")
        from bench.load_test import FakeScorer
        from webapp import scorer

        scorer.set_scorer(FakeScorer(0.0))
    sys.argv = [str(REPO / "app.py"), *args]
    runpy.run_path(str(REPO / "app.py"), run_name="__main__")


if __name__ == "__main__":
    main()
