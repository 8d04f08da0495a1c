"""apa.metrics: PCC/SCC/RMSE against scipy, missing values, constant vectors, markdown, self-test."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from apa.config import corpus_dir
from apa.metrics import ASPECTS, AspectResult, evaluate, pairs, report, to_dict, to_markdown
from apa.schema import SENTENCE_ASPECTS, Assessment, Phone, Sentence, Word

REPO_ROOT = Path(__file__).resolve().parents[1]

# shape of the random corpus: words per utterance, phones per word
SHAPE = [(2, 3), (1, 2, 2), (4,), (3, 1, 2, 2), (1,)]


def _make(sentence: dict, words: list[tuple[float | None, float | None, float | None, list[float | None]]]) -> Assessment:
    ws = tuple(
        Word(f"W{i}", acc, stress, total, tuple(Phone(f"P{j}", s) for j, s in enumerate(ph)))
        for i, (acc, stress, total, ph) in enumerate(words)
    )
    return Assessment(text=" ".join(w.text for w in ws), sentence=Sentence(**sentence), words=ws)


def _random_corpus(rng: np.random.Generator, n: int, *, continuous: bool) -> list[Assessment]:
    out = []
    for u in range(n):
        shape = SHAPE[u % len(SHAPE)]

        def s10():
            return float(rng.uniform(0, 10)) if continuous else float(rng.integers(0, 11))

        sentence = {k: s10() for k in SENTENCE_ASPECTS}
        words = [
            (s10(), float(rng.choice([5.0, 10.0])), s10(), [float(rng.uniform(0, 2)) if continuous else float(rng.integers(0, 11)) / 5 for _ in range(n_ph)])
            for n_ph in shape
        ]
        out.append(_make(sentence, words))
    return out


def _vectors(corpus: list[Assessment]) -> dict[str, list[float]]:
    v: dict[str, list[float]] = {a: [] for a in ASPECTS}
    for a in corpus:
        for k in SENTENCE_ASPECTS:
            v[f"sentence.{k}"].append(getattr(a.sentence, k))
        for w in a.words:
            v["word.accuracy"].append(w.accuracy)
            v["word.stress"].append(w.stress)
            v["word.total"].append(w.total)
            v["phone"] += [p.score for p in w.phones]
    return v


@pytest.mark.parametrize("continuous", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_scipy_on_random_vectors(seed, continuous):
    rng = np.random.default_rng(seed)
    preds = _random_corpus(rng, 60, continuous=continuous)
    labels = _random_corpus(rng, 60, continuous=continuous)
    res = evaluate(preds, labels)
    assert list(res) == list(ASPECTS)
    px, ly = _vectors(preds), _vectors(labels)
    for aspect in ASPECTS:
        x, y = np.array(px[aspect]), np.array(ly[aspect])
        r = res[aspect]
        assert r.aspect == aspect and r.n == len(x) and r.missing_pred == 0 and r.note == ""
        assert r.pcc == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
        assert r.scc == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
        assert r.rmse == pytest.approx(math.sqrt(np.mean((x - y) ** 2)), abs=1e-12)
        assert isinstance(r.pcc, float) and isinstance(r.scc, float) and isinstance(r.rmse, float)


def test_labels_vs_themselves_is_perfect():
    labels = _random_corpus(np.random.default_rng(5), 40, continuous=False)
    for r in evaluate(labels, labels).values():
        assert r.pcc == pytest.approx(1.0) and r.scc == pytest.approx(1.0) and r.rmse == 0.0


def _sentence_only(values: list[float | None], aspect: str = "accuracy") -> list[Assessment]:
    return [Assessment(text="", sentence=Sentence(**{aspect: v}), words=()) for v in values]


def test_hand_computed_case():
    x = [1.0, 2.0, 3.0, 4.0]
    y = [1.0, 3.0, 2.0, 4.0]
    res = evaluate(_sentence_only(x), _sentence_only(y))
    r = res["sentence.accuracy"]
    assert r.n == 4
    assert r.pcc == pytest.approx(0.8)
    assert r.scc == pytest.approx(0.8)
    assert r.rmse == pytest.approx(math.sqrt(0.5))
    # aspects with no labels at all: no pairs, no numbers, no NaN
    for a in ASPECTS:
        if a != "sentence.accuracy":
            assert res[a].n == 0 and res[a].pcc is None and res[a].scc is None and res[a].rmse is None
            assert res[a].note


def test_missing_labels_skipped_missing_predictions_counted():
    preds = _make(
        {"accuracy": 1, "fluency": None, "prosodic": None},
        [(1, 10, 1, [0.0, None]), (None, 5, 2, [1.0, 2.0]), (3, None, 3, [2.0, 1.0])],
    )
    labels = _make(
        {"accuracy": 2, "fluency": 3, "prosodic": None},
        [(2, 10, None, [None, 1.0]), (4, 5, 3, [None, 2.0]), (5, 10, 5, [1.0, 0.0])],
    )
    p = pairs([preds, preds], [labels, labels])
    r = evaluate([preds, preds], [labels, labels])
    # phone: labels (None,1.0,None,2.0,1.0,0.0); preds (0.0,None,1.0,2.0,2.0,1.0)
    assert r["phone"].n == 2 * 3 and r["phone"].missing_pred == 2 * 1
    np.testing.assert_array_equal(p["phone"][0], [2.0, 2.0, 1.0] * 2)
    np.testing.assert_array_equal(p["phone"][1], [2.0, 1.0, 0.0] * 2)
    assert r["word.accuracy"].n == 4 and r["word.accuracy"].missing_pred == 2
    assert r["word.stress"].n == 4 and r["word.stress"].missing_pred == 2
    assert r["word.total"].n == 4 and r["word.total"].missing_pred == 0  # the None label is skipped
    assert r["sentence.accuracy"].n == 2 and r["sentence.accuracy"].missing_pred == 0
    assert r["sentence.fluency"].n == 0 and r["sentence.fluency"].missing_pred == 2
    assert r["sentence.prosodic"].n == 0 and r["sentence.prosodic"].missing_pred == 0
    md = to_markdown(r)
    assert "- sentence.fluency: 2 predictions missing" in md
    assert "- phone: 2 predictions missing" in md
    assert "sentence.prosodic: 2 predictions missing" not in md


def test_mismatched_inputs_raise():
    a = _make({}, [(1, 10, 1, [1.0])])
    b = _make({}, [(1, 10, 1, [1.0]), (1, 10, 1, [1.0])])
    with pytest.raises(ValueError):
        evaluate([a], [a, a])
    with pytest.raises(ValueError):
        evaluate([a], [b])


@pytest.mark.parametrize("which", ["labels", "predictions", "both"])
def test_constant_vector_gives_none_with_note(which):
    varying = [1.0, 2.0, 3.0, 4.0, 6.0]
    const = [7.0] * 5
    x = const if which in ("predictions", "both") else varying
    y = const if which in ("labels", "both") else varying
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scipy ConstantInputWarning, no numpy RuntimeWarning
        res = evaluate(_sentence_only(x), _sentence_only(y))
        md = to_markdown(res)
    r = res["sentence.accuracy"]
    assert r.n == 5 and r.pcc is None and r.scc is None
    assert r.rmse == pytest.approx(math.sqrt(np.mean((np.array(x) - np.array(y)) ** 2)))
    assert "constant" in r.note and "undefined" in r.note
    if which != "predictions":
        assert "labels constant (7)" in r.note
    if which != "labels":
        assert "predictions constant (7)" in r.note
    for v in to_dict(res).values():
        assert not any(isinstance(f, float) and math.isnan(f) for f in v.values())
    row = next(line for line in md.splitlines() if line.startswith("| sentence.accuracy |"))
    assert row.startswith("| sentence.accuracy | 5 | n/a | n/a | ")
    assert f"- sentence.accuracy: {r.note}" in md
    assert "nan" not in md.lower()


def test_single_pair_has_no_correlation():
    r = evaluate(_sentence_only([3.0]), _sentence_only([4.0]))["sentence.accuracy"]
    assert r.n == 1 and r.pcc is None and r.scc is None and r.rmse == pytest.approx(1.0)
    assert "fewer than 2" in r.note


def _table_aspects(md: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\| ([a-z.]+) \| \d+ \|", md, re.M)]


@pytest.mark.parametrize("compare", [True, False])
def test_markdown_has_nine_aspects_in_order(compare):
    labels = _random_corpus(np.random.default_rng(3), 20, continuous=True)
    preds = _random_corpus(np.random.default_rng(4), 20, continuous=True)
    md = to_markdown(evaluate(preds, labels), compare=compare)
    assert _table_aspects(md) == list(ASPECTS)
    assert ASPECTS == (
        "phone", "word.accuracy", "word.stress", "word.total", "sentence.accuracy",
        "sentence.completeness", "sentence.fluency", "sentence.prosodic", "sentence.total",
    )
    lines = md.splitlines()
    assert lines[0].startswith("| aspect | n | PCC | SCC | RMSE |")
    assert ("paper 7B" in lines[0]) == compare
    ncols = lines[0].count("|")
    assert all(line.count("|") == ncols for line in lines[:11])
    if compare:
        row = next(line for line in lines if line.startswith("| phone |"))
        assert row.endswith(" 0.38/0.34 | 0.61 |")
        row = next(line for line in lines if line.startswith("| word.stress |"))
        assert row.endswith(" - | 0.29 |")


def test_report_prints_and_returns_dict(capsys):
    labels = _random_corpus(np.random.default_rng(8), 10, continuous=False)
    d = report(labels, labels, title="self")
    out = capsys.readouterr().out
    assert out.startswith("### self\n")
    assert _table_aspects(out) == list(ASPECTS)
    assert set(d) == set(ASPECTS)
    assert set(d["phone"]) == set(AspectResult.__dataclass_fields__)
    assert d["phone"]["pcc"] == pytest.approx(1.0) and d["phone"]["rmse"] == 0.0 and d["phone"]["note"] == ""


# ---- python -m apa.metrics --self-test ----------------------------------------------------
def _section(out: str, title: str) -> dict[str, list[str]]:
    body = out.split(title, 1)[1].split("###", 1)[0]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] in ASPECTS:
            rows[cells[0]] = cells
    return rows


def test_self_test_subprocess(so762_dir, tmp_path):
    out_json = tmp_path / "self.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # the CLI's default corpus is ../shared/speechocean762 beside the repo; pass --data only elsewhere
    default = corpus_dir().resolve()
    data = [] if Path(so762_dir).resolve() == default else ["--data", str(so762_dir)]
    proc = subprocess.run(
        [sys.executable, "-m", "apa.metrics", "--self-test", *data, "--json", str(out_json)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "test split, 2500 utterances" in out
    same = _section(out, "### labels vs labels")
    shuf = _section(out, "### shuffled baseline")
    assert list(same) == list(ASPECTS) and list(shuf) == list(ASPECTS)
    n_checked = 0
    for aspect, (_, n, pcc, scc, rmse) in same.items():
        assert int(n) > 0
        if pcc == "n/a":  # only a constant aspect may lack a correlation
            assert f"- {aspect}:" in out and "constant" in out
            continue
        assert (pcc, scc, rmse) == ("1.000", "1.000", "0.000"), aspect
        n_checked += 1
    assert n_checked >= 8
    for aspect, (_, n, pcc, scc, rmse) in shuf.items():
        if pcc != "n/a":
            assert abs(float(pcc)) < 0.1, (aspect, pcc)
            assert abs(float(scc)) < 0.1, (aspect, scc)
    import json

    d = json.loads(out_json.read_text())
    assert set(d) == {"labels", "shuffled"}
    assert all(d["labels"][a]["pcc"] in (None, 1.0) or d["labels"][a]["pcc"] == pytest.approx(1.0) for a in ASPECTS)


def test_cli_without_self_test_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "apa.metrics"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 2 and "--self-test" in proc.stderr
