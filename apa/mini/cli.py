"""`python -m apa.mini assemble|verify ...` (the command line of apa.mini; `__main__` runs `main`)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from apa.mini.assemble import assemble_apa_mini
from apa.mini.constants import SOURCES, default_model_dir
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default sys.argv[1:]); return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "assemble":
        t = time.perf_counter()
        d = assemble_apa_mini(args.out, source=args.source, seed=args.seed, overwrite=args.overwrite)
        print(f"{d}  ({time.perf_counter() - t:.1f} s)")
        return 0
    report = verify_apa_mini(args.dir, clip=args.clip, device=args.device)
    print(report.summary())
    return 0 if report.ok else 1
