"""What was really said: apa.miscues (alignment, repetitions, the mismatch guard), apa.reading
(miscues applied to the scores, free speech, degraded transcription) with a fake transcriber and
the fake scorer, the schema's new fields, the handlers and /assess; the real Whisper in slow tests."""

from __future__ import annotations

import numpy as np
import pytest

from apa.errors import InputError, user_error
from apa.miscues import (ACOUSTIC_FAR_BELOW, FILLER_NATS, HEARD_FITS_BY, HEARD_UNALIGNED_BELOW, Acoustic, Fit, apply_miscues,
                         does_not_match, find_miscues, phone_similarity)
from apa.reading import NOTE_NO_TRANSCRIPT, NOTE_NOTHING_HEARD, TextMismatch, assess_reading
from apa.schema import ERROR_OMISSION, Assessment, Insertion
from apa.transcribe import HeardWord, Transcript

CLIP_TEXT = "WE CALL IT BEAR"


def heard(text: str, probability: float = 0.9) -> Transcript:
    """A transcript of `text`, one word every 0.4 s."""
    words = tuple(HeardWord(w, round(0.4 * i, 2), round(0.4 * i + 0.35, 2), probability) for i, w in enumerate(text.split()))
    return Transcript(text=text, words=words, no_speech_prob=0.01, avg_logprob=-0.3, model="fake")


class FakeTranscriber:
    name = "fake-transcriber"

    def __init__(self, text: str = CLIP_TEXT, fail: bool = False):
        self.text, self.fail, self.calls = text, fail, 0

    def transcribe(self, audio):
        self.calls += 1
        if self.fail:
            raise RuntimeError("recogniser crashed")
        return heard(self.text) if self.text else Transcript(text="", no_speech_prob=0.95, avg_logprob=-1.5)


AUDIO = (0.1 * np.sin(np.arange(32000) / 5)).astype(np.float32)


# ------------------------------------------------------------------------------ apa.miscues
def test_omission_insertion_and_times():
    m = find_miscues(CLIP_TEXT.split(), heard("we really call bear").words)
    assert m.omitted == (2,)  # IT not said
    assert [(i.text, i.position, i.repetition) for i in m.insertions] == [("REALLY", 1, False)]
    assert m.insertions[0].start == pytest.approx(0.4) and m.insertions[0].end == pytest.approx(0.75)
    assert not m.mismatch


def test_repetitions_of_a_word_and_of_a_phrase():
    m = find_miscues("I LIKE APPLES".split(), ["I", "like", "like", "apples"])
    assert [(i.text, i.position, i.repetition) for i in m.insertions] == [("LIKE", 2, True)]
    m = find_miscues("I LIKE GREEN APPLES".split(), "I like green I like green apples".split())
    assert len(m.insertions) == 3 and all(i.repetition for i in m.insertions)
    assert m.omitted == ()


def test_near_spellings_numbers_and_split_words_count_as_said():
    m = find_miscues("MARK IS GOING TO SEE ELEPHANT".split(), ["Mark", "is", "going", "to", "see", "elephants."])
    assert m.omitted == () and m.insertions == () and m.matched == 6
    m = find_miscues("I PLAY FOOTBALL".split(), ["I", "play", "foot", "ball"])
    assert m.omitted == () and m.insertions == ()
    m = find_miscues("TWO SIX FOUR EIGHT".split(), ["2,", "6,", "4,", "8"])  # digits are normalised
    assert m.matched == 4
    # short words are never taken for each other
    assert find_miscues(["THE"], ["they"]).matched == 0


def test_a_misheard_word_is_said_not_omitted():
    m = find_miscues(CLIP_TEXT.split(), ["we", "cold", "it", "bear"])
    assert m.omitted == () and m.insertions == () and m.matched == 3


def test_mismatch_guard():
    ref = "WE CALL IT BEAR".split()
    assert find_miscues(ref, heard("the weather is lovely in spring today").words).mismatch
    assert not find_miscues(ref, heard("we call it bear").words).mismatch
    assert not find_miscues(ref, []).mismatch  # nothing heard is not "another sentence"
    # a misheard reading of the sentence (phones alike) is not another sentence
    assert phone_similarity(ref, ["wee", "coal", "eat", "bare"]) > 0.5
    assert not find_miscues(ref, heard("wee coal eat bare").words).mismatch
    # an unsure transcript does not trigger it
    assert not find_miscues(ref, heard("the weather is lovely in spring today", probability=0.1).words).mismatch


