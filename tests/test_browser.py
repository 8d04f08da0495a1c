"""Browser test: the real page in headless Chromium (Playwright), with the fake scorer.

Needs `pip install playwright` (the Python package only: never `playwright install`) and a
system Chromium at /usr/bin/chromium (Debian: `apt-get install chromium`), or the path in
APA_CHROMIUM. Skipped with the reason when either is missing.

Screenshots go to tests/output/ (git-ignored).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from apa.config import browser_path

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = browser_path() or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set APA_CHROMIUM)", allow_module_level=True)


from webapp import tts

CLIP_TEXT = "WE CALL IT BEAR"  # what the `clip` fixture says (the `server` fixture: tests/conftest.py)

OUTPUT = Path(__file__).resolve().parent / "output"
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 45_000


@pytest.fixture(scope="module")
def mic_wav(clip, tmp_path_factory) -> Path:
    """The clip as 48 kHz 16-bit WAV with some silence around it, for Chromium's fake microphone."""
    import soundfile as sf
    import soxr

    x, sr = sf.read(str(clip), dtype="float32")
    y = soxr.resample(x, sr, 48000).astype(np.float32)
    pad = np.zeros(24000, np.float32)
    path = tmp_path_factory.mktemp("mic") / "clip48.wav"
    sf.write(path, np.concatenate([pad, y, pad, pad]), 48000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser(mic_wav):
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=ARGS
            + [
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic_wav}",
            ],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["microphone"])
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(server[0], wait_until="networkidle")
    yield pg
    ctx.close()


def _upload(page, path: Path) -> None:
    page.locator("#apa-recording button[aria-label='Upload file']").click()
    page.locator("#apa-recording input[type=file]").set_input_files(str(path))


def _plot_traces(page, elem_id: str) -> int:
    return page.evaluate(f"document.querySelector('#{elem_id} .js-plotly-plot').data.length")


def test_upload_shows_colour_coded_result_and_charts(page, clip, server):
    OUTPUT.mkdir(exist_ok=True)
    page.locator("#apa-text textarea").fill(CLIP_TEXT)
    t0 = time.perf_counter()
    _upload(page, clip)
    words = page.locator("#apa-result .apa-word")
    words.nth(3).wait_for()
    elapsed = time.perf_counter() - t0

    # colour-coded words with symbols, phones (ARPAbet + IPA), legend, tip
    assert words.count() == 4
    texts = [t.strip() for t in page.locator("#apa-result .apa-sentence .apa-word-text").all_inner_texts()]
    assert [t[1:].strip() for t in texts] == CLIP_TEXT.split()
    assert all(t[0] in "✓~✗" for t in texts)
    classes = " ".join(w.get_attribute("class") for w in words.all())
    assert "apa-word--" in classes
    assert page.locator("#apa-result .apa-phone").count() >= 9
    assert page.locator("#apa-result .apa-phone-ipa").first.inner_text().strip()
    assert page.locator("#apa-result .apa-legend").is_visible()
    assert page.locator("#apa-tip-box .apa-tip").is_visible()
    # underline style + colour really applied from the CSS
    deco = page.evaluate("getComputedStyle(document.querySelector('#apa-result .apa-word-text')).textDecorationStyle")
    assert deco in ("solid", "wavy", "double")

    # charts: radar (1 trace), word bars (1 trace per error type), history (5 lines)
    for elem in ("apa-radar", "apa-bars", "apa-history-plot"):
        page.locator(f"#{elem} .js-plotly-plot").wait_for()
    assert page.evaluate("document.querySelector('#apa-radar .js-plotly-plot').data[0].type") == "scatterpolar"
    assert _plot_traces(page, "apa-bars") >= 1
    page.wait_for_function("document.querySelector('#apa-history-plot .js-plotly-plot').data[0].x.length === 1")
    assert _plot_traces(page, "apa-history-plot") == 5
    assert page.locator("#apa-download").is_visible()

    time.sleep(0.5)  # let plotly finish drawing
    page.screenshot(path=str(OUTPUT / "browser_result.png"), full_page=True)
    page.locator("#apa-result").screenshot(path=str(OUTPUT / "browser_result_words.png"))
    print(f"\nupload -> result shown in {elapsed:.1f} s")

    # history survives a reload (gr.BrowserState, kept in the browser)
    page.reload(wait_until="networkidle")
    page.wait_for_function("document.querySelector('#apa-history-plot .js-plotly-plot')?.data?.[0]?.x?.length === 1")


def test_bad_upload_shows_message_and_keeps_input(page, tmp_path):
    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000, np.float32), 16000)
    page.locator("#apa-text textarea").fill("MY OWN SENTENCE")
    _upload(page, silent)
    toast = page.locator("[data-testid='toast-body']").first
    toast.wait_for()
    assert "completely silent" in toast.inner_text()
    assert page.locator("#apa-text textarea").input_value() == "MY OWN SENTENCE"
    assert page.locator("#apa-recording audio, #apa-recording [data-testid='waveform-Your recording']").count() >= 1
    assert page.locator("#apa-result .apa-word").count() == 0  # nothing scored
    page.screenshot(path=str(OUTPUT / "browser_error.png"))


