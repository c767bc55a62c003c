"""bitnn: bitwise neural networks (Kim & Smaragdis, 2015) that train in PyTorch and run on
nothing but XNOR, popcount and comparison.

Deployment needs numpy only: :func:`load_model`, :class:`BitNetwork`, the binarizers.
Training (``bitnn.train``) needs PyTorch (``pip install bitnn[train]``).
"""

__version__ = "0.1.0"

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
