"""Heard instead: on synthetic minimal pairs, is the phone that was said the phone heard?

    python -m bench.heard_instead [--cache DIR] [--out bench/results/heard_instead.md]

Every pair of `apa.minimal_pairs.PAIRS` is synthesised with espeak-ng from phoneme input, once as
written (canonical) and once with one phone replaced (altered; pairs that drop a phone have no
substitute and count only for the canonical reading). Both readings are aligned to the canonical
reference (`apa.align.align`, as the app does), and for the changed phone we read the top-3 heard:

- substituted top 1 / top 3: on the altered reading, share of pairs whose substitute is the most
  likely heard phone / among the 3 most likely;
- canonical top 1 / top 3: on the canonical reading, share whose canonical phone is the most
  likely heard / among the 3 (the heard label is a false alarm otherwise);

for each way of reading what was heard: `raw` is `AlignedPhone.heard` (the frame posteriors'
mean, SIL included), `raw-nosil` the same without SIL, and `choice+P` `apa.annotate.heard_instead`
(the forced choice of the phone in its window) with a prior of P nats for the canonical phone;
the one marked `shipped` is what the app shows (apa.annotate.HEARD_CANONICAL_PRIOR_NATS).
Prints a markdown report and writes it to --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench.common import publish  # noqa: E402

PRIORS = (0.0, 4.0, 8.0, 12.0, 16.0)
REPO = Path(__file__).resolve().parents[1]


def _raw(phone, nosil: bool) -> list[str]:
    import numpy as np

    from apa.align import PHONE_INDEX, PHONES

    if phone.post is None:
        return []
    v = np.array(phone.post)
    if nosil:
        v[PHONE_INDEX["SIL"]] = -1.0
    return [PHONES[i] for i in np.argsort(-v, kind="stable")[:3]]


def readers():
    """{name: function(AlignedPhone) -> top-3 phones}."""
    from apa.annotate import HEARD_CANONICAL_PRIOR_NATS, heard_instead

    out = {"raw": lambda p: _raw(p, False), "raw-nosil": lambda p: _raw(p, True)}
    for prior in PRIORS:
        name = f"choice+{prior:g}" + (" (shipped)" if prior == HEARD_CANONICAL_PRIOR_NATS else "")
        out[name] = lambda p, prior=prior: [h for h, _ in heard_instead(p, prior_nats=prior)]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=None, help="folder for the synthesised WAVs (default: a temporary one)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "heard_instead.md"))
    args = ap.parse_args(argv)

    from apa.align import align, pocketsphinx_version
    from apa.minimal_pairs import PAIRS, SynthesisError, espeak_version, synthesize_pair
    from apa.text import to_words

    fns = readers()
    counts = {name: {"sub": [0, 0, 0], "can": [0, 0, 0]} for name in fns}
    failed, not_aligned, rows = [], 0, []
    t0 = time.process_time()
    n_align = 0
    for pair in PAIRS:
        try:
            sp = synthesize_pair(pair, args.cache)
        except SynthesisError as exc:
            failed.append(str(exc))
            continue
        words = to_words(pair.text)
        ref = tuple((w.text, w.phones) for w in words)
        j = sum(len(w.phones) for w in words[: pair.word_index]) + pair.phone_index
        row = [pair.text, pair.change]
        for reading, audio, target in (("can", sp.canonical, pair.original), ("sub", sp.altered, pair.replacement)):
            if target is None:
                row.append("-")
                continue
            al = align(audio, ref)
            n_align += 1
            if not al.ok:
                not_aligned += 1
                row.append("not aligned")
                continue
            phone = al.phones[j]
            for name, fn in fns.items():
                top = fn(phone)
                c = counts[name][reading]
                c[0] += 1
                c[1] += bool(top) and top[0] == target
                c[2] += target in top[:3]
            shipped = next(n for n in fns if "shipped" in n)
            row.append(" ".join(fns[shipped](phone)))
        rows.append(row)
    cpu = (time.process_time() - t0) / max(n_align, 1)

    lines = [
        "# Heard instead on synthetic minimal pairs",
        "",
        f"`python -m bench.heard_instead`, {dt.date.today().isoformat()}, pocketsphinx {pocketsphinx_version()}, "
        f"{espeak_version().split('  Data at')[0].strip()}; {len(rows)} pairs synthesised ({len(failed)} failed), "
        f"{not_aligned} readings not aligned; {cpu:.2f} s CPU per alignment (synthesis included).",
        "",
        "| heard read as | substituted top 1 | substituted top 3 | canonical top 1 | canonical top 3 |",
        "|---|---:|---:|---:|---:|",
    ]
    summary = {}
    for name, c in counts.items():
        s, k = c["sub"], c["can"]
        fig = {
            "sub_top1": s[1] / s[0] if s[0] else None, "sub_top3": s[2] / s[0] if s[0] else None,
            "can_top1": k[1] / k[0] if k[0] else None, "can_top3": k[2] / k[0] if k[0] else None,
            "n_sub": s[0], "n_can": k[0],
        }  # fmt: skip
        summary[name] = fig
        lines.append(
            f"| {name} | {fig['sub_top1']:.2f} ({s[1]}/{s[0]}) | {fig['sub_top3']:.2f} ({s[2]}/{s[0]}) "
            f"| {fig['can_top1']:.2f} ({k[1]}/{k[0]}) | {fig['can_top3']:.2f} ({k[2]}/{k[0]}) |"
        )
    lines += ["", "Targets (issue 14): substituted top 1 >= 0.50, top 3 >= 0.75; canonical top 1 >= 0.80.", ""]
    lines += ["Per pair, the shipped reading's top 3 (canonical reading / altered reading):", "",
              "| sentence | change | canonical reading | altered reading |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    if failed:
        lines += ["", "Not synthesised:", *[f"- {f}" for f in failed]]
    publish(lines, args.out)
    return summary


if __name__ == "__main__":
    main()
