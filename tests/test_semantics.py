"""The documented rules, tested through the public entry points and in every engine:
argmax ties go to the lowest index (through ``predict()``), and an input exactly at a
binarizer's edge counts as reaching it (``x >= edge``)."""

import numpy as np
import pytest

from bitnn.binarize import (
    LloydMaxBinarizer,
    QuantileBinarizer,
    ThresholdBinarizer,
    _encode_levels,
)
from bitnn.bits import unpack_bits
from bitnn.engine import compiled
from bitnn.network import BitLayer, BitNetwork

ENGINES = ["reference", *(compiled.available_variants() if compiled.extension_available() else [])]


@pytest.mark.parametrize("engine", ENGINES)
def test_predict_breaks_ties_towards_the_lowest_index(engine):
    # inputs (1, 1): scores 0, 2, -2, 2, 2 -> classes 1, 3 and 4 tie; 1 wins
    layer = BitLayer.from_values(np.array([[1, -1], [1, 1], [-1, -1], [1, 1], [1, 1]]))
    net = BitNetwork([layer], ThresholdBinarizer(0.5).fit(np.zeros((1, 2))))
    X = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    assert net.scores(X, engine).tolist() == [[0, 2, -2, 2, 2], [0, -2, 2, -2, -2], [2, 0, 0, 0, 0]]
    assert net.predict(X, engine).tolist() == [1, 2, 0]


@pytest.mark.parametrize("engine", ENGINES)
def test_predict_ties_in_random_networks_go_to_the_lowest_index(engine):
    rng = np.random.default_rng(11)
    w = rng.choice([-1, 1], (12, 40))
    w[[3, 7, 10]] = w[5]  # units 3, 5, 7 and 10 always tie with one another
    w[[8, 11]] = w[1]
    net = BitNetwork(
        [BitLayer.from_values(w)], ThresholdBinarizer().fit(np.zeros((1, 40))), "scores"
    )
    X = rng.standard_normal((500, 40))
    scores = net.scores(X, engine)
    expected = [min(np.flatnonzero(row == row.max())) for row in scores]
    tied = [np.count_nonzero(row == row.max()) > 1 for row in scores]
    assert sum(tied) > 100  # the test does exercise ties
    assert net.predict(X, engine).tolist() == expected


def _edge_cases(binarizer):
    """Values exactly at every edge and one float32 step below it, with their levels."""
    edges = binarizer.edges_.astype(np.float32)
    assert np.all(np.diff(edges, axis=1) > 0), "the test needs distinct edges"
    n_features, n_edges = edges.shape
    at = np.empty((n_edges, n_features), np.float32)
    below = np.empty((n_edges, n_features), np.float32)
    for j in range(n_edges):
        at[j] = edges[:, j]
        below[j] = np.nextafter(edges[:, j], np.float32(-np.inf))
    levels_at = np.repeat(np.arange(1, n_edges + 1)[:, None], n_features, 1)
    X = np.concatenate([at, below])
    levels = np.concatenate([levels_at, levels_at - 1]).astype(np.uint8)
    return X, levels


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "binarizer",
    [
        QuantileBinarizer(2, "thermometer"),
        QuantileBinarizer(3, "binary"),
        QuantileBinarizer(2, "gray"),
        LloydMaxBinarizer(2, "thermometer"),
    ],
    ids=repr,
)
def test_a_value_exactly_at_an_edge_reaches_it(binarizer, engine):
    from bitnn.engine import get_engine

    rng = np.random.default_rng(5)
    binarizer.fit(rng.standard_normal((400, 7)))
    X, levels = _edge_cases(binarizer)
    np.testing.assert_array_equal(binarizer.levels(X), levels)
    expected = _encode_levels(levels, binarizer.n_bits, binarizer.code)
    np.testing.assert_array_equal(binarizer.transform(X), expected)
    packed = get_engine(engine).binarize(binarizer, X)
    np.testing.assert_array_equal(unpack_bits(packed, binarizer.n_bits_out_), expected)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_value_exactly_at_the_threshold_is_bit_one(engine):
    from bitnn.engine import get_engine

    t = np.float32(0.3)
    b = ThresholdBinarizer(float(t)).fit(np.zeros((1, 3)))
    X = np.array([[t, np.nextafter(t, np.float32(-1)), np.nextafter(t, np.float32(1))]])
    assert b.transform(X).tolist() == [[1, 0, 1]]
    assert unpack_bits(get_engine(engine).binarize(b, X.astype(np.float32)), 3).tolist() == [
        [1, 0, 1]
    ]