POOR = ACOUSTIC_FAR_BELOW + 1.0  # nats: a poor fit of the text, not poor enough on its own
NO_MATCH = ACOUSTIC_FAR_BELOW - 1.0  # nats: the text does not fit the recording at all
BY = abs(HEARD_FITS_BY) + 0.5  # nats per frame: a clear difference of two fits


def fit(frame: float, coverage: float = 1.0, phone: float = POOR) -> Fit:
    return Fit(phone=phone, frame=frame, coverage=coverage)


def test_clip_fit_charges_the_frames_left_to_fillers():
    assert fit(-3.0).clip_fit() == pytest.approx(-3.0)
    assert fit(-3.0, 0.5).clip_fit() == pytest.approx(0.5 * -3.0 + 0.5 * FILLER_NATS)
    assert fit(-3.0, 0.5).clip_fit(-10.0) == pytest.approx(-6.5)
    assert fit(-3.0, 1.7).clip_fit() == pytest.approx(-3.0)  # coverage is a share
    assert fit(-3.0).usable and not fit(float("nan")).usable and not Fit(float("-inf"), -3.0, 1.0).usable


def test_guard_with_acoustic_evidence():
    ref = CLIP_TEXT.split()
    hallucinated = find_miscues(ref, heard("Tuesday.").words)  # Whisper wrote what was never said
    assert hallucinated.mismatch  # the transcript alone takes it for another sentence
    text = fit(-4.0)
    # the text fits the recording better than "Tuesday." does: a true reading, no guard
    assert not does_not_match(hallucinated, Acoustic(text, fit(-4.0 - BY)))
    other = find_miscues(ref, heard("the weather is lovely in spring today").words)
    # what was heard fits the recording better than the text: the guard
    assert does_not_match(other, Acoustic(text, fit(-4.0 + BY)))
    assert does_not_match(other, Acoustic(text, fit(-4.0 - HEARD_FITS_BY + 0.01)))  # just past the margin it fires
    assert not does_not_match(other, Acoustic(text, fit(-4.0 - HEARD_FITS_BY - 0.05)))
    # per frame of the whole clip: a few words heard that fit a fifth of it do not beat the text
    assert not does_not_match(hallucinated, Acoustic(text, fit(-2.0, coverage=0.2)))
    assert does_not_match(hallucinated, Acoustic(text, fit(-2.0, coverage=0.2)), filler_nats=-2.0)
    # no acoustic evidence: the transcript decides, as before
    for m in (other, hallucinated):
        assert does_not_match(m, None)
    assert not does_not_match(find_miscues(ref, heard("we call it bear").words), None)
    # the text did not align but the words heard did: another sentence; neither aligned: the transcript
    assert does_not_match(other, Acoustic(None, fit(-3.0))) and does_not_match(other, Acoustic(fit(float("nan")), fit(-3.0)))
    assert does_not_match(other, Acoustic(None, None))
    unsure = find_miscues(ref, heard("the weather is lovely in spring today", probability=0.1).words)
    assert not unsure.mismatch and does_not_match(unsure, Acoustic(None, fit(-3.0))) and not does_not_match(unsure, Acoustic(None, None))
    # the words heard did not align: the text's own fit decides
    assert does_not_match(hallucinated, Acoustic(fit(-3.0, phone=HEARD_UNALIGNED_BELOW - 0.1), None))
    assert not does_not_match(hallucinated, Acoustic(fit(-3.0, phone=HEARD_UNALIGNED_BELOW + 0.1), None))
    # a very poor fit of the text is enough with few words heard as written, however unsure the transcript
    assert not does_not_match(unsure, Acoustic(text, fit(-2.0)))
    assert does_not_match(unsure, Acoustic(fit(-4.0, phone=NO_MATCH), fit(-6.0)))
    # but never when the words were heard, nor when nothing was heard
    said = find_miscues(ref, heard("we call it bear").words)
    assert not does_not_match(said, Acoustic(fit(-6.0, phone=NO_MATCH), fit(-1.0)))
    assert not does_not_match(said, Acoustic(None, fit(-1.0)))
    assert not does_not_match(find_miscues(ref, []), Acoustic(fit(-6.0, phone=NO_MATCH), None))


