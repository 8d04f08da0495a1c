"""Synthetic minimal pairs: does a scorer hear *which* sound was said?

Each `MinimalPair` is a short everyday sentence and one phone of one of its words (an index into
the CMU reference that `apa.text.to_words` gives that word), with the phone it is replaced by, or
None for a dropped phone. Both readings are synthesised with espeak-ng from phoneme mnemonics
(`[[...]]` input), so they differ in exactly that one phone and in nothing else:

1. espeak's own mnemonics for the sentence (`espeak-ng -q -x --sep=_`), one group per word; when
   espeak joins words into one group ("in the" -> "I_n_D_@2"), word by word instead;
2. the target word's mnemonics must line up one to one with its CMU phones (`ESPEAK_FOR_CMU` lists
   the mnemonics espeak writes for each CMU phone), else `SynthesisError`; the phone at
   `phone_index` is replaced by `CMU_TO_ESPEAK[replacement]` (its stress mark kept) or removed;
3. both mnemonic strings are read back by espeak (`-x` of the `[[...]]` input) and must come back
   as written, so the altered reading differs from the canonical one by exactly that substitution;
4. espeak writes 22.05 kHz WAV files (cached by content hash), which `apa.audio.load_audio` reads as
   a learner's recording would be (checks, 16 kHz resampling, silence trim);
5. the two readings must differ, and their durations must be plausible (`MIN_SECONDS`..`MAX_SECONDS`,
   altered/canonical within `MAX_DURATION_RATIO`).

`synthesize_pair` / `iter_synthesized` are what tests and `bench.minimal_pairs` use.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CMU_TO_ESPEAK",
    "ESPEAK_FOR_CMU",
    "PAIRS",
    "TUNING_PAIRS",
    "MinimalPair",
    "SynthesisError",
    "SynthesizedPair",
    "alter_word",
    "espeak_available",
    "espeak_words",
    "iter_synthesized",
    "synthesize_pair",
]

VOICE = "en-us"
MIN_SECONDS = 0.4  # a synthesised sentence shorter than this (after trimming) is broken
MAX_SECONDS = 8.0  # ... and longer than this too
MAX_DURATION_RATIO = 1.5  # altered/canonical duration must lie in [1/ratio, ratio]
MIN_DIFFERENCE = 1e-3  # least max |sample difference| (same length) for two readings to "differ"
STRESS_MARKS = "',"  # espeak's primary and secondary stress, written before a vowel
# A modifier of the phoneme before it in espeak's `-x` output, not a phoneme ("the" before a vowel:
# D_I2_;). It is kept with that phoneme in the synthesis input, but ignored when phonemes are
# compared: espeak adds it itself when it reads some phoneme input back ("she": S'i: -> S_'i:_;).
MODIFIER = ";"
ESPEAK_TIMEOUT_S = 30.0

# The mnemonic a CMU phone is synthesised as, when it is the replacement.
CMU_TO_ESPEAK: dict[str, str] = {
    "AA": "A:", "AE": "a", "AH": "V", "AO": "O:", "AW": "aU", "AY": "aI", "EH": "E", "ER": "3:",
    "EY": "eI", "IH": "I", "IY": "i:", "OW": "oU", "OY": "OI", "UH": "U", "UW": "u:",
    "B": "b", "CH": "tS", "D": "d", "DH": "D", "F": "f", "G": "g", "HH": "h", "JH": "dZ", "K": "k",
    "L": "l", "M": "m", "N": "n", "NG": "N", "P": "p", "R": "r", "S": "s", "SH": "S", "T": "t",
    "TH": "T", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "Z",
}

# Other mnemonics espeak (en-us) writes for a CMU phone (reduced or regional vowels, flapped and
# glottal T), besides the one in CMU_TO_ESPEAK.
_ESPEAK_VARIANTS: dict[str, tuple[str, ...]] = {
    "AA": ("0", "O2", "A"), "AE": ("a#",), "AH": ("@", "@2", "a#"), "AO": ("0", "O2", "O"), "ER": ("3",),
    "IH": ("I#", "I2", "i"), "IY": ("i",), "UW": ("U",), "T": ("t#", "?"),
}

# The mnemonics espeak writes for each CMU phone, to line a word's mnemonics up with its reference
# phones (stress marks removed first).
ESPEAK_FOR_CMU: dict[str, frozenset[str]] = {
    cmu: frozenset((mnemonic, *_ESPEAK_VARIANTS.get(cmu, ()))) for cmu, mnemonic in CMU_TO_ESPEAK.items()
}


class SynthesisError(RuntimeError):
    """A pair that cannot be synthesised as specified (espeak missing or failing, a target word
    whose mnemonics do not line up with its CMU phones, a reading that fails a sanity check)."""


@dataclass(frozen=True)
class MinimalPair:
    """One sentence and one phone change: `to_words(text)[word_index].phones[phone_index]` (CMU,
    `original` without its stress digit) is replaced by `replacement` (CMU, no stress), or dropped
    when `replacement` is None."""

    text: str
    word_index: int
    phone_index: int
    original: str
    replacement: str | None

    @property
    def change(self) -> str:
        """The substitution as written in reports, e.g. "R->L" or "T->(dropped)"."""
        return f"{self.original}->{self.replacement or '(dropped)'}"

    @property
    def kind(self) -> str:
        """"dropped" for a removed phone, else the substitution itself ("R->L")."""
        return "dropped" if self.replacement is None else self.change


def _p(text: str, word_index: int, phone_index: int, original: str, replacement: str | None) -> MinimalPair:
    return MinimalPair(text, word_index, phone_index, original, replacement)


PAIRS: tuple[MinimalPair, ...] = (
    # R -> L, L -> R
    _p("The rice is red", 1, 0, "R", "L"),
    _p("The road is long", 1, 0, "R", "L"),
    _p("I ran home", 1, 0, "R", "L"),
    _p("I like the light", 3, 0, "L", "R"),
    _p("We play a game", 1, 1, "L", "R"),
    _p("The bus is late", 3, 0, "L", "R"),
    # V -> W, W -> V
    _p("It is a very good day", 3, 0, "V", "W"),
    _p("He has a new van", 4, 0, "V", "W"),
    _p("We went to the west", 4, 0, "W", "V"),
    _p("The wine is red", 1, 0, "W", "V"),
    _p("The wet dog ran", 1, 0, "W", "V"),
    # TH -> S, DH -> Z / D
    _p("I think it is fine", 1, 0, "TH", "S"),
    _p("Thank you very much", 0, 0, "TH", "S"),
    _p("The ice is thin", 3, 0, "TH", "S"),
    _p("This is my house", 0, 0, "DH", "Z"),
    _p("They live there", 0, 0, "DH", "D"),
    _p("That is mine", 0, 0, "DH", "D"),
    # IH <-> IY
    _p("Please sit down", 1, 1, "IH", "IY"),
    _p("I like fish", 2, 1, "IH", "IY"),
    _p("Take a seat please", 2, 1, "IY", "IH"),
    _p("He will leave soon", 2, 1, "IY", "IH"),
    _p("I feel fine", 1, 1, "IY", "IH"),
    # AE -> EH, UW -> UH
    _p("I have a bad cold", 3, 1, "AE", "EH"),
    _p("I need a pan", 3, 1, "AE", "EH"),
    _p("The man is tall", 1, 1, "AE", "EH"),
    _p("The food is good", 1, 1, "UW", "UH"),
    _p("The pool is cold", 1, 1, "UW", "UH"),
    # SH -> S, S -> SH, Z -> S
    _p("She is on the ship", 4, 0, "SH", "S"),
    _p("She is my friend", 0, 0, "SH", "S"),
    _p("The sea is blue", 1, 0, "S", "SH"),
    _p("He has two dogs", 3, 3, "Z", "S"),
    _p("The rose is red", 1, 2, "Z", "S"),
    _p("Close your eyes", 2, 1, "Z", "S"),
    # N -> NG
    _p("The sun is hot", 1, 2, "N", "NG"),
    _p("I ran home", 1, 2, "N", "NG"),
    # final consonant dropped
    _p("I need a hat", 3, 2, "T", None),
    _p("The cat is here", 1, 2, "T", None),
    _p("Go to bed", 2, 2, "D", None),
    _p("The road is long", 1, 2, "D", None),
    _p("I like it", 1, 2, "K", None),
    _p("He likes cats", 2, 3, "S", None),
    _p("He has two dogs", 3, 3, "Z", None),
    # voicing: P <-> B, D -> T, K -> G, F -> P
    _p("The pen is blue", 1, 0, "P", "B"),
    _p("I need a pan", 3, 0, "P", "B"),
    _p("The boy is big", 3, 0, "B", "P"),
    _p("I read a book", 3, 0, "B", "P"),
    _p("I have a bad cold", 3, 2, "D", "T"),
    _p("The coat is warm", 1, 0, "K", "G"),
    _p("It is a fan", 3, 0, "F", "P"),
    _p("I feel fine", 2, 0, "F", "P"),
)


# A second, disjoint set of the same kinds of changes (other sentences, other target words), to
# choose the weights of apa.annotate.heard_instead on: bench/heard_instead.py reports PAIRS, which
# no weight was chosen on, as the held-out figures.
TUNING_PAIRS: tuple[MinimalPair, ...] = (
    # R -> L, L -> R
    _p("My room is clean", 1, 0, "R", "L"),
    _p("The rain is cold", 1, 0, "R", "L"),
    _p("Please write it down", 1, 0, "R", "L"),
    _p("The rope is long", 1, 0, "R", "L"),
    _p("The lamp is on", 1, 0, "L", "R"),
    _p("Look at me", 0, 0, "L", "R"),
    _p("The lake is deep", 1, 0, "L", "R"),
    _p("She has a blue hat", 3, 1, "L", "R"),
    # V -> W, W -> V
    _p("I love my vest", 3, 0, "V", "W"),
    _p("The vase is full", 1, 0, "V", "W"),
    _p("We visit them", 1, 0, "V", "W"),
    _p("The wind is strong", 1, 0, "W", "V"),
    _p("I will walk home", 2, 0, "W", "V"),
    _p("We wait here", 1, 0, "W", "V"),
    # TH -> S, DH -> Z / D
    _p("Three cats ran", 0, 0, "TH", "S"),
    _p("The path is thick", 3, 0, "TH", "S"),
    _p("I thought so", 1, 0, "TH", "S"),
    _p("Those are mine", 0, 0, "DH", "Z"),
    _p("Then we left", 0, 0, "DH", "D"),
    _p("These are his", 0, 0, "DH", "D"),
    # IH <-> IY
    _p("The milk is cold", 1, 1, "IH", "IY"),
    _p("He hit the ball", 1, 1, "IH", "IY"),
    _p("My lip is dry", 1, 1, "IH", "IY"),
    _p("The team is here", 1, 1, "IY", "IH"),
    _p("I eat meat", 2, 1, "IY", "IH"),
    _p("We need sleep", 2, 2, "IY", "IH"),
    # AE -> EH, UW -> UH
    _p("The bag is full", 1, 1, "AE", "EH"),
    _p("My cap is red", 1, 1, "AE", "EH"),
    _p("The cab is late", 1, 1, "AE", "EH"),
    _p("The moon is bright", 1, 1, "UW", "UH"),
    _p("I lost my shoe", 3, 1, "UW", "UH"),
    # SH -> S, S -> SH, Z -> S
    _p("Shut the door", 0, 0, "SH", "S"),
    _p("I like sugar", 2, 0, "SH", "S"),
    _p("Wish me luck", 0, 2, "SH", "S"),
    _p("The soup is hot", 1, 0, "S", "SH"),
    _p("I saw a bird", 1, 0, "S", "SH"),
    _p("The zoo is big", 1, 0, "Z", "S"),
    _p("These are his", 2, 2, "Z", "S"),
    _p("She knows me", 1, 2, "Z", "S"),
    # N -> NG
    _p("The pin is sharp", 1, 2, "N", "NG"),
    _p("I won a prize", 1, 2, "N", "NG"),
    # final consonant dropped
    _p("He left early", 1, 3, "T", None),
    _p("The seed is small", 1, 2, "D", None),
    _p("We ate the cake", 3, 2, "K", None),
    _p("He sat down", 1, 2, "T", None),
    _p("Good night", 1, 2, "T", None),
    _p("The dog is old", 3, 2, "D", None),
    # voicing: P <-> B, D -> T, K -> G, F -> P
    _p("The pig is pink", 1, 0, "P", "B"),
    _p("Put it here", 0, 0, "P", "B"),
    _p("A cup of tea", 1, 2, "P", "B"),
    _p("Bring me a pen", 0, 0, "B", "P"),
    _p("The bike is new", 1, 0, "B", "P"),
    _p("The dog is sad", 3, 2, "D", "T"),
    _p("I need help", 1, 2, "D", "T"),
    _p("The cake is sweet", 1, 0, "K", "G"),
    _p("Come here", 0, 0, "K", "G"),
    _p("The cup is full", 1, 0, "K", "G"),
    _p("The face is red", 1, 0, "F", "P"),
    _p("Five cats", 0, 0, "F", "P"),
    _p("The fog is thick", 1, 0, "F", "P"),
)


@dataclass(frozen=True)
class SynthesizedPair:
    """Both readings of a pair: 16 kHz float32 audio and the espeak mnemonics they were made from."""

    pair: MinimalPair
    canonical: np.ndarray
    altered: np.ndarray
    canonical_phonemes: str
    altered_phonemes: str

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, str, int, int]:
        """(canonical_audio, altered_audio, text, word_index, phone_index)."""
        return self.canonical, self.altered, self.pair.text, self.pair.word_index, self.pair.phone_index


# ------------------------------------------------------------------------------------ espeak


def espeak_available() -> bool:
    """Whether an `espeak-ng` executable is on the PATH."""
    return shutil.which("espeak-ng") is not None


def _espeak(args: Sequence[str]) -> str:
    """Run espeak-ng with `args`; its stdout. SynthesisError when it is missing or fails."""
    if not espeak_available():
        raise SynthesisError("espeak-ng is not installed (apt-get install espeak-ng)")
    try:
        done = subprocess.run(["espeak-ng", *args], capture_output=True, text=True, timeout=ESPEAK_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SynthesisError(f"espeak-ng {' '.join(args)} failed: {exc}") from exc
    if done.returncode != 0:
        raise SynthesisError(f"espeak-ng {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@functools.lru_cache(maxsize=1)
def espeak_version() -> str:
    """espeak-ng's version line (part of the cache key of the synthesised files)."""
    return _espeak(["--version"]).strip()


