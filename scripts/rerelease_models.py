"""Re-release the models of ``models/`` in the current model format (version 2).

    python scripts/rerelease_models.py [MODELS_DIR]

Each file is read as it is (version 1), its network rebuilt and saved again: the training
history and other provenance go to ``NAME.bnn.json`` beside it; the MNIST models, whose
inputs are uint8 pixels, get whole-number edges ``ceil(edge)`` stored as bytes (the same
bits on every pixel value). Nothing is retrained: weights, masks and thresholds are the
same bits. ``scripts/model_predictions.py`` before and after checks the predictions.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bitnn import io
from bitnn.network import BitNetwork

UINT8_INPUTS = ("mnist-small", "mnist-paper", "mnist-best")


def rerelease(path: Path) -> tuple[int, int]:
    buf = path.read_bytes()
    _, description = io.decode_container(buf, str(path))
    if description.get("format_version") != 1:  # its provenance is already beside it
        raise SystemExit(f"{path} is not a version 1 file; nothing to do")
    net = io.model_from_bytes(buf, str(path))
    binarizer = net.binarizer
    if path.stem in UINT8_INPUTS:
        binarizer = binarizer.for_uint8_inputs()
    again = BitNetwork(net.layers, binarizer, net.output, description["metadata"])
    return len(buf), io.save_model(again, path)


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for path in sorted(folder.glob("*.bnn")):
        before, after = rerelease(path)
        print(f"{path.name}: {before:,} -> {after:,} bytes")
