"""The main job (`make demo`): train a small bitwise MNIST network, save it, describe it,
measure its test error with bit logic only, and time its inference (compiled kernels
against the numpy reference engine).

Run from the repository root: `python scripts/demo_mnist.py [--epochs N] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bitnn.cli import main as bitnn
from bitnn.data.mnist import load_mnist
from bitnn.engine import get_engine
from bitnn.io import load_model


def run(*args: str) -> None:
    print(f"\n$ bitnn {' '.join(args)}", flush=True)
    code = bitnn(list(args))
    if code != 0:
        sys.exit(code)


def demo() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=6, help="epochs per training round")
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--out", default="out", help="folder for the model file")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    model = out / "mnist-demo.bnn"
    start = time.perf_counter()
    run(
        "train", "mnist", "--preset", "best", "--hidden", args.hidden,
        "--epochs1", str(args.epochs), "--epochs2", str(args.epochs),
        "-o", str(model), "--force",
    )  # fmt: skip
    print(f"(trained in {time.perf_counter() - start:.0f} s)")
    run("info", str(model))
    run("eval", str(model), "--dataset", "mnist")
    benchmark(model)


def benchmark(model: Path) -> None:
    """Images per second from raw pixels to classes, medians of repeated runs."""
    net = load_model(model)
    pixels = load_mnist().X_test
    print(f"\ninference on {len(pixels):,} test images (raw uint8 pixels -> class):")
    for engine, repeats in ((None, 7), ("reference", 1)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            net.predict(pixels, engine)
            times.append(time.perf_counter() - start)
        t = float(np.median(times))
        name = engine or f"compiled kernels ({getattr(get_engine(), 'NAME', 'reference')})"
        print(f"  {name:32s} {1e3 * t:8.1f} ms  {len(pixels) / t:12,.0f} images/s")


if __name__ == "__main__":
    demo()