def test_apply_miscues_marks_words_and_completeness(make_assessment):
    a = make_assessment(completeness=9.0)
    m = find_miscues([w.text for w in a.words], ["um", "we", "call", "bear"])
    out = apply_miscues(a, m)
    assert [w.omitted for w in out.words] == [False, False, True, False]
    assert out.words[2].error_type == ERROR_OMISSION and out.words[2].accuracy == a.words[2].accuracy
    assert out.sentence.completeness == pytest.approx(7.5)  # 3 of 4 said, below the model's 9
    assert [i.text for i in out.insertions] == ["UM"]
    with pytest.raises(ValueError):
        apply_miscues(a, find_miscues(["OTHER"], ["other"]))


# ------------------------------------------------------------------------------ schema
def test_schema_round_trip_and_azure(make_assessment):
    a = make_assessment()
    m = find_miscues([w.text for w in a.words], heard("we really call bear").words)
    out = apply_miscues(a, m)
    back = Assessment.from_json(out.to_json())
    assert back.insertions == out.insertions and [w.omitted for w in back.words] == [w.omitted for w in out.words]
    d = out.to_dict()
    assert d["words"][2]["error_type"] == "omission" and d["insertions"][0]["text"] == "REALLY"
    az = out.to_azure()["Words"]
    assert [w["Word"] for w in az] == ["WE", "really", "CALL", "IT", "BEAR"]
    assert az[1]["PronunciationAssessment"]["ErrorType"] == "Insertion"
    assert az[1]["Offset"] == 4_000_000 and az[1]["Duration"] == 3_500_000
    assert az[3]["PronunciationAssessment"]["ErrorType"] == "Omission"
    # an insertion after the last word goes last
    tail = Assessment(a.text, a.sentence, a.words, insertions=(Insertion("AGAIN", 4),)).to_azure()["Words"]
    assert tail[-1]["Word"] == "again"


# ------------------------------------------------------------------------------ apa.reading
def test_reading_with_text_applies_miscues(fake_scorer_class):
    s = fake_scorer_class()
    a = assess_reading(s, AUDIO, CLIP_TEXT, FakeTranscriber("we really call it bear"))
    assert a.heard == "we really call it bear" and not a.free_speech
    assert [i.text for i in a.insertions] == ["REALLY"] and not any(w.omitted for w in a.words)
    b = assess_reading(s, AUDIO, CLIP_TEXT, FakeTranscriber("we call bear"))
    assert [w.text for w in b.words if w.omitted] == ["IT"] and b.sentence.completeness == pytest.approx(7.5)


def test_reading_mismatch_error_and_options(fake_scorer_class):
    s = fake_scorer_class()
    other = FakeTranscriber("the weather is lovely in spring today")
    with pytest.raises(TextMismatch) as ei:
        assess_reading(s, AUDIO, CLIP_TEXT, other)
    assert user_error(ei.value)[0] == "text_mismatch"
    assert "the weather is lovely" in str(ei.value) and "free speech" in str(ei.value)
    free = assess_reading(s, AUDIO, CLIP_TEXT, other, on_mismatch="free_speech")
    assert free.free_speech and free.text == "THE WEATHER IS LOVELY IN SPRING TODAY" and free.notes
    anyway = assess_reading(s, AUDIO, CLIP_TEXT, other, on_mismatch="text")
    assert anyway.text == CLIP_TEXT and anyway.insertions == () and anyway.notes
    with pytest.raises(ValueError):
        assess_reading(s, AUDIO, CLIP_TEXT, other, on_mismatch="maybe")


def acoustic_scorer(fake_scorer_class, match: float | None):
    """The fake scorer, its results carrying `match` as the alignment's acoustic match."""
    from dataclasses import replace

    class AcousticScorer(fake_scorer_class):
        def assess(self, audio, text):
            a = super().assess(audio, text)
            return replace(a, extra={**a.extra, "acoustic_match": match})

    return AcousticScorer()


class FakeAligner:
    """`align_words` for assess_reading: fixed fits for the text and for any other words; records calls."""

    def __init__(self, text: Fit | None, other: Fit | None):
        self.text, self.other, self.calls = text, other, []

    def __call__(self, audio, words):
        self.calls.append(list(words))
        return self.text if list(words) == CLIP_TEXT.split() else self.other


