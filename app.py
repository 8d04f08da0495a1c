"""Pronunciation Coach: the Gradio app (learner page, teacher batch tab, `/assess` API).

Start it:

    python app.py                                  # http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 8080 --model DIR_OR_HUB_ID --adapter DIR|none

`--model/--adapter` default to the env vars APA_MODEL / APA_ADAPTER, then to apa-mini with the
shipped adapter (apa.scorer.load_scorer). `--host/--port` default to GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT when set (Hugging Face Spaces sets them to 0.0.0.0:7860), else
127.0.0.1:7860. No share link; no extra `allowed_paths`.

API (also listed under "Use via API" in the page footer):

    from gradio_client import Client, handle_file
    result = Client("http://127.0.0.1:7860/").predict(
        handle_file("clip.wav"), "WE CALL IT BEAR", api_name="/assess")
    # result == Assessment.to_dict(): {"text", "sentence": {...}, "words": [...], ...}

Bad input raises gradio_client.exceptions.AppError: `.title` is a machine-readable code
(AudioError codes "empty", "too_large", "corrupt", "unsupported", "no_speech", "too_short",
"too_long"; "empty_text"; apa.text.TextError's code or "bad_text"; "internal_error") and
`.message` the sentence shown to learners.

Model loading (one scorer per process, `get_scorer()`, thread-safe and cached):
* `import app` builds the page but loads no model, so tests inject a fake with
  `set_scorer(fake)` or `build_demo(scorer=fake)`;
* `python app.py` (also how Spaces runs it) loads the model in `main()` before launching,
  and on Spaces (env SPACE_ID) a plain `import app` loads it at import too, so the first
  learner never waits for the model;
* otherwise the first scoring request loads it.
On ZeroGPU the scoring call `score_audio` is wrapped in `spaces.GPU` (when `spaces` imports);
it takes only the audio array and the text, so nothing large is pickled into the GPU worker.

The queue runs at most SCORER_CONCURRENCY scorings at once (one model; shared by the learner
page, the API and the teacher tab) and holds at most QUEUE_MAX_SIZE waiting requests; more are
answered "Queue is full" at once.

Limits and privacy (each backed by tests/test_reliability.py):
* uploads: Gradio refuses any single upload over MAX_UPLOAD_BYTES (100 MB, HTTP 413), the
  size a teacher's zip may need; a learner recording or an /assess upload is refused over
  apa.audio.MAX_FILE_BYTES (20 MB, code "too_large") or MAX_DURATION_S (30 s, "too_long"),
  before it is decoded. The audio components convert nothing (format=None): only apa.audio
  decodes uploads, under its caps.
* recordings: every uploaded file a scoring request used (learner recording, /assess audio,
  teacher files, zips and CSV) is deleted from Gradio's upload cache when the request ends,
  success or failure (`release_uploads`). Gradio stores uploads content-addressed
  (`<GRADIO_TEMP_DIR or /tmp/gradio>/<sha256>/<name>`), so a file that another queued or
  running request also uses (identical bytes), or that was uploaded again meanwhile, is left
  to that request to delete. What Gradio itself keeps: uploads that never reach a scoring
  request (the client vanished before sending it, or got "Queue is full") and the files our
  handlers return (result JSON, scores CSV, TTS clip) stay in its cache until the
  CACHE_CLEANUP sweep (every 30 min, files older than 1 h) or the server stops.
  For "Score this recording again", the decoded 16 kHz audio of a learner's last recording
  is kept in this process's memory only (never on disk), per browser session, for at most
  RECENT_TTL_S (10 min) and for the RECENT_MAX (32) most recent sessions. (No unload hook: it
  would hold a heartbeat connection open in every learner's page.)
  Nothing logs audio bytes; error logs carry the error code and decoder messages.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from apa import batch, render
from apa.schema import Assessment

log = logging.getLogger("apa.app")

ROOT = Path(__file__).resolve().parent
SENTENCES_PATH = ROOT / "assets" / "sentences.json"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
SCORER_CONCURRENCY = int(os.environ.get("APA_CONCURRENCY", "1"))  # scorings at once (one model)
DEFAULT_CONCURRENCY = 4  # light events: sentence picker, TTS, history
QUEUE_MAX_SIZE = 64  # waiting requests; more are turned away with "queue is full"
MAX_UPLOAD_BYTES = 100_000_000  # any single upload (teacher zips); learner clips: apa.audio.MAX_FILE_BYTES
GPU_DURATION_S = 60  # ZeroGPU time slot per scoring call
MAX_TEXT_CHARS = 400  # typed sentence, before apa.text's own checks
TTS_VOICE = "en-us"
TTS_SPEED_WPM = 140
SCRATCH_MAX_AGE_S = 3600  # downloads and TTS clips we write are removed after this
CACHE_CLEANUP = (1800, 3600)  # Gradio's cache: check every 30 min, drop > 1 h (backstop; see doc)
RECENT_TTL_S = 600  # "Score again": a session's last decoded recording is kept in memory this long ...
RECENT_MAX = 32  # ... for at most this many sessions (each <= 30 s * 16 kHz * 4 B = 1.9 MB)

# --------------------------------------------------------------------------------- scorer

_scorer: Any = None
_scorer_lock = threading.Lock()
_scorer_args: dict[str, str | None] = {"model": None, "adapter": None}


def configure_scorer(model: str | None = None, adapter: str | None = None) -> None:
    """Choose the model/adapter that get_scorer() will load (CLI flags); env vars otherwise."""
    _scorer_args.update(model=model, adapter=adapter)


def set_scorer(scorer: Any) -> None:
    """Use this scorer (anything with `assess(audio, text)`) from now on; None unloads."""
    global _scorer
    with _scorer_lock:
        _scorer = scorer


def get_scorer() -> Any:
    """The process-wide scorer, loaded on first use (thread-safe)."""
    global _scorer
    if _scorer is None:
        with _scorer_lock:
            if _scorer is None:
                from apa.scorer import load_scorer

                model = _scorer_args["model"] or os.environ.get("APA_MODEL") or None
                adapter = _scorer_args["adapter"] or os.environ.get("APA_ADAPTER") or None
                t0 = time.perf_counter()
                _scorer = load_scorer(model, adapter)
                log.info("loaded scorer %s in %.1f s", getattr(_scorer, "name", "?"), time.perf_counter() - t0)
    return _scorer


def _on_gpu(fn):
    """spaces.GPU(fn) when the `spaces` package is importable (Hugging Face ZeroGPU), else fn."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=GPU_DURATION_S)(fn)


