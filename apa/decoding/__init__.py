"""Constrained decoding of a clip's scores, the path of a clip through it.

The words and phones are known from the reference, so the answer is a fixed template
(`apa.prompts.build_template`) whose only free parts are score slots; at each slot we read the
model's distribution over the slot's allowed values ("0" ... "10"; stress "5", "10"), so the
output always parses. Two readings come from the same pass: `greedy` (argmax: exactly what greedy
decoding under the grammar emits; it is what is fed back) and `expected` (probability-weighted mean).

1. `tokens`: the chat prompt (`chat_text`) and the template's pieces as tokens (`PieceTokenizer`,
   `encode_target`, shared with training).
2. `trie`: each slot's values as a token trie of depth <= 2 (`Trie`, `build_trie`); a probe
   token tells "1" from "10" (`value_probs`); `SlotReading` is what a slot reads.
3. `plan`: what does not depend on the audio (`Plan`: prompt ids, forced tokens, tries, the
   vocabulary columns read), built and cached by a `Planner`.
4. `features`: log-mel features and the audio encoder on the real length, not 30 s
   (`log_mel_features`, `encode_audio_fast`, and their `_batch` forms; `encoder_states`: the
   encoder's layers before pooling, which a GOPT helper reads per phone).
5. `backends`: the LLM forward over a KV cache with tree masks (`DecoderBackend`:
   `LeanDecoder`, or transformers' own forward in `HFDecoder`).
6. `speculative`: the prompt embeddings with the audio in place (`prompt_embeds`), then the
   template decoded a window of guessed slots per pass (`decode_clip`, `decode_clips` for many
   clips in one forward per pass), or, with a fixed history (`fed`), every fixed slot in one pass.
7. `reference`: the reference decoder, step by step through the model's own forward
   (`ReferenceDecoder`); the fast path gives the same readings (greedy values identical,
   probabilities equal to float rounding).

`apa.scorer.AudioLMMScorer` drives these.
"""

from apa.decoding.backends import DecoderBackend, HFDecoder, LeanDecoder, build_backend, tree_mask
from apa.decoding.features import (
    ENCODER_FRAME_S, audio_token_count, encode_audio_batch, encode_audio_fast, encoder_states, feature_frames,
    log_mel_features, log_mel_features_batch,
)
from apa.decoding.plan import Plan, Planner, plan_cols
from apa.decoding.reference import ReferenceDecoder
from apa.decoding.speculative import ClipDecode, Guesser, decode_clip, decode_clips, prompt_embeds
from apa.decoding.tokens import PieceTokenizer, chat_text, encode_target, end_token_id, forced_until_slot
from apa.decoding.trie import SlotReading, Trie, build_trie, value_probs

__all__ = [
    "ENCODER_FRAME_S", "ClipDecode", "DecoderBackend", "Guesser", "HFDecoder", "LeanDecoder", "PieceTokenizer", "Plan", "Planner",
    "ReferenceDecoder", "SlotReading", "Trie", "audio_token_count", "build_backend", "build_trie", "chat_text",
    "decode_clip", "decode_clips", "encode_audio_batch", "encode_audio_fast", "encode_target", "encoder_states", "end_token_id",
    "feature_frames", "forced_until_slot", "log_mel_features", "log_mel_features_batch", "plan_cols",
    "prompt_embeds", "tree_mask", "value_probs",
]
