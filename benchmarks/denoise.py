"""Speech denoising benchmark: the bitwise denoiser against its real-valued twin, the oracle
mask and the denoisers users run today, on the protocol's test mixtures (unseen speakers,
unseen noise types), plus model size and speed.

    python benchmarks/denoise.py --model best=models/denoise-8k.bnn,models/denoise-8k.bnn.ckpt \\
        --model paper=PAPER.bnn,PAPER.bnn.ckpt --write docs/results/denoise.md

Needs the corpora (`bitnn fetch speech`) and the FSDD recordings (../shared/data/fsdd). The
real-valued twin is round 1's network of the same training run, read from its checkpoint
(left out when none is given); RNNoise and DeepFilterNet 3 are left out where they are
not installed (``pip install 'bitnn[baselines]'``). Systems:

- noisy: the mixture itself;
- oracle IBM: the Ideal Binary Mask from the clean speech and noise (the ceiling of any mask);
- real-valued twin: the same structure and input bits, tanh weights and activations;
- BNN: the bitwise network (compiled engine), the model under test;
- RNNoise, DeepFilterNet 3: at 48 kHz, resampled from and to 8 kHz, delay removed.

Metrics per mixture (``bitnn.speech.metrics``): SDR, SIR, SAR (BSS Eval v3) and STOI; the
tables give means over mixtures. Speed: ``bitnn.speech.denoise.Denoiser`` end to end (STFT,
features, binarization, network, masking, inverse STFT) on one thread (BITNN_THREADS=1), the
median of repeats over 60 s of test audio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("BITNN_THREADS", "1")  # speed is quoted for one core; set before kernels

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import denoise_baselines as baselines
from engine import cpu_description

from bitnn.io import load_model
from bitnn.speech.denoise import Denoiser, mixture_features
from bitnn.speech.metrics import separation_metrics
from bitnn.speech.mixtures import AudioCache, iter_mixtures, manifest_csv
from bitnn.speech.protocol import TEST_NOISES, TEST_PER_CELL, TEST_VOICES, test_mixtures
from bitnn.speech.spectra import apply_mask, ideal_binary_mask, istft, stft
from bitnn.train.twin import CheckpointNetwork

METRICS = ("sdr", "sir", "sar", "stoi")


def _metrics_job(args: tuple) -> dict[str, float]:
    speech, noise, estimate, rate = args
    return separation_metrics(speech, noise, estimate, rate)


@dataclass
class Model:
    """A denoising model under test: its BitNetwork and, from its checkpoint, its twin."""

    name: str
    path: Path
    denoiser: Denoiser
    twin: CheckpointNetwork | None

    @classmethod
    def parse(cls, text: str) -> Model:
        """``NAME=MODEL.bnn[,CHECKPOINT]``."""
        name, _, paths = text.partition("=")
        model, _, checkpoint = paths.partition(",")
        if not (name and model):
            raise SystemExit(f"--model takes NAME=MODEL.bnn[,CHECKPOINT], got {text!r}")
        twin = CheckpointNetwork(checkpoint, 1) if checkpoint else None
        return cls(name, Path(model), Denoiser(load_model(model)), twin)


def run_systems(models: list[Model], specs, audio: AudioCache) -> dict[str, list[dict]]:
    """Every system's estimate of every mixture, then their metrics (2 processes)."""
    systems = ["noisy", "oracle IBM"]
    for m in models:
        systems += ([f"real-valued twin ({m.name})"] if m.twin else []) + [f"BNN ({m.name})"]
    missing = baselines.available()
    extra = {"RNNoise": baselines.rnnoise, "DeepFilterNet 3": baselines.deepfilternet3}
    names = {"RNNoise": "rnnoise", "DeepFilterNet 3": "deepfilternet3"}
    for label, key in names.items():
        if missing[key] is None:
            systems.append(label)
        else:
            print(f"{label} left out: {missing[key]}", file=sys.stderr)
    cfg, rate = models[0].denoiser.config, models[0].denoiser.rate
    jobs, keys = [], []
    for i, mx in enumerate(iter_mixtures(specs, audio)):
        x = mx.mixture
        X = stft(x, cfg)
        ibm = ideal_binary_mask(stft(mx.speech, cfg), stft(mx.noise, cfg))
        estimates = {"noisy": x, "oracle IBM": istft(apply_mask(X, ibm), cfg, x.size)}
        for m in models:
            d = m.denoiser
            Xm, feats = mixture_features(x, d.config, d.level_rms)  # one pass for BNN and twin
            # the twin's mask gets the model's majority vote over frames too
            masks = {f"BNN ({m.name})": d.smooth(d.network.predict(feats, d.engine))}
            if m.twin:
                masks[f"real-valued twin ({m.name})"] = d.smooth(m.twin.predict(feats))
            for label, mask in masks.items():
                estimates[label] = istft(apply_mask(Xm, mask), d.config, x.size)
        for label in systems:
            if label in extra:
                estimates[label] = extra[label](x, rate)
            jobs.append((mx.speech, mx.noise, estimates[label], rate))
            keys.append((i, label))
        if (i + 1) % 20 == 0:
            print(f"  estimated {i + 1}/{len(specs)} mixtures", file=sys.stderr)
    with get_context("fork").Pool(2) as pool:
        results = pool.map(_metrics_job, jobs, chunksize=4)
    out: dict[str, list[dict]] = {s: [{} for _ in specs] for s in systems}
    for (i, label), r in zip(keys, results, strict=True):
        out[label][i] = r
    return out


