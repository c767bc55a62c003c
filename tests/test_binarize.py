import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnn.binarize import (
    Binarizer,
    LloydMaxBinarizer,
    QuantileBinarizer,
    ThresholdBinarizer,
    WTAHashBinarizer,
    binarizer_from_spec,
)
from bitnn.bits import unpack_bits
from bitnn.errors import InputError, NotFittedError


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(4, 300),
    n_bits=st.integers(1, 3),
    code=st.sampled_from(["binary", "gray", "thermometer"]),
    seed=st.integers(0, 1000),
)
def test_quantile_bins_have_equal_population_on_fitting_data(n, n_bits, code, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)) * rng.uniform(0.1, 10, 3)  # distinct values
    b = QuantileBinarizer(n_bits, code).fit(X)
    levels = b.levels(X)
    for f in range(3):
        counts = np.bincount(levels[:, f], minlength=b.n_levels)
        assert counts.max() - counts.min() <= 1
        assert counts.sum() == n


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 200),
    n_bits=st.integers(1, 3),
    code=st.sampled_from(["binary", "thermometer"]),
    n_values=st.integers(1, 12),
    zero_share=st.floats(0.0, 0.95),
    seed=st.integers(0, 1000),
)
def test_quantile_ties_never_waste_a_level(n, n_bits, code, n_values, zero_share, seed):
    # Heavy ties, like the zero of a mostly blank pixel: a tie is never split, and every level
    # is used when there are at least as many distinct values as levels.
    rng = np.random.default_rng(seed)
    x = np.where(rng.random(n) < zero_share, 0, rng.integers(1, n_values + 1, n))
    X = x[:, None].astype(np.float32)
    b = QuantileBinarizer(n_bits, code).fit(X)
    levels = b.levels(X)[:, 0]
    distinct = np.unique(x)
    assert len(np.unique(levels)) == min(len(distinct), b.n_levels)
    for v in distinct:
        assert len(np.unique(levels[x == v])) == 1
    assert np.all(np.diff(b.edges_[0]) >= 0)


def test_quantile_mostly_zero_feature_keeps_its_information():
    # 80% zeros: the zeros make level 0, the nonzero values share the other levels equally.
    x = np.concatenate([np.zeros(800), np.arange(1, 201)])[:, None]
    levels = QuantileBinarizer(2, "binary").fit(x).levels(x)[:, 0]
    assert np.bincount(levels).tolist() == [800, 66, 67, 67]
    # A large tie at the top must not swallow the runs that the lower levels still need.
    x = np.concatenate([np.arange(10), np.full(90, 10)])[:, None]
    levels = QuantileBinarizer(2, "binary").fit(x).levels(x)[:, 0]
    assert np.bincount(levels).tolist() == [8, 1, 1, 90]


def test_codes_and_scatter_layout():
    X = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0], [3.0, 13.0]])
    therm = QuantileBinarizer(3, "thermometer").fit(X)  # 4 levels
    assert therm.transform(X)[:, :3].tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]
    binary = QuantileBinarizer(2, "binary").fit(X)
    assert binary.transform(X)[:, :2].tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]
    gray = QuantileBinarizer(2, "gray").fit(X)
    assert gray.transform(X)[:, :2].tolist() == [[0, 0], [1, 0], [1, 1], [0, 1]]
    # the bits of feature f are units f*k .. f*k+k-1
    assert binary.transform(X)[:, 2:].tolist() == binary.transform(X)[:, :2].tolist()
    assert binary.n_bits_out_ == 4


def test_threshold_and_sign():
    b = ThresholdBinarizer().fit(np.zeros((1, 3)))
    assert b.transform(np.array([[-1.0, 0.0, 2.0]])).tolist() == [[0, 1, 1]]
    assert ThresholdBinarizer(0.5).fit_transform(np.array([[0.4, 0.5]])).tolist() == [[0, 1]]