def test_reading_guard_uses_the_acoustic_evidence(fake_scorer_class):
    hallucination, other = FakeTranscriber("Tuesday."), FakeTranscriber("the weather is lovely in spring today")
    s = acoustic_scorer(fake_scorer_class, POOR)
    # hallucinated transcript, the text fits the recording better than it: miscues, no guard
    worse = FakeAligner(fit(-4.0), fit(-4.0 - BY))
    a = assess_reading(s, AUDIO, CLIP_TEXT, hallucination, align_words=worse)
    assert a.text == CLIP_TEXT and a.heard == "Tuesday." and not a.free_speech
    assert worse.calls == [CLIP_TEXT.split(), ["TUESDAY"]]
    # another sentence heard, and it fits the recording better than the text: the guard
    better = FakeAligner(fit(-4.0), fit(-4.0 + BY))
    with pytest.raises(TextMismatch):
        assess_reading(s, AUDIO, CLIP_TEXT, other, align_words=better)
    free = assess_reading(s, AUDIO, CLIP_TEXT, other, on_mismatch="free_speech", align_words=better)
    assert free.free_speech and free.notes
    # an unsure transcript of another sentence, and the text does not align to the recording at all
    unsure = FakeTranscriber("the weather is lovely in spring today")
    unsure.transcribe = lambda audio: heard("the weather is lovely in spring today", probability=0.1)
    with pytest.raises(TextMismatch):
        assess_reading(s, AUDIO, CLIP_TEXT, unsure, align_words=FakeAligner(None, fit(-3.0)))
    assert assess_reading(s, AUDIO, CLIP_TEXT, unsure, align_words=FakeAligner(fit(-4.0), fit(-3.0))).text == CLIP_TEXT
    # a scorer that does not align: the transcript rule as before, the hallucination included; nothing is aligned
    unused = FakeAligner(fit(-4.0), fit(-4.0 - BY))
    with pytest.raises(TextMismatch):
        assess_reading(fake_scorer_class(), AUDIO, CLIP_TEXT, hallucination, align_words=unused)
    assert not assess_reading(fake_scorer_class(), AUDIO, CLIP_TEXT, FakeTranscriber("we call it bear"), align_words=unused).notes
    assert unused.calls == []
    # a transcript that matches: nothing more is aligned
    assess_reading(acoustic_scorer(fake_scorer_class, NO_MATCH), AUDIO, CLIP_TEXT, FakeTranscriber("we call it bear"),
                   align_words=unused)
    assert unused.calls == []


class ScoringTranscriber(FakeTranscriber):
    """A fake that also scores the reference (`transcribe_against`) with a fixed score; records the words asked."""

    def __init__(self, text: str, pmi: float | None, scored_words: tuple[str, ...] | None = None):
        super().__init__(text)
        self.pmi, self.scored_words, self.asked = pmi, scored_words, []

    def transcribe_against(self, audio, reference):
        from dataclasses import replace

        self.asked.append(tuple(reference))
        words = self.scored_words if self.scored_words is not None else tuple(reference)
        return replace(self.transcribe(audio), reference=words, reference_pmi=self.pmi)


