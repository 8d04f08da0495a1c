"""The command line of apa.mini (`__main__` runs `main`):

    python -m apa.mini assemble [--out DIR] [--source auto|packages|hub] [--seed N] [--overwrite]
    python -m apa.mini verify [DIR] [--clip AUDIO] [--device cpu|cuda]
    python -m apa.mini fingerprints [--work DIR] [--real-hub]     # adapter's base vs both routes
    python -m apa.mini space-dry-run [--work DIR] [--python PY] [--reuse-venv]  # a Space's route, offline
    python -m apa.mini score-clip AUDIO --text TEXT [--source S] [--json OUT]  # (the dry run's child)
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from apa.mini.assemble import assemble_apa_mini
from apa.mini.constants import SOURCES, default_model_dir
from apa.mini.space import DRY_RUN_TEXT, base_fingerprints, score_clip, space_dry_run
from apa.mini.verify import verify_apa_mini

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m apa.mini", description="Assemble and verify apa-mini.")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("assemble", help="build apa-mini (idempotent)")
    a.add_argument("--out", type=Path, default=None, help=f"output dir (default {default_model_dir()})")
    a.add_argument("--source", choices=SOURCES, default="auto")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--overwrite", action="store_true")
    v = sub.add_parser("verify", help="compare the encoder with CTranslate2, generate, run a forward")
    v.add_argument("dir", nargs="?", type=Path, default=None)
    v.add_argument("--clip", default=None, help="audio file (default: a Speechocean762 utterance)")
    v.add_argument("--device", default=None)
    f = sub.add_parser("fingerprints", help="fingerprints of the shipped adapter's base and of apa-mini by both routes")
    f.add_argument("--work", type=Path, default=None, help="where to assemble (default: a temporary dir)")
    f.add_argument("--real-hub", action="store_true", help="download the Hub originals instead of local snapshots")
    d = sub.add_parser("space-dry-run", help="score a clip as a Space would (fresh venv, Hub route, offline)")
    d.add_argument("--work", type=Path, default=None, help="working dir (default: a temporary dir)")
    d.add_argument("--python", default=None, help="use this interpreter instead of a fresh venv")
    d.add_argument("--reuse-venv", action="store_true", help="keep the venv an earlier run left in --work")
    d.add_argument("--clip", default=None, help="audio file (default: a Speechocean762 utterance)")
    d.add_argument("--text", default=DRY_RUN_TEXT)
    s = sub.add_parser("score-clip", help="score one clip with the defaults (the dry run's child)")
    s.add_argument("clip")
    s.add_argument("--text", required=True)
    s.add_argument("--source", choices=SOURCES, default=None)
    s.add_argument("--json", type=Path, default=None, help="write the result here (default: print it)")
    return parser


def _in_work(work: Path | None, run):
    """run(dir) in `work`, or in a temporary directory removed afterwards."""
    if work is not None:
        return run(work)
    with tempfile.TemporaryDirectory(prefix="apa-mini-") as tmp:
        return run(Path(tmp))


def _fingerprints(args: argparse.Namespace) -> int:
    prints = _in_work(args.work, lambda d: base_fingerprints(d, real_hub=args.real_hub))
    for what, fp in prints.items():
        print(f"{what:32s} {fp}")
    same = len(set(prints.values())) == 1 and None not in prints.values()
    print("all agree" if same else "MISMATCH")
    return 0 if same else 1


def _dry_run(args: argparse.Namespace) -> int:
    result = _in_work(args.work, lambda d: space_dry_run(
        d, clip=args.clip, text=args.text, python=args.python, reuse_venv=args.reuse_venv))
    for name, run in (("offline", result.offline), ("space", result.space)):
        print(f"{name:8s} source={run['source']} fingerprint={run['fingerprint']} python={run['python']}")
        print(f"         sentence={run['assessment']['sentence']}")
    print(f"max |difference| {result.max_abs_diff:.3g} (tolerance {result.tolerance:g}); other differences: "
          f"{list(result.differing) or 'none'}; seconds {result.seconds}")
    print("OK" if result.ok else "FAILED")
    return 0 if result.ok else 1


def _score(args: argparse.Namespace) -> int:
    out = json.dumps(score_clip(args.clip, args.text, source=args.source), indent=2, default=str)
    if args.json:
        args.json.write_text(out)
    else:
        print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default sys.argv[1:]); return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    commands = {"fingerprints": _fingerprints, "space-dry-run": _dry_run, "score-clip": _score}
    if args.command in commands:
        return commands[args.command](args)
    if args.command == "assemble":
        t = time.perf_counter()
        d = assemble_apa_mini(args.out, source=args.source, seed=args.seed, overwrite=args.overwrite)
        print(f"{d}  ({time.perf_counter() - t:.1f} s)")
        return 0
    report = verify_apa_mini(args.dir, clip=args.clip, device=args.device)
    print(report.summary())
    return 0 if report.ok else 1