def test_lloyd_max_two_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-5, 0.1, 500), rng.normal(5, 0.1, 500)])[:, None]
    b = LloydMaxBinarizer(1, "binary").fit(x)
    np.testing.assert_allclose(b.centers_[0], [-5, 5], atol=0.05)
    assert abs(b.edges_[0, 0]) < 0.1
    # Lloyd-Max never has a larger squared error than equal-population bins with bin means.
    y = rng.exponential(1.0, (2000, 1))
    lm = LloydMaxBinarizer(2, "binary").fit(y)
    err_lm = np.mean((y[:, 0] - lm.centers_[0][lm.levels(y)[:, 0]]) ** 2)
    q = QuantileBinarizer(2, "binary").fit(y)
    lv = q.levels(y)[:, 0]
    means = np.array([y[lv == i, 0].mean() for i in range(4)])
    assert err_lm <= np.mean((y[:, 0] - means[lv]) ** 2) + 1e-9


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), code=st.sampled_from(["onehot", "binary"]))
def test_wta_invariant_to_monotonic_transforms(seed, code):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((50, 12))
    b = WTAHashBinarizer(16, 5, code, random_state=seed).fit(X)
    bits = b.transform(X)
    for f in (np.exp, lambda v: v**3 + v, lambda v: 3 * v - 7, np.arctan):
        np.testing.assert_array_equal(b.transform(f(X)), bits)
    if code == "onehot":
        assert np.all(bits.reshape(50, 16, 5).sum(2) == 1)
    assert bits.shape == (50, b.n_bits_out_)


@pytest.mark.parametrize(
    "binarizer",
    [
        ThresholdBinarizer(0.25),
        QuantileBinarizer(2, "thermometer"),
        QuantileBinarizer(3, "gray"),
        LloydMaxBinarizer(2, "binary"),
        WTAHashBinarizer(8, 3, "binary", random_state=4),
    ],
)
def test_state_round_trip(binarizer):
    X = np.random.default_rng(1).standard_normal((100, 6))
    binarizer.fit(X)
    meta, arrays = binarizer.to_state()
    again = Binarizer.from_state(meta, arrays)
    assert repr(again) == repr(binarizer)
    np.testing.assert_array_equal(again.transform(X), binarizer.transform(X))
    np.testing.assert_array_equal(
        unpack_bits(again.transform_packed(X), again.n_bits_out_), again.transform(X)
    )


def test_transform_does_not_learn():
    X = np.random.default_rng(0).standard_normal((100, 2))
    b = QuantileBinarizer(2).fit(X)
    edges = b.edges_.copy()
    b.transform(X * 100)
    np.testing.assert_array_equal(b.edges_, edges)


def test_bad_input_messages():
    b = QuantileBinarizer(2)
    with pytest.raises(NotFittedError, match="fit"):
        b.transform(np.zeros((1, 1)))
    with pytest.raises(InputError, match="NaN or infinity"):
        b.fit(np.array([[1.0, np.nan]]))
    with pytest.raises(InputError, match="empty"):
        b.fit(np.zeros((0, 3)))
    with pytest.raises(InputError, match="2-D"):
        b.fit(np.zeros(3))
    with pytest.raises(InputError, match="real numbers"):
        b.fit(np.array([["a", "b"]]))
    b.fit(np.zeros((5, 3)))
    with pytest.raises(InputError, match="fitted on 3"):
        b.transform(np.zeros((2, 4)))
    with pytest.raises(InputError, match="code must be"):
        QuantileBinarizer(2, "morse").fit(np.zeros((2, 2)))
    with pytest.raises(InputError, match="window"):
        WTAHashBinarizer(4, 9).fit(np.zeros((2, 3)))
    with pytest.raises(InputError, match="unknown binarizer"):
        binarizer_from_spec("magic:3")
    with pytest.raises(InputError, match="cannot read"):
        binarizer_from_spec("quantile:x")
    assert repr(binarizer_from_spec("wta:64:4")) == (
        "WTAHashBinarizer(n_hashes=64, window=4, code='onehot', random_state=0)"
    )