def _groups(mnemonics: str) -> list[list[str]]:
    """espeak `-x --sep=_` output -> tokens per space-separated group, a MODIFIER joined to the token
    before it ("I2;")."""
    groups = []
    for g in mnemonics.split():
        tokens: list[str] = []
        for t in g.split("_"):
            if t == MODIFIER and tokens:
                tokens[-1] += t
            elif t:
                tokens.append(t)
        groups.append(tokens)
    return groups


def split_stress(token: str) -> tuple[str, str]:
    """("'", "aI") for "'aI": the leading stress marks and the phoneme mnemonic (any MODIFIER dropped)."""
    name = token.lstrip(STRESS_MARKS)
    return token[: len(token) - len(name)], name.removesuffix(MODIFIER)


@functools.lru_cache(maxsize=4096)
def _espeak_tokens(text: str, voice: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(g) for g in _groups(_espeak(["-q", "-x", "--sep=_", "-v", voice, text])))


def espeak_words(words: Sequence[str], voice: str = VOICE) -> list[list[str]]:
    """espeak's mnemonics (tokens, stress marks attached) for each word, read in sentence context;
    word by word when espeak does not give one group per word."""
    groups = _espeak_tokens(" ".join(w.lower() for w in words), voice)
    if len(groups) != len(words):
        groups = []
        for w in words:
            g = _espeak_tokens(w.lower(), voice)
            if len(g) != 1:
                raise SynthesisError(f"espeak reads the word {w!r} as {len(g)} groups: {g}")
            groups.append(g[0])
    return [list(g) for g in groups]


