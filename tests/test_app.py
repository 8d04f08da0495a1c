"""Tests of the Gradio app: handlers, teacher batch (zip safety, CSV escaping, per-row errors),
the /assess API through gradio_client against a live server with a fake scorer, 20 concurrent
clients, and the Spaces / CLI wiring.

The real model is never loaded: the fake scorer (tests/conftest.py) gives deterministic scores
from the text and the audio and is injected with `app.build_demo(scorer=...)` or
`webapp.scorer.set_scorer`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

import app
from apa import batch, feedback, render
from apa.errors import INTERNAL_MESSAGE
from webapp import handlers, layout, tts
from webapp import scorer as holder
from apa.schema import SENTENCE_ASPECTS, Assessment

pytestmark = [  # raised inside gradio's queue with pandas 3; not ours
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

CLIP_TEXT = "WE CALL IT BEAR"
SR = 16000


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, clip) -> dict[str, Path]:
    """Recordings that must be refused, by expected error code."""
    d = tmp_path_factory.mktemp("bad")
    speech, sr = sf.read(str(clip), dtype="float32")
    files = {}
    files["no_speech"] = d / "silent.wav"
    sf.write(files["no_speech"], np.zeros(2 * SR, np.float32), SR)
    files["too_long"] = d / "long.wav"
    sf.write(files["too_long"], np.tile(speech, int(32 * sr / len(speech)) + 1), sr)
    files["corrupt"] = d / "corrupt.wav"
    files["corrupt"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    files["unsupported"] = d / "six_channels.wav"
    sf.write(files["unsupported"], np.stack([speech] * 6, axis=1), sr)
    files["empty"] = d / "empty.wav"
    files["empty"].write_bytes(b"")
    # speech cut to a sliver: refused as too short (or as no speech, if the VAD misses it)
    files["too_short"] = d / "short.wav"
    sliver = np.zeros(SR, np.float32)
    start = int(np.argmax(np.abs(speech) > 0.1 * np.abs(speech).max()))
    sliver[SR // 2 : SR // 2 + int(0.15 * sr)] = speech[start : start + int(0.15 * sr)]
    sf.write(files["too_short"], sliver, sr)
    return files


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


# ------------------------------------------------------------------------------ library


def test_sentence_library_levels_and_types():
    data = json.loads(handlers.SENTENCES_PATH.read_text(encoding="utf-8"))
    sents = data["sentences"]
    assert len(sents) >= 60
    assert {s["level"] for s in sents} == {"easy", "medium", "hard"} == set(data["levels"])
    assert {s["type"] for s in sents} >= {"digits", "phrase", "everyday"}
    texts = [s["text"] for s in sents]
    assert len(set(texts)) == len(texts)
    assert "ZERO THREE FIVE ONE" in texts and "WE CALL IT BEAR" in texts
    lib = handlers.sentence_library()
    assert all(len(v) >= 15 for v in lib.values())


def test_every_library_sentence_is_accepted_by_to_words():
    from apa.text import to_words

    for level in handlers.sentence_library().values():
        for text in level:
            assert handlers.check_text(text) == text
            assert len(to_words(text)) == len(text.split())


def test_level_picker_updates_choices():
    upd = handlers.pick_level("hard")
    assert upd["choices"] == handlers.sentence_library()["hard"]
    assert upd["value"] == handlers.sentence_library()["hard"][0]
    assert handlers.random_sentence("medium")["value"] in handlers.sentence_library()["medium"]


# ------------------------------------------------------------------------------ learner handler


def test_learner_score_renders_everything(scorer, clip, no_progress):
    out = handlers.learner_score(str(clip), "  we call  it bear ", [], progress=no_progress)
    html, tip, radar, bars, history, hist_fig, download, charts = out[:8]
    for w in CLIP_TEXT.split():
        assert f"{w}</span>" in html
    assert "apa-word--" in html and "apa-phone--" in html and 'class="apa-legend"' in html
    assert any(sym in html for sym in ("✓", "~", "✗"))
    assert radar.data[0].type == "scatterpolar" and len(bars.data) >= 1
    assert len(history) == 1 and history[0]["text"] == "we call it bear"
    assert len(hist_fig.data) == len(SENTENCE_ASPECTS)
    result = json.loads(Path(download["value"]).read_text(encoding="utf-8"))
    assert Assessment.from_dict(result).words[3].text == "BEAR"
    assert download["visible"] and charts["visible"]
    # the tip names the weakest word the scorer produced
    a = Assessment.from_dict(result)
    weakest = min(a.words, key=lambda w: w.accuracy)
    if weakest.accuracy < feedback.TIP_WORD_BELOW:
        assert f"<b>“{weakest.text}”</b>" in tip


def test_learner_score_appends_to_history(scorer, clip, no_progress):
    hist = [{"time": "t", "text": "x", **{k: 5.0 for k in SENTENCE_ASPECTS}}]
    out = handlers.learner_score(str(clip), CLIP_TEXT, hist, progress=no_progress)
    assert len(out[4]) == 2 and out[4][0]["text"] == "x"
    assert [len(tr.y) for tr in out[5].data] == [2] * 5


@pytest.mark.parametrize("code", ["no_speech", "too_long", "corrupt", "unsupported", "empty", "too_short"])
def test_learner_bad_audio_gives_clear_error(scorer, bad_files, code, no_progress):
    with pytest.raises(gr.Error) as ei:
        handlers.learner_score(str(bad_files[code]), CLIP_TEXT, [], progress=no_progress)
    msg = ei.value.message
    assert len(msg) > 20 and "Traceback" not in msg
    assert scorer.calls == 0


def test_learner_no_recording(scorer, no_progress):
    with pytest.raises(gr.Error, match="(?i)record"):
        handlers.learner_score(None, CLIP_TEXT, [], progress=no_progress)


@pytest.mark.parametrize("text", ["", "   ", None])
def test_learner_empty_text(scorer, clip, text, no_progress):
    with pytest.raises(gr.Error, match="(?i)sentence") as ei:
        handlers.learner_score(str(clip), text, [], progress=no_progress)
    assert ei.value.title == "Check the sentence"


def test_learner_non_english_text(scorer, clip, no_progress):
    with pytest.raises(gr.Error) as ei:
        handlers.learner_score(str(clip), "我们叫它熊", [], progress=no_progress)
    assert ei.value.message and scorer.calls == 0


def test_learner_internal_error_is_generic(monkeypatch, clip, fake_scorer_class, no_progress):
    class Broken(fake_scorer_class):
        def assess(self, audio, text):
            raise RuntimeError("CUDA out of memory at 0xdeadbeef")

    monkeypatch.setattr(holder, "get_scorer", lambda: Broken())
    with pytest.raises(gr.Error) as ei:
        handlers.learner_score(str(clip), CLIP_TEXT, [], progress=no_progress)
    assert ei.value.message == INTERNAL_MESSAGE and "deadbeef" not in ei.value.message


def test_errors_never_clear_inputs(fake_scorer_class):
    """The scoring events' outputs never include the textbox or the recording, so an error
    (or a result) cannot clear what the learner typed or recorded."""
    demo = app.build_demo(scorer=fake_scorer_class())
    cfg = demo.get_config_file()
    comps = {c["id"]: c for c in cfg["components"]}
    ids = {c["props"].get("elem_id"): c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id")}
    protected = {ids["apa-text"], ids["apa-recording"]}
    scoring = [d for d in cfg["dependencies"] if ids["apa-recording"] in d["inputs"]]
    triggers = {t[1] for d in scoring for t in d["targets"]}
    assert {"stop_recording", "upload", "click"} <= triggers
    assert "change" not in triggers  # no race with a half-finished recording
    # only the sentence picker and the drills write the textbox (on purpose); nothing that can fail does
    writers = [d for d in cfg["dependencies"] if protected & set(d["outputs"])]
    loaders = {ids["apa-pick"], ids["apa-drills"]}
    assert all(set(d["outputs"]) == {ids["apa-text"]} and not set(d["inputs"]) - loaders for d in writers)
    for d in scoring + [d for d in cfg["dependencies"] if ids["apa-text"] in d["inputs"]]:
        assert not protected & set(d["outputs"]), comps[d["outputs"][0]]


def test_queue_limits_are_set(fake_scorer_class):
    demo = app.build_demo(scorer=fake_scorer_class())
    assert demo._queue.max_size == layout.QUEUE_MAX_SIZE
    fns = [f for f in demo.fns.values() if f.name in ("learner_score", "api_assess", "teacher_score")]
    assert len(fns) == 5
    assert all(f.concurrency_id == "scorer" and f.concurrency_limit == layout.SCORER_CONCURRENCY for f in fns)


# ------------------------------------------------------------------------------ TTS


def test_hear_button_hidden_without_espeak(monkeypatch, fake_scorer_class):
    monkeypatch.setattr(tts, "tts_binary", lambda: None)
    demo = app.build_demo(scorer=fake_scorer_class())
    cfg = demo.get_config_file()
    hear = next(c for c in cfg["components"] if c["props"].get("elem_id") == "apa-hear")
    assert hear["props"]["visible"] is False
    with pytest.raises(gr.Error):
        tts.reference_audio("HELLO")


def test_reference_audio_with_espeak():
    if tts.tts_binary() is None:
        pytest.skip("espeak-ng is not installed")
    upd = tts.reference_audio("WE CALL IT BEAR")
    assert upd["visible"] is True
    x, sr = sf.read(upd["value"])
    assert sr > 0 and len(x) / sr > 0.5
    with pytest.raises(gr.Error):
        tts.reference_audio("  ")


def test_reference_audio_text_is_not_an_option():
    if tts.tts_binary() is None:
        pytest.skip("espeak-ng is not installed")
    path = tts.reference_audio("--help -w /tmp/pwned.wav")["value"]
    assert Path(path).stat().st_size > 1000
    assert not Path("/tmp/pwned.wav").exists()


# ------------------------------------------------------------------------------ teacher tab (batch through the handler)


def test_batch_with_one_bad_file_gives_row_error(scorer, tmp_path, clip, bad_files, no_progress, make_zip):
    good = tmp_path / "good.opus"
    good.write_bytes(clip.read_bytes())
    z = make_zip(tmp_path / "more.zip", {"class1/000010011.opus": clip.read_bytes()})
    refs = tmp_path / "refs.csv"
    refs.write_text(
        "file,text\n"
        "good.opus,WE CALL IT BEAR\n"
        "corrupt.wav,WE CALL IT BEAR\n"
        "class1/000010011.opus,WE CALL IT BEAR\n"
        "000010011,WE CALL IT BEAR\n"  # same file again, by its stem
        "missing.wav,HELLO\n"
        "=HYPERLINK(1).wav,HELLO\n",
        encoding="utf-8",
    )
    tmp_before = set(Path(tempfile.gettempdir()).glob("apa-batch-*"))
    table, download, summary = handlers.teacher_score(
        [str(good), str(bad_files["corrupt"]), str(z)], str(refs), progress=no_progress
    )
    rows = [dict(zip(batch.COLUMNS, r)) for r in table["value"]]
    assert [r["file"] for r in rows] == [
        "good.opus",
        "corrupt.wav",
        "class1/000010011.opus",
        "000010011",
        "missing.wav",
        "=HYPERLINK(1).wav",
    ]
    ok = [r for r in rows if not r["error"]]
    assert [r["file"] for r in ok] == ["good.opus", "class1/000010011.opus"]
    assert all(0 <= r[k] <= 10 for r in ok for k in SENTENCE_ASPECTS)
    assert "damaged" in rows[1]["error"]
    assert rows[3]["error"] == "This file is listed twice in the CSV."
    assert rows[4]["error"].startswith("File not found")
    assert scorer.calls == 2
    assert summary.startswith("**2 of 6**")
    # the CSV download has the same rows, with the formula-like file name neutralised
    parsed = list(csv.reader(io.StringIO(Path(download["value"]).read_text(encoding="utf-8"))))
    assert parsed[0] == batch.COLUMNS and len(parsed) == 7
    assert parsed[6][0] == "'=HYPERLINK(1).wav"
    for line in parsed[1:]:
        assert not any(c[:1] in "=+-@" for c in line if c)
    # the request's temporary folders are gone
    assert set(Path(tempfile.gettempdir()).glob("apa-batch-*")) <= tmp_before


def test_batch_csv_inside_zip_and_unlisted_files(scorer, tmp_path, clip, make_zip):
    z = make_zip(
        tmp_path / "class.zip",
        {"a.opus": clip.read_bytes(), "b.opus": clip.read_bytes(), "refs.csv": b"a.opus,WE CALL IT BEAR\n"},
    )
    rows = batch.run_batch([z], None, handlers.assess_file)
    assert [(r.file, bool(r.error)) for r in rows] == [("a.opus", False), ("b.opus", True)]
    assert "Not listed" in rows[1].error


def test_batch_request_errors(scorer, tmp_path, clip, no_progress, make_zip):
    with pytest.raises(gr.Error, match="upload"):
        handlers.teacher_score([], None, progress=no_progress)
    with pytest.raises(gr.Error, match="CSV"):
        handlers.teacher_score([str(clip)], None, progress=no_progress)
    evil = make_zip(tmp_path / "evil.zip", {"../x.wav": b"1"})
    refs = tmp_path / "r.csv"
    refs.write_text("x.wav,HELLO\n")
    table, _, _ = handlers.teacher_score([str(evil)], str(refs), progress=no_progress)
    errors = {r[0]: r[-1] for r in table["value"]}
    assert "unsafe path" in errors["evil.zip"]
    assert errors["x.wav"].startswith("File not found")


# ------------------------------------------------------------------------------ wiring


def _exec_app_copy(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(app.__file__))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_import_loads_no_model(monkeypatch, fresh_holder):
    import apa.scorer

    def boom(*a, **k):
        raise AssertionError("the model was loaded at import")

    monkeypatch.setattr(apa.scorer, "load_scorer", boom)
    monkeypatch.delenv("SPACE_ID", raising=False)
    mod = _exec_app_copy("app_plain_import")
    assert holder.current() is None and isinstance(mod.demo, gr.Blocks)


def test_get_scorer_loads_once_with_env(monkeypatch, fresh_holder, fake_scorer_class):
    calls = []

    def fake_load(model=None, adapter=None, *, device=None):
        calls.append((model, adapter))
        return fake_scorer_class()

    import apa.scorer

    monkeypatch.setattr(apa.scorer, "load_scorer", fake_load)
    monkeypatch.setenv("APA_MODEL", "env-model")
    monkeypatch.setenv("APA_ADAPTER", "env-adapter")
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(lambda _: holder.get_scorer(), range(8)))
    assert calls == [("env-model", "env-adapter")]
    assert all(g is got[0] for g in got)


def test_spaces_gpu_is_applied_when_available(monkeypatch):
    seen = {}

    def GPU(duration=None):
        def deco(fn):
            seen["fn"], seen["duration"] = fn, duration
            fn._on_zero_gpu = True
            return fn

        return deco

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))

    def f(audio, text):
        return text

    assert holder.on_gpu(f)._on_zero_gpu and seen["duration"] == holder.GPU_DURATION_S
    monkeypatch.setitem(sys.modules, "spaces", None)  # import fails -> unchanged
    g = lambda a, t: t
    assert holder.on_gpu(g) is g


def test_cli_flags_and_launch(monkeypatch, fresh_holder):
    seen = {}
    monkeypatch.setattr(holder, "get_scorer", lambda: seen.setdefault("loaded", True))
    monkeypatch.setattr(holder, "warm_up", lambda: seen.setdefault("warmed", True))
    monkeypatch.setattr(app.demo, "launch", lambda **kw: seen.update(kw))
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.setenv("APA_ADAPTER", "from-env")
    app.main(["--port", "7999", "--model", "m1"])
    assert seen["server_name"] == "127.0.0.1" and seen["server_port"] == 7999
    assert holder.configured() == {"model": "m1", "adapter": None}  # the adapter: apa.config, from env
    from apa.config import resolve_model

    assert resolve_model(**holder.configured()).adapter == "from-env"
    assert seen["loaded"] and seen["warmed"] and "share" not in seen and "allowed_paths" not in seen
    assert seen["css"] == render.CSS


def test_space_preloads_model_at_import(monkeypatch, fresh_holder, fake_scorer_class):
    import apa.scorer

    loaded = []
    monkeypatch.setattr(apa.scorer, "load_scorer", lambda m=None, a=None, **k: loaded.append(1) or fake_scorer_class())
    monkeypatch.setenv("SPACE_ID", "someone/pronunciation-coach")
    mod = _exec_app_copy("app_on_space")
    assert loaded == [1] and isinstance(holder.current(), fake_scorer_class)


# ------------------------------------------------------------------------------ live server + gradio_client


def test_api_assess_full_result(client, clip):
    t0 = time.perf_counter()
    from gradio_client import handle_file

    res = client.predict(handle_file(str(clip)), CLIP_TEXT, api_name="/assess")
    elapsed = time.perf_counter() - t0
    a = Assessment.from_dict(res)
    assert a.text == CLIP_TEXT and [w.text for w in a.words] == CLIP_TEXT.split()
    assert all(0 <= getattr(a.sentence, k) <= 10 for k in SENTENCE_ASPECTS)
    assert all(w.phones and all(0 <= p.score <= 2 for p in w.phones) for w in a.words)
    assert all("ipa" in p and "error_type" in w for w in res["words"] for p in w["phones"])
    assert res["model"] == "fake-scorer" and res["extra"]["n_samples"] > SR
    assert elapsed < 30


def test_api_is_the_only_public_endpoint(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/assess"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/assess"]["parameters"]]
    assert params == ["audio", "text", "on_mismatch"]
    optional = {p["parameter_name"]: p.get("parameter_has_default") for p in api["named_endpoints"]["/assess"]["parameters"]}
    assert optional["on_mismatch"] and not optional["audio"]  # old two-argument calls still work


@pytest.mark.parametrize(
    ("kind", "codes"),
    [
        ("no_speech", {"no_speech"}),
        ("too_long", {"too_long"}),
        ("corrupt", {"corrupt"}),
        ("unsupported", {"unsupported"}),
        ("empty", {"empty"}),
        ("too_short", {"too_short"}),
    ],
)
def test_api_bad_audio_structured_error(client, bad_files, kind, codes):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as ei:
        client.predict(handle_file(str(bad_files[kind])), CLIP_TEXT, api_name="/assess")
    assert ei.value.title in codes, (ei.value.title, ei.value.message)
    assert len(ei.value.message) > 20


def test_api_bad_text_structured_error(client, clip):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as ei:
        client.predict(handle_file(str(clip)), "", api_name="/assess")
    assert ei.value.title == "empty_text" and "sentence" in ei.value.message
    with pytest.raises(AppError) as ei:
        client.predict(handle_file(str(clip)), "我们叫它熊", api_name="/assess")
    assert ei.value.title not in ("internal_error", "Error") and ei.value.message


def test_api_missing_audio(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as ei:
        client.predict(None, CLIP_TEXT, api_name="/assess")
    assert ei.value.title == "empty"


def test_twenty_concurrent_clients(server, clip, client_as):
    from gradio_client import handle_file

    url, fake = server
    texts = [t for level in handlers.sentence_library().values() for t in level][:20]
    calls_before = fake.calls

    def one(text):
        c = client_as(url, texts.index(text))
        return text, c.predict(handle_file(str(clip)), text, api_name="/assess")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(20) as ex:
        results = list(ex.map(one, texts))
    elapsed = time.perf_counter() - t0
    print(f"\n20 concurrent clients answered in {elapsed:.1f} s")
    assert len(results) == 20
    for text, res in results:
        assert res["text"] == text
        assert [w["text"] for w in res["words"]] == text.split()
    assert fake.calls - calls_before == 20
    assert elapsed < 60


