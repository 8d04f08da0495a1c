"""Reference audio: espeak-ng reading the sentence, for the "Hear it" button."""

from __future__ import annotations

import logging
import shutil
import subprocess

import gradio as gr

from apa.config import MAX_TEXT_CHARS
from webapp import uploads

log = logging.getLogger("apa.app")

TTS_VOICE = "en-us"
TTS_SPEED_WPM = 140
TTS_TIMEOUT_S = 20


def tts_binary() -> str | None:
    """The espeak-ng executable, or None when it is not installed (the button is then hidden)."""
    return shutil.which("espeak-ng")


def reference_audio(text: str | None):
    """A wav of espeak-ng reading the sentence. The text goes in on stdin, never as arguments,
    so nothing a learner types can become an espeak-ng option."""
    exe = tts_binary()
    if exe is None:
        raise gr.Error("Listening to the sentence is not available on this server.", print_exception=False)
    text = " ".join((text or "").split())
    if not text:
        raise gr.Error("Please choose or type a sentence first.", title="Check the sentence", print_exception=False)
    out = uploads.scratch_file("reference.wav")
    try:
        subprocess.run(
            [exe, "-v", TTS_VOICE, "-s", str(TTS_SPEED_WPM), "-w", str(out), "--stdin"],
            input=text[:MAX_TEXT_CHARS].lower().encode("utf-8"),
            capture_output=True,
            timeout=TTS_TIMEOUT_S,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("espeak-ng failed: %s", exc)
        raise gr.Error("Sorry, the example audio could not be made. Please try again.") from exc
    return gr.update(value=str(out), visible=True)
