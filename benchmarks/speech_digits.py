"""Bitwise spoken-digit classification on the Free Spoken Digit Dataset (6 speakers, 8 kHz).

    python benchmarks/speech_digits.py --write docs/results/speech-digits.md

Two protocols: the dataset's own split (takes 0-4 of every speaker and digit are the test
set, takes 5-49 train) and speaker-independent (each of the six speakers held out in turn,
trained on the other five; the mean over the six folds). Systems, all on the same utterance
features (``bitnn.speech.keywords``: 32 mel bands x 16 segments of the trimmed utterance):

- BNN paper / best: ``bitnn train``'s presets for keyword data (2-bit quantile codes,
  2 x 512 hidden units, 30 + 30 epochs), the compiled engine;
- real-valued twin: round 1's network of the same training run (same structure and input
  bits, tanh weights and activations), read from its checkpoint;
- logistic regression on MFCCs: what a user tries first (scikit-learn, float32 features:
  13 cepstral coefficients = DCT of the band levels, per segment, standardized).

The presets were chosen on takes 5-9 as validation data (trained on takes 10-49), never on
the test takes. Speed: one recording at a time on one thread (BITNN_THREADS=1), medians.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BITNN_THREADS", "1")  # speed is quoted for one core; set before kernels

import numpy as np
import scipy.fft
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import cpu_description

from bitnn.binarize import binarizer_from_spec
from bitnn.data.audio import read_audio
from bitnn.data.fsdd import load_fsdd
from bitnn.io import save_model
from bitnn.speech.keywords import UtteranceFeatures, keyword_metadata, utterance_features
from bitnn.train.presets import resolve
from bitnn.train.trainer import TrainConfig, train_network
from bitnn.train.twin import CheckpointNetwork

PRESETS = ("paper", "best")
N_MFCC = 13


def mfcc(X: np.ndarray, config: UtteranceFeatures) -> np.ndarray:
    """Cepstra of the utterance features: DCT-II of each segment's band levels, first 13."""
    levels = X.reshape(len(X), config.n_segments, config.n_bands)
    return scipy.fft.dct(levels, type=2, norm="ortho", axis=2)[:, :, :N_MFCC].reshape(len(X), -1)


def logistic_regression(X_train, y_train, X_test, config):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    A, B = mfcc(X_train, config).astype(np.float32), mfcc(X_test, config).astype(np.float32)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(A, y_train)
    n_params = A.shape[1] * 2 + model[-1].coef_.size + model[-1].intercept_.size
    return model.predict(B), n_params * 4, model, B


def train_bnn(preset, X, y, checkpoint, config):
    values, spec = resolve(preset, {"val_fraction": 0.0}, None, "keywords")
    return train_network(
        X,
        y,
        TrainConfig(**values),
        binarizer_from_spec(spec),
        checkpoint_path=checkpoint,
        metadata=keyword_metadata(config, [str(d) for d in range(10)]),
    )


def run_fold(X, y, train, test, config, workdir: Path, name: str) -> dict:
    """Every system trained on ``train`` and scored on ``test``: accuracy and model bytes."""
    out: dict = {"n_train": int(train.sum()), "n_test": int(test.sum())}
    for preset in PRESETS:
        ckpt = workdir / f"{name}-{preset}.ckpt"
        net = train_bnn(preset, X[train], y[train], ckpt, config)
        model = workdir / f"{name}-{preset}.bnn"
        out[f"bnn-{preset}"] = {
            "accuracy": float(np.mean(net.predict(X[test]) == y[test])),
            "bytes": save_model(net, model),
            "model": str(model),
        }
        twin = CheckpointNetwork(ckpt, 1)
        out[f"twin-{preset}"] = {
            "accuracy": float(np.mean(twin.predict(X[test]) == y[test])),
            "bytes": net.float32_bytes(),
        }
    pred, nbytes, _, _ = logistic_regression(X[train], y[train], X[test], config)
    out["logreg-mfcc"] = {"accuracy": float(np.mean(pred == y[test])), "bytes": nbytes}
    return out


def speed(model_path: str, files: list[Path], config: UtteranceFeatures, X, y) -> dict:
    """Median seconds per recording: reading + features, the BNN (compiled engine, one
    recording per call) and logistic regression on MFCCs (one recording per call)."""
    from bitnn.io import load_model

    net = load_model(model_path)
    read, feats, bnn = [], [], []
    for path in files:
        t0 = time.perf_counter()
        x, _ = read_audio(path, config.rate)
        t1 = time.perf_counter()
        f = utterance_features(x, config)[None]
        t2 = time.perf_counter()
        net.predict(f)
        t3 = time.perf_counter()
        read.append(t1 - t0)
        feats.append(t2 - t1)
        bnn.append(t3 - t2)
    _, _, logreg, B = logistic_regression(X, y, X[: len(files)], config)
    lr = []
    for row in B:
        t0 = time.perf_counter()
        logreg.predict(row[None])
        lr.append(time.perf_counter() - t0)
    return {
        "read_s": float(np.median(read)),
        "features_s": float(np.median(feats)),
        "bnn_s": float(np.median(bnn)),
        "logreg_s": float(np.median(lr)),
        "n": len(files),
    }


SYSTEMS = [
    ("bnn-paper", "BNN, paper preset"),
    ("twin-paper", "real-valued twin of the paper BNN"),
    ("bnn-best", "BNN, best preset"),
    ("twin-best", "real-valued twin of the best BNN"),
    ("logreg-mfcc", "logistic regression on MFCCs (float32)"),
]


