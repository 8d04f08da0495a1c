"""Tests for bench.load_test: the short form runs (python -m bench.load_test --fake)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_load_test_short_form(tmp_path):
    """python -m bench.load_test --fake, 8 clients for 10 s: only queue-full answers may fail, the
    server's RSS grows < 150 MB, and no recording is left in its upload folder."""
    out = tmp_path / "load.json"
    uploads = tmp_path / "uploads"
    cmd = [
        sys.executable, "-m", "bench.load_test", "--fake", "--clients", "8", "--duration", "10",
        "--drain", "20", "--rss-bound-mb", "150", "--json", str(out), "--gradio-temp-dir", str(uploads),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=REPO, env=env)
    assert out.is_file(), proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    print("\n" + proc.stdout)
    assert set(r["errors"]) <= {"queue_full"}, r["error_examples"]
    assert r["served"] >= 8 and r["stuck_client_threads"] == 0
    assert r["rss_growth_mb"] < 150
    assert proc.returncode == 0
    assert r["uploads_left"] == 0  # counted while the server still ran (it empties its cache on exit)
