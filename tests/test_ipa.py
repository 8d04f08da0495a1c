"""Tests for apa.ipa: ARPAbet -> IPA for display."""

import pytest

from apa.ipa import arpabet_to_ipa, phones_to_ipa
from apa.text import ARPABET, ARPABET_VOWELS


def test_ipa_covers_all_39_phones():
    assert len(ARPABET) == len(set(ARPABET)) == 39
    seen = set()
    for base in ARPABET:
        forms = [base + d for d in "012"] if base in ARPABET_VOWELS else [base]
        for phone in forms:
            ipa = arpabet_to_ipa(phone)
            assert ipa and ipa.isprintable() and not any(c.isascii() and c.isupper() for c in ipa), phone
        seen.add(arpabet_to_ipa(forms[-1] if base in ARPABET_VOWELS else base).lstrip("ˌ"))
    assert len(seen) == 39  # distinct symbols for distinct phones
    expected = {"AA1": "ˈɑ", "AA0": "ɑ", "AA2": "ˌɑ", "AH0": "ə", "AH1": "ˈʌ", "ER0": "ɚ", "ER1": "ˈɝ",
                "IY1": "ˈi", "TH": "θ", "DH": "ð", "NG": "ŋ", "JH": "dʒ", "R": "ɹ", "Y": "j", "G": "ɡ"}  # fmt: skip
    assert {p: arpabet_to_ipa(p) for p in expected} == expected
    for bad in ("AA3", "B1", "XX", "", "aa1"):
        with pytest.raises(ValueError):
            arpabet_to_ipa(bad)


@pytest.mark.parametrize(
    "phones, weak, ipa",
    [
        ("AH0 B AW1 T", False, "əˈbaʊt"),
        ("AH0 B IH1 L AH0 T IY0", False, "əˈbɪləti"),
        ("AH2 N D ER0 S T AE1 N D", False, "ˌʌndɚˈstænd"),
        ("K AH0 M P Y UW1 T ER0", False, "kəmˈpjutɚ"),
        ("EH1 K S T R AH0", False, "ˈɛkstɹə"),
        ("K AE0 T", False, "kæt"),
        ("B AH0 T", False, "bʌt"),  # corpus monosyllable: stress 0 but a full vowel
        ("DH AH0", True, "ðə"),  # weak form
        ("EY1 B L", False, "ˈeɪbl̩"),
        ("S T UW1 D N T", False, "ˈstudn̩t"),
        ("Y IH AH0", False, "jɪə"),
        ("Z IH AH1 OW0", False, "ˈzɪəoʊ"),
    ],
)
def test_phones_to_ipa(phones, weak, ipa):
    assert phones_to_ipa(phones.split(), weak=weak) == ipa