def gap(preset: str, folds: list[dict]) -> float:
    """Mean accuracy of the BNN minus its twin's over ``folds``, in points."""
    diff = [f[f"bnn-{preset}"]["accuracy"] - f[f"twin-{preset}"]["accuracy"] for f in folds]
    return 100 * float(np.mean(diff))


def markdown(results: dict, command: str) -> str:
    own, folds = results["own_split"], results["speaker_folds"]
    speakers = list(folds)
    lines = [
        "# Spoken-digit classification (FSDD)",
        "",
        f"`{command}` on {results['cpu']['model']} ({results['cpu']['flags']}), "
        f"{results['date']} ({results['seconds']:.0f} s).",
        "",
        "Free Spoken Digit Dataset, 3,000 recordings of the digits 0-9 by 6 speakers at 8 kHz. "
        "Features for every system: 32 mel-band levels x 16 equal segments of the utterance "
        "trimmed to its frames within 20 dB of the loudest, in dB below the utterance's peak "
        "(`bitnn.speech.keywords`). The BNN's input is 2 bits per level (quantile thermometer "
        "codes, 1,024 input bits). Presets chosen on takes 5-9 as validation, trained on takes "
        "10-49; the test takes were not looked at before the presets were fixed.",
        "",
        "## Accuracy",
        "",
        "| system | own split (test: takes 0-4, 300) | speaker-independent (mean of 6 folds) | "
        "model bytes |",
        "|---|---:|---:|---:|",
    ]
    for key, label in SYSTEMS:
        mean = np.mean([folds[s][key]["accuracy"] for s in speakers])
        lines.append(
            f"| {label} | {100 * own[key]['accuracy']:.2f}% | {100 * mean:.2f}% | "
            f"{own[key]['bytes']:,} |"
        )
    lines += [
        "",
        "Model bytes: the `.bnn` file for BNNs (parameters, quantile edges and header); 4 bytes "
        "per parameter for the real-valued networks (the twin has the BNN's shape) and for "
        "logistic regression (weights, biases, the scaler's means and scales).",
        "",
        "Gaps, BNN minus its twin (points): "
        + ", ".join(
            f"{p} own split {gap(p, [own]):+.2f}, speaker-independent "
            f"{gap(p, [folds[s] for s in speakers]):+.2f}"
            for p in PRESETS
        )
        + ".",
        "",
        "## Speaker-independent folds",
        "",
        "| held-out speaker | " + " | ".join(label for _, label in SYSTEMS) + " |",
        "|---|" + "---:|" * len(SYSTEMS),
    ]
    for s in speakers:
        row = " | ".join(f"{100 * folds[s][key]['accuracy']:.1f}%" for key, _ in SYSTEMS)
        lines.append(f"| {s} ({folds[s]['n_test']}) | {row} |")
    sp = results["speed"]
    total = sp["read_s"] + sp["features_s"] + sp["bnn_s"]
    lines += [
        "",
        "## Speed (one recording at a time, one thread, medians)",
        "",
        f"Over {sp['n']} test recordings with the own-split best model: reading and resampling "
        f"{1e3 * sp['read_s']:.3f} ms, features {1e3 * sp['features_s']:.3f} ms, BNN "
        f"(compiled engine) {1e6 * sp['bnn_s']:.1f} us, in all {1e3 * total:.3f} ms per "
        f"recording. Logistic regression's predict on one row of MFCCs: "
        f"{1e6 * sp['logreg_s']:.1f} us (scikit-learn's per-call overhead included).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", help="write the markdown table here (and .json beside it)")
    p.add_argument("--data-dir", help="FSDD folder (default: ../shared/data/fsdd)")
    p.add_argument("--render", help="only re-render the markdown of a results JSON")
    args = p.parse_args(argv)
    command = "python benchmarks/speech_digits.py" + (
        f" --write {args.write}" if args.write else ""
    )
    if args.render:
        text = markdown(json.loads(Path(args.render).read_text()), command)
        if args.write:
            Path(args.write).write_text(text)
        print(text)
        return 0
    torch.set_num_threads(1)
    start = time.time()
    config = UtteranceFeatures()
    d = load_fsdd(args.data_dir, config)
    results: dict = {
        "cpu": cpu_description(),
        "date": datetime.date.today().isoformat(),
        "features": config.to_json(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["own_split"] = run_fold(d.X, d.y, ~d.test, d.test, config, work, "own")
        print("own split:", json.dumps(results["own_split"]), flush=True)
        test_files = [f for f, t in zip(d.files, d.test, strict=True) if t]
        results["speed"] = speed(
            results["own_split"]["bnn-best"]["model"],
            test_files,
            config,
            d.X[~d.test],
            d.y[~d.test],
        )
        results["speaker_folds"] = {}
        for s in sorted(set(d.speaker)):
            held = d.speaker == s
            results["speaker_folds"][s] = run_fold(d.X, d.y, ~held, held, config, work, s)
            print(s, json.dumps(results["speaker_folds"][s]), flush=True)
    for fold in [results["own_split"], *results["speaker_folds"].values()]:
        for system in fold.values():
            if isinstance(system, dict):
                system.pop("model", None)  # a temporary file
    results["seconds"] = time.time() - start
    command = "python benchmarks/speech_digits.py" + (
        f" --write {args.write}" if args.write else ""
    )
    text = markdown(results, command)
    print(text)
    if args.write:
        out = Path(args.write)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
