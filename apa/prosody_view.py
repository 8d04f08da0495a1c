"""The intonation and rhythm view: the learner's pitch and loudness over time beside the
reference reading's, word boundaries and pauses marked, and the speaking rates (apa.prosody
computes them). No Gradio: returns plotly figures and HTML strings.

Colour-blind safety as in apa.render: pitch is a solid blue line with markers, loudness a dashed
orange line, pauses vermillion hatched bands, each also named in the legend or a label.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from apa.prosody import PAUSE_MIN_S, Prosody
from apa.render import OKABE_ITO, PLOT_FONT

__all__ = ["prosody_figure", "rhythm_html"]


def _add_reading(fig: Any, p: Prosody, row: int, name: str, first: bool) -> None:
    f0 = np.where(np.isfinite(p.f0), p.f0, None)
    fig.add_scatter(
        x=p.times, y=f0, mode="lines", name="Pitch (Hz)", legendgroup="pitch", showlegend=first,
        line={"color": OKABE_ITO["blue"], "width": 3}, connectgaps=False, row=row, col=1, secondary_y=False,
        hovertemplate=f"{name}: %{{y:.0f}} Hz at %{{x:.2f}} s<extra></extra>",
    )  # fmt: skip
    fig.add_scatter(
        x=p.times, y=p.loudness, mode="lines", name="Loudness (dB)", legendgroup="loud", showlegend=first,
        line={"color": OKABE_ITO["orange"], "width": 1.5, "dash": "dash"}, row=row, col=1, secondary_y=True,
        hovertemplate=f"{name}: %{{y:.0f}} dB at %{{x:.2f}} s<extra></extra>",
    )  # fmt: skip
    for i, (text, start, end) in enumerate(p.words):
        fig.add_vline(x=start, line={"color": "rgba(100,100,100,.6)", "width": 1, "dash": "dot"}, row=row, col=1)
        if i == len(p.words) - 1:
            fig.add_vline(x=end, line={"color": "rgba(100,100,100,.6)", "width": 1, "dash": "dot"}, row=row, col=1)
        fig.add_annotation(
            x=(start + end) / 2, y=0.99, yref="y domain" if row == 1 else f"y{2 * row - 1} domain",
            xref="x" if row == 1 else f"x{row}",
            text=html.escape(text), showarrow=False, font={"size": 11}, yanchor="top",
        )  # fmt: skip
    for start, end in p.pauses:
        fig.add_vrect(
            x0=start, x1=end, fillcolor=OKABE_ITO["vermillion"], opacity=0.18, line_width=0, row=row, col=1,
            annotation_text=f"pause {end - start:.1f} s", annotation_position="bottom left",
            annotation_font_size=10,
        )  # fmt: skip


def prosody_figure(learner: Prosody, reference: Prosody | None = None) -> Any:
    """Pitch (left axis, Hz) and loudness (right axis, dB) over time: the learner on top, the
    reference reading below (when given), word boundaries dotted and labelled, pauses over
    PAUSE_MIN_S shaded."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = 2 if reference is not None else 1
    titles = ["You" + _rate_suffix(learner)]
    if reference is not None:
        titles.append("Computer voice (reference)" + _rate_suffix(reference))
    fig = make_subplots(
        rows=rows, cols=1, shared_xaxes=False, vertical_spacing=0.2, subplot_titles=titles,
        specs=[[{"secondary_y": True}] for _ in range(rows)],
    )  # fmt: skip
    _add_reading(fig, learner, 1, "you", True)
    if reference is not None:
        _add_reading(fig, reference, 2, "reference", False)
    span = max(learner.duration, reference.duration if reference is not None else 0.0, 0.5)
    for r in range(1, rows + 1):
        fig.update_xaxes(range=[0, span], title_text="seconds" if r == rows else None, row=r, col=1)
        fig.update_yaxes(title_text="pitch (Hz)", range=[50, 420], row=r, col=1, secondary_y=False,
                         gridcolor="rgba(128,128,128,.25)")
        fig.update_yaxes(title_text="dB", range=[-70, 0], row=r, col=1, secondary_y=True, showgrid=False)
    fig.update_layout(
        title={"text": "Intonation and rhythm", "x": 0.02, "font": {"size": 15}},
        height=260 * rows + 80, margin={"l": 50, "r": 50, "t": 70, "b": 40}, font=PLOT_FONT,
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
        legend={"orientation": "h", "y": -0.12 if rows == 2 else -0.3},
    )  # fmt: skip
    return fig


def _rate_suffix(p: Prosody) -> str:
    return f" — {p.rate_wpm:.0f} words/min" if p.rate_wpm is not None else ""


def rhythm_html(learner: Prosody, reference: Prosody | None = None) -> str:
    """One line under the plot: speaking rate beside the reference's, the pauses, how much the
    pitch moved; or a note that word times are not available."""
    parts = []
    if learner.timed and learner.rate_wpm is not None:
        rate = f"You spoke at <b>{learner.rate_wpm:.0f} words per minute</b>"
        if reference is not None and reference.rate_wpm is not None:
            rate += f" (the computer voice: {reference.rate_wpm:.0f})"
        parts.append(rate + ".")
        n = len(learner.pauses)
        parts.append(
            f"{n} pause{'s' if n != 1 else ''} longer than {PAUSE_MIN_S:.1f} s." if n else
            f"No pauses longer than {PAUSE_MIN_S:.1f} s between words."
        )  # fmt: skip
    else:
        parts.append("Word times are not available for this recording, so the words, pauses and speaking rate "
                     "are not shown; the pitch and loudness are.")
    f0 = learner.f0[np.isfinite(learner.f0)]
    if len(f0) >= 5:
        semitones = 12 * np.log2(np.percentile(f0, 90) / np.percentile(f0, 10))
        flat = " — quite flat: let it rise and fall more" if semitones < 3 else ""
        parts.append(f"Your pitch moved over {semitones:.0f} semitones{flat}.")
    return '<div class="apa-note" id="apa-rhythm-note">' + " ".join(parts) + "</div>"