def _base(phone: str) -> str:
    return phone.rstrip("012")


def lines_up(tokens: Sequence[str], phones: Sequence[str]) -> bool:
    """Whether a word's espeak tokens correspond one to one to its CMU phones (`ESPEAK_FOR_CMU`)."""
    return len(tokens) == len(phones) and all(
        split_stress(t)[1] in ESPEAK_FOR_CMU.get(_base(p), ()) for t, p in zip(tokens, phones)
    )


def alter_word(tokens: Sequence[str], phones: Sequence[str], phone_index: int, replacement: str | None) -> list[str]:
    """The word's tokens with the phone at `phone_index` replaced by `replacement` (CMU, its stress
    mark kept) or removed (None). SynthesisError unless the tokens line up with the phones."""
    if not lines_up(tokens, phones):
        raise SynthesisError(f"espeak tokens {list(tokens)} do not line up with the CMU phones {list(phones)}")
    if not 0 <= phone_index < len(phones):
        raise SynthesisError(f"phone index {phone_index} is outside {list(phones)}")
    stress, _ = split_stress(tokens[phone_index])
    out = list(tokens)
    if replacement is None:
        if stress:
            raise SynthesisError(f"cannot drop the stressed {tokens[phone_index]!r} of {list(tokens)}")
        del out[phone_index]
    else:
        if replacement not in CMU_TO_ESPEAK:
            raise SynthesisError(f"no espeak mnemonic for the CMU phone {replacement!r}")
        out[phone_index] = stress + CMU_TO_ESPEAK[replacement]
    return out


