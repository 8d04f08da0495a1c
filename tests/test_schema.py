"""apa.schema: error-type and phone bands, JSON round trip, Azure mapping."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest

from apa.schema import (
    ERROR_MISPRONUNCIATION,
    ERROR_NONE,
    ERROR_OMISSION,
    SENTENCE_ASPECTS,
    Assessment,
    Phone,
    Sentence,
    Word,
    phone_band,
    word_error_type,
)


@pytest.fixture
def ipa_or_stub(monkeypatch):
    """`to_dict` needs apa.ipa.arpabet_to_ipa; stand in for it while apa/ipa.py is not written."""
    try:
        import apa.ipa  # noqa: F401
    except ImportError:
        stub = types.ModuleType("apa.ipa")
        stub.arpabet_to_ipa = lambda phone: f"<{phone}>"
        monkeypatch.setitem(sys.modules, "apa.ipa", stub)


def _assessment() -> Assessment:
    return Assessment(
        text="WE CALL IT BEAR",
        sentence=Sentence(accuracy=8.0, fluency=9.0, prosodic=None, completeness=8.3, total=7.0),
        words=(
            Word("WE", 10.0, 10.0, 10.0, (Phone("W", 2.0), Phone("IY0", 1.8))),
            Word("CALL", 6.0, 5.0, 6.0, (Phone("K", 0.4), Phone("AO0", None), Phone("L", 1.0))),
            Word("IT", 1.0, 10.0, 1.0, (Phone("IH0", 0.0), Phone("T", 0.2))),
            Word("BEAR", None, None, None, (Phone("B"), Phone("EH0"), Phone("R"))),
        ),
        repairs=("word 3 BEAR: missing",),
        model="unit-test",
        extra={"latency_s": 0.25},
    )


# ---- bands ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "accuracy, expected",
    [
        (0, ERROR_OMISSION),
        (1, ERROR_OMISSION),
        (1.4, ERROR_OMISSION),
        (1.5, ERROR_MISPRONUNCIATION),
        (2, ERROR_MISPRONUNCIATION),
        (6, ERROR_MISPRONUNCIATION),
        (6.4, ERROR_MISPRONUNCIATION),
        (6.5, ERROR_NONE),
        (7, ERROR_NONE),
        (10, ERROR_NONE),
        (None, ERROR_NONE),
    ],
)
def test_word_error_type_bands(accuracy, expected):
    assert word_error_type(accuracy) == expected
    assert Word("X", accuracy=accuracy).error_type == expected


@pytest.mark.parametrize(
    "score, expected",
    [
        (None, "unknown"),
        (0, "wrong"),
        (0.4, "wrong"),
        (0.49, "wrong"),
        (0.5, "accented"),
        (1, "accented"),
        (1.49, "accented"),
        (1.5, "good"),
        (1.8, "good"),
        (2, "good"),
    ],
)
def test_phone_band_edges(score, expected):
    assert phone_band(score) == expected


def test_error_type_strings():
    assert (ERROR_NONE, ERROR_MISPRONUNCIATION, ERROR_OMISSION) == ("none", "mispronunciation", "omission")


# ---- views -----------------------------------------------------------------------------
def test_phones_view_and_symbols():
    a = _assessment()
    assert [p.phone for p in a.phones] == ["W", "IY0", "K", "AO0", "L", "IH0", "T", "B", "EH0", "R"]
    assert a.words[1].phone_symbols == ("K", "AO0", "L")


# ---- JSON ------------------------------------------------------------------------------
def test_json_round_trip_keeps_none(ipa_or_stub):
    a = _assessment()
    s = a.to_json()
    d = json.loads(s)
    assert d["sentence"]["prosodic"] is None
    assert d["words"][3]["accuracy"] is None
    assert d["words"][1]["phones"][1]["score"] is None
    b = Assessment.from_json(s)
    assert b == a
    # fields excluded from equality still survive
    assert b.extra == a.extra
    assert b.repairs == a.repairs and b.model == a.model
    # None never turns into 0
    assert b.sentence.prosodic is None
    assert b.words[3].accuracy is None and b.words[3].stress is None and b.words[3].total is None
    assert all(p.score is None for p in b.words[3].phones)
    assert b.words[1].phones[1].score is None


def test_json_round_trip_all_none_and_empty(ipa_or_stub):
    a = Assessment(text="", sentence=Sentence(), words=())
    assert Assessment.from_json(a.to_json()) == a
    a = Assessment(text="HELLO", sentence=Sentence(), words=(Word("HELLO", phones=(Phone("HH"), Phone("AH0"))),))
    b = Assessment.from_json(a.to_json())
    assert b == a
    assert all(getattr(b.sentence, k) is None for k in SENTENCE_ASPECTS)


def test_json_is_plain_and_unicode(ipa_or_stub):
    a = Assessment(text="CAFÉ", sentence=Sentence(total=5.0), words=(Word("CAFÉ", 5.0, 10.0, 5.0),))
    s = a.to_json()
    assert "CAFÉ" in s  # ensure_ascii=False
    assert Assessment.from_json(s) == a
    assert json.loads(a.to_json(indent=2)) == json.loads(s)


def test_to_dict_has_error_type(ipa_or_stub):
    d = _assessment().to_dict()
    assert [w["error_type"] for w in d["words"]] == [ERROR_NONE, ERROR_MISPRONUNCIATION, ERROR_OMISSION, ERROR_NONE]
    assert isinstance(d["repairs"], list)
    assert all("ipa" in p for w in d["words"] for p in w["phones"])


def test_to_dict_ipa_from_apa_ipa():
    text = pytest.importorskip("apa.ipa")
    d = _assessment().to_dict()
    got = [p["ipa"] for w in d["words"] for p in w["phones"]]
    want = [text.arpabet_to_ipa(p) for p in ("W", "IY0", "K", "AO0", "L", "IH0", "T", "B", "EH0", "R")]
    assert got == want
    assert all(isinstance(x, str) and x for x in got)


# ---- Azure -----------------------------------------------------------------------------
def test_to_azure_scales_and_error_types():
    a = _assessment()
    az = a.to_azure()
    assert az["RecognitionStatus"] == "Success"
    assert az["DisplayText"] == "WE CALL IT BEAR"
    pa = az["PronunciationAssessment"]
    assert pa == {
        "AccuracyScore": 80.0,
        "FluencyScore": 90.0,
        "ProsodyScore": None,
        "CompletenessScore": 83.0,
        "PronScore": 70.0,
    }
    words = az["Words"]
    assert [w["Word"] for w in words] == ["WE", "CALL", "IT", "BEAR"]
    assert [w["PronunciationAssessment"]["AccuracyScore"] for w in words] == [100.0, 60.0, 10.0, None]
    assert [w["PronunciationAssessment"]["ErrorType"] for w in words] == ["None", "Mispronunciation", "Omission", "None"]
    phones = [(p["Phoneme"], p["PronunciationAssessment"]["AccuracyScore"]) for w in words for p in w["Phonemes"]]
    assert phones == [
        ("W", 100.0),
        ("IY0", 90.0),
        ("K", 20.0),
        ("AO0", None),
        ("L", 50.0),
        ("IH0", 0.0),
        ("T", 10.0),
        ("B", None),
        ("EH0", None),
        ("R", None),
    ]
    json.dumps(az)  # plain JSON


def test_to_azure_rounds_to_one_decimal():
    a = Assessment(
        text="A",
        sentence=Sentence(accuracy=7.123),
        words=(Word("A", 6.666, phones=(Phone("AH0", 1.2345),)),),
    )
    az = a.to_azure()
    assert az["PronunciationAssessment"]["AccuracyScore"] == 71.2
    assert az["Words"][0]["PronunciationAssessment"]["AccuracyScore"] == 66.7
    assert math.isclose(az["Words"][0]["Phonemes"][0]["PronunciationAssessment"]["AccuracyScore"], 61.7)
