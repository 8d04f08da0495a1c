"""The page: components and their wiring to the handlers (webapp.handlers), nothing else.

One scoring queue ("scorer" concurrency id, SCORER_CONCURRENCY at once) is shared by the learner
page, the teacher tab and the /assess API, because there is one model. Light events (sentence
picker, TTS, history) run DEFAULT_CONCURRENCY at once. The queue holds at most QUEUE_MAX_SIZE
waiting requests; more are answered "Queue is full" at once.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

from apa import batch, render
from apa.config import MAX_TEXT_CHARS, gradio_analytics, scorer_concurrency
from apa.config import trust_forwarded as config_trust_forwarded
from webapp import coach, handlers, security, tts
from webapp import scorer as holder

SCORER_CONCURRENCY = scorer_concurrency()  # scorings at once (one model; env APA_CONCURRENCY)
DEFAULT_CONCURRENCY = 4  # light events: sentence picker, TTS, history
QUEUE_MAX_SIZE = 64  # waiting requests; more are turned away with "queue is full"
MAX_UPLOAD_BYTES = 100_000_000  # any single upload (teacher zips); learner clips: apa.audio.MAX_FILE_BYTES
CACHE_CLEANUP = (1800, 3600)  # Gradio's cache: check every 30 min, drop files older than 1 h

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
import ssl, certifi
from gradio_client import Client, handle_file

# one TLS context for all calls: gradio_client otherwise builds one per HTTP request (slow)
client = Client("http://127.0.0.1:7860/", ssl_verify=ssl.create_default_context(cafile=certifi.where()))
result = client.predict(handle_file("clip.wav"), "WE CALL IT BEAR", api_name="/assess")
print(result["sentence"]["total"], [(w["text"], w["accuracy"]) for w in result["words"]])
```
An empty text scores the recording as free speech (what was heard is the sentence). When the
recording is not the text, the error code is `text_mismatch`; pass a third argument
`"free_speech"` or `"text"` to score it anyway.
Bad input raises `gradio_client.exceptions.AppError`; its `title` is an error code such as
`too_short`, `no_speech`, `corrupt`, `text_mismatch` or `nothing_heard`, its `message` a
sentence for the learner.
Send the file itself (a URL is refused), and at most 2 requests at a time: more are answered at
once with HTTP 429.
"""

TABLE_HEADERS = [c.replace("_", " ").capitalize().replace("Prosodic", "Prosody") for c in batch.COLUMNS]
TABLE_WIDTHS = ["9%", "12%", "5%", "5%", "5%", "7%", "5%", "9%", "15%", "15%", "13%"]
SCORING = {"concurrency_id": "scorer", "concurrency_limit": SCORER_CONCURRENCY}
PRIVATE = {"api_visibility": "private"}


def _same(value):
    return value


# ------------------------------------------------------------------ components


def _sentence_column(ui: SimpleNamespace) -> None:
    lib = handlers.sentence_library()
    first = next(iter(lib))
    gr.Markdown("### 1. Choose a sentence")
    ui.mode = gr.Radio(
        [("Read a sentence", "read"), ("Speak freely (no sentence: we score what we hear)", "free")],
        value="read", label="Practice", elem_id="apa-mode",
    )
    ui.level = gr.Radio(handlers.level_choices(), value=first, label="Level", elem_id="apa-level")
    with gr.Row():
        ui.pick = gr.Dropdown(
            lib[first], value=lib[first][0], label="Sentence library", scale=4, elem_id="apa-pick"
        )
        ui.shuffle = gr.Button("🎲 Random", scale=1, min_width=90, size="md")
    ui.text = gr.Textbox(
        value=lib[first][0],
        label="Sentence to read (or type your own)",
        lines=2,
        max_lines=4,
        max_length=MAX_TEXT_CHARS,
        elem_id="apa-text",
    )
    ui.hear = gr.Button("🔊 Hear it", visible=tts.tts_binary() is not None, elem_id="apa-hear", size="md")
    ui.ref_audio = gr.Audio(
        label="How it sounds (computer voice)",
        interactive=False,
        autoplay=True,
        visible=False,
        elem_id="apa-ref-audio",
    )


