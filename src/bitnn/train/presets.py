"""Named training configurations.

``paper`` follows Kim & Smaragdis (2015) as far as the paper specifies it: one-bit biases,
tanh weight compression then noisy backpropagation, population-based (quantile) input bits,
dropout. What the paper leaves open (optimiser, schedule) is Adam with an exponential decay.
``best`` adds what we found to work better: BatchNorm folded into integer thresholds at
conversion (inference stays all-bit: XNOR, popcount, integer compare), and a cosine schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bitnn.errors import InputError


@dataclass(frozen=True)
class Preset:
    config: dict[str, Any]
    binarizer: str
    description: str
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        config={
            "bias_kind": "bias",
            "output_bias_kind": "bias",
            "optimizer": "adam",
            "schedule": "exponential",
            "dropout_input": 0.1,
            "dropout_hidden": 0.2,
        },
        binarizer="quantile:2:binary",
        description="the paper's method: bias bits, tanh compression, noisy backprop",
    ),
    "best": Preset(
        config={
            "bias_kind": "threshold",
            "output_bias_kind": "bias",
            "optimizer": "adam",
            "schedule": "cosine",
            "dropout_input": 0.1,
            "dropout_hidden": 0.2,
        },
        binarizer="quantile:2:thermometer",
        description="integer thresholds (folded BatchNorm), cosine schedule",
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
