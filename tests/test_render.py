"""Unit tests for apa.render: result HTML, legend, tip, figures, history, CSV cells."""

from __future__ import annotations

import html
import re

import pytest

from apa import render
from apa.schema import Assessment, Phone, Sentence, Word

pytest.importorskip("plotly")


def _has_ipa() -> bool:
    try:
        return Phone("TH").ipa != ""
    except Exception:  # noqa: BLE001
        return False


# ------------------------------------------------------------------------------ HTML


def test_result_html_has_every_word_class_symbol_and_legend(make_assessment):
    a = make_assessment()
    out = render.result_html(a)
    for w in a.words:
        assert f"{w.text}</span>" in out
    # word classes by error type
    assert out.count('class="apa-word apa-word--good"') == 2  # WE, IT
    assert 'class="apa-word apa-word--mis"' in out  # CALL
    assert 'class="apa-word apa-word--omit"' in out  # BEAR
    # phone classes by band (phone_band), including unknown
    for band in ("good", "accented", "wrong", "unknown"):
        assert f"apa-phone apa-phone--{band}" in out
    # colour is paired with a symbol
    for sym in ("✓", "~", "✗"):
        assert sym in out
    assert 'class="apa-legend"' in out and "Legend" in out
    # ARPAbet under every word
    for p in a.phones:
        assert f'<span class="apa-phone-arpa">{p.phone}</span>' in out
    # the five sentence scores
    for label in render.ASPECT_LABELS.values():
        assert label in out


def test_result_html_shows_ipa_when_available(make_assessment):
    if not _has_ipa():
        pytest.skip("apa.ipa.arpabet_to_ipa not available")
    out = render.result_html(make_assessment())
    ipa = Phone("AO1").ipa
    assert f'<span class="apa-phone-ipa">{html.escape(ipa)}</span>' in out


def test_result_html_escapes_user_text():
    a = Assessment(
        text="<script>",
        sentence=Sentence(5, 5, 5, 5, 5),
        words=(Word('<img src=x onerror="alert(1)">', 5.0, 10, 5, (Phone("AH0", 1.0),)),),
    )
    out = render.result_html(a)
    assert "<img" not in out and "&lt;img" in out


def test_word_labels_for_screen_readers(make_assessment):
    out = render.result_html(make_assessment())
    assert 'aria-label="BEAR: missed or badly wrong, accuracy 1 of 10"' in out
    assert 'aria-label="CALL: mispronounced, accuracy 4 of 10"' in out


def test_legend_explains_all_bands():
    leg = render.legend_html()
    for b in list(render.WORD_BANDS.values()) + list(render.PHONE_BANDS.values()):
        assert b.label in leg and b.symbol in leg


def test_palette_is_okabe_ito_and_styles_differ():
    colours = {b.colour for b in render.WORD_BANDS.values()}
    assert colours == {"#0072B2", "#E69F00", "#D55E00"}
    assert len({b.symbol for b in render.WORD_BANDS.values()}) == 3
    assert len({b.underline for b in render.WORD_BANDS.values()}) == 3
    assert len({b.pattern for b in render.WORD_BANDS.values()}) == 3
    # every class used in the HTML is styled
    for key in ("good", "mis", "omit"):
        assert f".apa-word--{key}" in render.CSS
    for key in ("good", "accented", "wrong", "unknown"):
        assert f".apa-phone--{key}" in render.CSS


def test_unscored_words_render():
    a = Assessment("HELLO", Sentence(), (Word("HELLO", None, None, None, (Phone("HH", None),)),))
    out = render.result_html(a)
    assert "HELLO" in out and "apa-word--unknown" in out and "–" in out


# ------------------------------------------------------------------------------ tip box


def test_tip_html_escapes():
    a = Assessment("X", Sentence(5, 5, 5, 10, 5), (Word("<script>", 2.0, 10, 2, ()),))
    out = render.tip_html(a)
    assert "&lt;script&gt;" in out and "<script>" not in out
    assert "<b>“&lt;script&gt;”</b>" in out  # the word is highlighted, still escaped


# ------------------------------------------------------------------------------ figures


def test_sentence_figure_is_a_radar_on_0_10(make_assessment):
    fig = render.sentence_figure(make_assessment())
    assert fig.data[0].type == "scatterpolar"
    assert list(fig.layout.polar.radialaxis.range) == [0, 10]
    assert list(fig.data[0].r[:5]) == [6.0, 8.0, 5.0, 10.0, 6.0]


def test_word_figure_has_a_bar_per_word_with_patterns(make_assessment):
    a = make_assessment()
    fig = render.word_figure(a)
    xs = sorted(x for tr in fig.data for x in tr.x)
    assert xs == [0, 1, 2, 3]
    assert list(fig.layout.xaxis.ticktext) == ["WE", "CALL", "IT", "BEAR"]
    names = {tr.name for tr in fig.data}
    assert names == {"✓ Good", "~ Mispronounced", "✗ Missed or badly wrong"}
    assert {tr.marker.pattern.shape for tr in fig.data} == {"", "/", "x"}


def test_word_figure_keeps_repeated_words_apart():
    words = tuple(Word("TWO", acc, 10, acc, ()) for acc in (9.0, 3.0))
    fig = render.word_figure(Assessment("TWO TWO", Sentence(), words))
    assert sorted(x for tr in fig.data for x in tr.x) == [0, 1]


def test_history_figure_lines_per_score(make_assessment):
    a = make_assessment()
    hist = render.append_history([], a)
    hist = render.append_history(hist, make_assessment(total=8.0))
    fig = render.history_figure(hist)
    assert [tr.name for tr in fig.data] == list(render.ASPECT_LABELS.values())
    total = next(tr for tr in fig.data if tr.name == "Total")
    assert list(total.y) == [6.0, 8.0] and list(total.x) == [1, 2]
    empty = render.history_figure(None)
    assert empty.layout.annotations[0].text == "No attempts yet"


def test_append_history_is_capped_and_ignores_junk(make_assessment):
    a = make_assessment()
    hist = ["junk", None]
    for _ in range(render.MAX_HISTORY + 5):
        hist = render.append_history(hist, a)
    assert len(hist) == render.MAX_HISTORY
    assert set(hist[0]) == {"time", "text", "sounds", *render.ASPECT_LABELS}
    assert re.match(r"\d{4}-\d\d-\d\dT", hist[0]["time"])


# ------------------------------------------------------------------------------ CSV


@pytest.mark.parametrize("bad", ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", '=HYPERLINK("http://x")'])
def test_csv_cell_escapes_formulas(bad):
    assert render.csv_cell(bad) == "'" + bad


@pytest.mark.parametrize("ok", ["WE CALL IT BEAR", "a=b", "", 7.5, None, -1.0])
def test_csv_cell_leaves_safe_values(ok):
    assert render.csv_cell(ok) == ok
