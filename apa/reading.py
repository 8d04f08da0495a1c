"""Scoring a recording together with what was really said (apa.transcribe, apa.miscues).

    from apa.reading import assess_reading
    result = assess_reading(scorer, audio, "WE CALL IT BEAR", transcriber)   # miscues marked
    result = assess_reading(scorer, audio, "", transcriber)                  # free speech

With a text: the recording is transcribed on a worker thread while the scorer scores it against
the text (the transcriber takes one CPU thread), then the miscues are applied to the result
(`apa.miscues.apply_miscues`: omitted words, insertions, completeness) and `heard` is the
transcript. When the recording does not match the text at all (`apa.miscues.does_not_match`: the
transcript shares almost nothing with the text and, where the scorer aligns (its result has
`extra["acoustic_match"]`), the text does not fit the audio better than the words heard, both
aligned again for that only when few of the words were heard as written; or the text fits the
audio very poorly, or not at all while the words heard do; and, where the transcriber scores the
text on its own pass (`transcribe_against`, `Transcript.reference_pmi`), that score first),
`on_mismatch` decides: "error" raises `TextMismatch` (code "text_mismatch", its message shows what was heard),
"free_speech" scores what was heard instead, "text" keeps the scores against the text (no miscues,
a note). A transcriber that fails or hears nothing never stops the scoring: the result then has no
miscues and a note says why.

Without a text (empty or blank): free speech. The transcript's words become the reference (at
most apa.text.MAX_WORDS), the result has `free_speech=True`; when nothing intelligible was heard,
`InputError("nothing_heard")`. Without a transcriber, empty text is `InputError("empty_text")`.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from apa.errors import InputError
from apa.miscues import (MISMATCH_BELOW, Acoustic, Fit, apply_miscues, does_not_match, find_miscues, heard_tokens,
                         pmi_decides)
from apa.schema import Assessment
from apa.transcribe import Transcript

log = logging.getLogger(__name__)

ON_MISMATCH = ("error", "free_speech", "text")
TRANSCRIBE_TIMEOUT_S = 60.0  # a transcription that takes longer is given up (scoring goes on)

NOTE_NO_TRANSCRIPT = "Skipped or added words could not be checked this time (the speech recogniser failed)."
NOTE_NOTHING_HEARD = "Skipped or added words could not be checked: no words could be made out in the recording."
NOTE_SCORED_ANYWAY = "The recording did not seem to match the sentence; it was scored against the sentence anyway."
NOTE_MISMATCH_FREE = "The recording did not seem to match the sentence, so what you said was scored as free speech."

_pool_lock = threading.Lock()
_pool: list[ThreadPoolExecutor] = []


class TextMismatch(InputError):
    """The recording does not seem to be the reference text; `heard` is what the recogniser heard."""

    def __init__(self, text: str, heard: str):
        super().__init__(
            "text_mismatch",
            f'This recording does not seem to be the sentence "{text}". We heard: "{heard}". '
            "Record the sentence again, or score what you said as free speech.",
        )
        self.text = text
        self.heard = heard


def nothing_heard_error() -> InputError:
    return InputError(
        "nothing_heard",
        "We could not make out any words in this recording. Please speak clearly, close to the "
        "microphone, and try again (or type the sentence you read).",
    )


def worker_pool() -> ThreadPoolExecutor:
    """The one thread that runs transcriptions beside scoring (created on first use)."""
    with _pool_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="apa-transcribe"))
        return _pool[0]


def free_speech(scorer: Any, audio: np.ndarray, transcript: Transcript, notes: tuple[str, ...] = ()) -> Assessment:
    """Score the recording against its own transcript (InputError "nothing_heard" when no word was
    made out); the result has free_speech=True and heard=the transcript."""
    from apa.text import MAX_WORDS

    words = [t.text for t in heard_tokens(transcript.words)][:MAX_WORDS]
    if not words or not transcript.intelligible:
        raise nothing_heard_error()
    result = scorer.assess(audio, " ".join(words))
    return replace(result, heard=transcript.text, free_speech=True, notes=result.notes + notes)


def fit_of(audio: np.ndarray, words: Sequence[str]) -> Fit | None:
    """How well `audio` ((n,) float32, 16 kHz) fits `words` force-aligned to it (`apa.miscues.Fit`;
    at most apa.text.MAX_WORDS, pronounced as `apa.text.to_words` says, as the scorer aligns its
    reference); None when they give no reference or do not align."""
    from apa.align import FRAME_S, align
    from apa.annotate import acoustic_match
    from apa.text import MAX_WORDS, to_words

    try:
        ref = tuple((w.text, w.phones) for w in to_words(" ".join(words[:MAX_WORDS])))
    except ValueError:  # apa.text.TextError: nothing to align to
        return None
    alignment = align(audio, ref)
    phone = acoustic_match(alignment)
    frames = np.array([p.frames for p in alignment.phones], dtype=np.float64)
    clip_frames = len(audio) * (1.0 / 16000) / FRAME_S
    if phone is None or frames.sum() <= 0 or clip_frames <= 0:
        return None
    lpp = np.array([p.lpp for p in alignment.phones], dtype=np.float64)
    return Fit(phone=phone, frame=float((lpp * frames).sum() / frames.sum()),
               coverage=float(min(frames.sum() / clip_frames, 1.0)))


def assess_reading(scorer: Any, audio: np.ndarray, text: str | None, transcriber: Any | None, *,
                   on_mismatch: str = "error",
                   align_words: Callable[[np.ndarray, Sequence[str]], Fit | None] = fit_of) -> Assessment:
    """Score `audio` ((n,) float32, 16 kHz) against `text` with the miscues of what was said, or,
    for an empty text, as free speech (see the module doc). scorer: anything with
    `assess(audio, text)`; transcriber: anything with `transcribe(audio) -> Transcript`, or None
    (no transcription: the scorer's result as it is), and where it has
    `transcribe_against(audio, words)` (`apa.transcribe.ReferenceTranscriber`) that is called
    instead, with the text's normalised words; align_words: the fit of the audio to words
    (`apa.miscues.Fit`), asked for the text and for the words heard only when few of the words
    were heard as written, the scorer aligns (its result has `extra["acoustic_match"]`) and the
    transcriber's score of the text does not decide alone (`apa.miscues.pmi_decides`)."""
    if on_mismatch not in ON_MISMATCH:
        raise ValueError(f"on_mismatch must be one of {ON_MISMATCH}, not {on_mismatch!r}")
    text = " ".join((text or "").split())
    if not text:
        if transcriber is None:
            raise InputError("empty_text", "Please choose a sentence from the list, or type the sentence you will read.")
        try:
            transcript = transcriber.transcribe(audio)
        except Exception as exc:  # noqa: BLE001 - a recogniser fault is told as such, not as a crash
            log.warning("transcription failed", exc_info=True)
            raise InputError("transcriber_failed", "Free speaking is not available right now (the speech recogniser "
                             "failed). Please type the sentence you read, or try again.") from exc
        return free_speech(scorer, audio, transcript)
    if transcriber is None:
        return scorer.assess(audio, text)
    from apa.text import normalize

    reference = tuple(normalize(text))
    against = getattr(transcriber, "transcribe_against", None)
    future = (worker_pool().submit(against, audio, reference) if callable(against) and reference
              else worker_pool().submit(transcriber.transcribe, audio))
    result = scorer.assess(audio, text)
    try:
        transcript = future.result(timeout=TRANSCRIBE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - degrade: the scores stand without miscues
        log.warning("transcription failed; scoring without miscues", exc_info=True)
        return replace(result, notes=result.notes + (NOTE_NO_TRANSCRIPT,))
    if not transcript.intelligible:
        return replace(result, heard="", notes=result.notes + (NOTE_NOTHING_HEARD,))
    miscues = find_miscues([w.text for w in result.words], transcript.words)
    pmi = getattr(transcript, "reference_pmi", None)
    if getattr(transcript, "reference", ()) != tuple(w.text for w in result.words):
        pmi = None  # scored against other words than the scorer's
    acoustic = None
    if ("acoustic_match" in result.extra and miscues.heard and miscues.match_ratio < MISMATCH_BELOW
            and not pmi_decides(pmi)):
        acoustic = Acoustic(text=align_words(audio, [w.text for w in result.words]),
                            heard=align_words(audio, [t.text for t in heard_tokens(transcript.words)]))
    if does_not_match(miscues, acoustic, text_pmi=pmi):
        if on_mismatch == "error":
            raise TextMismatch(text, transcript.text)
        if on_mismatch == "free_speech":
            return free_speech(scorer, audio, transcript, (NOTE_MISMATCH_FREE,))
        return replace(result, heard=transcript.text, notes=result.notes + (NOTE_SCORED_ANYWAY,))
    return replace(apply_miscues(result, miscues), heard=transcript.text)
