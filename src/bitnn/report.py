"""Reports to listen to and look at: one folder with ``index.html``, its audio and its figures.

A denoising report plays, for each example mixture, the noisy input, the BNN's output, its
real-valued twin's (when the training checkpoint is at hand), the oracle Ideal Binary Mask's
and the clean speech; it shows their spectrograms and the predicted against the ideal mask,
each output's SDR/SIR/SAR/STOI, and a summary table with the model's size and speed. A
classifier report shows the confusion matrix, per-class accuracy and the training curves.

The page needs no network: audio (16-bit WAV) and figures (matplotlib; PNG, JPEG for
spectrograms) sit beside it in ``audio/`` and ``figures/``, referenced by relative paths, so
the folder can be moved or zipped whole. The folder is built under a temporary name next to
its destination and renamed into place at the end: an interrupted run leaves no half-written
report.
"""

from __future__ import annotations

import html
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnn.errors import InputError
from bitnn.network import BitNetwork

GENERATOR = "bitnn report"  # marks a folder as a report that --force may replace
METRICS = ("sdr", "sir", "sar", "stoi")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.players { display: grid; grid-template-columns: repeat(auto-fill, minmax(15em, 1fr));
  gap: 0.5em 1em; }
.players figure { margin: 0; }
img { max-width: 100%; }
section { border-top: 1px solid #ddd; margin-top: 2em; }
.note { color: #555; font-size: 0.9em; }
"""


# ---- the output folder ----------------------------------------------------------------------


def _is_report(folder: Path) -> bool:
    index = folder / "index.html"
    try:
        return index.is_file() and GENERATOR in index.read_text(errors="replace")[:2000]
    except OSError:
        return False


def check_output_folder(folder: str | os.PathLike[str], force: bool) -> Path:
    """The report's folder, refused before any work when writing it would lose a user's files:
    a file of that name, or a folder holding anything but an earlier report (replaced only with
    ``force``)."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder name for the report")
    if out.is_dir() and any(out.iterdir()):
        if not _is_report(out):
            raise InputError(
                f"{out} exists and holds other files; give a new or empty folder for the report"
            )
        if not force:
            raise InputError(f"{out} holds an earlier report; pass --force to replace it")
    if not out.parent.is_dir():
        raise InputError(f"the folder {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK):
        raise InputError(f"cannot write in {out.parent}: permission denied")
    return out


class _Staging:
    """A temporary sibling folder that becomes ``out`` on :meth:`commit`, removed otherwise."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        (self.tmp / "audio").mkdir(parents=True)
        (self.tmp / "figures").mkdir()

    def commit(self) -> None:
        old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
        if self.out.exists():
            self.out.rename(old)
        self.tmp.rename(self.out)
        shutil.rmtree(old, ignore_errors=True)

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)  # after commit there is nothing left here


def _figure(path: Path, draw: Callable[[Any], None], size: tuple[float, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size, dpi=80)
    try:
        draw(fig)
        # Spectrograms are photographs rather than line art: JPEG keeps them a third the size.
        extra = {"pil_kwargs": {"quality": 85}} if path.suffix == ".jpg" else {}
        fig.savefig(path, bbox_inches="tight", **extra)
    finally:
        plt.close(fig)


def _page(title: str, body: list[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta name="generator" content="{GENERATOR}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head><body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


# ---- denoising ------------------------------------------------------------------------------


@dataclass
class _Example:
    title: str
    signals: dict[str, np.ndarray]  # system -> signal (the clean speech under "clean")
    metrics: dict[str, dict[str, float]]  # system -> SDR/SIR/SAR/STOI
    spectra: dict[str, np.ndarray]  # noisy / BNN / clean magnitudes, (frames, bins)
    mask: np.ndarray  # the BNN's mask bits
    ideal: np.ndarray  # the oracle's


def _spectrogram_figure(ex: _Example, rate: int, hop: int):
    def draw(fig) -> None:
        names = list(ex.spectra)
        top = max(float(np.max(s)) for s in ex.spectra.values()) + 1e-9
        for i, name in enumerate(names):
            ax = fig.add_subplot(1, len(names), i + 1)
            db = 20 * np.log10(np.maximum(ex.spectra[name] / top, 1e-4))
            n_frames = db.shape[0]
            ax.imshow(
                db.T,
                origin="lower",
                aspect="auto",
                cmap="magma",
                vmin=-80,
                vmax=0,
                extent=(0, n_frames * hop / rate, 0, rate / 2000),
            )
            ax.set_title(name)
            ax.set_xlabel("time (s)")
            if i == 0:
                ax.set_ylabel("frequency (kHz)")

    return draw


def _mask_figure(ex: _Example, rate: int, hop: int):
    def draw(fig) -> None:
        extent = (0, ex.mask.shape[0] * hop / rate, 0, rate / 2000)
        panels = [("predicted mask (BNN)", ex.mask), ("ideal binary mask", ex.ideal)]
        for i, (title, m) in enumerate(panels):
            ax = fig.add_subplot(1, 3, i + 1)
            ax.imshow(m.T, origin="lower", aspect="auto", cmap="gray", extent=extent)
            ax.set_title(title)
            ax.set_xlabel("time (s)")
            if i == 0:
                ax.set_ylabel("frequency (kHz)")
        # Agreement: white both 1, black both 0, red a bin kept that should go (noise let
        # through), blue a bin dropped that should stay (speech lost).
        rgb = np.zeros((*ex.mask.T.shape, 3))
        both = (ex.mask == 1) & (ex.ideal == 1)
        rgb[both.T] = 1.0
        rgb[((ex.mask == 1) & (ex.ideal == 0)).T] = (0.9, 0.15, 0.15)
        rgb[((ex.mask == 0) & (ex.ideal == 1)).T] = (0.2, 0.4, 1.0)
        ax = fig.add_subplot(1, 3, 3)
        ax.imshow(rgb, origin="lower", aspect="auto", extent=extent)
        agree = float(np.mean(ex.mask == ex.ideal))
        ax.set_title(f"agreement {100 * agree:.1f}%\n(red: noise kept, blue: speech lost)")
        ax.set_xlabel("time (s)")

    return draw


def denoising_report(
    network: BitNetwork,
    model_path: Path,
    mixtures: Sequence[Any],  # Mixture objects (bitnn.speech.mixtures)
    out: Path,
    *,
    twin: Any = None,  # a CheckpointNetwork of round 1, or None
    benchmark: dict[str, Any] | None = None,
    command: str = "",
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a denoising report for ``mixtures`` into ``out`` (checked beforehand with
    :func:`check_output_folder`). Returns the path of ``index.html``."""
    from bitnn.data.audio import write_wav
    from bitnn.speech.denoise import Denoiser, mixture_features
    from bitnn.speech.metrics import separation_metrics
    from bitnn.speech.spectra import apply_mask, ideal_binary_mask, istft, stft

    denoiser = Denoiser(network)
    cfg, rate = denoiser.config, denoiser.rate
    if not mixtures:
        raise InputError("the report needs at least one mixture")
    # Timed first: the metrics' BLAS threads keep spinning for a while after each call and
    # would take the cores from the denoiser (8.6 ms instead of 5.3 ms for 8.7 s of audio).
    seconds, audio_seconds = _speed(denoiser, [mx.mixture for mx in mixtures])
    examples: list[_Example] = []
    for i, mx in enumerate(mixtures):
        if progress:
            progress(f"example {i + 1} of {len(mixtures)}")
        x = mx.mixture
        X, feats = mixture_features(x, cfg, denoiser.level_rms)  # what the denoiser computes
        mask = denoiser.smooth(network.predict(feats))
        denoised = istft(apply_mask(X, mask), cfg, x.size)
        S = stft(mx.speech, cfg)
        ideal = ideal_binary_mask(S, stft(mx.noise, cfg))
        signals = {"noisy": x, "BNN": denoised}
        if twin is not None:
            twin_mask = denoiser.smooth(twin.predict(feats))  # the same vote as the BNN's
            signals["real-valued twin"] = istft(apply_mask(X, twin_mask), cfg, x.size)
        signals["oracle IBM"] = istft(apply_mask(X, ideal), cfg, x.size)
        metrics = {
            name: separation_metrics(mx.speech, mx.noise, s, rate) for name, s in signals.items()
        }
        signals["clean"] = mx.speech
        spec = mx.spec
        title = (
            f"{spec.voice} + {spec.noise_type} at {spec.snr_db:g} dB "
            f"({Path(spec.speech_file).name}, {Path(spec.noise_file).name} from sample "
            f"{spec.noise_offset})"
        )
        spectra = {
            "noisy": np.abs(X),
            "BNN-denoised": np.abs(stft(denoised, cfg)),
            "clean": np.abs(S),
        }
        examples.append(_Example(title, signals, metrics, spectra, mask, ideal))

    systems = list(examples[0].metrics)
    size = model_path.stat().st_size
    body = [
        f"<h1>Bitwise speech denoising: {html.escape(model_path.name)}</h1>",
        f"<p class=note>Made with <code>{html.escape(command)}</code> on "
        f"{time.strftime('%Y-%m-%d')}. {len(examples)} example mixture(s) at {rate} Hz.</p>",
        "<h2>Summary</h2>",
        f"<p>Model: {html.escape(repr(network))}, {size:,} bytes on disk "
        f"({network.parameter_bits():,} parameter bits); a float32 network of the same shape "
        f"takes {network.float32_bytes():,} bytes. Speed here: the {audio_seconds:.1f} s of "
        f"these examples, end to end (STFT, features, network, masking and inverse STFT), in "
        f"{1e3 * seconds:.1f} ms, {audio_seconds / max(seconds, 1e-9):,.0f}x faster than real "
        "time (median of 5 runs, all threads)."
        + (
            f" Each mask bit is the majority of its bin's bits in "
            f"{denoiser.mask_majority_frames} neighbouring frames"
            + (" (the twin's too)." if twin is not None else ".")
            if denoiser.mask_majority_frames > 1
            else ""
        )
        + "</p>",
        "<p>Means over the examples on this page (STOI over those long enough for it):</p>",
        _table(
            ["system", "SDR (dB)", "SIR (dB)", "SAR (dB)", "STOI"],
            [
                [s]
                + [
                    _fmt(np.nanmean([e.metrics[s][m] for e in examples]), 3 if m == "stoi" else 2)
                    for m in METRICS
                ]
                for s in systems
            ],
        ),
    ]
    with _Staging(out) as stage:
        for i, ex in enumerate(examples, 1):
            players = []
            for name, signal in ex.signals.items():
                rel = f"audio/example{i}-{name.replace(' ', '-').lower()}.wav"
                write_wav(stage.tmp / rel, signal, rate)
                players.append(
                    f"<figure><figcaption>{html.escape(name)}</figcaption>"
                    f'<audio controls preload="metadata" src="{rel}" '
                    f'data-seconds="{signal.size / rate:.4f}"></audio></figure>'
                )
            spec_png = f"figures/example{i}-spectrograms.jpg"
            mask_png = f"figures/example{i}-masks.png"
            _figure(stage.tmp / spec_png, _spectrogram_figure(ex, rate, cfg.hop), (12, 3.2))
            _figure(stage.tmp / mask_png, _mask_figure(ex, rate, cfg.hop), (12, 3.2))
            rows = [
                [s] + [_fmt(ex.metrics[s][m], 3 if m == "stoi" else 2) for m in METRICS]
                for s in systems
            ]
            body += [
                f"<section><h2>Example {i}: {html.escape(ex.title)}</h2>",
                f'<div class="players">{"".join(players)}</div>',
                _table(["system", "SDR (dB)", "SIR (dB)", "SAR (dB)", "STOI"], rows),
                f'<img src="{spec_png}" alt="spectrograms of example {i}">',
                f'<img src="{mask_png}" alt="masks of example {i}">',
                "</section>",
            ]
        if benchmark:
            body += _benchmark_section(benchmark)
        (stage.tmp / "index.html").write_text(_page(f"bitnn report: {model_path.name}", body))
        stage.commit()
    return out / "index.html"


def _speed(denoiser: Any, signals: list[np.ndarray], repeats: int = 5) -> tuple[float, float]:
    """(median seconds, audio seconds) to denoise the signals joined into one recording,
    after a warm-up run (the kernels lay out their weights once)."""
    x = np.concatenate(signals)
    denoiser(x[: denoiser.rate])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        denoiser(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), x.size / denoiser.rate


def _benchmark_section(benchmark: dict[str, Any]) -> list[str]:
    """The denoising benchmark's tables (benchmarks/denoise.py's JSON) and models."""
    tables = benchmark.get("tables")
    if not isinstance(tables, dict):
        raise InputError("the benchmark file has no tables; give benchmarks/denoise.py's JSON")
    out = [
        "<h2>The denoising benchmark</h2>",
        f"<p class=note>From <code>{html.escape(str(benchmark.get('command', '')))}</code> "
        f"({html.escape(str(benchmark.get('date', '')))}, "
        f"{html.escape(str(benchmark.get('cpu', '')))}).</p>",
    ]
    for condition, systems in tables.items():
        out.append(f"<h3>{html.escape(condition)}</h3>")
        out.append(
            _table(
                ["system", "SDR (dB)", "SIR (dB)", "SAR (dB)", "STOI"],
                [
                    [name] + [_fmt(v.get(m), 3 if m == "stoi" else 2) for m in METRICS]
                    for name, v in systems.items()
                ],
            )
        )
    models = benchmark.get("models", {})
    rows = []
    for name, m in models.items():
        speed = m.get("speed", {})
        rows.append(
            [
                name,
                f"{m.get('bytes', 0):,}",
                f"{m.get('float32_bytes', 0):,}",
                f"{speed.get('end_to_end_x_realtime', float('nan')):,.0f}x",
            ]
        )
    if rows:
        out.append(_table(["model", "file bytes", "float32 same shape", "speed (one core)"], rows))
    return out


# ---- classifiers ----------------------------------------------------------------------------


def _confusion_figure(confusion: np.ndarray, classes: list[str]):
    def draw(fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        n = len(classes)
        ax.set_xticks(range(n), classes, rotation=90 if n > 12 else 0)
        ax.set_yticks(range(n), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 30:
            for t in range(n):
                for p in range(n):
                    if confusion[t, p]:
                        color = "white" if rates[t, p] > 0.5 else "black"
                        ax.text(p, t, str(confusion[t, p]), ha="center", va="center", color=color)

    return draw


def _curves_figure(history: list[dict[str, Any]]):
    def draw(fig) -> None:
        steps = np.arange(1, len(history) + 1)
        rounds = np.array([h.get("round", 1) for h in history])
        loss_ax = fig.add_subplot(1, 2, 1)
        acc_ax = fig.add_subplot(1, 2, 2)
        for r in sorted(set(rounds.tolist())):
            sel = rounds == r
            loss = [history[i].get("loss", np.nan) for i in np.flatnonzero(sel)]
            acc = [history[i].get("val_accuracy") for i in np.flatnonzero(sel)]
            loss_ax.plot(steps[sel], loss, label=f"round {r}")
            if any(a is not None for a in acc):
                acc_ax.plot(
                    steps[sel],
                    [100 * a if a is not None else np.nan for a in acc],
                    label=f"round {r}",
                )
        loss_ax.set_title("training loss")
        acc_ax.set_title("validation accuracy (%)")
        for ax in (loss_ax, acc_ax):
            ax.set_xlabel("epoch (both rounds)")
            ax.legend()
            ax.grid(alpha=0.3)

    return draw


def classifier_report(
    network: BitNetwork,
    model_path: Path,
    X: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    out: Path,
    *,
    data_name: str = "",
    command: str = "",
    history: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a classifier report (confusion matrix, per-class accuracy, training curves) for
    labelled raw features ``(X, y)`` into ``out``. Returns the path of ``index.html``."""
    if network.output == "bits":
        raise InputError(
            f"{model_path} outputs bits, not classes; a denoiser's report needs mixtures, "
            "not labelled data (drop --data)"
        )
    n = network.n_outputs
    if len(classes) != n:
        raise InputError(f"{len(classes)} class names given for a model of {n} classes")
    y = np.asarray(y)
    if y.ndim != 1 or y.size != X.shape[0]:
        raise InputError(f"{X.shape[0]} samples but {y.size} labels")
    numeric = y.dtype != object and (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_)
    if not numeric or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
        raise InputError(f"labels must be class ids 0..{n - 1} (whole numbers), got {y.dtype}")
    if y.size == 0 or y.min() < 0 or y.max() >= n:
        raise InputError(f"labels must be class ids 0..{n - 1}")
    y = y.astype(np.int64)
    start = time.perf_counter()
    pred = network.predict(X)
    seconds = time.perf_counter() - start
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(axis=1)
    accuracy = float(np.trace(confusion) / y.size)
    rows = [
        [c, f"{support[i]:,}", _fmt(100 * confusion[i, i] / support[i]) if support[i] else "n/a"]
        for i, c in enumerate(classes)
    ]
    size = model_path.stat().st_size
    body = [
        f"<h1>Bitwise classifier: {html.escape(model_path.name)}</h1>",
        f"<p class=note>Made with <code>{html.escape(command)}</code> on "
        f"{time.strftime('%Y-%m-%d')}.</p>",
        "<h2>Summary</h2>",
        f"<p>{y.size:,} samples of {html.escape(data_name)}: accuracy "
        f"<b>{100 * accuracy:.2f}%</b> (error {100 * (1 - accuracy):.2f}%). Model: "
        f"{html.escape(repr(network))}, {size:,} bytes on disk; float32 of the same shape "
        f"{network.float32_bytes():,} bytes. Predicted in {seconds:.3f} s "
        f"({1e6 * seconds / y.size:.1f} us per sample, batch).</p>",
        '<h2>Confusion matrix</h2><img src="figures/confusion.png" alt="confusion matrix">',
        "<h2>Per-class accuracy</h2>",
        _table(["class", "samples", "accuracy (%)"], rows),
        "<h2>Training curves</h2>",
    ]
    with _Staging(out) as stage:
        size_in = max(4.0, 0.45 * n + 1.5)
        _figure(
            stage.tmp / "figures/confusion.png",
            _confusion_figure(confusion, classes),
            (size_in, size_in),
        )
        if history:
            _figure(stage.tmp / "figures/training.png", _curves_figure(history), (11, 3.5))
            body.append('<img src="figures/training.png" alt="training curves">')
        else:
            body.append("<p>This model carries no training history.</p>")
        (stage.tmp / "index.html").write_text(_page(f"bitnn report: {model_path.name}", body))
        shutil.rmtree(stage.tmp / "audio")
        stage.commit()
    return out / "index.html"
