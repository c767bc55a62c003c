import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bitnn.bits import (
    bitstream_bytes,
    bitstream_to_words,
    n_words,
    pack_bits,
    pack_signs,
    unpack_bits,
    unpack_signs,
    words_to_bitstream,
)
from bitnn.errors import InputError

shapes = st.tuples(st.integers(1, 5), st.integers(1, 200))


@given(shapes.flatmap(lambda s: arrays(np.uint8, s, elements=st.integers(0, 1))))
def test_pack_unpack_round_trip(bits):
    words = pack_bits(bits)
    assert words.dtype == np.dtype("<u8")
    assert words.shape == (bits.shape[0], n_words(bits.shape[1]))
    np.testing.assert_array_equal(unpack_bits(words, bits.shape[1]), bits)


@given(shapes.flatmap(lambda s: arrays(np.int8, s, elements=st.sampled_from([-1, 1]))))
def test_signs_round_trip(values):
    np.testing.assert_array_equal(unpack_signs(pack_signs(values), values.shape[1]), values)


@given(shapes.flatmap(lambda s: arrays(np.uint8, s, elements=st.integers(0, 1))))
def test_bitstream_round_trip_and_size(bits):
    rows, cols = bits.shape
    stream = words_to_bitstream(pack_bits(bits), cols)
    assert stream.size == bitstream_bytes(rows, cols) == (rows * cols + 7) // 8
    np.testing.assert_array_equal(bitstream_to_words(stream, rows, cols), pack_bits(bits))


def test_documented_layout():
    # bit j -> word j // 64, position j % 64; padding bits are 0.
    bits = np.zeros(130, dtype=np.uint8)
    bits[[0, 3, 64, 129]] = 1
    w = pack_bits(bits)
    assert w.tolist() == [1 | 8, 1, 2]
    # +1 is bit 1, -1 is bit 0.
    assert pack_signs(np.array([1, -1, 1])).tolist() == [0b101]
    # bitstream: element (r, c) of a (2, 3) matrix is stream bit r * 3 + c, LSB first.
    m = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.uint8)
    assert words_to_bitstream(pack_bits(m), 3).tolist() == [0b100001]


def test_bad_input():
    with pytest.raises(InputError, match="0 or 1"):
        pack_bits(np.array([0, 2]))
    with pytest.raises(InputError, match="bool or integers"):
        pack_bits(np.array([0.5]))
    with pytest.raises(InputError, match=r"\+1 or -1"):
        pack_signs(np.array([1, 0]))
    with pytest.raises(InputError, match="words per row"):
        unpack_bits(np.zeros((1, 1), np.uint64), 65)
    with pytest.raises(InputError, match="needs 1 bytes"):
        bitstream_to_words(np.zeros(2, np.uint8), 1, 3)
