"""Packing conventions shared by every engine, the model file and the C export.

Encoding
    A bipolar value is one bit: bit 1 <=> +1, bit 0 <=> -1.

In-memory layout (what engines compute on)
    A vector of ``n`` bits is stored in ``words(n) = ceil(n / 64)`` little-endian ``uint64``
    words. Bit ``j`` lives in word ``j // 64`` at bit position ``j % 64`` (LSB first).
    Padding bits of the last word are always 0. A batch is a C-contiguous
    ``(batch, words(n))`` array.

File layout (what the model file stores)
    A matrix of bits is stored as one row-major bit stream without any padding between rows:
    element ``(r, c)`` of an ``(rows, cols)`` matrix is stream bit ``k = r * cols + c``, at byte
    ``k // 8`` and bit ``k % 8`` (LSB first). The last byte is zero-padded. So a file holds exactly
    ``ceil(rows * cols / 8)`` bytes per bit matrix: its size on disk is its bit count.
"""

from __future__ import annotations

import numpy as np

from bitnn.errors import InputError

WORD_BITS = 64
WORD_DTYPE = np.dtype("<u8")


def n_words(n_bits: int) -> int:
    """Number of 64-bit words that hold ``n_bits`` bits."""
    if n_bits < 0:
        raise InputError(f"a bit count cannot be negative, got {n_bits}")
    return (n_bits + WORD_BITS - 1) // WORD_BITS


def _as_bit_array(bits: np.ndarray) -> np.ndarray:
    a = np.asarray(bits)
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"bits must be bool or integers 0/1, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 1):
        raise InputError("bits must be 0 or 1; use pack_signs for +1/-1 values")
    return a.astype(np.uint8, copy=False)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack 0/1 (or bool) values along the last axis into uint64 words.

    Shape ``(..., n)`` becomes ``(..., n_words(n))``; padding bits are 0.
    """
    a = _as_bit_array(bits)
    if a.ndim == 0:
        raise InputError("pack_bits needs at least one axis")
    n = a.shape[-1]
    w = n_words(n)
    padded = np.zeros((*a.shape[:-1], w * WORD_BITS), dtype=np.uint8)
    padded[..., :n] = a
    packed = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view(WORD_DTYPE).reshape((*a.shape[:-1], w))


def unpack_bits(words: np.ndarray, n_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: uint64 words ``(..., w)`` -> uint8 0/1 ``(..., n_bits)``."""
    words = np.ascontiguousarray(words, dtype=WORD_DTYPE)
    if words.shape[-1] != n_words(n_bits):
        raise InputError(
            f"{n_bits} bits need {n_words(n_bits)} words per row, got {words.shape[-1]}"
        )
    as_bytes = words.view(np.uint8).reshape((*words.shape[:-1], words.shape[-1] * 8))
    return np.unpackbits(as_bytes, axis=-1, count=n_bits, bitorder="little")


def pack_signs(values: np.ndarray) -> np.ndarray:
    """Pack bipolar values (+1 -> bit 1, -1 -> bit 0) along the last axis."""
    v = np.asarray(values)
    if v.size and not np.all((v == 1) | (v == -1)):
        raise InputError("bipolar values must be exactly +1 or -1")
    return pack_bits(v > 0)


def unpack_signs(words: np.ndarray, n_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_signs`: words -> int8 values in {-1, +1}."""
    return unpack_bits(words, n_bits).astype(np.int8) * 2 - 1


def bitstream_bytes(rows: int, cols: int) -> int:
    """Bytes a ``(rows, cols)`` bit matrix takes in the file layout."""
    return (rows * cols + 7) // 8


def words_to_bitstream(words: np.ndarray, n_cols: int) -> np.ndarray:
    """Word rows ``(rows, n_words(n_cols))`` -> unpadded row-major bit stream (uint8 bytes)."""
    bits = unpack_bits(words, n_cols)
    return np.packbits(bits.reshape(-1), bitorder="little")


def bitstream_to_words(stream: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Unpadded row-major bit stream -> word rows ``(rows, n_words(cols))``."""
    stream = np.asarray(stream, dtype=np.uint8).reshape(-1)
    if stream.size != bitstream_bytes(rows, cols):
        raise InputError(
            f"a {rows}x{cols} bit matrix needs {bitstream_bytes(rows, cols)} bytes, "
            f"got {stream.size}"
        )
    bits = np.unpackbits(stream, count=rows * cols, bitorder="little").reshape(rows, cols)
    return pack_bits(bits)


def popcount(words: np.ndarray) -> np.ndarray:
    """Number of 1 bits per word (vectorised)."""
    return np.bitwise_count(words)
