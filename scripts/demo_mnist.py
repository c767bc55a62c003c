"""The main job (`make demo`): train a small bitwise MNIST network, save it, describe it,
and measure its test error with bit logic only.

Run from the repository root: `python scripts/demo_mnist.py [--epochs N] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bitnn.cli import main as bitnn


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


if __name__ == "__main__":
    demo()
