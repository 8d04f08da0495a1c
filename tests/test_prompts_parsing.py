"""apa.prompts (prompt, target, template) and apa.parsing (model text -> Assessment)."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apa.data import SPLITS, read_kaldi
from apa.parsing import parse
from apa.prompts import (
    INT_0_10,
    MISSING,
    STRESS_VALUES,
    Slot,
    build_prompt,
    build_target,
    build_template,
    format_score,
    render,
    slot_value,
    slots,
)
from apa.schema import SENTENCE_ASPECTS, Assessment, Phone, Sentence, Word

FIRST_TARGET = (
    "Sentence Scores: 8 9 9 10 7\n"
    "Word Scores: WE/10/10/10 CALL/10/10/10 IT/10/10/10 BEAR/6/10/6\n"
    "Phone Scores: W/10 IY0/10 K/10 AO0/9 L/9 IH0/10 T/10 B/- EH0/- R/-"
)

FIRST_PROMPT = (
    "You are an expert English pronunciation assessor. Listen to the recording of a non-native speaker "
    "reading the reference text aloud and score the pronunciation with the Speechocean762 rubric.\n"
    "Sentence level, each 0-10: accuracy (how correctly the phones are pronounced), fluency (pauses, "
    "repetitions, stammering), prosodic (intonation, rhythm, speed), completeness (share of words read), "
    "total (overall).\n"
    "Word level: accuracy 0-10 (10 correct, 7-9 accented, 4-6 some phones wrong, 2-3 most phones wrong, "
    "0-1 wrong or missing), stress 10 (correct) or 5 (wrong), total 0-10.\n"
    "Phone level: accuracy 0-10 (10 correct, 5 heavily accented, 0 wrong or missing).\n"
    "Reference text: WE CALL IT BEAR\n"
    "Reference phones: WE: W IY0 | CALL: K AO0 L | IT: IH0 T | BEAR: B EH0 R\n"
    "Answer in exactly this format:\n"
    "Sentence Scores: accuracy fluency prosodic completeness total\n"
    "Word Scores: WORD/accuracy/stress/total for each word\n"
    "Phone Scores: PHONE/accuracy for each phone"
)

REF = (("WE", ("W", "IY0")), ("CALL", ("K", "AO0", "L")), ("IT", ("IH0", "T")), ("BEAR", ("B", "EH0", "R")))

# Labels of the first train record, written out so most tests do not need the corpus.
LABELS = Assessment(
    text="WE CALL IT BEAR",
    sentence=Sentence(accuracy=8.0, fluency=9.0, prosodic=9.0, completeness=10.0, total=7.0),
    words=(
        Word("WE", 10.0, 10.0, 10.0, (Phone("W", 2.0), Phone("IY0", 2.0))),
        Word("CALL", 10.0, 10.0, 10.0, (Phone("K", 2.0), Phone("AO0", 1.8), Phone("L", 1.8))),
        Word("IT", 10.0, 10.0, 10.0, (Phone("IH0", 2.0), Phone("T", 2.0))),
        Word("BEAR", 6.0, 10.0, 6.0, (Phone("B"), Phone("EH0"), Phone("R"))),
    ),
    model="labels",
)
# Same reference, every label present (so a clean target parses with no repairs).
_FULL_PHONES = ((0.0, 1.0), (0.4, 1.6, 2.0), (1.2, 0.6), (1.8, 0.2, 1.4))
_FULL_WORDS = ((3.0, 10.0, 4.0), (4.0, 5.0, 5.0), (5.0, 10.0, 6.0), (6.0, 5.0, 7.0))
FULL = Assessment(
    text=LABELS.text,
    sentence=Sentence(accuracy=6.0, fluency=7.0, prosodic=5.0, completeness=8.3, total=6.0),
    words=tuple(
        Word(w.text, *scores, tuple(Phone(p.phone, s) for p, s in zip(w.phones, ps)))
        for w, scores, ps in zip(LABELS.words, _FULL_WORDS, _FULL_PHONES)
    ),
)
FULL_TARGET = (
    "Sentence Scores: 6 7 5 8.3 6\n"
    "Word Scores: WE/3/10/4 CALL/4/5/5 IT/5/10/6 BEAR/6/5/7\n"
    "Phone Scores: W/0 IY0/5 K/2 AO0/8 L/10 IH0/6 T/3 B/9 EH0/1 R/7"
)


@pytest.fixture(scope="module")
def all_records(so762_dir):
    return [r for split in SPLITS for r in read_kaldi(so762_dir, split)]


def _values(a: Assessment) -> list:
    """Scores in slot order: sentence, words (acc, stress, total), phones."""
    out = [getattr(a.sentence, k) for k in SENTENCE_ASPECTS]
    for w in a.words:
        out += [w.accuracy, w.stress, w.total]
    out += [p.score for p in a.phones]
    return out


def _target_with_spans(labels: Assessment) -> tuple[str, list[tuple[int, int]]]:
    """The target text and the (start, end) span of every slot (not only masked ones)."""
    template = build_template([(w.text, w.phone_symbols) for w in labels.words])
    out, spans, pos = [], [], 0
    for part in template:
        if isinstance(part, Slot):
            s = format_score(slot_value(labels, part), part.kind)
            spans.append((pos, pos + len(s)))
        else:
            s = part
        out.append(s)
        pos += len(s)
    return "".join(out), spans


# ---- prompt and target -------------------------------------------------------------------
def test_first_record_prompt_and_target(all_records):
    r = all_records[0]
    assert r.utt_id == "000010011"
    assert r.reference == REF
    assert build_prompt(r.reference) == FIRST_PROMPT
    target, masked = build_target(r.labels)
    assert target == FIRST_TARGET
    assert r.labels == LABELS


def test_first_target_from_written_labels():
    target, masked = build_target(LABELS)
    assert target == FIRST_TARGET
    assert len(masked) == 3
    assert [target[a:b] for a, b in masked] == [MISSING] * 3
    # they are the three phone slots of BEAR, in order
    assert [a for a, _ in masked] == [target.index("B/-") + 2, target.index("EH0/-") + 4, target.index("R/-") + 2]
    assert masked[-1][1] == len(target)


def test_build_prompt_accepts_lists():
    assert build_prompt([(w, list(p)) for w, p in REF]) == FIRST_PROMPT


def test_masked_spans_point_at_dashes(all_records):
    n_masked = 0
    for r in all_records:
        target, masked = build_target(r.labels)
        assert all(target[a:b] == MISSING for a, b in masked)
        n_missing = sum(v is None for v in _values(r.labels))
        assert len(masked) == n_missing
        n_masked += len(masked)
        # every "-" in the target is a masked slot ("-" is never part of a word or phone)
        assert target.count(MISSING) == len(masked)
    assert n_masked > 0


def test_format_score():
    assert format_score(None, "word.accuracy") == "-"
    assert format_score(7.0, "word.accuracy") == "7"
    assert format_score(8.3, "sentence.completeness") == "8.3"
    assert format_score(1.8, "phone") == "9"
    assert format_score(1.4, "phone") == "7"  # 1.4 * 5 = 7.000000000000001
    assert format_score(0.0, "phone") == "0"
    assert format_score(1.25, "phone") == "6.25"


# ---- template ----------------------------------------------------------------------------
def test_template_structure():
    t = build_template(REF)
    sl = slots(t)
    assert len(sl) == 5 + 3 * 4 + 10
    assert [s.kind for s in sl[:5]] == [f"sentence.{a}" for a in SENTENCE_ASPECTS]
    assert [s.kind for s in sl[5:8]] == ["word.accuracy", "word.stress", "word.total"]
    assert [(s.word, s.phone) for s in sl[-10:]] == [(i, j) for i, (_, ph) in enumerate(REF) for j in range(len(ph))]
    # forced strings are merged: never two strings in a row
    assert all(not (isinstance(a, str) and isinstance(b, str)) for a, b in zip(t, t[1:]))
    assert t[0] == "Sentence Scores: "
    # filling the slots with the labels gives the SFT target
    values = {k: format_score(slot_value(LABELS, s), s.kind) for k, s in enumerate(sl)}
    assert render(t, values) == FIRST_TARGET


def test_template_slot_counts_and_values(all_records):
    for r in all_records:
        sl = slots(build_template(r.reference))
        n_words = len(r.labels.words)
        n_phones = len(r.labels.phones)
        assert len(sl) == 5 + 3 * n_words + n_phones
        for s in sl:
            if s.kind == "word.stress":
                assert s.values == STRESS_VALUES == ("5", "10")
            else:
                assert s.values == INT_0_10
        assert sum(s.kind == "phone" for s in sl) == n_phones
        assert sum(s.kind.startswith("sentence.") for s in sl) == 5


def test_labels_fit_slot_values(all_records):
    """Every present label formats to a value its slot allows (completeness floats excepted)."""
    for r in all_records:
        for s in slots(build_template(r.reference)):
            text = format_score(slot_value(r.labels, s), s.kind)
            if text == MISSING or s.kind == "sentence.completeness":
                continue
            assert text in s.values, (r.utt_id, s, text)


# ---- round trip --------------------------------------------------------------------------
def test_round_trip_all_records(all_records):
    assert len(all_records) == 5000
    bad = []
    for r in all_records:
        target, masked = build_target(r.labels)
        a = parse(target, r.reference)
        if a.sentence != r.labels.sentence or a.words != r.labels.words or a.text != r.labels.text:
            bad.append(r.utt_id)
            continue
        # the only repairs are the masked (unlabelled) slots
        assert len(a.repairs) == len(masked), r.utt_id
        assert all(x.endswith("no score") for x in a.repairs)
    assert not bad, f"{len(bad)} records do not round-trip, e.g. {bad[:5]}"


def test_clean_output_has_no_repairs():
    target, masked = build_target(FULL)
    assert target == FULL_TARGET
    assert masked == []
    a = parse(target, REF, model="m")
    assert a.repairs == ()
    assert a.sentence == FULL.sentence
    assert a.words == FULL.words
    assert a.model == "m"


# ---- tolerant parsing --------------------------------------------------------------------
def _full_target() -> str:
    return build_target(FULL)[0]


def _check_shape(a: Assessment, ref=REF) -> None:
    assert [(w.text, w.phone_symbols) for w in a.words] == [(w, tuple(p)) for w, p in ref]
    assert a.text == " ".join(w for w, _ in ref)
    for v in [getattr(a.sentence, k) for k in SENTENCE_ASPECTS] + [x for w in a.words for x in (w.accuracy, w.stress, w.total)]:
        assert v is None or (isinstance(v, float | int) and not math.isnan(v) and 0 <= v <= 10)
    for p in a.phones:
        assert p.score is None or (not math.isnan(p.score) and 0 <= p.score <= 2)


def test_missing_word():
    t = _full_target().replace(" CALL/4/5/5", "")
    a = parse(t, REF)
    _check_shape(a)
    call = a.words[1]
    assert (call.accuracy, call.stress, call.total) == (None, None, None)
    assert a.words[0] == FULL.words[0] and a.words[2] == FULL.words[2] and a.words[3] == FULL.words[3]
    assert any("CALL" in x and "missing" in x for x in a.repairs)


def test_extra_word():
    t = _full_target().replace(" IT/5/10/6", " IT/5/10/6 FOO/1/5/1")
    a = parse(t, REF)
    _check_shape(a)
    assert a.words == FULL.words and a.sentence == FULL.sentence
    assert any("extra" in x for x in a.repairs)


def test_extra_phone_and_missing_phone():
    t = _full_target().replace(" K/2", " ZH/3 K/2").replace(" T/3", "")
    a = parse(t, REF)
    _check_shape(a)
    assert a.words[1].phones == FULL.words[1].phones
    assert a.words[2].phones[0] == FULL.words[2].phones[0]
    assert a.words[2].phones[1].score is None
    assert any("extra" in x for x in a.repairs) and any("T: missing" in x for x in a.repairs)


def test_reordered_words():
    t = _full_target().replace("WE/3/10/4 CALL/4/5/5", "CALL/4/5/5 WE/3/10/4")
    assert t != _full_target()
    a = parse(t, REF)
    _check_shape(a)
    assert a.repairs
    # whatever it matched, each word's scores come from that word's token, or are unknown
    for w, full in zip(a.words, FULL.words):
        assert (w.accuracy, w.stress, w.total) in ((full.accuracy, full.stress, full.total), (None, None, None))


def test_garbage_tokens_and_slots():
    t = _full_target().replace("IT/5/10/6", "IT/x/??/6").replace("Word Scores:", "Word Scores: @@ ### !!/")
    a = parse(t, REF)
    _check_shape(a)
    it = a.words[2]
    assert it.accuracy is None and it.stress is None and it.total == 6.0
    assert any("unreadable" in x for x in a.repairs)
    assert a.words[0] == FULL.words[0] and a.words[3] == FULL.words[3]


@pytest.mark.parametrize(
    "old, new, where, value",
    [
        ("WE/3/10/4", "WE/13/10/4", lambda a: a.words[0].accuracy, 10.0),
        ("WE/3/10/4", "WE/3/10/-2", lambda a: a.words[0].total, 0.0),
        ("Sentence Scores: 6 ", "Sentence Scores: 60 ", lambda a: a.sentence.accuracy, 10.0),
        (" W/0 ", " W/11.5 ", lambda a: a.words[0].phones[0].score, 2.0),
    ],
)
def test_out_of_range_clipped_and_reported(old, new, where, value):
    t = _full_target()
    assert old in t
    a = parse(t.replace(old, new), REF)
    _check_shape(a)
    assert where(a) == value
    assert isinstance(where(a), float)  # the clipped bound is a float like every other score
    assert any("out of range" in x and "clipped" in x for x in a.repairs)


def test_truncated_at_every_cut():
    target, spans = _target_with_spans(FULL)
    full = _values(FULL)
    assert len(spans) == len(full)
    last_start = spans[-1][0]
    for cut in range(len(target) + 1):
        a = parse(target[:cut], REF)  # never raises
        _check_shape(a)
        got = _values(a)
        for (start, end), g, want in zip(spans, got, full):
            if start >= cut:  # slot entirely after the cut
                assert g is None, (cut, start)
            elif end < cut:  # slot and the separator after it were written: score unchanged
                assert g == want, (cut, start, g, want)
        if cut <= last_start:
            assert a.repairs, cut  # truncation is always noticed before the last slot


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_truncated_real_record(all_records, frac):
    r = max(all_records[:200], key=lambda r: len(r.labels.phones))
    target, spans = _target_with_spans(r.labels)
    assert target == build_target(r.labels)[0]
    cut = min(int(len(target) * frac), spans[-1][0])  # a cut inside the last number cannot be noticed
    a = parse(target[:cut], r.reference)
    _check_shape(a, r.reference)
    assert a.repairs
    assert a.phones[-1].score is None


def test_empty_text():
    a = parse("", REF)
    _check_shape(a)
    assert all(v is None for v in _values(a))
    assert a.repairs == ("sentence scores missing", "word scores missing", "phone scores missing")


def test_empty_reference():
    a = parse(_full_target(), ())
    assert a.words == () and a.text == ""
    assert a.sentence == FULL.sentence


def test_lowercase_headers_and_tokens():
    a = parse(_full_target().lower(), REF)
    _check_shape(a)
    assert a.sentence == FULL.sentence and a.words == FULL.words and a.repairs == ()


def test_header_variants():
    t = _full_target().replace("Sentence Scores:", "SENTENCE SCORE").replace("Word Scores:", "word scores :")
    a = parse(t, REF)
    assert a.sentence == FULL.sentence and a.words == FULL.words


def test_extra_whitespace_and_blank_lines():
    t = "\n\n  " + _full_target().replace(" ", "   ").replace("\n", "  \r\n\n\t ") + "  \n\n"
    a = parse(t, REF)
    _check_shape(a)
    assert a.sentence == FULL.sentence and a.words == FULL.words and a.repairs == ()


def test_chatter_around_answer():
    t = "Sure! Here is the assessment.\n" + _full_target() + "\nLet me know if you need more."
    a = parse(t, REF)
    assert a.sentence == FULL.sentence and a.words == FULL.words


def test_sentence_count_mismatch_reported():
    t = _full_target().replace("Sentence Scores: 6 7 5 8.3 6", "Sentence Scores: 6 7 5")
    a = parse(t, REF)
    assert (a.sentence.accuracy, a.sentence.fluency, a.sentence.prosodic) == (6.0, 7.0, 5.0)
    assert a.sentence.completeness is None and a.sentence.total is None
    assert any("3 values instead of 5" in x for x in a.repairs)


# ---- property: arbitrary text never raises -------------------------------------------------
_VOCAB = [
    "Sentence Scores:", "Word Scores:", "Phone Scores:", "sentence scores", "\n", " ", " ", "/", "//", "-", ":",
    "0", "5", "10", "7", "1.5", "99", "-3", "nan", "inf", "1e3", "x", "\u0661\u0660", "WE", "CALL", "IT", "BEAR",
    "we", "W", "IY0", "K", "AO0", "L", "IH0", "T", "B", "EH0", "R", "ZH", "'", "\t", "é",
]
_ref_words = st.sampled_from(["WE", "CALL", "IT", "BEAR", "DON'T", "A", "THE", "O'CLOCK", "X"])
_ref_phones = st.sampled_from(["W", "IY0", "K", "AO0", "L", "IH0", "T", "B", "EH0", "R", "AH0", "N"])
_references = st.one_of(
    st.just(REF),
    st.lists(st.tuples(_ref_words, st.lists(_ref_phones, min_size=1, max_size=4).map(tuple)), min_size=0, max_size=6).map(tuple),
)
_texts = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(_VOCAB), max_size=80).map("".join),
    st.tuples(st.integers(0, len(FIRST_TARGET)), st.integers(0, len(FIRST_TARGET)), st.text(max_size=20)).map(
        lambda t: FIRST_TARGET[: t[0]] + t[2] + FIRST_TARGET[t[1]:]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_texts, ref=_references)
def test_parse_never_raises_and_keeps_reference(text, ref):
    a = parse(text, ref)
    _check_shape(a, ref)
    assert isinstance(a.repairs, tuple) and all(isinstance(x, str) for x in a.repairs)


_PIECES = ["Sentence Scores:", "Word Scores:", "Phone Scores:", "\n", " ", "/", "WE", "BEAR", "K", "10", "-", "x" * 50]


@settings(max_examples=40, deadline=None, database=None)
@given(text=st.one_of(st.text(max_size=4000), st.lists(st.sampled_from(_PIECES), max_size=400).map("".join)))
def test_parser_calls_are_bounded_in_time(text):
    """Arbitrary model text up to 4,000 characters (more than a free-running model emits for a
    40-word sentence): parse returns, every call within 1 s. (tests/test_prompts_parsing.py
    checks the shape of what it returns.)"""
    from apa.parsing import parse

    t0 = time.perf_counter()
    a = parse(text, REF)
    assert time.perf_counter() - t0 < 1.0
    assert [w.text for w in a.words] == [w for w, _ in REF]


def test_parser_long_token_is_linear():
    from apa.parsing import parse

    for line in ("Word Scores: ", "Phone Scores: "):
        t0 = time.perf_counter()
        parse(line + "A" * 64000, REF)  # was ~2 min with the quadratic regex
        assert time.perf_counter() - t0 < 0.25
