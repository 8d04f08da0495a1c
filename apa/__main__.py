"""Command line: score a recording on the CPU with the shipped model.

    python -m apa score clip.wav --text "We call it bear" [--json] [--mode greedy]
    python -m apa assemble            # build apa-mini's base into the cache (done on first use)
"""

from __future__ import annotations

import argparse
import sys

from apa.schema import Assessment


def format_assessment(a: Assessment) -> str:
    """A plain-text report: sentence scores, then each word with its phones."""
    s = a.sentence
    lines = [
        f"Sentence  accuracy {s.accuracy:.1f}  fluency {s.fluency:.1f}  prosodic {s.prosodic:.1f}  "
        f"completeness {s.completeness:.1f}  total {s.total:.1f}   (0-10)",
        "",
        f"{'word':<14}{'accuracy':>9}{'stress':>8}{'total':>7}  error             phones (0-2)",
    ]
    for w in a.words:
        phones = " ".join(f"{p.phone}:{p.score:.1f}" for p in w.phones)
        lines.append(f"{w.text:<14}{w.accuracy:>9.1f}{w.stress:>8.1f}{w.total:>7.1f}  {w.error_type:<17} {phones}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m apa", description="Pronunciation assessment")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("score", help="score one recording")
    sc.add_argument("audio", help="wav, flac, ogg/opus, mp3, webm, ...")
    sc.add_argument("--text", required=True, help="the sentence that was read")
    sc.add_argument("--model", default=None, help="Hub id or dir (default: apa-mini)")
    sc.add_argument("--adapter", default=None, help="PEFT adapter dir, or 'none' (default: the shipped one)")
    sc.add_argument("--mode", default="expected", choices=["expected", "greedy"])
    sc.add_argument("--device", default=None)
    sc.add_argument("--json", action="store_true", help="print the result as JSON")
    sub.add_parser("assemble", help="build apa-mini's base model into the cache")
    args = ap.parse_args(argv)

    if args.cmd == "assemble":
        from apa.mini import assemble_apa_mini

        print(assemble_apa_mini())
        return 0

    from apa.audio import load_audio
    from apa.errors import user_error
    from apa.scorer import DecodeOptions, load_scorer
    from apa.text import to_words

    try:  # check the cheap things before loading the model
        to_words(args.text)
        audio = load_audio(args.audio)
    except Exception as e:
        err = user_error(e)
        if err is None:
            raise
        print(f"error: {err[1]}", file=sys.stderr)
        return 2
    scorer = load_scorer(args.model, args.adapter, device=args.device, options=DecodeOptions(mode=args.mode))
    result = scorer.assess(audio, args.text)
    print(result.to_json(indent=2) if args.json else format_assessment(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
