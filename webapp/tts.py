"""Reference audio: espeak-ng reading the sentence, for the "Hear it" button."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess

import gradio as gr
import numpy as np

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


def synthesize(text: str, speed_wpm: int = TTS_SPEED_WPM) -> np.ndarray | None:
    """espeak-ng reading `text` as (n,) float32 at 16 kHz, or None when espeak-ng is missing or
    fails. The WAV comes back on stdout (nothing is written to disk); the text goes in on stdin."""
    exe = tts_binary()
    text = " ".join((text or "").split())
    if exe is None or not text:
        return None
    try:
        done = subprocess.run(
            [exe, "-v", TTS_VOICE, "-s", str(speed_wpm), "--stdout", "--stdin"],
            input=text[:MAX_TEXT_CHARS].lower().encode("utf-8"),
            capture_output=True,
            timeout=TTS_TIMEOUT_S,
            check=True,
        )
        import soundfile as sf

        from apa.audio import to_mono_16k

        x, sr = sf.read(io.BytesIO(done.stdout), dtype="float32")
        return to_mono_16k(x, sr)
    except Exception as exc:  # noqa: BLE001 - no reference audio is not an error for the learner
        log.warning("espeak-ng synthesis failed: %s", exc)
        return None
