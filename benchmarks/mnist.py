"""MNIST study: train bitwise networks with the named presets and measure their test error.

    python benchmarks/mnist.py --presets paper,best --out out/mnist

For each preset: train on the standard 50,000/10,000 train/validation split, save the model
(``OUT/mnist-PRESET.bnn``), evaluate it on the 10,000 test images with bit logic only (the
model file alone, reloaded), and write ``OUT/results.json`` with errors, sizes, wall time,
the machine and the per-epoch history (validation accuracy of both rounds). Several presets
given together run one after another.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from bitnn.binarize import binarizer_from_spec
from bitnn.data.mnist import load_mnist
from bitnn.io import load_model, save_model
from bitnn.train.presets import resolve
from bitnn.train.trainer import TrainConfig, train_network


def run_preset(name: str, args: argparse.Namespace, mnist) -> dict:
    explicit: dict = {"seed": args.seed, "device": args.device}
    if args.hidden:
        explicit["hidden"] = tuple(int(h) for h in args.hidden.split(","))
    if args.epochs1 is not None:
        explicit["epochs_round1"] = args.epochs1
    if args.epochs2 is not None:
        explicit["epochs_round2"] = args.epochs2
    for override in args.set or []:
        key, _, value = override.partition("=")
        explicit[key] = type(getattr(TrainConfig(), key))(value)
    values, spec = resolve(name, explicit, args.binarizer, "mnist")
    config = TrainConfig(**values)
    start = time.perf_counter()
    net = train_network(
        mnist.X_train[:50000],
        mnist.y_train[:50000],
        config,
        binarizer_from_spec(spec),
        X_val=mnist.X_train[50000:],
        y_val=mnist.y_train[50000:],
        metadata={"command": f"benchmarks/mnist.py --presets {name}", "preset": name},
    )
    seconds = time.perf_counter() - start
    path = Path(args.out) / f"mnist-{name}.bnn"
    size = save_model(net, path)
    reloaded = load_model(path)  # the row is measured from the file alone
    test_error = float(np.mean(reloaded.predict(mnist.X_test) != mnist.y_test))
    result = {
        "preset": name,
        "config": config.to_json(),
        "binarizer": repr(net.binarizer),
        "test_error": test_error,
        "best_val_accuracy": net.metadata["training"]["best_val_accuracy"],
        "train_seconds": round(seconds, 1),
        "file_bytes": size,
        "parameter_bits": net.parameter_bits(),
        "history": net.metadata["training"]["history"],
    }
    print(f"{name}: test error {100 * test_error:.2f}% after {seconds:.0f} s", flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="paper,best")
    p.add_argument("--hidden", help="override the preset's widths, e.g. 1024,1024,1024")
    p.add_argument("--epochs1", type=int, help="override the preset's round-1 epochs")
    p.add_argument("--epochs2", type=int, help="override the preset's round-2 epochs")
    p.add_argument("--binarizer", help="override the preset's binarizer spec")
    p.add_argument("--set", action="append", help="override a TrainConfig field: key=value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="out/mnist")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    mnist = load_mnist()
    results = []
    for name in args.presets.split(","):
        results.append(run_preset(name, args, mnist))
        try:
            import torch

            device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cpu"
        summary = {"machine": platform.node(), "device": device, "results": results}
        (Path(args.out) / "results.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
