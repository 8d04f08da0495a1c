"""Plain handler functions: what each button, upload and API call does.

They take and return plain values (and gr.update / gr.Error), so tests call them directly.
Bad input raises gr.Error: for the API its title is the machine-readable code (see app.py),
for the page a friendly heading. The exception -> (code, message) decision is apa.errors.user_error,
shared with apa.batch; `to_gr_error` is the only place that turns a failed request into gr.Error.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import gradio as gr

from apa import batch, render
from apa.config import MAX_TEXT_CHARS, REPO_ROOT
from apa.errors import INTERNAL_MESSAGE, InputError, user_error
from apa.schema import Assessment
from webapp import coach, scorer, session, uploads

log = logging.getLogger("apa.app")

SENTENCES_PATH = REPO_ROOT / "assets" / "sentences.json"

__all__ = [
    "INTERNAL_MESSAGE",
    "SENTENCES_PATH",
    "api_assess",
    "assess_file",
    "check_text",
    "clear_history",
    "learner_score",
    "learner_score_free",
    "level_choices",
    "pick_level",
    "random_sentence",
    "sentence_library",
    "teacher_score",
    "to_gr_error",
]


# ------------------------------------------------------------------ input checks


def check_text(text: str | None) -> str:
    """The sentence with spaces tidied; InputError / apa.text.TextError when unusable."""
    text = " ".join((text or "").split())
    if not text:
        raise InputError("empty_text", "Please choose a sentence from the list, or type the sentence you will read.")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(
            "text_too_long", f"The sentence is too long ({len(text)} characters; the limit is {MAX_TEXT_CHARS})."
        )
    from apa.text import to_words

    to_words(text)  # raises TextError (not English, too many words, ...)
    return text


def assess_file(path: str | Path | None, text: str | None, progress=None, on_mismatch: str = "error") -> Assessment:
    """Check the text, load and check the recording, score it with what was said (apa.reading;
    an empty text is free speech). Raises InputError, TextError, AudioError for bad input (text is
    checked first). `progress(fraction, desc=...)` if given."""
    text = check_text(text) if (text or "").strip() else ""
    from apa.audio import load_audio

    audio = load_audio(None if path is None else str(path))
    if progress is not None:
        progress(0.35, desc="Listening and scoring…")
    return scorer.score_reading(audio, text, on_mismatch)


def to_gr_error(exc: BaseException, *, api: bool = False) -> gr.Error:
    """gr.Error for a failed request: the learner-facing message, titled by its code for the API.
    Anything that is not the user's to fix is logged and answered with INTERNAL_MESSAGE."""
    err = user_error(exc)
    if err is None:
        log.exception("%s scoring failed", "API" if api else "page", exc_info=exc)
        return gr.Error(INTERNAL_MESSAGE, title="internal_error" if api else "Something went wrong")
    code, message = err
    if api:
        title = code
    elif code == "text_mismatch":
        title = "Is this the sentence?"
    elif code.endswith("text") or code == "non_english":
        title = "Check the sentence"
    else:
        title = "Let's try that again"
    return gr.Error(message, title=title, print_exception=False)


# ------------------------------------------------------------------ sentences


@lru_cache(maxsize=1)
def sentence_library() -> dict[str, list[str]]:
    """{level: [sentence, ...]} from assets/sentences.json, levels in file order."""
    data = json.loads(SENTENCES_PATH.read_text(encoding="utf-8"))
    lib: dict[str, list[str]] = {lvl: [] for lvl in data["levels"]}
    for s in data["sentences"]:
        lib[s["level"]].append(s["text"])
    return lib


def level_choices() -> list[tuple[str, str]]:
    return [(lvl.capitalize(), lvl) for lvl in sentence_library()]


def pick_level(level: str):
    items = sentence_library().get(level) or []
    return gr.update(choices=items, value=items[0] if items else None)


def random_sentence(level: str):
    items = sentence_library().get(level) or []
    return gr.update(value=random.choice(items)) if items else gr.skip()


# ------------------------------------------------------------------ learner


