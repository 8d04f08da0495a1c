"""Offline builders of the text resources in apa/resources/ (never run at scoring time).

`build_so762_resources` writes so762_lexicon.txt and so762_prompts.tsv from a Speechocean762 copy;
`build_fallback_table` / `write_fallback_table` learn g2p_fallback.tsv.gz from CMUdict, leaving the
`fallback_holdout` words out. The runtime side (reading these files, G2P) is `apa.text`.

    python -m tools.build_text_resources [--so762 DIR] [--fallback]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from apa.config import corpus_dir
from apa.text import (
    ARPABET_VOWELS,
    CONTEXT_PAD,
    FALLBACK_CONTEXTS,
    FALLBACK_FILE,
    NO_PHONE,
    RESOURCES,
    SO762_LEXICON_FILE,
    SO762_PROMPTS_FILE,
    VOWEL_LETTERS,
    WORD_RE,
    cmudict_entries,
)

FALLBACK_HOLDOUT_SIZE = 500  # CMUdict words left out of the shipped table, to measure it honestly
FALLBACK_HOLDOUT_SEED = 762
FALLBACK_EM_ITERATIONS = 3
_ALIGN_FLOOR = -30.0  # log score of a letter/phone pairing never seen
_ALIGN_MIN_PAIR = 10  # training words must use only letter/phone pairings seen this often
# Plausible letter -> phone pairings that seed the alignment (EM refines them).
_LETTER_PHONES = {
    "B": "B", "C": "K S CH SH", "D": "D JH T", "F": "F V", "G": "G JH ZH K", "H": "HH",
    "J": "JH Y HH ZH", "K": "K", "L": "L", "M": "M", "N": "N NG", "P": "P F", "Q": "K",
    "R": "R ER", "S": "S Z SH ZH", "T": "T SH CH TH DH", "V": "V F", "W": "W V AW OW UW",
    "X": "K S Z", "Z": "Z S ZH", "'": "",
    **{v: " ".join(ARPABET_VOWELS) for v in "AEIOUY"},
}  # fmt: skip
_LETTER_PHONES.update({"Y": _LETTER_PHONES["Y"] + " Y", "I": _LETTER_PHONES["I"] + " Y",
                       "E": _LETTER_PHONES["E"] + " Y", "U": _LETTER_PHONES["U"] + " W",
                       "O": _LETTER_PHONES["O"] + " W"})  # fmt: skip


def fallback_vocabulary() -> dict[str, tuple[str, ...]]:
    """CMUdict words made of letters (and inner apostrophes) -> first variant, raw stress."""
    out = {}
    for word, variants in cmudict_entries().items():
        w = word.upper()
        if WORD_RE.fullmatch(w) and not w.startswith("'") and not w.endswith("'"):
            out[w] = tuple(variants[0])
    return dict(sorted(out.items()))


def fallback_holdout() -> list[str]:
    """The FALLBACK_HOLDOUT_SIZE CMUdict words the shipped fallback table never saw (sorted)."""
    vocab = sorted(fallback_vocabulary())
    return sorted(random.Random(FALLBACK_HOLDOUT_SEED).sample(vocab, FALLBACK_HOLDOUT_SIZE))


def _align(word: str, phones: Sequence[str], logp: Mapping) -> list[tuple[int, int]] | None:
    """Best monotone alignment of each letter to 0-2 phones (Viterbi); None when impossible."""
    n, m = len(word), len(phones)
    neg = -math.inf
    score = [[neg] * (m + 1) for _ in range(n + 1)]
    back = [[0] * (m + 1) for _ in range(n + 1)]
    score[0][0] = 0.0
    for i in range(1, n + 1):
        letter, prev, row, brow = word[i - 1], score[i - 1], score[i], back[i]
        for j in range(m + 1):
            best, arg = neg, 0
            for k in range(min(2, j) + 1):
                s = prev[j - k]
                if s == neg:
                    continue
                s += logp.get((letter, tuple(phones[j - k : j])), _ALIGN_FLOOR)
                if s > best:
                    best, arg = s, k
            row[j], brow[j] = best, arg
    if score[n][m] == neg:
        return None
    spans, j = [], m
    for i in range(n, 0, -1):
        k = back[i][j]
        spans.append((j - k, j))
        j -= k
    return spans[::-1]


def _align_prior() -> dict[tuple[str, tuple[str, ...]], float]:
    """Seed log scores: plausible single phones 0, silence -4, plausible pairs -6, X = K S."""
    logp: dict[tuple[str, tuple[str, ...]], float] = {}
    for letter, phones in _LETTER_PHONES.items():
        options = phones.split()
        logp[(letter, ())] = -4.0
        for p in options:
            logp[(letter, (p,))] = 0.0
            for q in options:
                logp[(letter, (p, q))] = -6.0
            if letter in VOWEL_LETTERS:
                logp[(letter, (p, "R"))] = logp[(letter, ("Y", p))] = -6.0
    logp.update({("X", ("K", "S")): 0.0, ("X", ("G", "Z")): -3.0, ("X", ("K", "SH")): -3.0})
    return logp


def build_fallback_table(entries: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Learn the fallback letter-to-sound table from {WORD: phones with stress} (offline).

    Letters are aligned to 0-2 phones by hard EM (FALLBACK_EM_ITERATIONS rounds); then for every
    context in FALLBACK_CONTEXTS the majority label (phones of the centre letter, "" for none) is
    kept only where it differs from the next narrower context's. Deterministic. Returns
    {f"{level}{context}": label}; about 1 minute and 1 GB for all of CMUdict.
    """
    data = [(w, tuple(p), tuple(x.rstrip("012") for x in p)) for w, p in sorted(entries.items())]
    logp: Mapping = _align_prior()
    aligned: list[tuple[str, list[str], list[tuple[str, tuple[str, ...]]]]] = []
    counts: Counter = Counter()
    for _ in range(FALLBACK_EM_ITERATIONS):
        counts, totals, aligned = Counter(), Counter(), []
        for word, phones, bare in data:
            spans = _align(word, bare, logp)
            if spans is None:
                continue
            pairs = [(letter, bare[a:b]) for letter, (a, b) in zip(word, spans)]
            counts.update(pairs)
            totals.update(word)
            aligned.append((word, [" ".join(phones[a:b]) for a, b in spans], pairs))
        logp = {k: math.log(v / totals[k[0]]) for k, v in counts.items() if v >= 2}
    # Words whose alignment needs a rare letter/phone pairing are mostly abbreviations or noise.
    samples = [(w, labels) for w, labels, pairs in aligned if min(counts[p] for p in pairs) >= _ALIGN_MIN_PAIR]
    table: dict[str, str] = {}
    parent: dict[str, str] = {}
    pad = CONTEXT_PAD * max(max(c) for c in FALLBACK_CONTEXTS)
    for level, (left, right) in enumerate(FALLBACK_CONTEXTS):
        pairs = []
        for word, labels in samples:
            s = pad + word + pad
            for i, label in enumerate(labels):
                c = i + len(pad)
                pairs.append((s[c - left : c + right + 1], label))
        pairs.sort()
        majority: dict[str, str] = {}
        for ctx, group in itertools.groupby(pairs, key=lambda x: x[0]):
            label = min(Counter(lab for _, lab in group).items(), key=lambda x: (-x[1], x[0]))[0]
            majority[ctx] = label
            if level:
                pl, pr = FALLBACK_CONTEXTS[level - 1]
                if label == parent[ctx[left - pl : len(ctx) - (right - pr)]]:
                    continue
            table[f"{level}{ctx}"] = label
        parent = majority
    return table


