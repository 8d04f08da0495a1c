"""Transcription word error rate, miscue detection and the "does not match" guard on Speechocean762.

    nice -n 10 python -m bench.check_miscues --n 400 --edited 100
        -> bench/results/miscues.md (+ bench/results/transcripts_so762_test.jsonl)
    nice -n 10 python -m bench.check_miscues --split train --n 400 --offset 3 --out bench/results/miscues_tuning.md
        -> the clips the guard's cuts were chosen on (+ bench/results/transcripts_so762_train.jsonl)

Clips: `--n` utterances of the `--split` (test by default), every (2500 // n)-th in corpus order from `--offset`, loaded as the app loads a
recording (`apa.audio.load_audio`: silence trimmed). Each clip is transcribed once by the default
transcriber (`apa.transcribe.load_transcriber`, one CPU thread) and the transcripts are kept in
the JSONL file beside the results (given again with `--transcripts`, nothing is transcribed).

Checks, all through `apa.miscues.find_miscues` (what `apa.reading` applies to results):

* WER of the transcripts against the reference texts (both normalised by `apa.text.normalize`),
  over all n clips: (substitutions + deletions + insertions) / reference words.
* On the first `--edited` clips, each reference text edited three ways (seeded):
  - "word removed": one word taken out of the text, so the speaker says one word more: the
    check expects exactly that word as an insertion at its position. Recall = expected insertions
    found; precision = expected insertions found / all insertions reported on these texts.
  - "word added": a word (from another clip's text) put into the text, which the speaker did
    not say: the check expects that word reported omitted. Recall and precision likewise.
* On all n clips, the text of another clip with another sentence: the guard (`Miscues.mismatch`)
  should fire.
* The guard on the clips with their true texts (all n): it should never fire. Also reported: the
  insertions and omissions found with the true texts (all of them false alarms, or real miscues
  of the speaker, which Speechocean762 does not label).

The guard is read twice: from the transcript only (`Miscues.mismatch`) and as `apa.reading`
applies it, with the forced alignment's evidence (`apa.miscues.does_not_match`): every (clip,
text) pair guarded is aligned (`apa.reading.fit_of`, kept in memory for the run only), and where
fewer than `MISMATCH_BELOW` of the words were heard as written the clip is also aligned to the
words heard. The report gives the fits for true and different texts, the guard over sweeps of its
cuts (the tuning run is where they were chosen: no fire on a true text, then the most fires on a
different one), the time the guard's two alignments take, and the true texts the guard or the
transcript alone would have refused.

The guard is also read with the recogniser's score of the text (`Transcript.reference_pmi`, as
`apa.reading` passes it to `does_not_match`): every (clip, text) pair guarded is scored by
`WhisperTranscriber.reference_pmi` (kept in memory). The report gives the scores of true and
different texts, the guard over sweeps of its two cuts, and the time the score adds to a
transcription (`transcribe` against `transcribe_against` of the clip with its own text, the
text's prior not cached).
`--no-acoustic`: the transcript only, nothing aligned; `--no-pmi`: nothing scored by the
recogniser; `--pairs-out`: one JSON line per guarded pair (not committed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import time
from pathlib import Path

from apa import config

REPO = config.REPO_ROOT
RESULTS = REPO / "bench" / "results"


def pick_records(n: int, offset: int = 0, split: str = "test") -> list:
    """Every (2500 // n)-th utterance of `split` from `offset` on."""
    from apa.data import read_kaldi

    recs = read_kaldi(config.corpus_dir(), split)
    step = max(1, len(recs) // n)
    return recs[offset::step][:n]


def transcribe_all(recs: list, out: Path) -> list[dict]:
    """Transcribe each record once (resuming from `out`), one JSON line per clip."""
    from apa.audio import load_audio
    from apa.transcribe import load_transcriber

    done = {}
    if out.is_file():
        for line in out.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            done[d["utt_id"]] = d
    todo = [r for r in recs if r.utt_id not in done]
    if todo:
        tr = load_transcriber(threads=1)
        with out.open("a", encoding="utf-8") as f:
            for k, r in enumerate(todo):
                audio = load_audio(str(r.audio_source), check=False)
                t0 = time.perf_counter()
                h = tr.transcribe(audio)
                d = {"utt_id": r.utt_id, "text": r.text, "audio_s": round(len(audio) / 16000, 3),
                     "transcribe_s": round(time.perf_counter() - t0, 4), "heard": h.text,
                     "words": [[w.text, w.start, w.end, w.probability] for w in h.words],
                     "no_speech_prob": round(h.no_speech_prob, 4), "avg_logprob": round(h.avg_logprob, 4),
                     "model": h.model}
                f.write(json.dumps(d) + "\n")
                f.flush()
                done[r.utt_id] = d
                if k % 20 == 0:
                    print(f"transcribed {k + 1}/{len(todo)}", flush=True)
    return [done[r.utt_id] for r in recs]


def heard_words(d: dict) -> list:
    from apa.transcribe import HeardWord

    return [HeardWord(w, s, e, p) for w, s, e, p in d["words"]]


def wer(items: list[dict]) -> tuple[float, int, int]:
    from rapidfuzz.distance import Levenshtein

    from apa.text import normalize

    errors = words = 0
    for d in items:
        ref = d["text"].split()
        errors += Levenshtein.distance(ref, normalize(d["heard"]))
        words += len(ref)
    return errors / words, errors, words


def prf(tp: int, reported: int, expected: int) -> str:
    p = tp / reported if reported else float("nan")
    r = tp / expected if expected else float("nan")
    return f"{p:.2f} ({tp}/{reported}) | {r:.2f} ({tp}/{expected})"


class Fits:
    """Fits (`apa.reading.fit_of`: the clip force-aligned to words, as the scorer aligns its
    reference) of (clip, words) pairs, each aligned once per run (kept in memory); `seconds[key]`
    is the time of that alignment, `audio_s[utt]` the clip's length."""

    def __init__(self, recs: list):
        self.recs = {r.utt_id: r for r in recs}
        self.cache: dict[tuple[str, tuple[str, ...]], object] = {}
        self.seconds: dict[tuple[str, tuple[str, ...]], float] = {}
        self.audio: dict[str, object] = {}
        self.audio_s: dict[str, float] = {}

    def __call__(self, utt_id: str, words: list[str]):
        from apa.audio import load_audio
        from apa.reading import fit_of

        key = (utt_id, tuple(words))
        if key not in self.cache:
            if utt_id not in self.audio:
                self.audio[utt_id] = load_audio(str(self.recs[utt_id].audio_source), check=False)
                self.audio_s[utt_id] = len(self.audio[utt_id]) / 16000
            t0 = time.perf_counter()
            self.cache[key] = fit_of(self.audio[utt_id], words)
            self.seconds[key] = time.perf_counter() - t0
            if len(self.cache) % 100 == 0:
                print(f"aligned {len(self.cache)} (clip, words) pairs", flush=True)
        return self.cache[key]

    def seconds_of(self, utt_id: str, words: list[str]) -> float:
        """The time the alignment of (clip, words) took (0 when it was not made)."""
        return self.seconds.get((utt_id, tuple(words)), 0.0)

    @property
    def count(self) -> int:
        return len(self.cache)


class Scores:
    """The recogniser's scores of (clip, words) pairs (`apa.transcribe.WhisperTranscriber.reference_pmi`,
    `Transcript.reference_pmi`), each scored once per run (kept in memory); `timings[utt]` is
    (seconds of `transcribe`, seconds of `transcribe_against` with the clip's own text, the
    text's prior not cached), taken the first time a clip is scored with its own text."""

    def __init__(self, recs: list):
        from apa.transcribe import load_transcriber

        self.recs = {r.utt_id: r for r in recs}
        self.transcriber = load_transcriber(threads=1)
        self.cache: dict[tuple[str, tuple[str, ...]], float | None] = {}
        self.timings: dict[str, tuple[float, float]] = {}

    def __call__(self, utt_id: str, words: list[str]) -> float | None:
        from apa.audio import load_audio

        key = (utt_id, tuple(words))
        if key not in self.cache:
            rec = self.recs[utt_id]
            audio = load_audio(str(rec.audio_source), check=False)
            tr = self.transcriber
            if utt_id not in self.timings and list(words) == rec.text.split():
                t0 = time.perf_counter()
                tr.transcribe(audio)
                t1 = time.perf_counter()
                tr.forget_priors()
                self.cache[key] = tr.transcribe_against(audio, words).reference_pmi
                self.timings[utt_id] = (t1 - t0, time.perf_counter() - t1)
            else:
                self.cache[key] = tr.reference_pmi(audio, words)
            if len(self.cache) % 100 == 0:
                print(f"scored {len(self.cache)} (clip, words) pairs", flush=True)
        return self.cache[key]


def run_checks(items: list[dict], n_edited: int, seed: int, fits: Fits | None = None,
               scores: Scores | None = None) -> dict:
    """The checks of the module doc; with `fits`, the guard is also read with the acoustic
    evidence (`apa.miscues.does_not_match`), with `scores` also with the recogniser's score of
    the text, and out["pairs"] has one record per guarded pair."""
    from apa.miscues import MISMATCH_BELOW, Acoustic, does_not_match, find_miscues, heard_tokens, pmi_decides

    rng = random.Random(seed)
    out: dict = {"n": len(items), "n_edited": min(n_edited, len(items)), "pairs": [], "guarded": []}

    def guarded(kind: str, d: dict, text: str) -> dict:
        m = find_miscues(text.split(), heard_words(d))
        ev, guard_s = None, None
        pmi = scores(d["utt_id"], text.split()) if scores is not None else None
        if fits is not None:
            a = fits(d["utt_id"], text.split())
            h = None
            if m.heard and m.match_ratio < MISMATCH_BELOW:  # as apa.reading: the heard words aligned only then
                heard = [t.text for t in heard_tokens(heard_words(d))]
                h = fits(d["utt_id"], heard)
                guard_s = fits.seconds_of(d["utt_id"], text.split()) + fits.seconds_of(d["utt_id"], heard)
            ev = Acoustic(text=a, heard=h)
        fit = lambda f: None if f is None else {"phone": f.phone, "frame": round(f.frame, 4), "coverage": round(f.coverage, 4)}  # noqa: E731
        rec = {"kind": kind, "utt_id": d["utt_id"], "text": text, "heard": d["heard"],
               "match_ratio": round(m.match_ratio, 3), "phone_similarity": round(m.phone_similarity, 3),
               "confidence": None if m.confidence is None else round(m.confidence, 3),
               "transcript_mismatch": m.mismatch, "text_fit": fit(ev and ev.text), "heard_fit": fit(ev and ev.heard),
               "text_pmi": None if pmi is None else round(pmi, 4),
               "guard_without_pmi": does_not_match(m, ev) if fits is not None else m.mismatch,
               "guard": does_not_match(m, ev, text_pmi=pmi),
               "audio_s": d["audio_s"], "align_s": guard_s,
               # as apa.reading: the two alignments are made only where the score does not decide
               "guard_s": None if pmi_decides(pmi) else guard_s}
        out["pairs"].append(rec)
        out["guarded"].append((kind, m, ev, d["utt_id"], pmi))
        return {"miscues": m, **rec}

    # true texts: the guard must not fire
    true = [guarded("true", d, d["text"]) for d in items]
    ms = [t["miscues"] for t in true]
    out["true_fired"] = sum(m.mismatch for m in ms)
    out["true_fired_acoustic"] = sum(t["guard_without_pmi"] for t in true)
    out["true_fired_pmi"] = sum(t["guard"] for t in true)
    out["true_ratio"] = sorted(m.match_ratio for m in ms)[:5]
    out["true_ins"] = sum(len(m.insertions) for m in ms)
    out["true_omi"] = sum(len(m.omitted) for m in ms)
    out["true_empty"] = sum(not m.heard for m in ms)
    edited = items[: out["n_edited"]]
    all_words = sorted({w for d in items for w in d["text"].split()})
    # word removed from the text -> an insertion of that word at its position
    tp = reported = expected = 0
    for d in edited:
        ref = d["text"].split()
        if len(ref) < 2:
            continue
        k = rng.randrange(len(ref))
        m = find_miscues(ref[:k] + ref[k + 1:], heard_words(d))
        expected += 1
        reported += len(m.insertions)
        tp += any(i.text == ref[k] and i.position == k for i in m.insertions)
    out["removed"] = (tp, reported, expected)
    # word added to the text -> that word omitted
    tp = reported = expected = 0
    for d in edited:
        ref = d["text"].split()
        w = rng.choice([x for x in all_words if x not in ref])
        k = rng.randrange(len(ref) + 1)
        m = find_miscues(ref[:k] + [w] + ref[k:], heard_words(d))
        expected += 1
        reported += len(m.omitted)
        tp += k in m.omitted
    out["added"] = (tp, reported, expected)
    # a different sentence
    diff = []
    for d in items:
        other = rng.choice([e for e in items if e["text"] != d["text"]])
        diff.append(guarded("different", d, other["text"]))
    out["different_fired"] = sum(t["miscues"].mismatch for t in diff)
    out["different_fired_acoustic"] = sum(t["guard_without_pmi"] for t in diff)
    out["different_fired_pmi"] = sum(t["guard"] for t in diff)
    out["different_ratio_max"] = sorted(t["miscues"].match_ratio for t in diff)[-5:]
    return out


SWEEP_FITS_BY = (-0.6, -0.4, -0.3, -0.2, 0.0, 0.25)  # nats per frame (apa.miscues.HEARD_FITS_BY)
SWEEP_FILLER = (-4.0, -5.0, -6.0, -7.0)  # nats per frame (apa.miscues.FILLER_NATS)
SWEEP_FAR_BELOW = (-5.8, -6.0, -6.2, -6.5, float("-inf"))  # nats (apa.miscues.ACOUSTIC_FAR_BELOW; -inf: off)
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def quantiles(xs: list[float]) -> str:
    """'min / 5% / 25% / median / 75% / 95% / max' of xs (nearest rank), 2 decimals."""
    if not xs:
        return "-"
    v = sorted(xs)
    return " / ".join(f"{v[min(len(v) - 1, round(q * (len(v) - 1)))]:.2f}" for q in QUANTILES)


def acoustic_section(res: dict, fits: Fits) -> list[str]:
    """The report's part on the acoustic evidence: distributions, the cut sweeps, the guard's
    time, the true texts the transcript alone or the guard took for another sentence."""
    from apa.miscues import (ACOUSTIC_FAR_BELOW, FILLER_NATS, HEARD_FITS_BY, HEARD_UNALIGNED_BELOW, MISMATCH_BELOW,
                             does_not_match)

    g = res["guarded"]
    n = {k: sum(1 for x in g if x[0] == k) for k in ("true", "different")}

    def fired(kind: str, **kw: float) -> int:
        return sum(does_not_match(m, ev, **kw) for k, m, ev, _, _ in g if k == kind)

    lines = [
        "",
        "## The acoustic evidence",
        "",
        "Each (clip, text) pair force-aligned as the scorer aligns its reference (`apa.reading.fit_of`); its fit "
        "(`apa.miscues.Fit`): `phone` = mean phone log posterior (`apa.annotate.acoustic_match`, nats), `clip_fit` = "
        f"log posterior per frame of the whole clip, the frames left to the aligner's fillers at {FILLER_NATS} nats. "
        f"{fits.count} alignments, {sum(fits.seconds.values()) / max(fits.count, 1):.2f} s each on average (1 thread).",
        "",
        "| text | pairs | not aligned | Fit.phone: min / 5% / 25% / median / 75% / 95% / max | coverage: median |",
        "|---|---:|---:|---|---:|",
    ]
    for kind, label in (("true", "true text"), ("different", "a different sentence")):
        a = [ev.text for k, _, ev, _, _ in g if k == kind]
        ok = [f for f in a if f is not None]
        cov = sorted(f.coverage for f in ok)
        lines.append(f"| {label} | {len(a)} | {len(a) - len(ok)} | {quantiles([f.phone for f in ok])} | "
                     f"{cov[len(cov) // 2]:.2f} |" if cov else f"| {label} | {len(a)} | {len(a)} | - | - |")
    lines += [
        "",
        f"Where fewer than {MISMATCH_BELOW:.2f} of the words were heard as written, the clip is also aligned to the words "
        "heard; the margin is the text's clip_fit minus that of the words heard (> 0: the text fits the recording better):",
        "",
        "| text | transcript | pairs | margin computed | margin: min / 5% / 25% / median / 75% / 95% / max |",
        "|---|---|---:|---:|---|",
    ]
    for kind, label in (("true", "true text"), ("different", "a different sentence")):
        for sure in (True, False):
            mm = [ev for k, m, ev, _, _ in g if k == kind and m.heard and m.match_ratio < MISMATCH_BELOW and m.mismatch == sure]
            margins = [ev.text.clip_fit() - ev.heard.clip_fit() for ev in mm if ev.text is not None and ev.heard is not None]
            lines.append(f"| {label} | {'says mismatch' if sure else 'unsure or alike'} | {len(mm)} | {len(margins)} | {quantiles(margins)} |")
    lines += [
        "",
        f"The guard (`apa.miscues.does_not_match`) over its cuts, fired on true texts / on a different sentence "
        f"(of {n['true']} / {n['different']}); in use: margin (fits_by) {HEARD_FITS_BY}, fillers {FILLER_NATS}, "
        f"far below {ACOUSTIC_FAR_BELOW}, words heard not aligned: text below {HEARD_UNALIGNED_BELOW}. "
        f"Far below {ACOUSTIC_FAR_BELOW}:",
        "",
        "| margin (fits_by) \\ fillers (nats) | " + " | ".join(f"{f}" for f in SWEEP_FILLER) + " |",
        "|---|" + "---:|" * len(SWEEP_FILLER),
    ]
    for fb in SWEEP_FITS_BY:
        cells = [f"{fired('true', fits_by=fb, filler_nats=f)} / {fired('different', fits_by=fb, filler_nats=f)}" for f in SWEEP_FILLER]
        lines.append(f"| {fb} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Margin {HEARD_FITS_BY}, fillers {FILLER_NATS}, over the far-below cut:",
        "",
        "| far below (nats) | " + " | ".join("off" if f == float("-inf") else f"{f}" for f in SWEEP_FAR_BELOW) + " |",
        "|---|" + "---:|" * len(SWEEP_FAR_BELOW),
        "| fired | " + " | ".join(f"{fired('true', far_below=f)} / {fired('different', far_below=f)}" for f in SWEEP_FAR_BELOW) + " |",
    ]
    lines.append("")
    for key, label in (("align_s", "without the recogniser's score of the text"), ("guard_s", "with it (as `apa.reading`)")):
        if key == "guard_s" and all(p["text_pmi"] is None for p in res["pairs"]):
            continue
        secs = [(p["audio_s"], p[key]) for p in res["pairs"] if p[key] is not None]
        five = sorted(t for a, t in secs if 4.0 <= a <= 6.0)
        allt = sorted(t for _, t in secs) or [float("nan")]
        lines.append(
            f"Time the guard's two alignments (text and words heard, 1 thread) add, {label}, where they are made "
            f"({len(secs)} of {len(g)} pairs): median {allt[len(allt) // 2]:.2f} s, max {allt[-1]:.2f} s; "
            + (f"on clips of 4-6 s ({len(five)}): median {five[len(five) // 2]:.2f} s, max {five[-1]:.2f} s." if five
               else "no clip of 4-6 s among them.") + " Elsewhere they add nothing.")
        lines.append("")
    scored = any(p["text_pmi"] is not None for p in res["pairs"])
    lines += [
        "True texts the transcript alone takes for another sentence, or the guard fires on (with or without the "
        "recogniser's score of the text):",
        "",
        "| clip | text | heard | Fit.phone of the text | clip_fit margin | score of the text (nats) | guard without the score | guard |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    fires = lambda x: "fires" if x else "does not fire"  # noqa: E731
    for p, (_, m, ev, _, _) in zip(res["pairs"], g):
        if p["kind"] == "true" and (p["transcript_mismatch"] or p["guard"] or p["guard_without_pmi"]):
            a = "-" if ev.text is None else f"{ev.text.phone:.2f}"
            mg = "-" if ev.text is None or ev.heard is None else f"{ev.text.clip_fit() - ev.heard.clip_fit():.2f}"
            sc = "-" if p["text_pmi"] is None else f"{p['text_pmi']:.2f}"
            lines.append(f"| {p['utt_id']} | {p['text']} | {p['heard']} | {a} | {mg} | {sc} | "
                         f"{fires(p['guard_without_pmi'])} | {fires(p['guard']) if scored else '-'} |")
    return lines


SWEEP_PMI_BELOW = (-3.0, -4.0, -5.0, -6.0, -7.0, float("-inf"))  # nats (apa.miscues.TEXT_PMI_BELOW; -inf: off)
SWEEP_PMI_KEEPS = (3.0, 4.0, 5.0, 6.0, 8.0, 10.0, float("inf"))  # nats (apa.miscues.TEXT_PMI_KEEPS_FROM; inf: off)


def pmi_section(res: dict, scores: Scores) -> list[str]:
    """The report's part on the recogniser's score of the text: its distribution, the guard over
    its two cuts, and the time it adds to a transcription."""
    from apa.miscues import MISMATCH_BELOW, TEXT_PMI_BELOW, TEXT_PMI_KEEPS_FROM, does_not_match
    from apa.transcribe import PRIOR_S

    g = res["guarded"]
    n = {k: sum(1 for x in g if x[0] == k) for k in ("true", "different")}

    def fired(kind: str, **kw: float) -> int:
        return sum(does_not_match(m, ev, text_pmi=pmi, **kw) for k, m, ev, _, pmi in g if k == kind)

    lines = [
        "",
        "## The recogniser's score of the text",
        "",
        "Each (clip, text) pair scored by Whisper itself (`WhisperTranscriber.reference_pmi`, `Transcript.reference_pmi`): "
        "the text forced on the decoder as Whisper writes a sentence, the sum over its tokens of log P(token | clip) "
        f"- log P(token | {PRIOR_S:g} s of silence), in nats (> 0: the clip makes the text likelier).",
        "",
        "| text | pairs | scored | all: min / 5% / 25% / median / 75% / 95% / max | "
        f"fewer than {MISMATCH_BELOW:.2f} heard as written: pairs | their min / 5% / 25% / median / 75% / 95% / max |",
        "|---|---:|---:|---|---:|---|",
    ]
    for kind, label in (("true", "true text"), ("different", "a different sentence")):
        v = [pmi for k, _, _, _, pmi in g if k == kind and pmi is not None]
        few = [pmi for k, m, _, _, pmi in g if k == kind and pmi is not None and m.heard and m.match_ratio < MISMATCH_BELOW]
        lines.append(f"| {label} | {n[kind]} | {len(v)} | {quantiles(v)} | {len(few)} | {quantiles(few)} |")
    lines += [
        "",
        f"The guard (`apa.miscues.does_not_match` with `text_pmi`) over its two cuts, fired on true texts / on a different "
        f"sentence (of {n['true']} / {n['different']}); in use: below {TEXT_PMI_BELOW} another sentence, from "
        f"{TEXT_PMI_KEEPS_FROM} the text, in between the rules without the score (the other cuts as in use):",
        "",
        "| below (nats) \\ keeps from (nats) | " + " | ".join("off" if x == float("inf") else f"{x}" for x in SWEEP_PMI_KEEPS) + " |",
        "|---|" + "---:|" * len(SWEEP_PMI_KEEPS),
    ]
    for b in SWEEP_PMI_BELOW:
        cells = [f"{fired('true', pmi_below=b, pmi_keeps_from=k)} / {fired('different', pmi_below=b, pmi_keeps_from=k)}"
                 for k in SWEEP_PMI_KEEPS]
        lines.append(f"| {'off' if b == float('-inf') else b} | " + " | ".join(cells) + " |")
    t = [(scores.recs[u], a, b) for u, (a, b) in scores.timings.items()]
    audio_s = {p["utt_id"]: p["audio_s"] for p in res["pairs"]}
    added = sorted(b - a for _, a, b in t) or [float("nan")]
    plain = sorted(a for _, a, _ in t) or [float("nan")]
    five = [(a, b) for r, a, b in t if 4.0 <= audio_s[r.utt_id] <= 6.0]
    five_added = sorted(b - a for a, b in five)
    five_plain = sorted(a for a, _ in five)
    med = lambda v: v[len(v) // 2]  # noqa: E731
    lines += [
        "",
        f"Time the score adds to a transcription (1 thread; `transcribe_against` with the clip's own text, its prior not "
        f"cached, less `transcribe` of the same clip; {len(t)} clips): median {med(added):.3f} s, max {added[-1]:.3f} s "
        f"(`transcribe` alone: median {med(plain):.3f} s); "
        + (f"on clips of 4-6 s ({len(five)}): median {med(five_added):.3f} s added to {med(five_plain):.3f} s, max "
           f"{five_added[-1]:.3f} s." if five else "no clip of 4-6 s among them.")
        + " A text scored before costs one forced pass less (its prior is kept).",
    ]
    return lines


def render(items: list[dict], res: dict, seed: int, offset: int = 0, fits: Fits | None = None, split: str = "test",
           scores: Scores | None = None) -> str:
    import platform

    import ctranslate2

    from apa.miscues import MISMATCH_BELOW
    from bench.common import machine

    w, errors, words = wer(items)
    secs = [d["transcribe_s"] for d in items]
    audio_s = [d["audio_s"] for d in items]
    ne = res["n_edited"]
    lines = [
        f"# Transcription, miscues and the mismatch guard on Speechocean762 ({split} split)",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}; machine: {machine()}; "
        f"python {platform.python_version()}, ctranslate2 {ctranslate2.__version__}",
        f"- transcriber: {items[0]['model']} (apa.transcribe, int8, 1 thread); clips: {len(items)} {split} utterances "
        f"(every {2500 // len(items)}-th from {offset}), silence trimmed as the app does; edited-text checks on the first {ne}; seed {seed}",
        f"- command: `python -m bench.check_miscues{f' --split {split}' if split != 'test' else ''} --n {len(items)} --edited {ne}"
        f"{f' --offset {offset}' if offset else ''}{' --no-acoustic' if fits is None else ''}{' --no-pmi' if scores is None else ''}"
        f"{' --out bench/results/miscues_tuning.md' if split != 'test' else ''}`",
        "",
        "| check | result |",
        "|---|---|",
        f"| transcription WER vs reference texts ({len(items)} clips) | **{w:.3f}** ({errors} errors / {words} words) |",
        f"| transcription time per clip, 1 thread (median / max) | {statistics.median(secs):.3f} s / {max(secs):.3f} s "
        f"(clips {statistics.median(audio_s):.1f} s median, {max(audio_s):.1f} s max) |",
        f"| mismatch guard fired, true texts ({len(items)} clips), transcript only | {res['true_fired']} "
        f"(lowest match ratios {', '.join(f'{r:.2f}' for r in res['true_ratio'])}; guard below {MISMATCH_BELOW:.2f}) |",
        f"| mismatch guard fired, a different sentence ({len(items)} clips), transcript only | {res['different_fired']} / {len(items)} "
        f"({100 * res['different_fired'] / len(items):.1f}%; highest match ratios {', '.join(f'{r:.2f}' for r in res['different_ratio_max'])}) |",
    ]
    if fits is not None:
        bold = (lambda x: x) if scores is not None else (lambda x: f"**{x}**")
        how = "" if scores is not None else " (as `apa.reading`)"
        lines += [
            f"| mismatch guard fired, true texts, with the acoustic evidence{how} | {bold(res['true_fired_acoustic'])} |",
            f"| mismatch guard fired, a different sentence, with the acoustic evidence | "
            f"{bold(str(res['different_fired_acoustic']) + ' / ' + str(len(items)))} "
            f"({100 * res['different_fired_acoustic'] / len(items):.1f}%) |",
        ]
    if scores is not None:
        lines += [
            f"| mismatch guard fired, true texts, with {'the acoustic evidence and ' if fits is not None else ''}"
            f"the recogniser's score of the text (as `apa.reading`) | **{res['true_fired_pmi']}** |",
            f"| mismatch guard fired, a different sentence, with {'the acoustic evidence and ' if fits is not None else ''}"
            f"the recogniser's score of the text | **{res['different_fired_pmi']} / {len(items)}** "
            f"({100 * res['different_fired_pmi'] / len(items):.1f}%) |",
        ]
    lines += [
        f"| nothing heard (no words in the transcript) | {res['true_empty']} of {len(items)} |",
        "",
        "| edit of the reference text | what should be found | precision | recall |",
        "|---|---|---|---|",
        f"| one word removed ({ne} clips) | that word inserted, at its position | {prf(*res['removed'])} |",
        f"| one word added ({ne} clips) | that word omitted | {prf(*res['added'])} |",
        "",
        f"With the true texts the {len(items)} clips gave {res['true_ins']} insertions and {res['true_omi']} omissions "
        "(transcription errors, or the speakers' own miscues, which the corpus does not label). Precision counts every "
        "other insertion (omission) reported on the edited texts as a false one, so it is bounded by those.",
    ]
    if fits is not None:
        lines += acoustic_section(res, fits)
    if scores is not None:
        lines += pmi_section(res, scores)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--edited", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--offset", type=int, default=0, help="first utterance (another offset: other clips)")
    ap.add_argument("--split", choices=("test", "train"), default="test", help="train: the clips the guard's cuts are chosen on")
    ap.add_argument("--transcripts", type=Path, default=None, help="default: bench/results/transcripts_so762_<split>.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS / "miscues.md")
    ap.add_argument("--no-acoustic", action="store_true", help="do not align: the guard without the acoustic evidence")
    ap.add_argument("--no-pmi", action="store_true", help="do not score the texts by the recogniser")
    ap.add_argument("--pairs-out", type=Path, default=None,
                    help="also write one JSON line per guarded (clip, text) pair (for a closer look; not committed)")
    args = ap.parse_args(argv)
    recs = pick_records(args.n, args.offset, args.split)
    items = transcribe_all(recs, args.transcripts or RESULTS / f"transcripts_so762_{args.split}.jsonl")
    fits = None if args.no_acoustic else Fits(recs)
    scores = None if args.no_pmi else Scores(recs)
    res = run_checks(items, args.edited, args.seed, fits, scores)
    if args.pairs_out is not None:
        args.pairs_out.write_text("".join(json.dumps(p) + "\n" for p in res["pairs"]), encoding="utf-8")
    table = render(items, res, args.seed, args.offset, fits, args.split, scores)
    print(table)
    args.out.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
