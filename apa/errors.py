"""Which failures are the user's to fix, and what to tell them: the one mapping from an exception
to (code, message), used by the web app (learner page, teacher tab, /assess API) and by
apa.batch for per-row errors. It lives in `apa`, not in the web layer, because apa.batch (also
run from the command line) must not import Gradio.
"""

from __future__ import annotations

INTERNAL_MESSAGE = "Sorry, something went wrong while scoring. Please try again in a moment."


class InputError(ValueError):
    """Bad input found before scoring (e.g. no sentence); `code` for the API, str() for the learner."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def user_error(exc: BaseException) -> tuple[str, str] | None:
    """(code, message) for input problems the user can fix; None for anything else (a bug,
    an outage: log it, show a generic message). Codes: AudioError's ("empty", "too_large",
    "corrupt", "unsupported", "no_speech", "too_short", "too_long"), InputError's ("empty_text",
    "text_too_long", and from apa.reading "text_mismatch", "nothing_heard", "transcriber_failed",
    "bad_option"), TextError's code or "bad_text", "bad_batch" for apa.batch.BatchError."""
    from apa.audio import AudioError
    from apa.batch import BatchError
    from apa.text import TextError

    if isinstance(exc, (AudioError, InputError)):
        return exc.code, str(exc)
    if isinstance(exc, TextError):
        return (getattr(exc, "code", None) or "bad_text"), str(exc)
    if isinstance(exc, BatchError):
        return "bad_batch", str(exc)
    return None