def write_fallback_table(table: Mapping[str, str], path: Path = FALLBACK_FILE) -> None:
    """Write a `build_fallback_table` result as gzip TSV (level, context, phones or "-")."""
    lines = [f"{k[0]}\t{k[1:]}\t{v or NO_PHONE}\n" for k, v in sorted(table.items())]
    header = (
        "# Offline G2P fallback for apa.text, learned from CMUdict (cmudict package) by\n"
        "# tools.build_text_resources.build_fallback_table; the fallback_holdout() words are left out.\n"
        "# level<TAB>letter context (# = word edge)<TAB>phones of the centre letter (- = none)\n"
    )
    data = (header + "".join(lines)).encode("utf-8")
    Path(path).write_bytes(gzip.compress(data, compresslevel=9, mtime=0))  # byte-reproducible


def build_so762_resources(so762_dir: Path, out_dir: Path = RESOURCES) -> tuple[Path, Path]:
    """Write so762_lexicon.txt and so762_prompts.tsv from a Speechocean762 copy (offline).

    Lexicon: resource/lexicon.txt with each word's variants ordered by their frequency in
    resource/text-phone (ties: lexicon order). Prompts: for each corpus sentence (its normalised
    words), the word positions whose majority corpus phones differ from the lexicon's first
    variant. Returns the two paths.
    """
    res = Path(so762_dir) / "resource"
    order: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for line in (res / "lexicon.txt").read_text(encoding="utf-8").splitlines():
        word, phones = line.split("\t")
        if tuple(phones.split()) not in order[word]:
            order[word].append(tuple(phones.split()))
    canon = {}
    for line in (res / "text-phone").read_text(encoding="utf-8").splitlines():
        key, phones = line.split("\t")
        canon[key] = tuple(p.rsplit("_", 1)[0] for p in phones.split())
    scores = json.loads((res / "scores.json").read_text(encoding="utf-8"))
    freq: dict[str, Counter] = defaultdict(Counter)
    per_prompt: dict[tuple[str, int], Counter] = defaultdict(Counter)
    for utt in sorted(scores):
        words = [w["text"] for w in scores[utt]["words"]]
        for i, word in enumerate(words):
            phones = canon[f"{utt}.{i}"]
            freq[word][phones] += 1
            per_prompt[(" ".join(words), i)][phones] += 1
    lexicon = {w: sorted(vs, key=lambda v: (-freq[w][v], vs.index(v))) for w, vs in sorted(order.items())}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lex_path, prompt_path = out_dir / SO762_LEXICON_FILE.name, out_dir / SO762_PROMPTS_FILE.name
    with lex_path.open("w", encoding="utf-8") as f:
        f.write(
            "# Speechocean762 lexicon (resource/lexicon.txt; https://www.openslr.org/101, Apache-2.0;\n"
            "# Zhang et al., Interspeech 2021). Variants reordered by frequency in resource/text-phone.\n"
        )
        for w, variants in lexicon.items():
            f.writelines(f"{w}\t{' '.join(v)}\n" for v in variants)
    with prompt_path.open("w", encoding="utf-8") as f:
        f.write(
            "# Speechocean762 prompt-specific phones (derived from resource/scores.json and text-phone;\n"
            "# Apache-2.0): sentence<TAB>word index<TAB>phones, where they differ from the lexicon.\n"
        )
        for (sentence, i), counts in sorted(per_prompt.items()):
            word = sentence.split()[i]
            best = lexicon[word][0]
            top = max(counts.values())
            if counts[best] == top:
                continue
            winner = min((v for v, c in counts.items() if c == top), key=lexicon[word].index)
            f.write(f"{sentence}\t{i}\t{' '.join(winner)}\n")
    return lex_path, prompt_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--so762", help="Speechocean762 root (default: apa.config.corpus_dir())")
    parser.add_argument("--fallback", action="store_true", help="also relearn g2p_fallback.tsv.gz from CMUdict")
    args = parser.parse_args(argv)
    print(*build_so762_resources(corpus_dir(args.so762)))
    if args.fallback:
        held = set(fallback_holdout())
        entries = {w: p for w, p in fallback_vocabulary().items() if w not in held}
        write_fallback_table(build_fallback_table(entries))
        print(FALLBACK_FILE)


if __name__ == "__main__":
    main()
