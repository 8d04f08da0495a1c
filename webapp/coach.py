"""The feedback a learner acts on, for the page: each word playable (own reading and reference),
the intonation and rhythm view, and drills for weak sounds. Plain functions (webapp.handlers
calls them; webapp.layout wires `load_drill` and `drill_update`).

None of this may fail a scoring request: each part that cannot be made (no alignment, no
espeak-ng, a pitch tracker error) is left out, with a note on the page where it matters.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import gradio as gr
import numpy as np

from apa import drills
from apa.render import WordClip
from apa.schema import Assessment
from webapp import playback

log = logging.getLogger("apa.app")

__all__ = ["drill_update", "load_drill", "rhythm", "word_audio"]


def word_audio(audio: np.ndarray, a: Assessment) -> list[WordClip]:
    """Per word, the learner's clip (when aligned) and the reference word (espeak-ng); [] on error."""
    try:
        return playback.word_clips(audio, a)
    except Exception:  # noqa: BLE001 - playback is an extra: the result still shows
        log.warning("word clips failed", exc_info=True)
        return []


@lru_cache(maxsize=64)
def _reference_prosody(text: str) -> Any:
    """apa.prosody of espeak-ng reading `text`, its words timed by aligning it (None: no espeak-ng)."""
    from apa.align import align
    from apa.prosody import analyse
    from apa.text import to_words

    x = playback.reference_reading(text)
    if x is None:
        return None
    words = to_words(text)
    al = align(x, tuple((w.text, w.phones) for w in words))
    timed = [(w.text, w.start, w.end) for w in al.words] if al.ok else []
    return analyse(x, timed)


def rhythm(audio: np.ndarray, a: Assessment) -> tuple[Any, str]:
    """(the intonation plot or None, the note under it) for one attempt; word marks, pauses and
    the rate only where the words have times."""
    from apa.prosody import analyse
    from apa.prosody_view import prosody_figure, rhythm_html

    try:
        words = [(w.text, w.start, w.end) for w in a.words] if a.extra.get("aligned") else []
        learner = analyse(audio, words)
    except Exception:  # noqa: BLE001
        log.warning("pitch tracking failed", exc_info=True)
        return None, '<div class="apa-note" id="apa-rhythm-note">The intonation view could not be made this time.</div>'
    try:
        reference = _reference_prosody(a.text)
    except Exception:  # noqa: BLE001
        log.warning("reference prosody failed", exc_info=True)
        reference = None
    try:
        return prosody_figure(learner, reference), rhythm_html(learner, reference)
    except Exception:  # noqa: BLE001
        log.warning("intonation view failed", exc_info=True)
        return None, '<div class="apa-note" id="apa-rhythm-note">The intonation view could not be made this time.</div>'



def drill_update(history: Any) -> Any:
    """The drill list for this history (gr.update of the drills Radio)."""
    from webapp.handlers import sentence_library

    try:
        items = drills.suggest(history, sentence_library())
    except Exception:  # noqa: BLE001
        log.warning("drills failed", exc_info=True)
        items = []
    return gr.update(choices=[(d.label, d.text) for d in items], value=None,
                     label="Drills for your weakest sounds: click one to load it" if items else
                     "Drills appear here once a sound needs practice")


def load_drill(text: str | None) -> Any:
    """A drill was clicked: its text goes into the sentence box (nothing when none is chosen)."""
    return gr.update(value=text) if text else gr.skip()
