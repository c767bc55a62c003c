"""MNIST study: bitwise networks with the named presets against float32 baselines.

    python benchmarks/mnist.py --presets paper,best --baselines --out out/mnist \
        --write docs/results/mnist.md

For each preset: train on the standard 50,000/10,000 train/validation split (or with
``--train-all`` on all 60,000 training images, keeping each round's last epoch), save the model
(``OUT/mnist-PRESET.bnn``) and measure it on the 10,000 test images with bit logic only, from
the model file alone. The round-1 network (tanh, real-valued) of each preset is measured on
the test set too. ``--baselines`` adds a float32 network of the same architecture (ReLU,
dropout, Adam) on real-valued pixels and on the preset's binarized inputs. Writes
``OUT/results.json`` (errors, sizes, wall time, machine, per-epoch history), training-curve
plots ``OUT/mnist-PRESET-curves.png`` when matplotlib is installed, and with ``--write`` the
markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from bitnn.binarize import binarizer_from_spec
from bitnn.data.mnist import N_VALIDATION, load_mnist
from bitnn.io import load_model, save_model
from bitnn.train.presets import resolve
from bitnn.train.trainer import TrainConfig, to_bipolar, train_network


def preset_config(name: str, args: argparse.Namespace) -> tuple[TrainConfig, str]:
    explicit: dict = {"seed": args.seed, "device": args.device}
    if args.hidden:
        explicit["hidden"] = tuple(int(h) for h in args.hidden.split(","))
    if args.epochs1 is not None:
        explicit["epochs_round1"] = args.epochs1
    if args.epochs2 is not None:
        explicit["epochs_round2"] = args.epochs2
    if args.train_all:
        explicit.update(val_fraction=0.0, keep="last")
    for override in args.set or []:
        key, _, value = override.partition("=")
        explicit[key] = type(getattr(TrainConfig(), key))(value)
    values, spec = resolve(name, explicit, args.binarizer, "mnist")
    return TrainConfig(**values), spec


def overrides(args: argparse.Namespace) -> str:
    """The options that change a preset, as a row label suffix."""
    given = [f"hidden={args.hidden}"] * bool(args.hidden) + list(args.set or [])
    given += ["all 60,000 training images"] * args.train_all
    given += [f"binarizer={args.binarizer}"] * bool(args.binarizer)
    return f" ({', '.join(given)})" if given else ""


def run_preset(name: str, args: argparse.Namespace, mnist) -> list[dict]:
    config, spec = preset_config(name, args)
    label = f"{name} preset{overrides(args)}"
    start = time.perf_counter()
    X, y, X_val, y_val = mnist.training_split(args.train_all)
    net = train_network(
        X,
        y,
        config,
        binarizer_from_spec(spec),
        X_val=X_val,
        y_val=y_val,
        report={"test": (mnist.X_test, mnist.y_test)},
        metadata={
            "command": "python benchmarks/mnist.py " + shlex.join(sys.argv[1:]),
            "preset": name,
        },
    )
    seconds = time.perf_counter() - start
    path = Path(args.out) / f"mnist-{name}.bnn"
    size = save_model(net, path)
    reloaded = load_model(path)  # the row is measured from the file alone
    test_error = float(np.mean(reloaded.predict(mnist.X_test) != mnist.y_test))
    training = net.metadata["training"]
    print(f"{name}: BNN test error {100 * test_error:.2f}% after {seconds:.0f} s", flush=True)
    plot_curves(training["history"], Path(args.out) / f"mnist-{name}-curves.png", name)
    round1 = training["round_accuracy"]["test"].get("1")
    rows = [
        {
            "row": f"round-1 network, {label}: tanh weights and activations",
            "test_error": None if round1 is None else 1 - round1,
            "bits": None,
            "bytes": net.float32_bytes(),
            "seconds": None,
        },
        {
            "row": f"BNN, {label}",
            "model": path.name,
            "test_error": test_error,
            "bits": net.parameter_bits(),
            "bytes": size,
            "seconds": round(seconds, 1),
            "config": config.to_json(),
            "binarizer": repr(net.binarizer),
            "best_val_accuracy": training["best_val_accuracy"],
            "history": training["history"],
        },
    ]
    return rows


def train_float(x_train, y_train, x_val, y_val, x_test, y_test, hidden, epochs, seed, device):
    """A float32 MLP of the same shape (ReLU, dropout 0.2, Adam, cosine); best validation epoch."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")
    sizes = [x_train.shape[1], *hidden]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(0.2)]
    model = nn.Sequential(*layers, nn.Linear(sizes[-1], 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt, yt = torch.from_numpy(x_train).to(dev), torch.from_numpy(y_train).to(dev)

    def accuracy(x, y):
        model.eval()
        with torch.no_grad():
            pred = model(torch.from_numpy(x).to(dev)).argmax(1).cpu().numpy()
        model.train()
        return float(np.mean(pred == y))

    best, best_test = -1.0, 0.0
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=g).split(100):
            idx = idx.to(dev)
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        val = accuracy(x_val, y_val)
        if val > best:
            best, best_test = val, accuracy(x_test, y_test)
    return 1 - best_test, sum(p.numel() for p in model.parameters()) * 4


def run_baselines(args: argparse.Namespace, mnist) -> list[dict]:
    _, spec = preset_config("paper", args)
    hidden = tuple(int(h) for h in args.hidden.split(",")) if args.hidden else (1024, 1024, 1024)
    real = [x.astype(np.float32) / 255 for x in (mnist.X_train, mnist.X_test)]
    n = len(mnist.X_train) - N_VALIDATION  # the standard training/validation split
    b = binarizer_from_spec(spec).fit(mnist.X_train[:n])
    bits = [to_bipolar(b.transform(x)).astype(np.float32) for x in (mnist.X_train, mnist.X_test)]
    rows = []
    for label, (train, test) in (
        ("float32 network, real-valued pixels", real),
        (f"float32 network, binarized inputs ({b!r})", bits),
    ):
        start = time.perf_counter()
        err, nbytes = train_float(
            train[:n], mnist.y_train[:n], train[n:], mnist.y_train[n:],
            test, mnist.y_test, hidden, args.float_epochs, args.seed, args.device,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        print(f"{label}: test error {100 * err:.2f}% after {seconds:.0f} s", flush=True)
        rows.append({"row": label, "test_error": err, "bits": None, "bytes": nbytes,
                     "seconds": round(seconds, 1)})  # fmt: skip
    return rows


def plot_curves(history: list[dict], path: Path, name: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no training-curve plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    offset = sum(1 for e in history if e["round"] == 1)  # round 2 continues the epoch axis
    for r, style in ((1, "o-"), (2, "s--")):
        h = [e for e in history if e["round"] == r]
        if not h:
            continue
        epochs = [e["epoch"] + (offset if r == 2 else 0) for e in h]
        axes[0].plot(epochs, [e["loss"] for e in h], style, ms=3, label=f"round {r}")
        if all(e["val_accuracy"] is not None for e in h):  # none without a validation set
            errors = [100 * (1 - e["val_accuracy"]) for e in h]
            axes[1].plot(epochs, errors, style, ms=3, label=f"round {r}")
    axes[0].set(xlabel="epoch", ylabel="training loss", title=f"{name}: loss")
    axes[1].set(xlabel="epoch", ylabel="validation error (%)", title=f"{name}: validation error")
    for ax in axes:
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no validation set", ha="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> str:
    """CPU model and the number of CPUs this process may use."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0))} CPUs"


def markdown(summaries: list[dict], note: str = "") -> str:
    """One table over the rows of one or more runs (run i's rows are marked [i])."""
    lines = ["# MNIST: bitwise networks against float32 baselines", ""]
    lines += [note, ""] if note else []
    for i, summary in enumerate(summaries, 1):
        lines += [
            f"[{i}] `{summary['command']}`; seed {summary.get('seed', 0)}; machine: "
            f"{summary['machine']}; device: {summary['device']}; wall time "
            f"{summary['seconds']:.0f} s",
            "",
        ]
    lines += [
        "Test error on the 10,000 standard test images. BNN rows are measured with bit logic "
        "only, from the saved model file; models are selected on the validation set (the last "
        "10,000 training images), or trained on all 60,000 training images and taken at their "
        "last epoch (rows marked so), never on the test set.",
        "",
        "| network | test error | model bits | bytes | training time | run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for i, summary in enumerate(summaries, 1):
        for r in summary["rows"]:
            err = "" if r["test_error"] is None else f"{100 * r['test_error']:.2f}%"
            bits = "" if r["bits"] is None else f"{r['bits']:,}"
            secs = "" if r["seconds"] is None else f"{r['seconds']:.0f} s"
            lines.append(f"| {r['row']} | {err} | {bits} | {r['bytes']:,} | {secs} | [{i}] |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="paper,best", help="comma-separated; empty: none")
    p.add_argument("--hidden", help="override the preset's widths, e.g. 1024,1024,1024")
    p.add_argument("--epochs1", type=int, help="override the preset's round-1 epochs")
    p.add_argument("--epochs2", type=int, help="override the preset's round-2 epochs")
    p.add_argument("--binarizer", help="override the preset's binarizer spec")
    p.add_argument("--set", action="append", help="override a TrainConfig field: key=value")
    p.add_argument(
        "--train-all",
        action="store_true",
        help="train the presets on all 60,000 training images (no validation; last epochs)",
    )
    p.add_argument("--baselines", action="store_true", help="also train float32 baselines")
    p.add_argument("--float-epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="out/mnist")
    p.add_argument("--write", help="write the markdown table here")
    p.add_argument(
        "--merge", nargs="+", metavar="RESULTS_JSON", help="only tabulate earlier runs' results"
    )
    p.add_argument("--note", help="with --merge: a paragraph to print under the title")
    args = p.parse_args()
    if args.merge:
        summaries = [json.loads(Path(f).read_text()) for f in args.merge]
        text = markdown(summaries, args.note or "")
        print(text)
        if args.write:
            curves = []
            for i, summary in enumerate(summaries, 1):  # curves beside the table
                for r in summary["rows"]:
                    if r.get("history"):
                        name = Path(r["model"]).stem
                        png = Path(args.write).with_name(f"{name}-run{i}-curves.png")
                        plot_curves(r["history"], png, f"[{i}] {name}")
                        curves.append(f"![[{i}] {r['row']}]({png.name})")
            if curves:
                text += "\n## Training curves (both rounds)\n\n" + "\n\n".join(curves) + "\n"
            Path(args.write).write_text(text)
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    mnist = load_mnist()
    start = time.perf_counter()
    try:
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except ImportError:
        device = "cpu"
    rows: list[dict] = []
    if args.baselines:
        rows += run_baselines(args, mnist)
    for name in filter(None, args.presets.split(",")):
        rows += run_preset(name, args, mnist)
    summary = {
        "command": "python benchmarks/mnist.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": machine(),
        "seed": args.seed,
        "device": device,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
    (Path(args.out) / "results.json").write_text(json.dumps(summary, indent=1))
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(markdown([summary]))
    print(markdown([summary]))


if __name__ == "__main__":
    main()
