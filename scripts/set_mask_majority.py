"""Give a denoising model a majority vote over frames of its mask, without retraining.

    python scripts/set_mask_majority.py MODEL N -o OUTPUT

The network (weights, thresholds, bias bits, binarizer) is saved unchanged; only the model's
``mask_majority_frames`` (docs/format.md, section 5) becomes N, and its provenance
(``MODEL.json``: training history, data options) is carried over to ``OUTPUT.json`` with a
note of the change. ``models/denoise-8k.bnn`` took N = 3, then 5, this way (session 12), chosen on
held-out voices and noises (docs/results/denoise-exploration.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bitnn.errors import BitnnError
from bitnn.io import load_model, read_provenance, save_model
from bitnn.network import BitNetwork
from bitnn.speech.denoise import SPEECH_KEY, Denoiser, speech_metadata


def with_majority(model: Path, frames: int) -> BitNetwork:
    net = load_model(model)
    d = Denoiser(net)  # a denoiser, consistent with its settings
    provenance = read_provenance(model) or {}
    metadata = {**provenance, **net.metadata}
    # the provenance's speech entry holds what the model file does not (data options, ...)
    metadata |= speech_metadata(d.config, d.level_rms, frames, **provenance.get(SPEECH_KEY, {}))
    before = d.mask_majority_frames
    note = f"mask_majority_frames {before} -> {frames} (scripts/set_mask_majority.py)"
    metadata["revisions"] = [*provenance.get("revisions", []), note]
    return BitNetwork(net.layers, net.binarizer, net.output, metadata)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("frames", type=int, help="odd number of frames to vote over (1: no vote)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    if args.output.exists():
        print(f"{args.output} exists; choose another -o", file=sys.stderr)
        return 2
    try:
        size = save_model(with_majority(args.model, args.frames), args.output)
    except BitnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"saved {args.output} ({size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