def test_microphone_recording_scores_on_stop(page, server):
    """Chromium's fake microphone plays the clip; scoring starts from the stop_recording event."""
    fake = server[1]
    calls = fake.calls
    page.locator("#apa-text textarea").fill(CLIP_TEXT)
    page.get_by_role("button", name="Record", exact=True).click()
    time.sleep(3.0)
    page.locator("#apa-recording button.stop-button").first.click()
    page.locator("#apa-result .apa-word").nth(3).wait_for()
    assert fake.calls == calls + 1


def test_teacher_tab_batch(page, clip, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all" * 100)
    refs = tmp_path / "refs.csv"
    refs.write_text(f"file,text\n{clip.name},{CLIP_TEXT}\nbroken.wav,{CLIP_TEXT}\n", encoding="utf-8")
    page.get_by_role("tab", name="Teacher").click()
    page.locator("#apa-t-files input[type=file]").set_input_files([str(clip), str(bad)])
    page.locator("#apa-t-csv input[type=file]").set_input_files(str(refs))
    page.wait_for_timeout(500)
    page.locator("#apa-t-run").click()
    table = page.locator("#apa-t-table")
    table.get_by_text("broken.wav").first.wait_for()
    assert table.get_by_text(clip.name).count() >= 1
    assert table.get_by_text("damaged", exact=False).count() >= 1
    assert page.locator("#apa-t-download").is_visible()
    page.screenshot(path=str(OUTPUT / "browser_teacher.png"), full_page=True)


def test_hear_it_plays_the_reference(page):
    if tts.tts_binary() is None:
        pytest.skip("espeak-ng is not installed: the 'Hear it' button is hidden")
    assert not page.locator("#apa-ref-audio").is_visible()
    page.locator("#apa-hear").click()
    page.locator("#apa-ref-audio audio").first.wait_for(state="attached")
    assert page.locator("#apa-ref-audio").is_visible()


# ------------------------------------------------------------------------------ what was really said
class _HeardTranscriber:
    """A fake recogniser that always hears `text` (apa.reading runs it beside the fake scorer)."""

    name = "fake-transcriber"

    def __init__(self, text: str):
        self.text = text

    def transcribe(self, audio):
        from apa.transcribe import HeardWord, Transcript

        words = tuple(HeardWord(w, 0.4 * i, 0.4 * i + 0.35, 0.9) for i, w in enumerate(self.text.split()))
        return Transcript(self.text, words, 0.01, -0.3, "fake")


@pytest.fixture()
def heard_as():
    from webapp import scorer as holder

    yield lambda text: holder.set_transcriber(_HeardTranscriber(text))
    holder.reset_transcriber()


def test_insertion_and_omission_are_shown(page, clip, heard_as):
    OUTPUT.mkdir(exist_ok=True)
    heard_as("we really call bear")
    page.locator("#apa-text textarea").fill(CLIP_TEXT)
    _upload(page, clip)
    chip = page.locator("#apa-result .apa-inserted")
    chip.first.wait_for()
    assert chip.count() == 1 and "REALLY" in chip.first.inner_text()
    # the chip sits between WE and CALL
    order = page.evaluate("[...document.querySelectorAll('#apa-result .apa-sentence > *')].map(e => e.className)")
    assert "apa-inserted" in order[1] and "apa-word" in order[0] and "apa-word" in order[2]
    skipped = page.locator("#apa-result .apa-skipped .apa-word-text")
    assert skipped.count() == 1 and "IT" in skipped.inner_text()
    deco = page.evaluate("getComputedStyle(document.querySelector('#apa-result .apa-skipped .apa-word-text')).textDecorationLine")
    assert "line-through" in deco
    assert "we really call bear" in page.locator("#apa-transcript").inner_text()
    page.locator("#apa-result").screenshot(path=str(OUTPUT / "browser_insertion.png"))


def test_free_speaking_mode(page, clip, heard_as):
    OUTPUT.mkdir(exist_ok=True)
    heard_as("I like green apples")
    page.get_by_label("Speak freely (no sentence: we score what we hear)").check()
    _upload(page, clip)
    page.locator("#apa-transcript").wait_for()
    assert "Free speech" in page.locator("#apa-transcript").inner_text()
    texts = [t.strip()[1:].strip() for t in page.locator("#apa-result .apa-sentence .apa-word-text").all_inner_texts()]
    assert texts == ["I", "LIKE", "GREEN", "APPLES"]
    page.screenshot(path=str(OUTPUT / "browser_free_speech.png"), full_page=True)


def test_mismatch_message_then_score_as_free_speech(page, clip, heard_as):
    heard_as("the weather is lovely in spring today")
    page.locator("#apa-text textarea").fill(CLIP_TEXT)
    _upload(page, clip)
    toast = page.locator("[data-testid='toast-body']").first
    toast.wait_for()
    assert "does not seem to be the sentence" in toast.inner_text() and "the weather is lovely" in toast.inner_text()
    page.screenshot(path=str(OUTPUT / "browser_mismatch.png"))
    page.locator("#apa-as-free").click()
    page.locator("#apa-transcript").wait_for()
    assert "Free speech" in page.locator("#apa-transcript").inner_text()