def test_reading_guard_uses_the_recognisers_score_of_the_text(fake_scorer_class):
    from apa.miscues import TEXT_PMI_BELOW, TEXT_PMI_KEEPS_FROM

    s = acoustic_scorer(fake_scorer_class, POOR)
    other = "the weather is lovely in spring today"
    # the rules alone keep the text here (it fits better than "Tuesday."); a low score overrules them, unaligned
    worse = FakeAligner(fit(-4.0), fit(-4.0 - BY))
    low = ScoringTranscriber("Tuesday.", TEXT_PMI_BELOW - 1.0)
    with pytest.raises(TextMismatch):
        assess_reading(s, AUDIO, "We call it bear.", low, align_words=worse)
    assert low.asked == [tuple(CLIP_TEXT.split())] and low.calls == 1 and worse.calls == []
    # the rules alone refuse another sentence here; a high score keeps the text, unaligned
    better = FakeAligner(fit(-4.0), fit(-4.0 + BY))
    high = ScoringTranscriber(other, TEXT_PMI_KEEPS_FROM + 1.0)
    a = assess_reading(s, AUDIO, CLIP_TEXT, high, align_words=better)
    assert a.text == CLIP_TEXT and a.heard == other and better.calls == []
    # in between: aligned, and the rules decide
    with pytest.raises(TextMismatch):
        assess_reading(s, AUDIO, CLIP_TEXT, ScoringTranscriber(other, 0.0), align_words=better)
    assert better.calls == [CLIP_TEXT.split(), other.upper().split()]
    # a score of other words than the scorer's is not used: the rules decide
    with pytest.raises(TextMismatch):
        assess_reading(s, AUDIO, CLIP_TEXT, ScoringTranscriber(other, TEXT_PMI_KEEPS_FROM + 1.0, ("OTHER",)),
                       align_words=FakeAligner(fit(-4.0), fit(-4.0 + BY)))
    # no score (None): the rules decide, as with a transcriber that cannot score
    with pytest.raises(TextMismatch):
        assess_reading(s, AUDIO, CLIP_TEXT, ScoringTranscriber(other, None), align_words=better)
    # a scorer that does not align: the score still decides
    assert assess_reading(fake_scorer_class(), AUDIO, CLIP_TEXT, ScoringTranscriber(other, TEXT_PMI_KEEPS_FROM)).text == CLIP_TEXT
    with pytest.raises(TextMismatch):
        assess_reading(fake_scorer_class(), AUDIO, CLIP_TEXT, ScoringTranscriber("Tuesday.", TEXT_PMI_BELOW - 1.0))
    # the words heard as written: never, whatever the score
    said = ScoringTranscriber("we call it bear", -100.0)
    assert assess_reading(s, AUDIO, CLIP_TEXT, said, align_words=worse).heard == "we call it bear"


def test_fit_of_words(speech):
    from apa.audio import trim_silence
    from apa.reading import fit_of

    audio = trim_silence(speech)
    own = fit_of(audio, CLIP_TEXT.split())
    assert own is not None and own.phone < 0 and own.frame < 0 and 0 < own.coverage <= 1
    wrong = fit_of(audio, "THE WEATHER IS LOVELY IN SPRING TODAY".split())
    assert wrong is None or wrong.clip_fit() < own.clip_fit()
    assert fit_of(audio, []) is None
    assert fit_of(np.zeros(16000, np.float32), CLIP_TEXT.split()) is None  # silence does not align


@pytest.mark.parametrize("text", ["", "   ", None])
def test_free_speech(fake_scorer_class, text):
    s = fake_scorer_class()
    a = assess_reading(s, AUDIO, text, FakeTranscriber("I like green apples."))
    assert a.free_speech and a.heard == "I like green apples." and a.text == "I LIKE GREEN APPLES"
    assert [w.text for w in a.words] == ["I", "LIKE", "GREEN", "APPLES"] and a.insertions == ()


def test_free_speech_nothing_heard_and_no_transcriber(fake_scorer_class):
    s = fake_scorer_class()
    with pytest.raises(InputError) as ei:
        assess_reading(s, AUDIO, "", FakeTranscriber(""))
    assert ei.value.code == "nothing_heard" and s.calls == 0
    with pytest.raises(InputError) as ei:
        assess_reading(s, AUDIO, "", FakeTranscriber(fail=True))
    assert ei.value.code == "transcriber_failed"
    with pytest.raises(InputError) as ei:
        assess_reading(s, AUDIO, "", None)
    assert ei.value.code == "empty_text"


def test_failing_or_deaf_transcriber_does_not_stop_scoring(fake_scorer_class):
    s = fake_scorer_class()
    plain = s.assess(AUDIO, CLIP_TEXT)
    a = assess_reading(s, AUDIO, CLIP_TEXT, FakeTranscriber(fail=True))
    assert a.sentence == plain.sentence and a.notes == (NOTE_NO_TRANSCRIPT,) and a.heard is None
    b = assess_reading(s, AUDIO, CLIP_TEXT, FakeTranscriber(""))
    assert b.sentence == plain.sentence and b.notes == (NOTE_NOTHING_HEARD,) and b.insertions == ()
    assert assess_reading(s, AUDIO, CLIP_TEXT, None) == plain