def _recording_column(ui: SimpleNamespace) -> None:
    gr.Markdown("### 2. Record yourself reading it")
    ui.recording = gr.Audio(
        sources=["microphone", "upload"], type="filepath", label="Your recording", elem_id="apa-recording"
    )
    ui.rescore = gr.Button("↻ Score this recording again", elem_id="apa-rescore", size="md")
    ui.as_free = gr.Button("🗣 Score as free speech", elem_id="apa-as-free", size="md")
    gr.Markdown(
        "Press **Record**, read the sentence, press **Stop**: scoring starts by itself "
        "(or when an upload finishes). Record in a quiet place, close to the "
        "microphone, at a natural speed.",
        elem_classes=["apa-note"],
    )


def _results_section(ui: SimpleNamespace) -> None:
    gr.Markdown("### 3. Your results")
    ui.result = gr.HTML(render.empty_result_html(), elem_id="apa-result-box", js_on_load=render.PLAYBACK_JS)
    ui.tip = gr.HTML("", elem_id="apa-tip-box")
    with gr.Column(visible=False, elem_id="apa-charts") as ui.charts:
        with gr.Row():
            ui.radar = gr.Plot(label="Sentence scores", show_label=False, elem_id="apa-radar")
            ui.bars = gr.Plot(label="Word accuracy", show_label=False, elem_id="apa-bars")
        ui.rhythm_plot = gr.Plot(label="Intonation and rhythm", show_label=False, elem_id="apa-rhythm")
        ui.rhythm_note = gr.HTML("", elem_id="apa-rhythm-box")
        with gr.Row():
            ui.download = gr.DownloadButton(
                "⬇ Download this result (JSON)", visible=False, elem_id="apa-download", size="md"
            )
    with gr.Accordion("Practise your weak sounds", open=True, elem_id="apa-drills-box"):
        ui.drills = gr.Radio([], label="Drills appear here once a sound needs practice", elem_id="apa-drills")
    with gr.Accordion("Your progress this session", open=True, elem_id="apa-history"):
        ui.history_plot = gr.Plot(label="Progress", show_label=False, elem_id="apa-history-plot")
        ui.clear = gr.Button("Clear history", size="sm", variant="secondary")


