"""Presentation helpers for the app: result HTML, plotly figures, the tip box, history, CSV cells.
What the feedback says (weakest words and phones, the tip's text) is apa.feedback.

No Gradio here: every function takes schema objects (or plain dicts) and returns strings or
plotly figures, so it is unit-tested without a server.

Colour-blind safety: colours come from the Okabe-Ito palette (blue / orange / vermillion,
distinguishable with every common colour-vision deficiency) and are never the only cue. Each
band also has a symbol (✓ ~ ✗) and an underline style (solid / wavy / double), and every chip
carries a text label for screen readers (`aria-label`, `title`). `legend_html()` explains them.

Bands:
    words   error_type "none" -> good, "mispronunciation" -> mispronounced, "omission" -> missed
            (cut points in apa.schema: accuracy < 1.5 omission, < 6.5 mispronunciation)
    phones  apa.schema.phone_band: good (>= 1.5), accented (>= 0.5), wrong (< 0.5), unknown
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from apa.annotate import top_heard_other
from apa.feedback import SENTENCE_FAIR_FROM, SENTENCE_GOOD_FROM, fmt_score, phone_ipa, tip_text
from apa.schema import ERROR_MISPRONUNCIATION, ERROR_NONE, ERROR_OMISSION, SENTENCE_ASPECTS, phone_band
from apa.schema import Assessment, Phone, Word
from apa.render_reading import READING_CSS, transcript_html, words_html

# Okabe-Ito palette (Okabe & Ito 2008, "Color Universal Design").
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#8C8C8C",
}


@dataclass(frozen=True)
class Band:
    key: str  # CSS modifier: apa-word--<key> / apa-phone--<key>
    label: str  # shown in the legend and read by screen readers
    symbol: str  # ✓ ~ ✗ ?
    colour: str  # Okabe-Ito hex
    underline: str  # CSS text-decoration-style
    pattern: str  # plotly bar pattern shape


GOOD = Band("good", "Good", "✓", OKABE_ITO["blue"], "solid", "")
FAIR = Band("fair", "Needs work", "~", OKABE_ITO["orange"], "wavy", "/")
POOR = Band("poor", "Wrong or missed", "✗", OKABE_ITO["vermillion"], "double", "x")
UNKNOWN = Band("unknown", "Not scored", "?", OKABE_ITO["grey"], "dotted", ".")

WORD_BANDS = {
    ERROR_NONE: Band("good", "Good", GOOD.symbol, GOOD.colour, GOOD.underline, GOOD.pattern),
    ERROR_MISPRONUNCIATION: Band("mis", "Mispronounced", FAIR.symbol, FAIR.colour, FAIR.underline, FAIR.pattern),
    ERROR_OMISSION: Band("omit", "Missed or badly wrong", POOR.symbol, POOR.colour, POOR.underline, POOR.pattern),
}
PHONE_BANDS = {
    "good": Band("good", "Clear sound", GOOD.symbol, GOOD.colour, GOOD.underline, GOOD.pattern),
    "accented": Band("accented", "Accented sound", FAIR.symbol, FAIR.colour, FAIR.underline, FAIR.pattern),
    "wrong": Band("wrong", "Wrong or missing sound", POOR.symbol, POOR.colour, POOR.underline, POOR.pattern),
    "unknown": UNKNOWN,
}

MAX_HISTORY = 50  # attempts kept in the browser

ASPECT_LABELS = {
    "accuracy": "Accuracy",
    "fluency": "Fluency",
    "prosodic": "Prosody",
    "completeness": "Completeness",
    "total": "Total",
}
ASPECT_HELP = {
    "accuracy": "How correctly the sounds were said",
    "fluency": "How smoothly you read, without long pauses or restarts",
    "prosodic": "Rhythm, stress and intonation",
    "completeness": "How many of the words were read",
    "total": "Overall pronunciation",
}
# One colour, marker and dash per aspect in the history chart (Okabe-Ito, distinct shapes).
ASPECT_STYLE = {
    "accuracy": (OKABE_ITO["blue"], "circle", "solid"),
    "fluency": (OKABE_ITO["orange"], "square", "dash"),
    "prosodic": (OKABE_ITO["green"], "diamond", "dot"),
    "completeness": (OKABE_ITO["purple"], "triangle-up", "dashdot"),
    "total": (OKABE_ITO["black"], "x", "solid"),
}

CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

PLOT_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13}

# --------------------------------------------------------------------------------- CSS
# Passed to launch(css=...) by webapp.layout.launch_kwargs (Gradio 6 takes css at launch).
CSS = """
.apa-card { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.35; }
.apa-tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 4px 0 14px; }
.apa-tile { flex: 1 1 110px; border-radius: 12px; padding: 10px 12px; border: 1px solid rgba(128,128,128,.25);
  background: rgba(128,128,128,.06); }
