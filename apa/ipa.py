"""CMU ARPAbet phones -> IPA for display: one phone (`arpabet_to_ipa`) or a word with stress marks
placed at syllable starts (`phones_to_ipa`). General American, as CMUdict."""

from __future__ import annotations

from collections.abc import Sequence

from apa.text import ARPABET_CONSONANTS, is_valid_phone

# IPA (General American, as CMUdict). Length marks are not written (i, u, not iː, uː).
IPA_VOWELS = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "aʊ", "AY": "aɪ", "EH": "ɛ", "ER": "ɝ",
    "EY": "eɪ", "IH": "ɪ", "IY": "i", "OW": "oʊ", "OY": "ɔɪ", "UH": "ʊ", "UW": "u",
}  # fmt: skip
IPA_REDUCED = {"AH": "ə", "ER": "ɚ"}  # quality of AH0 / ER0
IPA_CONSONANTS = {
    "B": "b", "CH": "tʃ", "D": "d", "DH": "ð", "F": "f", "G": "ɡ", "HH": "h", "JH": "dʒ", "K": "k",
    "L": "l", "M": "m", "N": "n", "NG": "ŋ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t",
    "TH": "θ", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}  # fmt: skip
IPA_PRIMARY, IPA_SECONDARY, IPA_SYLLABIC = "ˈ", "ˌ", "\u0329"  # marks go before the syllable
# Corpus spellings of centring diphthongs: digit-less IH/UH followed by AH<d> is one nucleus.
IPA_CENTRING = {"IH": "ɪə", "UH": "ʊə"}
# Function words whose single vowel is reduced in their usual (weak) form: AH0 shows as ə there.
WEAK_FORMS = frozenset({
    "A", "AN", "AND", "ARE", "AS", "AT", "CAN", "COULD", "DO", "DOES", "FOR", "FROM", "HER", "OF",
    "OR", "SHALL", "SHOULD", "THAN", "THE", "THEM", "TO", "WAS", "WERE", "WOULD", "YOUR",
})  # fmt: skip
OBSTRUENTS = frozenset({"B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "P", "S", "SH", "T", "TH", "V", "Z", "ZH"})
# Onsets allowed when placing stress marks (maximal onset principle): single consonants but NG,
# and these clusters.
ONSET_CLUSTERS = (
    "P R", "P L", "B R", "B L", "T R", "D R", "K R", "K L", "G R", "G L", "F R", "F L", "TH R",
    "SH R", "P Y", "B Y", "K Y", "G Y", "F Y", "V Y", "M Y", "HH Y", "T W", "D W", "K W", "G W",
    "TH W", "S W", "S P", "S T", "S K", "S M", "S N", "S L", "S F", "S P R", "S P L", "S T R",
    "S K R", "S K W", "S K L", "S P Y", "S K Y",
)  # fmt: skip
ONSETS = frozenset({(c,) for c in ARPABET_CONSONANTS if c != "NG"} | {tuple(o.split()) for o in ONSET_CLUSTERS})


def _split_phone(phone: str) -> tuple[str, str]:
    base, digit = (phone[:-1], phone[-1]) if phone[-1:].isdigit() else (phone, "")
    if not is_valid_phone(phone, strict=False):
        raise ValueError(f"not an ARPAbet phone: {phone!r}")
    return base, digit


def arpabet_to_ipa(phone: str) -> str:
    """One ARPAbet phone -> IPA: "AA1" -> "ˈɑ", "AA2" -> "ˌɑ", "AH0" -> "ə", "AH1" -> "ˈʌ",
    "ER0" -> "ɚ", "ER1" -> "ˈɝ", "SH" -> "ʃ". The stress mark is put before the vowel here;
    `phones_to_ipa` moves it to the start of the syllable. Digit-less vowels count as unstressed.
    Raises ValueError for anything else."""
    base, digit = _split_phone(phone)
    if base in IPA_CONSONANTS:
        return IPA_CONSONANTS[base]
    if digit in ("", "0"):
        return IPA_REDUCED.get(base, IPA_VOWELS[base])
    return (IPA_PRIMARY if digit == "1" else IPA_SECONDARY) + IPA_VOWELS[base]


def phones_to_ipa(phones: Sequence[str], *, weak: bool = False) -> str:
    """ARPAbet phones of one word -> IPA string for display (no slashes), e.g. "əˈbaʊt".

    Stress: ˈ (1) and ˌ (2) are placed before the syllable (maximal onset over ONSETS), and only
    in words of two or more syllables; monosyllables carry no mark. AH/ER are ə/ɚ with stress 0,
    ʌ/ɝ otherwise; the only vowel of a word is read as full (ʌ/ɝ) even with stress 0, because
    Speechocean762 writes every monosyllable with 0, unless `weak` (weak function words: "ðə").
    Syllabic L/M/N (after an obstruent, not before a vowel) get a ̩ : "ˈbɑtl̩". The corpus'
    centring diphthongs IH AH<d> / UH AH<d> are written ɪə / ʊə.
    """
    parts = [_split_phone(p) for p in phones]
    n = len(parts)
    # Nuclei: index of the phone -> (ipa, stress digit); centring diphthongs use two phones.
    nuclei: dict[int, tuple[str, str]] = {}
    skip: set[int] = set()
    for i, (base, digit) in enumerate(parts):
        if base not in IPA_VOWELS or i in skip:
            continue
        if digit == "" and base in IPA_CENTRING and i + 1 < n and parts[i + 1][0] == "AH":
            nuclei[i] = (IPA_CENTRING[base], parts[i + 1][1])
            skip.add(i + 1)
        else:
            nuclei[i] = ("", digit)
    full_single = len(nuclei) == 1 and not weak
    for i, (ipa, digit) in nuclei.items():
        if not ipa:
            base = parts[i][0]
            reduced = digit in ("", "0") and not full_single
            nuclei[i] = (IPA_REDUCED.get(base, IPA_VOWELS[base]) if reduced else IPA_VOWELS[base], digit)
    syllabic = {
        i for i, (base, _) in enumerate(parts)
        if base in ("L", "M", "N") and i > 0 and parts[i - 1][0] in OBSTRUENTS
        and (i + 1 == n or parts[i + 1][0] not in IPA_VOWELS)
    }  # fmt: skip
    marked = len(nuclei) + len(syllabic) > 1
    starts: dict[int, str] = {}  # phone index -> stress mark before it
    prev_end = -1
    for i in sorted(nuclei):
        digit = nuclei[i][1]
        if marked and digit in ("1", "2"):
            cons = [j for j in range(prev_end + 1, i)]
            start = cons[0] if cons else i
            if prev_end >= 0 or any(j in syllabic for j in cons):
                first = max([prev_end + 1] + [j + 1 for j in cons if j in syllabic])
                onset = list(range(first, i))
                while onset and tuple(parts[j][0] for j in onset) not in ONSETS:
                    onset = onset[1:]
                start = onset[0] if onset else i
            starts[start] = IPA_PRIMARY if digit == "1" else IPA_SECONDARY
        prev_end = i + 1 if i + 1 in skip else i
    out = []
    for i, (base, _) in enumerate(parts):
        if i in skip:
            continue
        out.append(starts.get(i, ""))
        if i in nuclei:
            out.append(nuclei[i][0])
        else:
            out.append(IPA_CONSONANTS[base] + (IPA_SYLLABIC if i in syllabic else ""))
    return "".join(out)