# ------------------------------------------------------------------------------ page and API handlers
@pytest.fixture()
def transcriber():
    from webapp import scorer as holder

    t = FakeTranscriber("we really call it bear")
    holder.set_transcriber(t)
    yield t
    holder.reset_transcriber()


def test_learner_page_shows_insertions_omissions_and_heard(scorer, transcriber, clip, no_progress):
    import gradio as gr

    from webapp import handlers

    html = handlers.learner_score(str(clip), CLIP_TEXT, [], progress=no_progress)[0]
    assert 'class="apa-inserted"' in html and "REALLY" in html and "We heard" in html
    transcriber.text = "we call bear"
    html = handlers.learner_score(str(clip), CLIP_TEXT, [], progress=no_progress)[0]
    assert html.count('class="apa-skipped"') == 1 and "not said" in html
    transcriber.text = "the weather is lovely in spring today"
    with pytest.raises(gr.Error) as ei:
        handlers.learner_score(str(clip), CLIP_TEXT, [], progress=no_progress)
    assert ei.value.title == "Is this the sentence?" and "the weather is lovely" in ei.value.message
    html = handlers.learner_score_free(str(clip), CLIP_TEXT, [], progress=no_progress)[0]
    assert "Free speech" in html and "WEATHER" in html


def test_api_free_speech_and_mismatch(scorer, transcriber, clip):
    import gradio as gr

    from webapp import handlers

    d = handlers.api_assess(str(clip), "  ")
    assert d["free_speech"] and d["text"] == "WE REALLY CALL IT BEAR" and d["heard"]
    transcriber.text = "the weather is lovely in spring today"
    with pytest.raises(gr.Error) as ei:
        handlers.api_assess(str(clip), CLIP_TEXT)
    assert ei.value.title == "text_mismatch"
    assert handlers.api_assess(str(clip), CLIP_TEXT, "free_speech")["free_speech"]
    assert handlers.api_assess(str(clip), CLIP_TEXT, "text")["text"] == CLIP_TEXT
    with pytest.raises(gr.Error) as ei:
        handlers.api_assess(str(clip), CLIP_TEXT, "whatever")
    assert ei.value.title == "bad_option"


def test_unloadable_transcriber_degrades(scorer, monkeypatch, clip):
    from webapp import handlers
    from webapp import scorer as holder

    def broken(*args, **kwargs):
        raise FileNotFoundError("no model here")

    monkeypatch.setattr("apa.transcribe.load_transcriber", broken)
    holder.reset_transcriber()
    try:
        assert holder.get_transcriber() is None
        assert handlers.api_assess(str(clip), CLIP_TEXT)["insertions"] == []
    finally:
        holder.reset_transcriber()


# ------------------------------------------------------------------------------ the real model
@pytest.mark.slow
def test_real_whisper_hears_the_clip_and_finds_miscues(whisper, speech):
    from apa.audio import trim_silence

    audio = trim_silence(speech)
    t = whisper.transcribe(audio)
    assert t.intelligible and t.model == "whisper-base"
    words = [w for w in t.words]
    assert all(0 <= w.start <= w.end <= len(audio) / 16000 + 0.05 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    said = find_miscues(CLIP_TEXT.split(), words)
    assert said.matched >= 3 and not said.mismatch
    last = find_miscues([], words[-1:]).heard[0].text  # the last word as heard ("BILL" for this BEAR)
    short = find_miscues("WE CALL IT".split(), words)  # the last word said but not in the text: inserted at the end
    assert any(i.text == last and i.position == 3 and i.start >= words[-2].start for i in short.insertions)
    more = find_miscues("WE REALLY DO CALL IT BEAR".split(), words)  # REALLY DO not said
    assert more.omitted == (1, 2)
    assert find_miscues("THE WEATHER IS LOVELY IN SPRING TODAY".split(), words).mismatch


@pytest.mark.slow
def test_real_whisper_on_silence_and_noise_hears_nothing(whisper):
    rng = np.random.default_rng(0)
    assert not whisper.transcribe(np.zeros(32000, np.float32)).intelligible
    assert not whisper.transcribe((0.05 * rng.standard_normal(32000)).astype(np.float32)).intelligible
    assert whisper.transcribe(np.zeros(0, np.float32)).words == ()
