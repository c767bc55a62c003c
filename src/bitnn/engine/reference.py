"""The numpy reference engine: the definition every faster engine is tested against.

It computes exactly what :mod:`bitnn.network` documents, with bit logic only (XNOR, AND,
``np.bitwise_count``, integer comparison), in batch chunks so memory stays bounded.
"""

from __future__ import annotations

import numpy as np

from bitnn.binarize import Binarizer
from bitnn.bits import pack_bits
from bitnn.network import BitLayer

NAME = "reference"
_CHUNK_WORDS = 1 << 22  # words of XNOR temporaries per chunk (32 MiB)


def layer_scores(x: np.ndarray, layer: BitLayer) -> np.ndarray:
    """Packed inputs ``(batch, words)`` -> int64 scores ``dot - threshold`` ``(batch, n_out)``.

    int64 throughout: ``dot`` is within ``[-n_in, n_in]`` and a threshold within int32's range,
    so no layer the model format allows can overflow (int32 did at thresholds near 2**31)."""
    w = layer.weight
    mask = layer.effective_mask
    subtract = layer.n_present + layer.threshold.astype(np.int64)  # score = 2 * agree - this
    out = np.empty((x.shape[0], layer.n_out), dtype=np.int64)
    rows = max(1, _CHUNK_WORDS // max(1, w.size))
    for start in range(0, x.shape[0], rows):
        xs = x[start : start + rows, None, :]
        agree = np.bitwise_count(~(xs ^ w[None]) & mask[None]).sum(axis=2, dtype=np.int64)
        out[start : start + rows] = 2 * agree - subtract
    return out


def layer_bits(x: np.ndarray, layer: BitLayer) -> np.ndarray:
    """Packed inputs -> packed output bits (bit 1 iff score >= 0, i.e. sign(0) = +1)."""
    return pack_bits(layer_scores(x, layer) >= 0)


def binarize(binarizer: Binarizer, X: np.ndarray) -> np.ndarray:
    """Raw inputs -> packed input bits (the binarizer's own numpy definition)."""
    return binarizer.transform_packed(X)