def mean_table(results, specs, select) -> dict[str, dict[str, float]]:
    """Means over the selected mixtures; STOI over those long enough for it (NaN otherwise)."""
    idx = [i for i, s in enumerate(specs) if select(s)]
    return {
        label: {m: float(np.nanmean([rows[i][m] for i in idx])) for m in METRICS}
        for label, rows in results.items()
    }


def speed(denoiser: Denoiser, specs, audio: AudioCache, seconds: float = 60.0) -> dict:
    """Real-time factor of the whole denoiser on one thread, and of the network alone."""
    parts, total = [], 0
    for m in iter_mixtures(specs, audio):
        parts.append(m.mixture)
        total += m.mixture.size
        if total >= seconds * denoiser.rate:
            break
    x = np.concatenate(parts)[: int(seconds * denoiser.rate)]
    _, feats = mixture_features(x, denoiser.config, denoiser.level_rms)

    def median(fn, n=7):
        fn()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    whole = median(lambda: denoiser(x))
    network = median(lambda: denoiser.network.predict(feats, denoiser.engine))
    ref = median(lambda: denoiser.network.predict(feats, "reference"), 3)
    dur = x.size / denoiser.rate
    return {
        "audio_seconds": dur,
        "frames": int(feats.shape[0]),
        "end_to_end_s": whole,
        "end_to_end_x_realtime": dur / whole,
        "network_s": network,
        "network_x_realtime": dur / network,
        "reference_engine_network_s": ref,
        "threads": os.environ.get("BITNN_THREADS"),
    }


def fmt_row(label, row) -> str:
    return (
        f"| {label} | {row['sdr']:.2f} | {row['sir']:.2f} | {row['sar']:.2f} | {row['stoi']:.3f} |"
    )


