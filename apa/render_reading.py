"""What was really said, drawn into the result card (apa.render): words said that are not in the
sentence as grey chips between the reference words, words not said struck through, and the
transcript ("We heard: ...", or "Free speech: ..."), with the notes for the learner.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from apa.schema import Assessment, Insertion, Word

READING_CSS = """
.apa-inserted { display: inline-flex; flex-direction: column; align-items: center; align-self: center;
  padding: 4px 8px; border-radius: 999px; background: rgba(140,140,140,.18); border: 1px dashed #8C8C8C;
  color: inherit; font-size: 1rem; }
.apa-inserted-label { font-size: .65rem; opacity: .75; }
.apa-skipped .apa-word-text { text-decoration-line: line-through; }
.apa-skipped-label { display: block; text-align: center; font-size: .7rem; opacity: .8; }
.apa-transcript { margin: 4px 0 8px; padding: 6px 10px; border-radius: 8px; background: rgba(140,140,140,.08); }
.apa-transcript-label { font-weight: 600; }
"""


def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def insertion_html(i: Insertion) -> str:
    """One grey chip for a word said that is not in the sentence."""
    kind = "said again" if i.repetition else "added"
    when = f" at {i.start:.1f} s" if i.start is not None else ""
    label = f"{i.text}: {kind}{when}, not in the sentence"
    return (f'<span class="apa-inserted" title="{_esc(label)}" aria-label="{_esc(label)}">'
            f'{_esc(i.text)}<span class="apa-inserted-label">{kind}</span></span>')


def words_html(a: Assessment, word_html: Callable[[Word], str]) -> str:
    """The reference words drawn by `word_html`, each omitted one struck through ("not said"), with
    the insertions as chips before the word of their position (after the last for len(words))."""
    out = []
    n = len(a.words)
    for k in range(n + 1):
        out += [insertion_html(i) for i in a.insertions if min(i.position, n) == k]
        if k < n:
            w = a.words[k]
            drawn = word_html(w)
            if w.omitted:
                drawn = f'<div class="apa-skipped">{drawn}<span class="apa-skipped-label">not said</span></div>'
            out.append(drawn)
    return "".join(out)


def transcript_html(a: Assessment) -> str:
    """The transcript line and the notes (empty when the recording was not transcribed)."""
    parts = []
    if a.heard:
        label = "Free speech: we heard" if a.free_speech else "We heard"
        parts.append(f'<div class="apa-transcript" id="apa-transcript"><span class="apa-transcript-label">{label}:</span> '
                     f"“{_esc(a.heard)}”</div>")
    parts += [f'<div class="apa-note">{_esc(n)}</div>' for n in a.notes]
    return "".join(parts)