def _practise_tab(ui: SimpleNamespace) -> None:
    with gr.Tab("Practise", id="practise"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                _sentence_column(ui)
            with gr.Column(scale=5):
                _recording_column(ui)
        _results_section(ui)


def _teacher_tab(ui: SimpleNamespace) -> None:
    with gr.Tab("Teacher", id="teacher"):
        gr.Markdown(TEACHER_HELP)
        with gr.Row():
            ui.t_files = gr.File(
                label="Recordings (audio files or a zip)",
                file_count="multiple",
                type="filepath",
                elem_id="apa-t-files",
            )
            ui.t_csv = gr.File(
                label="CSV: file,text", file_types=[".csv", ".tsv", ".txt"], type="filepath", elem_id="apa-t-csv"
            )
        ui.t_run = gr.Button("Score all", variant="primary", elem_id="apa-t-run")
        ui.t_summary = gr.Markdown("")
        ui.t_table = gr.Dataframe(
            headers=TABLE_HEADERS,
            visible=False,
            interactive=False,
            wrap=True,
            column_widths=TABLE_WIDTHS,
            elem_id="apa-t-table",
        )
        ui.t_csv_out = gr.DownloadButton("⬇ Download scores (CSV)", visible=False, elem_id="apa-t-download")


def _api_endpoint(ui: SimpleNamespace) -> None:
    """Hidden components of the /assess API endpoint."""
    with gr.Row(visible=False):
        ui.api_audio = gr.Audio(type="filepath", sources=["upload"], label="audio")
        ui.api_text = gr.Textbox(label="text")
        ui.api_mismatch = gr.Textbox(value="error", label="on_mismatch")
        ui.api_out = gr.JSON(label="result")
        ui.api_btn = gr.Button("assess")


# ------------------------------------------------------------------ events


def _wire_practise(demo: gr.Blocks, ui: SimpleNamespace) -> None:
    ui.level.change(handlers.pick_level, ui.level, ui.pick, **PRIVATE)
    ui.pick.input(_same, ui.pick, ui.text, **PRIVATE)
    ui.shuffle.click(handlers.random_sentence, ui.level, ui.pick, **PRIVATE).then(_same, ui.pick, ui.text, **PRIVATE)
    ui.hear.click(tts.reference_audio, ui.text, ui.ref_audio, **PRIVATE)
    score = {
        "inputs": [ui.recording, ui.text, ui.history, ui.mode],
        "outputs": [ui.result, ui.tip, ui.radar, ui.bars, ui.history, ui.history_plot, ui.download, ui.charts,
                    ui.rhythm_plot, ui.rhythm_note, ui.drills],
        "show_progress": "full",
        "show_progress_on": [ui.result],
        **SCORING,
        **PRIVATE,
    }
    ui.recording.stop_recording(handlers.learner_score, **score)
    ui.recording.upload(handlers.learner_score, **score)
    ui.rescore.click(handlers.learner_score, **score)
    ui.as_free.click(handlers.learner_score_free, **{**score, "inputs": [ui.recording, ui.text, ui.history]})
    ui.clear.click(handlers.clear_history, None, [ui.history, ui.history_plot], **PRIVATE)
    demo.load(render.history_figure, ui.history, ui.history_plot, **PRIVATE)
    ui.drills.input(coach.load_drill, ui.drills, ui.text, **PRIVATE)
    demo.load(coach.drill_update, ui.history, ui.drills, **PRIVATE)


def _wire_teacher(ui: SimpleNamespace) -> None:
    ui.t_run.click(
        handlers.teacher_score, [ui.t_files, ui.t_csv], [ui.t_table, ui.t_csv_out, ui.t_summary], **SCORING, **PRIVATE
    )


def _wire_api(ui: SimpleNamespace) -> None:
    ui.api_btn.click(handlers.api_assess, [ui.api_audio, ui.api_text, ui.api_mismatch], ui.api_out, api_name="assess",
                     **SCORING)


# ------------------------------------------------------------------ the app


def build_demo(scorer: Any = None) -> gr.Blocks:
    """The whole app, queue configured. `scorer`: use this scorer (tests) instead of the model."""
    if scorer is not None:
        holder.set_scorer(scorer)
    ui = SimpleNamespace()
    blocks = gr.Blocks(title="Pronunciation Coach", delete_cache=CACHE_CLEANUP, analytics_enabled=gradio_analytics())
    with blocks as demo:
        gr.HTML(INTRO, elem_id="apa-intro")
        ui.history = gr.BrowserState([], storage_key="apa-history")
        with gr.Tabs():
            _practise_tab(ui)
            _teacher_tab(ui)
            with gr.Tab("API", id="api"):
                gr.Markdown(API_HELP)
        _api_endpoint(ui)
        _wire_practise(demo, ui)
        _wire_teacher(ui)
        _wire_api(ui)
    # api_open=False: the REST routes (/run, /api) would otherwise skip the queue and its limits
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=DEFAULT_CONCURRENCY, api_open=False)
    return demo


def theme() -> gr.themes.Base:
    return gr.themes.Soft(
        primary_hue="blue",
        secondary_hue="orange",
        neutral_hue="slate",
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )


def launch_kwargs(*, trust_forwarded: bool | None = None) -> dict[str, Any]:
    """Look, limits and guards for demo.launch() (Gradio 6 takes theme/css at launch).
    trust_forwarded: take client addresses from X-Forwarded-For (None: apa.config decides).
    run_history=False: Gradio's run history would keep learners' recordings in their browser and
    can fetch remote files and write to Hub buckets on the server's behalf."""
    from starlette.middleware import Middleware

    if trust_forwarded is None:
        trust_forwarded = config_trust_forwarded()
    guard = Middleware(security.ServerGuard, trust_forwarded=trust_forwarded)
    return {
        "theme": theme(),
        "css": render.CSS,
        "max_file_size": MAX_UPLOAD_BYTES,
        "footer_links": ["api", "gradio"],
        "run_history": False,
        "app_kwargs": {"middleware": [guard]},
    }
