"""The byte cursor shared by the weight-file readers.

`ByteCursor` does bounds-checked little-endian reads over a buffer. It has no default error:
each reader passes its own exception class and format name, so a message says which format was
being read ("CTranslate2 model.bin", "GGUF"), which file, and at what offset.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any


class WeightsFormatError(ValueError):
    """A weight file that is truncated, of an unsupported version, or inconsistent."""


def map_file(path: str | os.PathLike) -> tuple[memoryview, int]:
    """(read-only memory map of the file as a memoryview, its size in bytes).

    The map stays alive while the memoryview, or any numpy array made from it, is referenced.
    An empty file gives an empty memoryview (mmap refuses to map zero bytes).
    """
    with open(Path(path), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return memoryview(b""), 0
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return memoryview(mm), size


class ByteCursor:
    """Bounds-checked little-endian reads over `buf`, from offset 0 on.

    `origin` (usually the file path) and `format_name` start every error message; `error` is the
    exception class raised.
    """

    def __init__(self, buf: memoryview, origin: str, *, format_name: str, error: type[Exception]):
        self.buf, self.origin, self.format_name, self.error = buf, origin, format_name, error
        self.pos = 0

    def fail(self, message: str) -> Exception:
        """The reader's exception for `message`, prefixed with the file and the format (to raise)."""
        return self.error(f"{self.origin}: {self.format_name}: {message}")

    def take(self, n: int, what: str) -> int:
        """Advance over `n` bytes named `what`; return their start offset."""
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(
                f"truncated or corrupt: {what} needs {n} bytes at offset {self.pos}, "
                f"but the file has {len(self.buf)} bytes"
            )
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        """`struct.unpack` of the little-endian format `fmt` at the cursor."""
        start = self.take(struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.buf, start)

    def raw(self, n: int, what: str) -> bytes:
        """The next `n` bytes."""
        start = self.take(n, what)
        return bytes(self.buf[start : start + n])
