"""The denoiser's end-to-end time against its earlier pipeline, side by side in one process.

    python benchmarks/denoise_pipeline.py [MODEL]

Session 11's pipeline, rebuilt here from the public functions: centred spectra both ways, the
context frames copied side by side into a new array before binarization, the mask applied to a
copy of the spectrum. This version's :class:`~bitnn.speech.denoise.Denoiser`: uncentred
spectra (each bin times (-1)**k, the same magnitudes; undone by the inverse), the context
frames a view of overlapping rows that the compiled binarizer reads in place, the mask applied
in place. Both give the same samples bit for bit (checked first) and both include the model's
majority vote over frames. One thread, 60 s of audio, the two alternating run after run so
that both see the same state of the machine; medians and the median of the paired ratios.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("BITNN_THREADS", "1")  # one core, as the denoising benchmark quotes

import numpy as np

from bitnn.io import load_model
from bitnn.speech.denoise import Denoiser, level_gain
from bitnn.speech.spectra import istft, relative_to_floor, stft

RUNS = 40


def copied_context(magnitude: np.ndarray, context: int) -> np.ndarray:
    """The frames t - context .. t + context side by side, copied into a new array."""
    m = magnitude
    padded = np.concatenate([np.repeat(m[:1], context, 0), m, np.repeat(m[-1:], context, 0)])
    n = m.shape[0]
    return np.concatenate([padded[i : i + n] for i in range(2 * context + 1)], axis=1)


def earlier_pipeline(d: Denoiser, x: np.ndarray) -> np.ndarray:
    cfg = d.config
    X = stft(x, cfg)
    magnitude = np.abs(X) * np.float32(level_gain(x, d.level_rms))
    if cfg.floor_percentile:
        magnitude = relative_to_floor(magnitude, cfg.floor_percentile)
    features = copied_context(magnitude, cfg.context) if cfg.context else magnitude
    mask = d.smooth(d.network.predict(features, d.engine))
    return istft(np.where(mask.astype(bool), X, 0).astype(np.complex64), cfg, x.size)


def main() -> int:
    d = Denoiser(load_model(sys.argv[1] if len(sys.argv) > 1 else "models/denoise-8k.bnn"))
    x = (np.random.default_rng(0).standard_normal(60 * d.rate) * 0.05).astype(np.float32)
    if not np.array_equal(earlier_pipeline(d, x), d(x)):
        raise SystemExit("the two pipelines disagree")
    times: dict[str, list[float]] = {"earlier": [], "now": []}
    runs = {"earlier": lambda: earlier_pipeline(d, x), "now": lambda: d(x)}
    for i in range(RUNS + 2):
        for name in ("earlier", "now") if i % 2 else ("now", "earlier"):
            start = time.perf_counter()
            runs[name]()
            if i >= 2:  # the first two rounds warm up
                times[name].append(time.perf_counter() - start)
    a, b = np.array(times["earlier"]), np.array(times["now"])
    print("| pipeline | end to end (60 s of audio) | x real time |\n|---|---:|---:|")
    for label, t in (("session 11's", a), ("this version's", b)):
        print(f"| {label} | {1e3 * np.median(t):.1f} ms | {60 / np.median(t):,.0f}x |")
    print(f"\nmedian of the {RUNS} paired ratios: {np.median(a / b):.3f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
