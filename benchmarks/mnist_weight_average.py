"""Would round 2 of the MNIST presets end better from a moving average of its weights?

    python benchmarks/mnist_weight_average.py --preset paper --out /tmp/ema.json

Trains a preset on the 50,000/10,000 validation split (never the test set) and, through the
trainer's ``on_batch`` hook, keeps exponential moving averages (EMA) of round 2's real-valued
state at several decays. After every round-2 epoch it measures the live network and each
average on the validation images: one training run, so the comparison is paired (the same
trajectory, the same dropout masks). Writes the rows to ``--out`` as JSON and prints the
last epoch and the mean of the last 10.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bitnn.binarize import binarizer_from_spec
from bitnn.data.mnist import load_mnist
from bitnn.train.presets import resolve
from bitnn.train.trainer import TrainConfig, Trainer, train_network


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decays", default="0.99,0.995,0.998,0.999,0.9995")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    decays = [float(d) for d in args.decays.split(",")]
    values, spec = resolve(args.preset, {"seed": args.seed}, None, "mnist")
    config = TrainConfig(**values)
    X, y, X_val, y_val = load_mnist().training_split(False)
    averages: list[list[torch.Tensor]] = []
    rows: list[dict] = []

    def on_batch(trainer: Trainer) -> None:
        if trainer.position.round != 2:
            return
        live = [v for v in trainer.model.state_dict().values() if v.is_floating_point()]
        if not averages:  # round 2's first step: every average starts from round 1's network
            averages.extend([v.clone() for v in live] for _ in decays)
        for decay, average in zip(decays, averages, strict=True):
            torch._foreach_lerp_(average, live, 1 - decay)
        if trainer.position.batch < trainer._n_batches:
            return
        row = {"epoch": trainer.position.epoch + 1}
        row["live"] = trainer.evaluate(trainer.data.x_val, trainer.data.y_val)
        kept = [v.clone() for v in live]
        for decay, average in zip(decays, averages, strict=True):
            torch._foreach_copy_(live, average)
            row[str(decay)] = trainer.evaluate(trainer.data.x_val, trainer.data.y_val)
        torch._foreach_copy_(live, kept)
        rows.append(row)
        Path(args.out).write_text(json.dumps({"config": config.to_json(), "rows": rows}, indent=1))

    train_network(
        X, y, config, binarizer_from_spec(spec), X_val=X_val, y_val=y_val, on_batch=on_batch
    )
    print("network | last epoch | mean of the last 10 epochs (validation accuracy)")
    for key in ["live", *map(str, decays)]:
        last10 = np.mean([r[key] for r in rows[-10:]])
        name = "live weights" if key == "live" else f"EMA {key}"
        print(f"{name} | {100 * rows[-1][key]:.2f}% | {100 * last10:.2f}%")


if __name__ == "__main__":
    main()