def markdown(report: dict) -> str:
    lines = [
        "# Speech denoising: bitwise networks vs their real-valued twins, the oracle and "
        "today's denoisers",
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}; CPU: {report['cpu']}.",
        "",
        "Test mixtures: unseen voices "
        f"({', '.join(TEST_VOICES)}) with noise types never heard in training "
        f"({', '.join(TEST_NOISES)}); {report['n_test']} mixtures, {TEST_PER_CELL} utterances "
        "per voice, noise type and SNR. Means over mixtures; SDR, SIR, SAR in dB (BSS Eval v3, "
        "mir_eval), STOI 0-1 over the mixtures long enough for it (pystoi needs about 0.8 s "
        "of speech: the spoken digits of fsdd-theo are left out of that column).",
        "",
    ]
    head = ["| system | SDR | SIR | SAR | STOI |", "|---|---:|---:|---:|---:|"]
    for title, table in report["tables"].items():
        lines += [f"## {title}", "", *head]
        lines += [fmt_row(label, row) for label, row in table.items()]
        lines.append("")
    lines += [
        "## Size and speed",
        "",
        "One thread (BITNN_THREADS=1), end to end: STFT, binarization, network, mask, inverse "
        "STFT, on 60 s of test audio; medians of 7 runs.",
        "",
        "| model | shape | file | float32 same shape | end to end | x real time | network "
        "alone | numpy reference engine |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in report["models"].items():
        sp = m["speed"]
        lines.append(
            f"| {name} (`{m['file']}`) | {m['shape']} | {m['bytes']:,} B | "
            f"{m['float32_bytes']:,} B | {sp['end_to_end_s'] * 1000:.1f} ms | "
            f"**{sp['end_to_end_x_realtime']:,.0f}x** | {sp['network_s'] * 1000:.1f} ms | "
            f"{sp['reference_engine_network_s'] * 1000:.0f} ms |"
        )
    lines.append("")
    return "\n".join(lines)


def _nan_to_none(value):
    """JSON has no NaN: an undefined metric (STOI of a too short utterance) becomes null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        action="append",
        required=True,
        help="NAME=MODEL.bnn[,CHECKPOINT] (repeatable); the checkpoint gives the real-valued twin",
    )
    ap.add_argument("--write", help="markdown report to write (JSON beside it)")
    ap.add_argument("--quick", action="store_true", help="a few mixtures only (a smoke test)")
    args = ap.parse_args()
    models = [Model.parse(text) for text in args.model]
    if len({m.denoiser.config.rate for m in models}) != 1:
        raise SystemExit("the models must work at one sample rate")
    audio = AudioCache(models[0].denoiser.rate)
    sets = test_mixtures(audio)
    if args.quick:
        sets = {k: v[:: max(1, len(v) // 6)] for k, v in sets.items()}
    # Timed first, in a fresh process: after the evaluation (the twins' PyTorch, the metrics'
    # worker processes, a heap grown by 160 mixtures) the same denoiser measured 62.5 ms where
    # fresh processes measured 52-54 ms (session 12).
    speeds = {m.name: speed(m.denoiser, sets["test"], audio) for m in models}
    start = time.perf_counter()
    results = {name: run_systems(models, specs, audio) for name, specs in sets.items()}
    print(f"evaluated in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    test, seen = sets["test"], sets["test_seen_noise"]
    tables = {}
    tables["Unseen noise, 0 dB (the paper's test condition)"] = mean_table(
        results["test"], test, lambda s: s.snr_db == 0.0
    )
    for snr in (-5.0, 5.0):
        tables[f"Unseen noise, {snr:+.0f} dB"] = mean_table(
            results["test"], test, lambda s, snr=snr: s.snr_db == snr
        )
    for noise in TEST_NOISES:
        tables[f"Unseen noise type {noise!r}, 0 dB"] = mean_table(
            results["test"], test, lambda s, noise=noise: s.noise_type == noise and s.snr_db == 0
        )
    tables["Training noise types (traffic, crowd), unseen voices, 0 dB"] = mean_table(
        results["test_seen_noise"], seen, lambda s: True
    )
    report = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_description()["model"],
        "models": {
            m.name: {
                "file": str(m.path),
                "bytes": m.path.stat().st_size,
                "parameter_bits": m.denoiser.network.parameter_bits(),
                "float32_bytes": m.denoiser.network.float32_bytes(),
                "shape": repr(m.denoiser.network),
                "speed": speeds[m.name],
            }
            for m in models
        },
        "n_test": len(test),
        "tables": tables,
        "manifest": manifest_csv(sets),
        "per_mixture": results,
    }
    text = markdown(report)
    print(text)
    if args.write:
        Path(args.write).write_text(text)
        strict = json.dumps(_nan_to_none(report), indent=1, allow_nan=False)
        Path(args.write).with_suffix(".json").write_text(strict + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