def phoneme_input(groups: Sequence[Sequence[str]]) -> str:
    """Tokens per word -> espeak phoneme input, e.g. "[[D@2 r'aIs Iz r'Ed]]"."""
    return "[[" + " ".join("".join(g) for g in groups) + "]]"


def _check_reads_back(groups: Sequence[Sequence[str]], voice: str) -> str:
    """The phoneme input for `groups`, after checking that espeak parses it into those tokens."""
    text = phoneme_input(groups)
    back = _espeak_tokens(text, voice)

    def plain(gs: Iterable[Iterable[str]]) -> list[list[str]]:
        return [[t.removesuffix(MODIFIER) for t in g] for g in gs]

    if plain(back) != plain(groups):
        raise SynthesisError(f"espeak reads {text} back as {[list(g) for g in back]}, not {[list(g) for g in groups]}")
    return text


def _synthesize(phonemes: str, cache_dir: Path, voice: str) -> np.ndarray:
    """espeak-ng phoneme input -> 16 kHz float32 (through `apa.audio.load_audio`), the WAV cached."""
    from apa.audio import AudioError, load_audio

    key = hashlib.sha256(f"{espeak_version()}\n{voice}\n{phonemes}".encode()).hexdigest()[:20]
    path = cache_dir / f"{key}.wav"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.wav")
        _espeak(["-v", voice, "-w", str(tmp), phonemes])  # no -q: with it espeak writes nothing
        tmp.replace(path)
    try:
        return load_audio(path)
    except AudioError as exc:
        raise SynthesisError(f"synthesised {phonemes} fails the audio checks: {exc.code} ({exc.detail})") from exc


