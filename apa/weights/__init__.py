"""Readers for the binary weight formats apa-mini is assembled from, with no dependency on the
libraries that write them: CTranslate2's `model.bin` (`apa.weights.ct2`) and GGUF
(`apa.weights.gguf`), over one bounds-checked byte cursor (`apa.weights.reader`); and
pocketsphinx's binary `mdef` (`apa.weights.sphinx_mdef`, for apa.align).

Both readers memory-map the file and never import CTranslate2 or llama.cpp.
"""

from __future__ import annotations

from apa.weights.ct2 import Ct2FormatError, read_ct2_model_bin, whisper_encoder_from_ct2
from apa.weights.gguf import (
    GgufFormatError,
    read_gguf_metadata,
    read_gguf_tensor_types,
    text_config_from_gguf,
    tokenizer_from_gguf,
)
from apa.weights.reader import ByteCursor, WeightsFormatError, map_file

__all__ = [
    "ByteCursor",
    "Ct2FormatError",
    "GgufFormatError",
    "WeightsFormatError",
    "map_file",
    "read_ct2_model_bin",
    "read_gguf_metadata",
    "read_gguf_tensor_types",
    "text_config_from_gguf",
    "tokenizer_from_gguf",
    "whisper_encoder_from_ct2",
]
