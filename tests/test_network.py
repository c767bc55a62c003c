"""The reference engine against plain integer arithmetic on +1/-1/0 values."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnn.bits import pack_bits, pack_signs, unpack_bits
from bitnn.errors import InputError
from bitnn.network import BitLayer, BitNetwork


def dense_scores(x_pm1, w, threshold):
    """The definition in plain integers: dot over present connections minus threshold."""
    return x_pm1.astype(np.int64) @ w.T.astype(np.int64) - threshold


@st.composite
def layers(draw):
    n_in = draw(st.integers(1, 200))
    n_out = draw(st.integers(1, 40))
    batch = draw(st.sampled_from([1, 2, 7, 64]))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["bias", "threshold", "none"]))
    sparse = draw(st.booleans())
    rng = np.random.default_rng(seed)
    w = rng.choice([-1, 1], size=(n_out, n_in))
    if sparse:
        w[rng.random(w.shape) < 0.3] = 0
    x = rng.choice([-1, 1], size=(batch, n_in))
    if kind == "bias":
        b = rng.choice([-1, 1], size=n_out)
        return BitLayer.from_values(w, bias=b), w, -b, x
    if kind == "threshold":
        t = rng.integers(-n_in - 1, n_in + 2, size=n_out)
        return BitLayer.from_values(w, threshold=t), w, t, x
    return BitLayer.from_values(w), w, np.zeros(n_out, int), x


@settings(max_examples=150, deadline=None)
@given(layers())
def test_reference_matches_definition(case):
    from bitnn.engine import reference

    layer, w, t, x = case
    expected = dense_scores(x, w, t)
    xw = pack_signs(x)
    np.testing.assert_array_equal(reference.layer_scores(xw, layer), expected)
    np.testing.assert_array_equal(
        unpack_bits(reference.layer_bits(xw, layer), layer.n_out), expected >= 0
    )
    # The fast engines' form: fires iff popcount((x ^ w) & mask) <= popcount_limit.
    from bitnn.bits import unpack_bits as ub

    xor = (ub(xw, layer.n_in)[:, None, :] != ub(layer.weight, layer.n_in)[None]) & (
        ub(layer.effective_mask, layer.n_in)[None] == 1
    )
    np.testing.assert_array_equal(xor.sum(2) <= layer.popcount_limit, expected >= 0)


def test_sign_zero_is_plus_one_and_ties_go_to_lowest_index():
    layer = BitLayer.from_values(np.array([[1, -1], [1, 1], [-1, -1], [1, 1]]))
    x = pack_signs(np.array([[1, 1]]))
    net_scores = BitNetwork([layer]).forward_packed(x)
    assert net_scores.tolist() == [[0, 2, -2, 2]]
    assert BitNetwork([layer], output="bits").forward_packed(x).tolist() == [[0b1011]]
    net = BitNetwork([layer])
    assert int(np.argmax(net.forward_packed(x), axis=1)[0]) == 1  # tie 1 vs 3 -> 1


def test_layer_validation():
    with pytest.raises(InputError, match="-1, 0 and"):
        BitLayer.from_values(np.array([[2, 1]]))
    with pytest.raises(InputError, match="padding"):
        BitLayer(np.array([[1 << 5]], np.uint64), 3, np.zeros(1))
    with pytest.raises(InputError, match="one-bit bias"):
        BitLayer(np.zeros((1, 1), np.uint64), 3, np.array([2]), bias_kind="bias")
    with pytest.raises(InputError, match="absent connections"):
        BitLayer(np.array([[1]], np.uint64), 3, np.zeros(1), mask=np.array([[2]], np.uint64))
    a = BitLayer.from_values(np.ones((4, 3)))
    b = BitLayer.from_values(np.ones((2, 5)))
    with pytest.raises(InputError, match="expects 5 inputs"):
        BitNetwork([a, b])


def test_packed_input_validation():
    net = BitNetwork([BitLayer.from_values(np.ones((2, 70)))])
    with pytest.raises(InputError, match="shape"):
        net.forward_packed(np.zeros((3, 1), np.uint64))
    with pytest.raises(InputError, match="uint64"):
        net.forward_packed(np.zeros((3, 2), np.float64))
    bad = np.zeros((1, 2), np.uint64)
    bad[0, 1] = 1 << 20  # bit 84 > 70 inputs
    with pytest.raises(InputError, match="padding"):
        net.forward_packed(bad)
    assert net.forward_packed(np.zeros((0, 2), np.uint64)).shape == (0, 2)
    with pytest.raises(InputError, match="no input binarizer"):
        net.predict(np.zeros((1, 70)))


def test_multilayer_chain_matches_integer_model():
    rng = np.random.default_rng(0)
    ws = [
        rng.choice([-1, 1], (33, 70)),
        rng.choice([-1, 0, 1], (20, 33)),
        rng.choice([-1, 1], (5, 20)),
    ]
    ts = [rng.integers(-3, 4, 33), rng.integers(-3, 4, 20), np.zeros(5, int)]
    net = BitNetwork([BitLayer.from_values(w, threshold=t) for w, t in zip(ws, ts, strict=True)])
    x = rng.choice([-1, 1], (500, 70))
    h = x
    for w, t in zip(ws[:-1], ts[:-1], strict=True):
        h = np.where(dense_scores(h, w, t) >= 0, 1, -1)
    np.testing.assert_array_equal(
        net.forward_packed(pack_signs(x)), dense_scores(h, ws[-1], ts[-1])
    )
    assert pack_bits(np.zeros((1, 1), np.uint8)).shape == (1, 1)