@functools.lru_cache(maxsize=1)
def _default_cache() -> Path:
    return Path(tempfile.mkdtemp(prefix="apa-minimal-pairs-"))


def _check_readings(canonical: np.ndarray, altered: np.ndarray, what: str) -> None:
    from apa.audio import SAMPLE_RATE

    for name, x in (("canonical", canonical), ("altered", altered)):
        seconds = len(x) / SAMPLE_RATE
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise SynthesisError(f"{what}: the {name} reading lasts {seconds:.2f} s")
    ratio = len(altered) / len(canonical)
    if not 1 / MAX_DURATION_RATIO <= ratio <= MAX_DURATION_RATIO:
        raise SynthesisError(f"{what}: altered/canonical duration ratio {ratio:.2f}")
    if len(canonical) == len(altered) and float(np.max(np.abs(canonical - altered))) < MIN_DIFFERENCE:
        raise SynthesisError(f"{what}: the two readings are the same audio")


def synthesize_pair(pair: MinimalPair, cache_dir: str | Path | None = None, voice: str = VOICE) -> SynthesizedPair:
    """Both readings of `pair` (see the module doc), checked. WAVs go to `cache_dir` (default: one
    temporary directory per process). Raises SynthesisError when any step or check fails."""
    from apa.text import to_words

    words = to_words(pair.text)
    what = f"{pair.text!r} word {pair.word_index} phone {pair.phone_index} {pair.change}"
    if not 0 <= pair.word_index < len(words):
        raise SynthesisError(f"{what}: the sentence has {len(words)} words")
    phones = words[pair.word_index].phones
    if not 0 <= pair.phone_index < len(phones) or _base(phones[pair.phone_index]) != pair.original:
        raise SynthesisError(f"{what}: the reference of {words[pair.word_index].text} is {' '.join(phones)}")
    groups = espeak_words([w.text for w in words], voice)
    altered_groups = [list(g) for g in groups]
    try:
        altered_groups[pair.word_index] = alter_word(
            groups[pair.word_index], phones, pair.phone_index, pair.replacement
        )
        canonical_phonemes = _check_reads_back(groups, voice)
        altered_phonemes = _check_reads_back(altered_groups, voice)
    except SynthesisError as exc:
        raise SynthesisError(f"{what}: {exc}") from exc
    cache = Path(cache_dir) if cache_dir is not None else _default_cache()
    canonical = _synthesize(canonical_phonemes, cache, voice)
    altered = _synthesize(altered_phonemes, cache, voice)
    _check_readings(canonical, altered, what)
    return SynthesizedPair(pair, canonical, altered, canonical_phonemes, altered_phonemes)


def iter_synthesized(
    pairs: Iterable[MinimalPair] = PAIRS, cache_dir: str | Path | None = None, voice: str = VOICE
) -> Iterator[tuple[np.ndarray, np.ndarray, str, int, int]]:
    """(canonical_audio, altered_audio, text, word_index, phone_index) per pair; SynthesisError on
    the first pair that fails."""
    for pair in pairs:
        yield synthesize_pair(pair, cache_dir, voice).as_tuple()
