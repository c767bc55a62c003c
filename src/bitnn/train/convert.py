"""Conversion of a trained :class:`BitMLP` to the deployed :class:`BitNetwork`."""

from __future__ import annotations

from typing import Any

import numpy as np

from bitnn.binarize import Binarizer
from bitnn.network import BitLayer, BitNetwork
from bitnn.train._torch import torch
from bitnn.train.layers import BitLinear, BitMLP


@torch.no_grad()
def ternary_weight(layer: BitLinear) -> np.ndarray:
    """The round-2 weight matrix as int8 (+1, -1, 0 for absent)."""
    was = layer.binary
    layer.binary = True
    try:
        return layer.effective_weight().cpu().numpy().astype(np.int8)
    finally:
        layer.binary = was


def to_bit_layer(layer: BitLinear) -> BitLayer:
    w = ternary_weight(layer)
    sign, t = layer.folded_threshold()
    if layer.bias_kind == "bias":
        return BitLayer.from_values(w, bias=-t)
    if layer.bias_kind == "none":
        return BitLayer.from_values(w)
    # A negative BatchNorm scale flips the comparison: negate that unit's weights instead.
    return BitLayer.from_values(w * sign[:, None], threshold=t)


def to_bit_network(
    model: BitMLP, binarizer: Binarizer | None = None, metadata: dict[str, Any] | None = None
) -> BitNetwork:
    """The deployed bit network that computes exactly what ``model`` does in binary eval mode."""
    layers = [to_bit_layer(layer) for layer in model.layers]
    return BitNetwork(layers, binarizer, model.output, metadata)
