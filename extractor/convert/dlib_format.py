"""A reader for dlib's `serialize()` stream: the primitives every dlib model file is built from.

Read from dlib's `serialize.h`, `matrix.h` and `tensor.h` (the layout is recorded in
shared/notes/models.md):
- integer: one control byte whose low nibble is the number of bytes that follow and whose bit
  0x80 marks a negative value, then that many little-endian bytes;
- float and double: an integer mantissa, then an integer exponent: value = mantissa * 2**exponent;
- string: an integer length, then that many bytes;
- bool: one ASCII byte, '0' or '1' (older files: a raw 0/1 byte);
- matrix: rows and columns as integers (negated in some versions), then the elements row by row;
- tensor: version 2, then n, k, rows, cols, then n*k*rows*cols little-endian float32.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import numpy.typing as npt


class DlibFormatError(ValueError):
    """The stream is not what the reader expected at this position."""


class DlibReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    def _take(self, count: int) -> memoryview:
        if self.pos + count > len(self._data):
            raise DlibFormatError(f"unexpected end of stream at byte {self.pos}")
        chunk = self._data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def read_int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"integer of {size} bytes at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def read_float(self) -> float:
        mantissa = self.read_int()
        exponent = self.read_int()
        if exponent in (32000, 32001, 32002):
            # dlib's markers for infinity, -infinity and NaN.
            return {32000: math.inf, 32001: -math.inf, 32002: math.nan}[exponent]
        return math.ldexp(mantissa, exponent)

    def read_string(self) -> str:
        return bytes(self._take(self.read_int())).decode()

    def read_bool(self) -> bool:
        byte = self._take(1)[0]
        if byte in (ord("0"), 0):
            return False
        if byte in (ord("1"), 1):
            return True
        raise DlibFormatError(f"bad bool byte {byte!r} at byte {self.pos - 1}")

    def expect_int(self, wanted: int, what: str) -> None:
        got = self.read_int()
        if got != wanted:
            raise DlibFormatError(f"{what}: expected {wanted}, got {got} at byte {self.pos}")

    def float_matrix(self) -> npt.NDArray[np.float32]:
        """A dlib::matrix<float> serialized element by element (as in shape predictors)."""
        rows = abs(self.read_int())
        cols = abs(self.read_int())
        values = [self.read_float() for _ in range(rows * cols)]
        return np.array(values, dtype=np.float32).reshape(rows, cols)

    def tensor(self) -> npt.NDArray[np.float32]:
        """A dlib resizable_tensor: shape (n, k, rows, cols) of raw little-endian float32."""
        self.expect_int(2, "tensor version")
        n, k, rows, cols = (self.read_int() for _ in range(4))
        count = n * k * rows * cols
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(n, k, rows, cols)

    def raw_float32(self, count: int) -> npt.NDArray[np.float32]:
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)

    def unpack(self, fmt: str) -> tuple[object, ...]:
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))