.apa-tile-label { font-size: .8rem; opacity: .8; }
.apa-tile-value { font-size: 1.6rem; font-weight: 700; }
.apa-tile-value small { font-size: .8rem; font-weight: 400; opacity: .7; }
.apa-tile--good { border-top: 4px solid #0072B2; }
.apa-tile--fair { border-top: 4px dashed #E69F00; }
.apa-tile--poor { border-top: 4px dotted #D55E00; }
.apa-tile--unknown { border-top: 4px dotted #8C8C8C; }
.apa-sentence { display: flex; flex-wrap: wrap; gap: 10px 12px; align-items: flex-start; margin: 6px 0 10px; }
.apa-word { display: inline-flex; flex-direction: column; align-items: center; padding: 6px 8px 5px;
  border-radius: 10px; border: 1px solid rgba(128,128,128,.25); min-width: 48px; }
.apa-word-text { font-size: 1.35rem; font-weight: 700; letter-spacing: .02em; text-decoration-line: underline;
  text-decoration-thickness: 3px; text-underline-offset: 5px; white-space: nowrap; }
.apa-word-score { font-size: .78rem; opacity: .85; margin-top: 3px; }
.apa-sym { display: inline-block; min-width: 1.2em; height: 1.2em; line-height: 1.2em; border-radius: 50%;
  text-align: center; font-size: .8em; font-weight: 700; margin-right: 5px; vertical-align: middle; }
.apa-word--good { background: rgba(0,114,178,.10); }
.apa-word--good .apa-word-text { text-decoration-color: #0072B2; text-decoration-style: solid; }
.apa-word--mis { background: rgba(230,159,0,.16); }
.apa-word--mis .apa-word-text { text-decoration-color: #E69F00; text-decoration-style: wavy; }
.apa-word--omit { background: rgba(213,94,0,.14); border-style: dashed; border-color: #D55E00; }
.apa-word--omit .apa-word-text { text-decoration-color: #D55E00; text-decoration-style: double; }
.apa-sym--good { background: #0072B2; color: #fff; }
.apa-sym--mis, .apa-sym--accented { background: #E69F00; color: #000; }
.apa-sym--omit, .apa-sym--wrong { background: #D55E00; color: #fff; }
.apa-sym--unknown { background: #8C8C8C; color: #fff; }
.apa-phones { display: flex; gap: 3px; margin-top: 6px; flex-wrap: wrap; justify-content: center; }
.apa-phone { display: inline-flex; flex-direction: column; align-items: center; border-radius: 6px;
  padding: 2px 4px 1px; font-size: .75rem; min-width: 26px; border-bottom: 3px solid transparent; }
.apa-phone-arpa { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-weight: 600; }
.apa-phone-ipa { font-family: "Charis SIL", "Doulos SIL", "Noto Sans", "DejaVu Sans", serif; font-size: .85rem; }
.apa-phone-sym { font-size: .65rem; font-weight: 700; }
.apa-phone--good { background: rgba(0,114,178,.12); border-bottom: 3px solid #0072B2; }
.apa-phone--accented { background: rgba(230,159,0,.22); border-bottom: 3px dashed #E69F00; }
.apa-phone--wrong { background: rgba(213,94,0,.20); border-bottom: 3px double #D55E00; }
.apa-phone--unknown { background: rgba(140,140,140,.12); border-bottom: 3px dotted #8C8C8C; }
.apa-legend { display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: .85rem; margin-top: 8px; padding-top: 8px;
  border-top: 1px solid rgba(128,128,128,.25); align-items: center; }
.apa-legend-item { display: inline-flex; align-items: center; gap: 2px; }
.apa-legend-title { font-weight: 600; }
.apa-legend .apa-word-text { font-size: .9rem; text-underline-offset: 3px; text-decoration-thickness: 2px; }
.apa-tip { border-left: 5px solid #0072B2; background: rgba(0,114,178,.08); border-radius: 8px; padding: 10px 14px;
  font-size: 1rem; }
.apa-tip p { margin: 4px 0; }
.apa-note { font-size: .8rem; opacity: .75; margin-top: 6px; }
.apa-empty { opacity: .75; padding: 18px; text-align: center; border: 2px dashed rgba(128,128,128,.35);
  border-radius: 12px; }
.apa-heard { font-size: .68rem; font-style: italic; white-space: nowrap; margin-top: 1px; }
.apa-stress { font-size: .72rem; font-weight: 600; margin-top: 2px; color: #D55E00; }
.apa-word[data-clip] { cursor: pointer; }
.apa-word[data-clip]:focus-visible { outline: 3px solid #0072B2; outline-offset: 2px; }
.apa-say { font-size: .75rem; margin-top: 4px; border: 1px solid rgba(128,128,128,.4); border-radius: 8px;
  background: transparent; cursor: pointer; padding: 1px 6px; }
.apa-word-time { font-size: .65rem; opacity: .6; }
#apa-header h1 { margin-bottom: 0; }
#apa-header p { margin-top: 2px; opacity: .85; }
""" + READING_CSS


# --------------------------------------------------------------------------------- basics


def word_band(word: Word) -> Band:
    return WORD_BANDS[word.error_type] if word.accuracy is not None else UNKNOWN


def sentence_band(value: float | None) -> Band:
    if value is None:
        return UNKNOWN
    if value >= SENTENCE_GOOD_FROM:
        return GOOD
    if value >= SENTENCE_FAIR_FROM:
        return FAIR
    return POOR


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


# --------------------------------------------------------------------------------- HTML


def legend_html() -> str:
    """Legend for words and phones: colour + symbol + underline style + label."""
    words = "".join(
        f'<span class="apa-legend-item apa-word--{b.key}" style="background:none;border:none">'
        f'<span class="apa-sym apa-sym--{b.key}" aria-hidden="true">{b.symbol}</span>'
        f'<span class="apa-word-text">{_esc(b.label)}</span></span>'
        for b in WORD_BANDS.values()
    )
    phones = "".join(
        f'<span class="apa-legend-item"><span class="apa-phone apa-phone--{b.key}">'
        f'<span class="apa-phone-sym" aria-hidden="true">{b.symbol}</span></span>&nbsp;{_esc(b.label)}</span>'
        for b in PHONE_BANDS.values()
    )
    return (
        '<div class="apa-legend" role="note" aria-label="Legend">'
        f'<span class="apa-legend-title">Words:</span>{words}'
        f'<span class="apa-legend-title">Sounds:</span>{phones}'
        "</div>"
    )


def _phone_html(p: Phone) -> str:
    band = PHONE_BANDS[phone_band(p.score)]
    ipa = phone_ipa(p)
    score = fmt_score(p.score)
    label = f"{p.phone}{f' /{ipa}/' if ipa else ''}: {band.label.lower()}, score {score} of 2"
    heard = heard_html(p)
    if heard:
        label += f"; {heard_label(p)}"
    return (
        f'<span class="apa-phone apa-phone--{band.key}" title="{_esc(label)}" aria-label="{_esc(label)}">'
        f'<span class="apa-phone-sym" aria-hidden="true">{band.symbol}</span>'
        f'<span class="apa-phone-arpa">{_esc(p.phone)}</span>'
        f'<span class="apa-phone-ipa">{_esc(ipa) if ipa else "&nbsp;"}</span>'
        f"{heard}"
        "</span>"
    )


def heard_label(p: Phone) -> str:
    """'heard /l/ (62%)' when a low-scoring phone (below "good") was most likely heard as another
    phone, else ''."""
    other = top_heard_other(p)
    if other is None or phone_band(p.score) in ("good", "unknown"):
        return ""
    ipa = phone_ipa(Phone(other[0]))
    return f"heard /{ipa or other[0]}/ ({other[1]:.0%})"


def heard_html(p: Phone) -> str:
    """The heard-instead label under a phone chip ('' when there is none)."""
    label = heard_label(p)
    if not label:
        return ""
    return f'<span class="apa-heard">{_esc(label.split(" (")[0])}</span>'


STRESS_WRONG_BELOW = 7.5  # word stress (5 wrong, 10 right; expected values in between)


def stress_html(w: Word) -> str:
    """A 'stress?' note under a word whose stress score says it was stressed wrongly ('' else)."""
    if w.stress is None or w.stress >= STRESS_WRONG_BELOW or len([p for p in w.phones if p.phone[-1:] in "012"]) < 2:
        return ""
    return f'<span class="apa-stress" title="The stress of this word sounded wrong">stress: {fmt_score(w.stress)}/10</span>'


@dataclass(frozen=True)
class WordClip:
    """Audio of one word for the page, as data: URIs ('' when there is none): the learner's own
    reading cut by the alignment, and the reference pronunciation of the word alone."""

    own: str = ""
    reference: str = ""


def _word_html(w: Word, clip: WordClip | None = None) -> str:
    band = word_band(w)
    label = f"{w.text}: {band.label.lower()}, accuracy {fmt_score(w.accuracy)} of 10"
    phones = "".join(_phone_html(p) for p in w.phones)
    attrs, audio, say, when = 'role="group"', "", "", ""
    if w.start is not None and w.end is not None:
        attrs += f' data-start="{w.start:.3f}" data-end="{w.end:.3f}"'
        when = f'<span class="apa-word-time">{w.start:.2f}–{w.end:.2f} s</span>'
    if clip is not None and clip.own:
        attrs = attrs.replace('role="group"', 'role="button" tabindex="0" data-clip="own"')
        label += ". Click to hear your reading of it"
        audio += f'<audio class="apa-own-clip" preload="auto" src="{_esc(clip.own)}"></audio>'
    if clip is not None and clip.reference:
        say = (f'<button type="button" class="apa-say" aria-label="Hear how {_esc(w.text)} should sound">'
               "🔊 how it sounds</button>")
        audio += f'<audio class="apa-ref-clip" preload="auto" src="{_esc(clip.reference)}"></audio>'
    return (
        f'<div class="apa-word apa-word--{band.key}" {attrs} title="{_esc(label)}" aria-label="{_esc(label)}">'
        f'<span class="apa-word-text"><span class="apa-sym apa-sym--{band.key}" aria-hidden="true">'
        f"{band.symbol}</span>{_esc(w.text)}</span>"
        f'<span class="apa-word-score">{fmt_score(w.accuracy)}/10</span>'
        f'<span class="apa-phones">{phones}</span>'
        f"{stress_html(w)}{when}{say}{audio}"
        "</div>"
    )


def score_tiles_html(a: Assessment) -> str:
    tiles = []
    for k in SENTENCE_ASPECTS:
        v = getattr(a.sentence, k)
        b = sentence_band(v)
        tiles.append(
            f'<div class="apa-tile apa-tile--{b.key}" title="{_esc(ASPECT_HELP[k])}">'
            f'<div class="apa-tile-label">{_esc(ASPECT_LABELS[k])}</div>'
            f'<div class="apa-tile-value"><span class="apa-sym apa-sym--{_tile_sym_key(b)}" aria-hidden="true">'
            f"{b.symbol}</span>{fmt_score(v)}<small>/10</small></div></div>"
        )
    return f'<div class="apa-tiles">{"".join(tiles)}</div>'


def _tile_sym_key(b: Band) -> str:
    return {"good": "good", "fair": "mis", "poor": "omit"}.get(b.key, "unknown")


# Runs once when the result box loads (gr.HTML js_on_load, webapp.layout): a click (or Enter / Space)
# on a word chip plays the learner's reading of it, the 🔊 button the reference word.
PLAYBACK_JS = """
const play = (a) => { if (!a) return; element.querySelectorAll('audio').forEach(o => { if (o !== a) o.pause(); });
  a.currentTime = 0; const p = a.play(); if (p && p.catch) p.catch(() => {}); };
const act = (e) => {
  const say = e.target.closest('.apa-say');
  if (say) { e.preventDefault(); e.stopPropagation(); play(say.parentElement.querySelector('audio.apa-ref-clip')); return; }
  const w = e.target.closest('.apa-word[data-clip]');
  if (w) { e.preventDefault(); play(w.querySelector('audio.apa-own-clip')); }
};
element.addEventListener('click', act);
element.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') act(e); });
"""


def result_html(a: Assessment, clips: Sequence[WordClip] | None = None) -> str:
    """The whole result card: score tiles, colour-coded words with their phones, legend.
    clips: per word, its audio (a playable chip and a reference button), or None."""
    clips = list(clips or [])
    clip_of = {id(w): clips[i] for i, w in enumerate(a.words) if i < len(clips)}
    # insertions and omissions drawn around the words (apa.render_reading)
    words = words_html(a, lambda w: _word_html(w, clip_of.get(id(w))))
    note = transcript_html(a)  # what the transcriber heard, and its notes
    if a.repairs:
        note += '<div class="apa-note">Some scores were estimated (the model output needed repairs).</div>'
    note += alignment_note_html(a)
    return (
        '<div class="apa-card" id="apa-result">'
        f"{score_tiles_html(a)}"
        f'<div class="apa-sentence" aria-label="Your sentence, word by word">{words}</div>'
        f"{legend_html()}{note}"
        "</div>"
    )


def alignment_note_html(a: Assessment) -> str:
    """A short note when the recording could not be aligned (no times, nothing heard instead)."""
    if a.extra.get("aligned") is not False:
        return ""
    return (
        '<div class="apa-note" id="apa-no-alignment">The sounds could not be matched to their times in '
        "this recording, so word playback, \"heard instead\" and the word marks of the rhythm view are not "
        "available this time. The scores above are still complete.</div>"
    )


def empty_result_html() -> str:
    return (
        '<div class="apa-card apa-empty">🎙️ Choose a sentence, then record yourself reading it '
        "(or upload a recording). Your scores will appear here.</div>"
    )


# --------------------------------------------------------------------------------- tip


def tip_html(a: Assessment) -> str:
    """The tip in a call-out box; quoted words in bold (after escaping, so still safe)."""
    text = html.escape(tip_text(a), quote=False)
    text = re.sub(r'"([^"]+)"', r"<b>“\1”</b>", text)
    return f'<div class="apa-tip" role="status"><p>💡 {text}</p></div>'


# --------------------------------------------------------------------------------- figures


def _layout(fig, title: str, height: int = 320) -> Any:
    fig.update_layout(
        title={"text": title, "x": 0.02, "font": {"size": 15}},
        height=height,
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
        font=PLOT_FONT,
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def sentence_figure(a: Assessment) -> Any:
    """Radar of the five sentence scores on a fixed 0-10 scale."""
    import plotly.graph_objects as go

    labels = [ASPECT_LABELS[k] for k in SENTENCE_ASPECTS]
    values = [getattr(a.sentence, k) for k in SENTENCE_ASPECTS]
    r = [0.0 if v is None else float(v) for v in values]
    fig = go.Figure(
        go.Scatterpolar(
            r=r + r[:1],
            theta=labels + labels[:1],
            fill="toself",
            fillcolor="rgba(0,114,178,0.25)",
            line={"color": OKABE_ITO["blue"], "width": 3},
            marker={"size": 8, "symbol": "circle"},
            text=[fmt_score(v) for v in values] + [fmt_score(values[0])],
            hovertemplate="%{theta}: %{text}/10<extra></extra>",
            name="Scores",
        )
    )
    fig.update_layout(
        polar={
            # Accuracy at the top, clockwise; the 0-10 scale sits between Accuracy and Total
            "radialaxis": {
                "range": [0, 10],
                "tickvals": [2, 4, 6, 8, 10],
                "angle": 126,
                "tickangle": 0,
                "tickfont": {"size": 10},
                "gridcolor": "rgba(128,128,128,.35)",
            },
            "angularaxis": {"rotation": 90, "direction": "clockwise", "gridcolor": "rgba(128,128,128,.35)"},
            "bgcolor": "rgba(0,0,0,0)",
        },
        showlegend=False,
    )
    return _layout(fig, f"Sentence scores (total {fmt_score(a.sentence.total)}/10)", height=340)


def word_figure(a: Assessment) -> Any:
    """Bar per word (accuracy 0-10), colour + pattern by error type, one legend entry per type."""
    import plotly.graph_objects as go

    fig = go.Figure()
    xs = list(range(len(a.words)))
    for etype, band in list(WORD_BANDS.items()) + [("unknown", UNKNOWN)]:
        idx = [
            i
            for i, w in enumerate(a.words)
            if (w.accuracy is None and etype == "unknown") or (w.accuracy is not None and w.error_type == etype)
        ]
        if not idx:
            continue
        ys = [0.0 if a.words[i].accuracy is None else float(a.words[i].accuracy) for i in idx]
        fig.add_bar(
            x=idx,
            y=ys,
            name=f"{band.symbol} {band.label}",
            marker={"color": band.colour, "pattern": {"shape": band.pattern, "fgcolor": "rgba(0,0,0,.45)"}},
            text=[f"{band.symbol} {fmt_score(a.words[i].accuracy)}" for i in idx],
            textposition="outside",
            customdata=[[a.words[i].text, " ".join(a.words[i].phone_symbols)] for i in idx],
            hovertemplate="%{customdata[0]}: %{y}/10<br>%{customdata[1]}<extra></extra>",
        )
    fig.update_layout(
        barmode="overlay",
        bargap=0.25,
        xaxis={
            "tickmode": "array",
            "tickvals": xs,
            "ticktext": [w.text for w in a.words],
            "range": [-0.6, max(len(xs), 1) - 0.4],
        },
        yaxis={
            "range": [0, 11],
            "tickvals": [0, 2, 4, 6, 8, 10],
            "title": "Accuracy (0-10)",
            "gridcolor": "rgba(128,128,128,.25)",
        },
        legend={"orientation": "h", "y": -0.2},
    )
    return _layout(fig, "Word accuracy", height=340)


def history_figure(history: Sequence[dict[str, Any]] | None) -> Any:
    """One line per sentence score across this session's attempts (x = attempt number)."""
    import plotly.graph_objects as go

    history = list(history or [])
    fig = go.Figure()
    xs = list(range(1, len(history) + 1))
    texts = [str(h.get("text", "")) for h in history]
    for k in SENTENCE_ASPECTS:
        colour, symbol, dash = ASPECT_STYLE[k]
        ys = [h.get(k) for h in history]
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="lines+markers",
            name=ASPECT_LABELS[k],
            line={"color": colour, "dash": dash, "width": 3 if k == "total" else 2},
            marker={"symbol": symbol, "size": 9, "color": colour},
            customdata=texts,
            hovertemplate=f"{ASPECT_LABELS[k]}: %{{y}}/10<br>%{{customdata}}<extra>attempt %{{x}}</extra>",
        )
    fig.update_layout(
        xaxis={"title": "Attempt", "tickmode": "linear", "dtick": 1, "range": [0.5, max(len(xs), 1) + 0.5]},
        yaxis={"range": [0, 10.5], "title": "Score (0-10)", "gridcolor": "rgba(128,128,128,.25)"},
        legend={"orientation": "h", "y": -0.25},
    )
    if not history:
        fig.add_annotation(text="No attempts yet", showarrow=False, x=1, y=5, font={"size": 16})
    return _layout(fig, "Your progress this session", height=320)


# --------------------------------------------------------------------------------- history


def history_entry(a: Assessment, when: datetime | None = None) -> dict[str, Any]:
    """A JSON-able summary of one attempt for gr.BrowserState."""
    when = when or datetime.now(timezone.utc)
    entry: dict[str, Any] = {"time": when.isoformat(timespec="seconds"), "text": a.text}
    for k in SENTENCE_ASPECTS:
        entry[k] = getattr(a.sentence, k)
    entry["sounds"] = weak_sounds(a)
    return entry


def weak_sounds(a: Assessment, below: float = 1.5) -> list[list[Any]]:
    """[[phone without stress, score 0-2, heard instead or ""], ...] for the phones scoring below
    `below` (what apa.drills reads from the history)."""
    out = []
    for p in a.phones:
        if p.score is not None and p.score < below:
            other = top_heard_other(p)
            out.append([p.phone.rstrip("012"), round(float(p.score), 2), other[0] if other else ""])
    return out


def append_history(history: Iterable[dict[str, Any]] | None, a: Assessment, max_len: int = MAX_HISTORY) -> list[dict]:
    """A new list: the old valid entries plus this attempt, at most max_len (oldest dropped)."""
    old = [h for h in (history or []) if isinstance(h, dict)]
    return (old + [history_entry(a)])[-max_len:]


# --------------------------------------------------------------------------------- CSV


def csv_cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas (CSV injection): a text cell starting with = + - @ tab or
    CR gets a leading apostrophe. Numbers and None pass through unchanged."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_PREFIXES):
        return "'" + value
    return value
