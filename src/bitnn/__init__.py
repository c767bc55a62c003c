"""bitnn: bitwise neural networks (Kim & Smaragdis, 2015) that train in PyTorch and run on
nothing but XNOR, popcount and comparison.

Deployment needs numpy only: :func:`load_model`, :class:`BitNetwork`, the binarizers.
Training (``bitnn.train``) needs PyTorch (``pip install bitnn[train]``).

The names below are imported on first use, so that ``import bitnn`` itself is instant: the
``bitnn`` command installs its Ctrl-C handling before numpy (or PyTorch) is loaded.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing itself is not imported: every millisecond before the CLI's
# Ctrl-C handling is a moment where Ctrl-C gives a traceback
__version__ = "0.1.0"

_WHERE = {
    "LloydMaxBinarizer": "bitnn.binarize",
    "QuantileBinarizer": "bitnn.binarize",
    "ThresholdBinarizer": "bitnn.binarize",
    "WTAHashBinarizer": "bitnn.binarize",
    "BitnnError": "bitnn.errors",
    "DatasetError": "bitnn.errors",
    "InputError": "bitnn.errors",
    "ModelFormatError": "bitnn.errors",
    "NotFittedError": "bitnn.errors",
    "TrainingInterrupted": "bitnn.errors",
    "load_model": "bitnn.io",
    "save_model": "bitnn.io",
    "BitLayer": "bitnn.network",
    "BitNetwork": "bitnn.network",
}

__all__ = [
    "BitLayer",
    "BitNetwork",
    "BitnnError",
    "DatasetError",
    "InputError",
    "LloydMaxBinarizer",
    "ModelFormatError",
    "NotFittedError",
    "QuantileBinarizer",
    "ThresholdBinarizer",
    "TrainingInterrupted",
    "WTAHashBinarizer",
    "load_model",
    "save_model",
]
assert sorted(__all__) == sorted(_WHERE)

if TYPE_CHECKING:
    from typing import Any

    from bitnn.binarize import (
        LloydMaxBinarizer,
        QuantileBinarizer,
        ThresholdBinarizer,
        WTAHashBinarizer,
    )
    from bitnn.errors import (
        BitnnError,
        DatasetError,
        InputError,
        ModelFormatError,
        NotFittedError,
        TrainingInterrupted,
    )
    from bitnn.io import load_model, save_model
    from bitnn.network import BitLayer, BitNetwork


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bitnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
