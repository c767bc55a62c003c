"""Fingerprints of what the released models predict, to check a re-release changes nothing.

    python scripts/model_predictions.py [MODELS_DIR]

MNIST models: the class of each of the 10,000 MNIST test images, from uint8 pixels and from
the same pixels as float32, with the reference engine and the default engine. Denoisers: the
mask bits of 4,096 fixed feature frames (seed 0, log-normal magnitudes spanning every edge).
Prints one SHA-256 per model and input kind; works with any bitnn version that has
``load_model`` and ``BitNetwork.predict``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from bitnn import load_model

MNIST_MODELS = ("mnist-small", "mnist-paper", "mnist-best")
DENOISERS = ("denoise-8k", "denoise-8k-paper")


def denoiser_frames(n_features: int, n: int = 4096) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.lognormal(mean=-1.0, sigma=2.0, size=(n, n_features)).astype(np.float32)


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def fingerprints(folder: Path) -> dict[str, str]:
    from bitnn.data.mnist import load_mnist

    out = {}
    x_u8 = load_mnist().X_test
    for name in MNIST_MODELS:
        net = load_model(folder / f"{name}.bnn")
        for kind, x in (("uint8", x_u8), ("float32", x_u8.astype(np.float32))):
            for engine in ("reference", None):
                pred = net.predict(x, engine).astype(np.int64)
                out[f"{name} {kind} {engine or 'default'}"] = digest(pred)
    for name in DENOISERS:
        net = load_model(folder / f"{name}.bnn")
        frames = denoiser_frames(net.binarizer.n_features_in_)
        for engine in ("reference", None):
            bits = net.predict(frames, engine).astype(np.uint8)
            out[f"{name} float32 {engine or 'default'}"] = digest(np.packbits(bits))
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for key, value in fingerprints(folder).items():
        print(f"{value}  {key}")