@_on_gpu
def score_audio(audio: np.ndarray, text: str) -> Assessment:
    """Score 16 kHz float32 audio against the text (the only GPU work)."""
    return get_scorer().assess(audio, text)


# --------------------------------------------------------------------------------- input checks


class InputError(ValueError):
    """Bad input found by the app itself; `code` for the API, str() for the learner."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


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

    to_words(text)  # raises TextError (empty, not English, too long)
    return text


def assess_file(path: str | Path | None, text: str | None, progress=None) -> Assessment:
    """Check the text, load and check the recording, score it. Raises InputError, TextError,
    AudioError for bad input (text is checked first). `progress(fraction, desc=...)` if given."""
    text = check_text(text)
    from apa.audio import load_audio

    audio = load_audio(None if path is None else str(path))
    if progress is not None:
        progress(0.35, desc="Listening and scoring…")
    return score_audio(audio, text)


def user_error(exc: BaseException) -> tuple[str, str] | None:
    """(code, message) for input problems the user can fix; None for anything else."""
    from apa.audio import AudioError
    from apa.text import TextError

    if isinstance(exc, (AudioError, InputError)):
        return exc.code, str(exc)
    if isinstance(exc, TextError):
        return (getattr(exc, "code", None) or "bad_text"), str(exc)
    return None


INTERNAL_MESSAGE = "Sorry, something went wrong while scoring. Please try again in a moment."


def _error(exc: BaseException, *, api: bool = False) -> gr.Error:
    """gr.Error for a failed request: the learner-facing message, titled by its code for the API."""
    err = user_error(exc)
    if err is None:
        log.exception("%s scoring failed", "API" if api else "page", exc_info=exc)
        return gr.Error(INTERNAL_MESSAGE, title="internal_error" if api else "Something went wrong")
    code, message = err
    if api:
        title = code
    elif code.endswith("text") or code in ("non_english", "bad_text"):
        title = "Check the sentence"
    else:
        title = "Let's try that again"
    return gr.Error(message, title=title, print_exception=False)


# --------------------------------------------------------------------------------- uploads (privacy)


def _upload_dirs() -> list[Path]:
    """Folders where Gradio stores uploads (the running server's, and the configured one)."""
    from gradio.context import LocalContext
    from gradio.utils import get_upload_folder

    dirs = [get_upload_folder()]
    blocks = LocalContext.blocks.get(None)
    server = getattr(blocks, "server_app", None)
    if getattr(server, "uploaded_file_dir", None):
        dirs.append(server.uploaded_file_dir)
    return list(dict.fromkeys(Path(d).resolve() for d in dirs))


def _mentions(value: Any, target: str) -> bool:
    if isinstance(value, str):
        return value == target
    if isinstance(value, dict):
        return any(_mentions(v, target) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_mentions(v, target) for v in value)
    return False


def _used_by_other_requests(path: str) -> bool:
    """Whether a queued or running event other than the current one carries this file."""
    from gradio.context import LocalContext

    blocks = LocalContext.blocks.get(None)
    events = getattr(getattr(blocks, "_queue", None), "event_ids_to_events", None)
    if not events:
        return False
    me = LocalContext.event_id.get(None)
    for _ in range(3):  # the dict is changed by the event loop's thread
        try:
            others = [e for eid, e in list(events.items()) if eid != me]
            break
        except RuntimeError:
            continue
    else:
        return True  # cannot tell: keep it (the cache sweep removes it later)
    for e in others:
        data = getattr(getattr(e, "data", None), "data", None)
        if data is not None and _mentions(data, path):
            return True
    return False


def _forget_upload(path: str) -> None:
    """Drop a deleted upload from Gradio's record of uploads (a set that otherwise only grows)."""
    from gradio.context import LocalContext

    files = getattr(LocalContext.blocks.get(None), "upload_file_set", None)
    if isinstance(files, set):
        files.discard(path)


def claim_uploads(paths: list[Any]) -> list[tuple[str, int]]:
    """Note the uploads a request uses (path, inode) at its start, for `release_uploads`."""
    claims = []
    for p in paths:
        if not isinstance(p, (str, Path)):
            continue
        try:
            claims.append((str(p), os.stat(p).st_ino))
        except OSError:
            continue
    return claims


def release_uploads(claims: list[tuple[str, int]]) -> int:
    """Delete, at the end of a request, the uploaded files it used: only files inside Gradio's
    upload folder, not re-uploaded since the request started (same inode), and not carried by
    another queued or running request (uploads are content-addressed: identical bytes share
    one path). Empty upload folders go too. Returns how many files were deleted."""
    if not claims:
        return 0
    roots = _upload_dirs()
    deleted = 0
    for path, ino in claims:
        p = Path(path)
        try:
            real = p.resolve()
            if not any(real.is_relative_to(r) and real != r for r in roots):
                continue  # not an upload (e.g. a file passed by a test or a local caller)
            if os.stat(real).st_ino != ino or _used_by_other_requests(path):
                continue
            real.unlink()
            deleted += 1
            _forget_upload(path)
            try:
                real.parent.rmdir()  # <upload dir>/<sha256>/ when empty
            except OSError:
                pass
        except OSError:
            continue
    return deleted


def _request_session() -> str | None:
    from gradio.context import LocalContext

    req = LocalContext.request.get(None)
    return getattr(req, "session_hash", None)


_recent: OrderedDict[str, tuple[float, str, np.ndarray]] = OrderedDict()
_recent_lock = threading.Lock()


def _recent_get(session: str | None, path: str | None) -> np.ndarray | None:
    """The decoded audio this session last uploaded at `path`, if still kept."""
    if session is None or path is None:
        return None
    with _recent_lock:
        now = time.monotonic()
        for k in [k for k, (t, _, _) in _recent.items() if now - t > RECENT_TTL_S]:
            del _recent[k]
        hit = _recent.get(session)
    return hit[2] if hit is not None and hit[1] == str(path) else None


def _recent_put(session: str | None, path: str | None, audio: np.ndarray) -> None:
    if session is None or path is None:
        return
    with _recent_lock:
        _recent[session] = (time.monotonic(), str(path), audio)
        _recent.move_to_end(session)
        while len(_recent) > RECENT_MAX:
            _recent.popitem(last=False)


# --------------------------------------------------------------------------------- files we write


def _scratch_dir() -> Path:
    d = Path(tempfile.gettempdir()) / "apa-app"
    d.mkdir(exist_ok=True)
    return d


def scratch_file(name: str) -> Path:
    """A fresh path `<tmp>/apa-app/<uuid>/<name>` (Gradio copies it to its cache when returned).
    Folders older than SCRATCH_MAX_AGE_S are removed on each call."""
    root = _scratch_dir()
    now = time.time()
    for d in root.iterdir():
        try:
            if now - d.stat().st_mtime > SCRATCH_MAX_AGE_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass
    d = root / uuid.uuid4().hex
    d.mkdir()
    return d / name


# --------------------------------------------------------------------------------- sentences


@lru_cache(maxsize=1)
def sentence_library() -> dict[str, list[str]]:
    """{level: [sentence, ...]} from assets/sentences.json, levels in file order."""
    data = json.loads(SENTENCES_PATH.read_text(encoding="utf-8"))
    lib: dict[str, list[str]] = {lvl: [] for lvl in data["levels"]}
    for s in data["sentences"]:
        lib[s["level"]].append(s["text"])
    return lib


def _level_choices() -> list[tuple[str, str]]:
    return [(lvl.capitalize(), lvl) for lvl in sentence_library()]


def pick_level(level: str):
    items = sentence_library().get(level) or []
    return gr.update(choices=items, value=items[0] if items else None)


def random_sentence(level: str):
    items = sentence_library().get(level) or []
    return gr.update(value=random.choice(items)) if items else gr.skip()


# --------------------------------------------------------------------------------- TTS


def tts_binary() -> str | None:
    return shutil.which("espeak-ng")


def reference_audio(text: str | None):
    """A wav of espeak-ng reading the sentence (for the 'Hear it' button)."""
    exe = tts_binary()
    if exe is None:
        raise gr.Error("Listening to the sentence is not available on this server.", print_exception=False)
    text = " ".join((text or "").split())
    if not text:
        raise gr.Error("Please choose or type a sentence first.", title="Check the sentence", print_exception=False)
    out = scratch_file("reference.wav")
    try:
        subprocess.run(
            [exe, "-v", TTS_VOICE, "-s", str(TTS_SPEED_WPM), "-w", str(out), "--stdin"],
            input=text[:MAX_TEXT_CHARS].lower().encode("utf-8"),
            capture_output=True,
            timeout=20,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("espeak-ng failed: %s", exc)
        raise gr.Error("Sorry, the example audio could not be made. Please try again.") from exc
    return gr.update(value=str(out), visible=True)


# --------------------------------------------------------------------------------- handlers


def learner_score(audio_path, text, history, progress=gr.Progress()):  # noqa: B008 - Gradio idiom
    """Recording (or upload) stopped: score it and update results + history.
    On bad input raises gr.Error, so no output (and no input) is touched.
    The uploaded file is deleted when the request ends (`release_uploads`); the decoded audio is
    kept in memory for this browser session (RECENT_TTL_S) so "Score again" works."""
    progress(0.05, desc="Checking your recording…")
    claims = claim_uploads([audio_path])
    session = _request_session()
    try:
        audio = _recent_get(session, audio_path)
        if audio is None:  # decoded first, so a sentence fixed after an error can reuse it
            from apa.audio import load_audio

            audio = load_audio(None if audio_path is None else str(audio_path))
            _recent_put(session, audio_path, audio)
        text = check_text(text)
        progress(0.35, desc="Listening and scoring…")
        a = score_audio(audio, text)
    except Exception as exc:
        raise _error(exc) from exc
    finally:
        release_uploads(claims)
    progress(0.9, desc="Drawing your results…")
    history = render.append_history(history, a)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = scratch_file(f"pronunciation-{stamp}.json")
    path.write_text(a.to_json(indent=2), encoding="utf-8")
    return (
        render.result_html(a),
        render.tip_html(a),
        render.sentence_figure(a),
        render.word_figure(a),
        history,
        render.history_figure(history),
        gr.update(value=str(path), visible=True),
        gr.update(visible=True),
    )


def clear_history():
    return [], render.history_figure([])


def api_assess(audio: str | None, text: str | None) -> dict:
    """Score a recording of `text`. Returns Assessment.to_dict(); errors carry their code as title.
    The uploaded file is deleted when the request ends, success or failure."""
    claims = claim_uploads([audio])
    try:
        return assess_file(audio, text).to_dict()
    except Exception as exc:
        raise _error(exc, api=True) from exc
    finally:
        release_uploads(claims)


def teacher_score(files, csv_file, progress=gr.Progress()):  # noqa: B008 - Gradio idiom
    """Score a batch; returns (table, CSV download, summary). The uploads (files, zips, CSV)
    are deleted when the request ends, success or failure."""
    if not files:
        raise gr.Error("Please upload the recordings (audio files or a zip).", print_exception=False)
    paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files]
    claims = claim_uploads([*paths, csv_file])
    try:
        missing = [Path(p).name for p in [*paths, csv_file] if p is not None and not Path(p).is_file()]
        if missing:
            raise gr.Error(
                f"These files are no longer on the server ({', '.join(missing[:3])}): uploads are deleted "
                "once scored. Please upload them again.",
                title="Check the upload",
                print_exception=False,
            )

        def step(i: int, n: int, name: str) -> None:
            progress((i, n), desc=f"Scoring {name}")

        try:
            rows = batch.run_batch(paths, csv_file, assess_file, progress=step)
        except batch.BatchError as exc:
            raise gr.Error(str(exc), title="Check the upload", print_exception=False) from exc
    finally:
        release_uploads(claims)
    out = scratch_file(f"pronunciation-scores-{datetime.now():%Y%m%d-%H%M%S}.csv")
    out.write_text(batch.rows_to_csv(rows), encoding="utf-8")
    n_err = sum(1 for r in rows if r.error)
    summary = f"**{len(rows) - n_err} of {len(rows)}** recordings scored."
    if n_err:
        summary += f" {n_err} had a problem: see the *error* column."
    table = [[round(v, 1) if isinstance(v, float) else v for v in row] for row in batch.rows_table(rows)]
    return gr.update(value=table, visible=True), gr.update(value=str(out), visible=True), summary


# --------------------------------------------------------------------------------- page

INTRO = """
<div id="apa-header">
  <h1>🗣️ Pronunciation Coach</h1>
  <p>Read an English sentence aloud and see, word by word and sound by sound, what was clear
  and what needs practice.</p>
</div>
"""

TEACHER_HELP = """
Upload several recordings (audio files, or a **zip** of them) and a **CSV** with one line per
recording: `file,text` — for example `000010011.opus,WE CALL IT BEAR`. A recording that cannot
be scored gets an error in its row; the rest of the batch still runs.
"""

API_HELP = """
```python
from gradio_client import Client, handle_file

client = Client("http://127.0.0.1:7860/")   # or the Space id
result = client.predict(handle_file("clip.wav"), "WE CALL IT BEAR", api_name="/assess")
print(result["sentence"]["total"], [(w["text"], w["accuracy"]) for w in result["words"]])
```
Bad input raises `gradio_client.exceptions.AppError`; its `title` is an error code such as
`too_short`, `no_speech`, `corrupt` or `empty_text`, its `message` a sentence for the learner.
"""


TABLE_HEADERS = [c.replace("_", " ").capitalize().replace("Prosodic", "Prosody") for c in batch.COLUMNS]


def build_demo(scorer: Any = None) -> gr.Blocks:
    """The whole app. `scorer`: use this scorer (tests) instead of loading the model."""
    if scorer is not None:
        set_scorer(scorer)
    lib = sentence_library()
    first_level = next(iter(lib))
    has_tts = tts_binary() is not None

    with gr.Blocks(title="Pronunciation Coach", delete_cache=CACHE_CLEANUP) as demo:
        gr.HTML(INTRO, elem_id="apa-intro")
        history = gr.BrowserState([], storage_key="apa-history")
        with gr.Tabs():
            with gr.Tab("Practise", id="practise"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5):
                        gr.Markdown("### 1. Choose a sentence")
                        level = gr.Radio(_level_choices(), value=first_level, label="Level", elem_id="apa-level")
                        with gr.Row():
                            pick = gr.Dropdown(
                                lib[first_level],
                                value=lib[first_level][0],
                                label="Sentence library",
                                scale=4,
                                elem_id="apa-pick",
                            )
                            shuffle = gr.Button("🎲 Random", scale=1, min_width=90, size="md")
                        text = gr.Textbox(
                            value=lib[first_level][0],
                            label="Sentence to read (or type your own)",
                            lines=2,
                            max_lines=4,
                            max_length=MAX_TEXT_CHARS,
                            elem_id="apa-text",
                        )
                        hear = gr.Button("🔊 Hear it", visible=has_tts, elem_id="apa-hear", size="md")
                        ref_audio = gr.Audio(
                            label="How it sounds (computer voice)",
                            interactive=False,
                            autoplay=True,
                            visible=False,
                            elem_id="apa-ref-audio",
                        )
                    with gr.Column(scale=5):
                        gr.Markdown("### 2. Record yourself reading it")
                        recording = gr.Audio(
                            sources=["microphone", "upload"],
                            type="filepath",
                            label="Your recording",
                            elem_id="apa-recording",
                        )
                        rescore = gr.Button("↻ Score this recording again", elem_id="apa-rescore", size="md")
                        gr.Markdown(
                            "Press **Record**, read the sentence, press **Stop**: scoring starts by itself "
                            "(or when an upload finishes). Record in a quiet place, close to the "
                            "microphone, at a natural speed.",
                            elem_classes=["apa-note"],
                        )
                gr.Markdown("### 3. Your results")
                result = gr.HTML(render.empty_result_html(), elem_id="apa-result-box")
                tip = gr.HTML("", elem_id="apa-tip-box")
                with gr.Column(visible=False, elem_id="apa-charts") as charts:
                    with gr.Row():
                        radar = gr.Plot(label="Sentence scores", show_label=False, elem_id="apa-radar")
                        bars = gr.Plot(label="Word accuracy", show_label=False, elem_id="apa-bars")
                    with gr.Row():
                        download = gr.DownloadButton(
                            "⬇ Download this result (JSON)", visible=False, elem_id="apa-download", size="md"
                        )
                with gr.Accordion("Your progress this session", open=True, elem_id="apa-history"):
                    history_plot = gr.Plot(label="Progress", show_label=False, elem_id="apa-history-plot")
                    clear = gr.Button("Clear history", size="sm", variant="secondary")
            with gr.Tab("Teacher", id="teacher"):
                gr.Markdown(TEACHER_HELP)
                with gr.Row():
                    t_files = gr.File(
                        label="Recordings (audio files or a zip)",
                        file_count="multiple",
                        type="filepath",
                        elem_id="apa-t-files",
                    )
                    t_csv = gr.File(
                        label="CSV: file,text",
                        file_types=[".csv", ".tsv", ".txt"],
                        type="filepath",
                        elem_id="apa-t-csv",
                    )
                t_run = gr.Button("Score all", variant="primary", elem_id="apa-t-run")
                t_summary = gr.Markdown("")
                t_table = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    visible=False,
                    interactive=False,
                    wrap=True,
                    column_widths=["13%", "17%", "7%", "7%", "7%", "9%", "6%", "12%", "22%"],
                    elem_id="apa-t-table",
                )
                t_csv_out = gr.DownloadButton("⬇ Download scores (CSV)", visible=False, elem_id="apa-t-download")
            with gr.Tab("API", id="api"):
                gr.Markdown(API_HELP)

        # hidden components of the /assess API endpoint
        with gr.Row(visible=False):
            api_audio = gr.Audio(type="filepath", sources=["upload"], label="audio")
            api_text = gr.Textbox(label="text")
            api_out = gr.JSON(label="result")
            api_btn = gr.Button("assess")

        # ---- events
        level.change(pick_level, level, pick, api_visibility="private")
        pick.input(lambda s: s, pick, text, api_visibility="private")
        shuffle.click(random_sentence, level, pick, api_visibility="private").then(
            lambda s: s, pick, text, api_visibility="private"
        )
        hear.click(reference_audio, text, ref_audio, api_visibility="private")

        outputs = [result, tip, radar, bars, history, history_plot, download, charts]
        score_kw = {
            "inputs": [recording, text, history],
            "outputs": outputs,
            "concurrency_id": "scorer",
            "concurrency_limit": SCORER_CONCURRENCY,
            "show_progress": "full",
            "show_progress_on": [result],
            "api_visibility": "private",
        }
        recording.stop_recording(learner_score, **score_kw)
        recording.upload(learner_score, **score_kw)
        rescore.click(learner_score, **score_kw)
        clear.click(clear_history, None, [history, history_plot], api_visibility="private")
        demo.load(render.history_figure, history, history_plot, api_visibility="private")

        t_run.click(
            teacher_score,
            [t_files, t_csv],
            [t_table, t_csv_out, t_summary],
            concurrency_id="scorer",
            concurrency_limit=SCORER_CONCURRENCY,
            api_visibility="private",
        )
        api_btn.click(
            api_assess,
            [api_audio, api_text],
            api_out,
            api_name="assess",
            concurrency_id="scorer",
            concurrency_limit=SCORER_CONCURRENCY,
        )

    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=DEFAULT_CONCURRENCY)
    return demo


def launch_kwargs() -> dict[str, Any]:
    """Look and limits for demo.launch() (Gradio 6 takes theme/css at launch)."""
    return {
        "theme": gr.themes.Soft(
            primary_hue="blue",
            secondary_hue="orange",
            neutral_hue="slate",
            font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"],
            font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
        ),
        "css": render.CSS,
        "max_file_size": MAX_UPLOAD_BYTES,
        "footer_links": ["api", "gradio"],
    }


demo = build_demo()

if os.environ.get("SPACE_ID") and __name__ != "__main__":
    get_scorer()  # on Spaces: load at import, before the first learner arrives


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Pronunciation Coach web app")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", DEFAULT_HOST))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT)))
    p.add_argument("--model", default=os.environ.get("APA_MODEL"), help="model dir or Hub id (env APA_MODEL)")
    p.add_argument(
        "--adapter", default=os.environ.get("APA_ADAPTER"), help="PEFT adapter dir or 'none' (env APA_ADAPTER)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_scorer(args.model, args.adapter)
    get_scorer()
    demo.launch(server_name=args.host, server_port=args.port, **launch_kwargs())


if __name__ == "__main__":
    main()
