"""Browser test of the feedback a learner acts on (issue 14): word playback, the intonation plot,
"heard instead" labels, drills; and the page without an alignment. Headless Debian Chromium
(Playwright, never `playwright install`), as tests/test_browser.py.

The scorer is a fake that aligns for real (apa.align + apa.annotate), and scores each phone from
what was heard: 2 when the phone asked for is the most likely heard, else 0.3. So on a reading
with one phone changed (apa.minimal_pairs) the changed phone is low and labelled "heard /l/".
Screenshots go to tests/output/.
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
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (the mispronounced sample is synthesised)", allow_module_level=True)

OUTPUT = Path(__file__).resolve().parent / "output"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--autoplay-policy=no-user-gesture-required"]
TIMEOUT_MS = 60_000
PAIR_TEXT = "The road is long"  # "road" read as "load" (R -> L)
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


class HearingScorer:
    """Scores from the real alignment (see the module doc); `align=False`: pretends no alignment."""

    name = "hearing-fake"

    def __init__(self, align: bool = True):
        self.align = align

    def assess(self, audio, text):
        from apa.align import align
        from apa.annotate import annotate
        from apa.schema import Assessment, Phone, Sentence, Word
        from apa.text import to_words

        words = to_words(text)
        ref = tuple((w.text, w.phones) for w in words)
        al = align(audio, ref) if self.align else None
        bare = Assessment(text, Sentence(7, 7, 7, 10, 7),
                          tuple(Word(w.text, 8.0, 10.0, 8.0, tuple(Phone(p, 2.0) for p in w.phones)) for w in words))
        a = annotate(bare, al)
        scored = []
        for w in a.words:
            phones = tuple(
                Phone(p.phone, 2.0 if (not p.heard or p.heard[0][0] == p.phone.rstrip("012")) else 0.3,
                      p.start, p.end, p.heard)
                for p in w.phones
            )
            acc = 9.0 if all(p.score == 2.0 for p in phones) else 4.0
            scored.append(Word(w.text, acc, 10.0, acc, phones, w.start, w.end))
        return Assessment(a.text, a.sentence, tuple(scored), model=self.name, extra=a.extra)

    def assess_batch(self, items):
        return [self.assess(a, t) for a, t in items]


@pytest.fixture(scope="module")
def mispronounced(tmp_path_factory) -> Path:
    """"The road is long" with the R of road read as L (espeak-ng), as a 16 kHz WAV."""
    import soundfile as sf

    from apa.minimal_pairs import PAIRS, synthesize_pair

    pair = next(p for p in PAIRS if p.text == PAIR_TEXT and p.replacement == "L")
    d = tmp_path_factory.mktemp("pair")
    sp = synthesize_pair(pair, d)
    path = d / "road_as_load.wav"
    pad = np.zeros(4000, np.float32)
    sf.write(path, np.concatenate([pad, sp.altered, pad]), 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _page(browser, url):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(url, wait_until="networkidle")
    return ctx, pg


def _upload(page, path: Path) -> None:
    page.locator("#apa-recording button[aria-label='Upload file']").click()
    page.locator("#apa-recording input[type=file]").set_input_files(str(path))


def test_word_playback_rhythm_heard_instead_and_drills(browser, launch_app, mispronounced):
    OUTPUT.mkdir(exist_ok=True)
    with launch_app(HearingScorer()) as (url, _demo):
        ctx, page = _page(browser, url)
        try:
            page.locator("#apa-text textarea").fill(PAIR_TEXT.upper())
            _upload(page, mispronounced)
            words = page.locator("#apa-result .apa-word")
            words.nth(3).wait_for()

            # heard instead: the R of ROAD was heard as another sound, labelled under its chip
            road = words.nth(1)
            label = road.locator(".apa-heard")
            assert label.count() >= 1, road.inner_html()
            assert label.first.inner_text().startswith("heard /")
            assert "heard /l/" in road.inner_html()  # R -> L is what was changed
            assert page.locator("#apa-no-alignment").count() == 0

            # word click plays the learner's own word; the button plays the reference word
            page.evaluate("""() => { window.__played = [];
                document.querySelectorAll('#apa-result audio').forEach(a =>
                  a.addEventListener('playing', () => window.__played.push(a.className))); }""")
            assert road.get_attribute("data-clip") == "own"
            assert float(road.get_attribute("data-end")) > float(road.get_attribute("data-start"))
            road.locator(".apa-word-text").click()
            page.wait_for_function("window.__played.includes('apa-own-clip')")
            dur = page.evaluate("document.querySelectorAll('#apa-result .apa-word')[1].querySelector('audio.apa-own-clip').duration")
            assert 0.1 < dur < 2.0  # one word, not the sentence
            road.locator(".apa-say").click()
            page.wait_for_function("window.__played.includes('apa-ref-clip')")

            # the intonation plot: pitch and loudness, for the learner and the reference
            page.locator("#apa-rhythm .js-plotly-plot").wait_for()
            names = page.evaluate("document.querySelector('#apa-rhythm .js-plotly-plot').data.map(t => t.name)")
            assert names.count("Pitch (Hz)") == 2 and names.count("Loudness (dB)") == 2
            assert "words per minute" in page.locator("#apa-rhythm-note").inner_text()
            time.sleep(0.5)
            page.screenshot(path=str(OUTPUT / "browser_feedback.png"), full_page=True)
            page.locator("#apa-result").screenshot(path=str(OUTPUT / "browser_feedback_words.png"))
            page.locator("#apa-rhythm").screenshot(path=str(OUTPUT / "browser_rhythm.png"))

            # drills: one click loads a drill into the sentence box
            drills = page.locator("#apa-drills label")
            drills.first.wait_for()
            texts = drills.all_inner_texts()
            assert any("heard as" in t for t in texts) and any("practise" in t for t in texts), texts
            sentence_drill = next(i for i, t in enumerate(texts) if "practise" in t)
            drills.nth(sentence_drill).click()
            page.wait_for_function(
                "document.querySelector('#apa-text textarea').value !== 'THE ROAD IS LONG'"
            )
            loaded = page.locator("#apa-text textarea").input_value()
            assert loaded and loaded.upper() == loaded and loaded != PAIR_TEXT.upper()
            page.locator("#apa-drills-box").screenshot(path=str(OUTPUT / "browser_drills.png"))
        finally:
            ctx.close()


def test_without_alignment_the_page_says_so(browser, launch_app, mispronounced):
    with launch_app(HearingScorer(align=False)) as (url, _demo):
        ctx, page = _page(browser, url)
        try:
            page.locator("#apa-text textarea").fill(PAIR_TEXT.upper())
            _upload(page, mispronounced)
            page.locator("#apa-result .apa-word").nth(3).wait_for()
            assert page.locator("#apa-no-alignment").is_visible()
            assert page.locator("#apa-result .apa-heard").count() == 0
            assert page.locator("#apa-result .apa-word[data-clip]").count() == 0
            assert page.locator("#apa-result .apa-word[data-start]").count() == 0
            page.locator("#apa-rhythm .js-plotly-plot").wait_for()  # pitch still shown, no word marks
            assert "not available" in page.locator("#apa-rhythm-note").inner_text()
            assert page.locator("[data-testid='toast-body']").count() == 0  # never an error
            page.screenshot(path=str(OUTPUT / "browser_no_alignment.png"), full_page=True)
        finally:
            ctx.close()