def learner_score(audio_path, text, history, mode="read", progress=gr.Progress()):  # noqa: B008 - Gradio idiom
    """Recording (or upload) stopped: score it and update results + history. mode "free" (or an
    empty text): free speech, the transcript is the sentence.
    On bad input raises gr.Error, so no output (and no input) is touched.
    The uploaded file is deleted when the request ends; the decoded audio is kept in memory for
    this browser session (webapp.session) so "Score again" works."""
    progress(0.05, desc="Checking your recording…")
    claims = uploads.claim_uploads([audio_path])
    sid = uploads.request_session()
    try:
        audio = session.recent_get(sid, audio_path)
        if audio is None:  # decoded first, so a sentence fixed after an error can reuse it
            from apa.audio import load_audio

            audio = load_audio(None if audio_path is None else str(audio_path))
            session.recent_put(sid, audio_path, audio)
        text = check_text(text) if mode != "free" and (text or "").strip() else ""
        progress(0.35, desc="Listening and scoring…")
        a = scorer.score_reading(audio, text)
    except Exception as exc:
        raise to_gr_error(exc) from exc
    finally:
        uploads.release_uploads(claims)
    progress(0.9, desc="Drawing your results…")
    history = render.append_history(history, a)
    path = uploads.scratch_file(f"pronunciation-{datetime.now():%Y%m%d-%H%M%S}.json")
    path.write_text(a.to_json(indent=2), encoding="utf-8")
    rhythm_plot, rhythm_note = coach.rhythm(audio, a)
    return (
        render.result_html(a, coach.word_audio(audio, a)),
        render.tip_html(a),
        render.sentence_figure(a),
        render.word_figure(a),
        history,
        render.history_figure(history),
        gr.update(value=str(path), visible=True),
        gr.update(visible=True),
        rhythm_plot,
        rhythm_note,
        coach.drill_update(history),
    )


def learner_score_free(audio_path, text, history, progress=gr.Progress()):  # noqa: B008 - Gradio idiom
    """"Score as free speech": the same recording, what was said as the sentence."""
    return learner_score(audio_path, text, history, "free", progress=progress)


def clear_history():
    return [], render.history_figure([])


# ------------------------------------------------------------------ API


def api_assess(audio: str | None, text: str | None, on_mismatch: str | None = "error") -> dict:
    """Score a recording of `text` (empty: free speech). Returns Assessment.to_dict(); errors carry
    their code as title. on_mismatch: "error" (code text_mismatch when the recording is not the
    text), "free_speech" or "text" (score anyway; apa.reading). The uploaded file is deleted when
    the request ends, success or failure."""
    from apa.reading import ON_MISMATCH

    claims = uploads.claim_uploads([audio])
    try:
        choice = (on_mismatch or "error").strip().lower()
        if choice not in ON_MISMATCH:
            raise InputError("bad_option", f"on_mismatch must be one of {', '.join(ON_MISMATCH)}, not {on_mismatch!r}.")
        return assess_file(audio, text, on_mismatch=choice).to_dict()
    except Exception as exc:
        raise to_gr_error(exc, api=True) from exc
    finally:
        uploads.release_uploads(claims)


# ------------------------------------------------------------------ teacher


def _missing_uploads(paths: list[str | None]) -> None:
    missing = [Path(p).name for p in paths if p is not None and not Path(p).is_file()]
    if missing:
        raise gr.Error(
            f"These files are no longer on the server ({', '.join(missing[:3])}): uploads are deleted "
            "once scored. Please upload them again.",
            title="Check the upload",
            print_exception=False,
        )


def teacher_score(files, csv_file, progress=gr.Progress()):  # noqa: B008 - Gradio idiom
    """Score a batch; returns (table, CSV download, summary). The uploads (files, zips, CSV)
    are deleted when the request ends, success or failure."""
    if not files:
        raise gr.Error("Please upload the recordings (audio files or a zip).", print_exception=False)
    paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files]
    claims = uploads.claim_uploads([*paths, csv_file])
    try:
        _missing_uploads([*paths, csv_file])

        def step(i: int, n: int, name: str) -> None:
            progress((i, n), desc=f"Scoring {name}")

        try:
            rows = batch.run_batch(paths, csv_file, assess_file, progress=step)
        except batch.BatchError as exc:
            raise gr.Error(str(exc), title="Check the upload", print_exception=False) from exc
    finally:
        uploads.release_uploads(claims)
    out = uploads.scratch_file(f"pronunciation-scores-{datetime.now():%Y%m%d-%H%M%S}.csv")
    out.write_text(batch.rows_to_csv(rows), encoding="utf-8")
    n_err = sum(1 for r in rows if r.error)
    summary = f"**{len(rows) - n_err} of {len(rows)}** recordings scored."
    if n_err:
        summary += f" {n_err} had a problem: see the *error* column."
    table = [[round(v, 1) if isinstance(v, float) else v for v in row] for row in batch.rows_table(rows)]
    return gr.update(value=table, visible=True), gr.update(value=str(out), visible=True), summary
