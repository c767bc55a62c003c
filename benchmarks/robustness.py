"""Bad input through the ``bitnn`` command: what each case answers, and that none is a traceback.

    python benchmarks/robustness.py [--write docs/results/robustness.md] [--only WORD]

Every case runs ``python -m bitnn ...`` in its own process on small files made in a temporary
folder (no network, no datasets), and is checked for: no Python traceback, the exit status
expected (2 for bad input, 130 for Ctrl-C, 0 where the input is fine), a message of one line
(argparse's usage line aside), and no output file left behind by a failed command. The table
lists each case's command, exit status and message. Exits 1 if any check fails.

Read-only folders: as a normal user a folder with mode 0555; as root (who may write there)
``/sys/kernel``, where no one may create files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    group: str
    what: str
    args: list[str]
    status: int = 2  # expected exit status
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards
    sigint: tuple[float | str, ...] = ()  # Ctrl-C: seconds after start, or a line to wait for
    env: dict[str, str] = field(default_factory=dict)
    setup: str = ""  # a shell-free step run before the case (see prepare_case)


def make_files(w: Path) -> str:
    """The inputs every case draws on; returns the read-only folder to use."""
    sys.path.insert(0, str(ROOT / "src"))
    from bitnn.binarize import QuantileBinarizer
    from bitnn.io import save_model
    from bitnn.network import BitLayer, BitNetwork

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 6)) * 2
    y = rng.integers(0, 3, 300)
    X = centers[y] + rng.standard_normal((300, 6))
    np.savez(w / "d.npz", X=X, y=y)
    with open(w / "d.csv", "w") as f:
        f.write(",".join([f"f{i}" for i in range(6)] + ["label"]) + "\n")
        for row, label in zip(X, y, strict=True):
            f.write(",".join(f"{v:.5f}" for v in row) + f",{label}\n")
    Xb, yb = rng.standard_normal((6000, 20)), rng.integers(0, 3, 6000)
    np.savez(w / "big.npz", X=Xb + np.eye(3)[yb] @ rng.standard_normal((3, 20)) * 2, y=yb)
    np.savez(w / "other.npz", X=X[:200], y=y[:200])
    np.savez(w / "strings.npz", X=X, y=np.array(["cat", "dog", "eel"])[y])
    np.savez(w / "scalar.npz", X=X, y=np.array(1))
    np.savez(w / "y1.npz", X=X, y=y[:1])
    np.savez(w / "y100.npz", X=X, y=y[:100])
    np.savez(w / "noy.npz", X=X)
    np.savez(w / "noX.npz", A=X, y=y)
    np.savez(w / "obj.npz", X=np.array([{"a": 1}] * 3, dtype=object), y=[0, 1, 2])
    np.savez(w / "x1d.npz", X=X[:, 0], y=y)
    np.savez(w / "x3d.npz", X=X.reshape(300, 3, 2), y=y)
    np.savez(w / "x0.npz", X=np.zeros((0, 6)), y=np.zeros(0))
    np.savez(w / "xinf.npz", X=np.where(np.arange(6) == 4, np.inf, X), y=y)
    np.savez(w / "xnan.npz", X=np.where(np.arange(6) == 2, np.nan, X), y=y)
    np.savez(w / "xstr.npz", X=np.full((3, 6), "a"), y=[0, 1, 2])
    np.savez(w / "x4.npz", X=X[:, :4], y=y)
    np.savez(w / "yneg.npz", X=X, y=y - 1)
    np.savez(w / "yhalf.npz", X=X, y=y + 0.5)
    np.savez(w / "y7.npz", X=X, y=np.where(y == 2, 7, y))
    np.savez(w / "yone.npz", X=X, y=np.zeros(300, int))
    np.savez(w / "ynan.npz", X=X, y=np.where(np.arange(300) == 5, np.nan, y))
    np.savez(w / "y2d.npz", X=X, y=np.stack([y, y], 1) * 3)
    (w / "text.npz").write_text("X,y\n1,2\n")
    (w / "empty.npz").write_bytes(b"")
    (w / "zip.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    (w / "folder.npz").mkdir()
    (w / "folder").mkdir()
    (w / "d.txt").write_text("1,2,3\n")
    (w / "empty.csv").write_text("")
    (w / "header.csv").write_text("a,b,label\n")
    (w / "ragged.csv").write_text("1,2,0\n3,4\n")
    (w / "cell.csv").write_text("1,2,0\n3,x,1\n")
    (w / "nan.csv").write_text("1,2,0\nnan,4,1\n")
    (w / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (w / "one.csv").write_text("0\n1\n")
    binarizer = QuantileBinarizer(2).fit(X)
    net = BitNetwork(
        [
            BitLayer.from_values(rng.choice([-1, 1], (16, 12)), bias=rng.choice([-1, 1], 16)),
            BitLayer.from_values(rng.choice([-1, 1], (3, 16))),
        ],
        binarizer,
    )
    save_model(net, w / "m.bnn")
    net.metadata = {"training": "notes"}
    save_model(net, w / "notes.bnn")
    bits = BitNetwork([BitLayer.from_values(rng.choice([-1, 1], (4, 12)))], binarizer, "bits")
    save_model(bits, w / "bits.bnn")
    raw = (w / "m.bnn").read_bytes()
    (w / "truncated.bnn").write_bytes(raw[: len(raw) // 2])
    (w / "flipped.bnn").write_bytes(raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:])
    (w / "junk.bnn").write_text("not a model at all")
    (w / "empty.bnn").write_bytes(b"")
    (w / "model.dir").mkdir()
    (w / "existing.csv").write_text("keep me\n")
    (w / "exp").mkdir()
    (w / "exp" / "bitnn_model.h").write_text("/* keep me */\n")
    (w / "ckpt.dir").mkdir()
    (w / "stale.ckpt").write_bytes(b"an earlier run's checkpoint")
    (w / "x.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    if os.geteuid() != 0:
        ro = w / "readonly"
        ro.mkdir()
        ro.chmod(0o555)
        return str(ro)
    return "/sys/kernel"


def cases(ro: str) -> list[Case]:
    tiny = ["--hidden", "8", "--epochs1", "1", "--epochs2", "1"]
    train = ["train", "d.npz", "-o", "t.bnn", *tiny]
    long = [
        "train",
        "big.npz",
        "--hidden",
        "256,256",
        "--epochs1",
        "3",
        "--epochs2",
        "3",
        "--batch-size",
        "20",
        "--seed",
        "5",
    ]
    c = [
        # ---- the command line itself
        Case("usage", "no command", []),
        Case("usage", "unknown command", ["frobnicate"]),
        Case("usage", "unknown option", ["info", "m.bnn", "--colour"]),
        Case("usage", "train without -o", ["train", "d.npz"]),
        Case("usage", "--epochs1 not a number", [*train, "--epochs1", "many"]),
        Case("usage", "unknown demo", ["demo", "mnist"]),
        Case("usage", "unknown corpus set", ["fetch", "images"]),
        # ---- model files
        Case("model file", "missing", ["info", "nowhere.bnn"]),
        Case("model file", "a folder", ["info", "model.dir"]),
        Case("model file", "not a model", ["info", "junk.bnn"]),
        Case("model file", "empty", ["info", "empty.bnn"]),
        Case("model file", "truncated", ["eval", "truncated.bnn", "d.npz"]),
        Case("model file", "one bit flipped", ["predict", "flipped.bnn", "d.npz"]),
        Case("model file", "a data file given as the model", ["info", "d.npz"]),
        Case("model file", "metadata training: 'notes' (fine)", ["info", "notes.bnn"], 0),
        # ---- data files
        Case("data", "missing", ["eval", "m.bnn", "nowhere.npz"]),
        Case("data", "a folder", ["eval", "m.bnn", "folder"]),
        Case("data", "a folder named .npz", ["predict", "m.bnn", "folder.npz"]),
        Case("data", "unknown extension", ["eval", "m.bnn", "d.txt"]),
        Case("data", ".npz that is text", ["eval", "m.bnn", "text.npz"]),
        Case("data", ".npz that is empty", ["eval", "m.bnn", "empty.npz"]),
        Case("data", ".npz that is a broken zip", ["eval", "m.bnn", "zip.npz"]),
        Case("data", ".npz of object arrays", ["eval", "m.bnn", "obj.npz"]),
        Case("data", ".npz without X", ["eval", "m.bnn", "noX.npz"]),
        Case("data", ".npz without y, for eval", ["eval", "m.bnn", "noy.npz"]),
        Case("data", ".npz without y, for predict (fine)", ["predict", "m.bnn", "noy.npz"], 0),
        Case("data", "X 1-D", ["eval", "m.bnn", "x1d.npz"]),
        Case("data", "X 3-D", ["eval", "m.bnn", "x3d.npz"]),
        Case("data", "X empty", ["predict", "m.bnn", "x0.npz"]),
        Case("data", "X with inf", ["eval", "m.bnn", "xinf.npz"]),
        Case("data", "X with NaN", ["predict", "m.bnn", "xnan.npz"]),
        Case("data", "X of strings", ["eval", "m.bnn", "xstr.npz"]),
        Case("data", "4 features for a 6-feature model", ["eval", "m.bnn", "x4.npz"]),
        Case("data", "string labels", ["eval", "m.bnn", "strings.npz"]),
        Case("data", "300 rows, 1 label", ["eval", "m.bnn", "y1.npz"]),
        Case("data", "300 rows, 100 labels", ["eval", "m.bnn", "y100.npz"]),
        Case("data", "negative labels", ["eval", "m.bnn", "yneg.npz"]),
        Case("data", "labels 0.5, 1.5", ["eval", "m.bnn", "yhalf.npz"]),
        Case("data", "label 7 for 3 outputs", ["eval", "m.bnn", "y7.npz"]),
        Case("data", "NaN label", ["eval", "m.bnn", "ynan.npz"]),
        Case("data", "2-D labels for a classifier", ["eval", "m.bnn", "y2d.npz"]),
        Case("data", "class ids for a bit-output model", ["eval", "bits.bnn", "d.npz"]),
        Case("data", "empty CSV", ["eval", "m.bnn", "empty.csv"]),
        Case("data", "CSV header only", ["eval", "m.bnn", "header.csv"]),
        Case("data", "ragged CSV", ["eval", "m.bnn", "ragged.csv"]),
        Case("data", "CSV cell not a number", ["eval", "m.bnn", "cell.csv"]),
        Case("data", "CSV of binary bytes", ["eval", "m.bnn", "binary.csv"]),
        Case(
            "data", "CSV label column missing", ["eval", "m.bnn", "d.csv", "--label-column", "kind"]
        ),
        Case("data", "CSV label column 99", ["eval", "m.bnn", "d.csv", "--label-column", "99"]),
        Case("data", "file and --dataset", ["eval", "m.bnn", "d.npz", "--dataset", "mnist"]),
        Case("data", "no data at all", ["eval", "m.bnn"]),
        Case("engine", "unknown engine", ["eval", "m.bnn", "d.npz", "--engine", "gpu"]),
        Case(
            "engine", "BITNN_KERNEL=sse9", ["eval", "m.bnn", "d.npz"], env={"BITNN_KERNEL": "sse9"}
        ),
        # ---- outputs of predict and export
        Case(
            "output",
            "predict onto an existing file",
            ["predict", "m.bnn", "d.npz", "-o", "existing.csv"],
        ),
        Case("output", "predict onto a folder", ["predict", "m.bnn", "d.npz", "-o", "folder"]),
        Case(
            "output",
            "predict into a missing folder",
            ["predict", "m.bnn", "d.npz", "-o", "no/p.csv"],
            absent=["no"],
        ),
        Case(
            "output",
            "predict into a read-only folder",
            ["predict", "m.bnn", "d.npz", "-o", f"{ro}/p.csv"],
        ),
        Case(
            "output",
            "predict onto its own data, --force",
            ["predict", "m.bnn", "d.csv", "-o", "d.csv", "--force"],
        ),
        Case("output", "export onto a file", ["export", "m.bnn", "-o", "existing.csv"]),
        Case("output", "export over an existing NAME.h", ["export", "m.bnn", "-o", "exp"]),
        Case(
            "output",
            "export into a missing folder's folder",
            ["export", "m.bnn", "-o", "no/such/c"],
            absent=["no"],
        ),
        Case("output", "export into a read-only folder", ["export", "m.bnn", "-o", f"{ro}/c"]),
        Case(
            "output",
            "export: a name that is no C identifier",
            ["export", "m.bnn", "-o", "c", "--name", "1x"],
            absent=["c/1x.c"],
        ),
        # ---- train: settings (all refused before data is read)
        Case("train", "--lr1 nan", [*train, "--lr1", "nan"], absent=["t.bnn", "t.bnn.ckpt"]),
        Case("train", "--lr1 -5", [*train, "--lr1", "-5"]),
        Case("train", "--lr2 inf", [*train, "--lr2", "inf"]),
        Case("train", "--weight-decay -1", [*train, "--weight-decay", "-1"]),
        Case("train", "--epochs1 -1", [*train, "--epochs1", "-1"]),
        Case("train", "no epochs", [*train, "--epochs1", "0", "--epochs2", "0"]),
        Case("train", "--batch-size 0", [*train, "--batch-size", "0"]),
        Case("train", "--hidden 0", [*train, "--hidden", "0"]),
        Case("train", "--hidden a,b", [*train, "--hidden", "a,b"]),
        Case("train", "--dropout-input 1.5", [*train, "--dropout-input", "1.5"]),
        Case("train", "--val-fraction 1", [*train, "--val-fraction", "1"]),
        Case("train", "--val-fraction nan", [*train, "--val-fraction", "nan"]),
        Case("train", "--optimizer rmsprop", [*train, "--optimizer", "rmsprop"]),
        Case("train", "--schedule step", [*train, "--schedule", "step"]),
        Case("train", "--keep first", [*train, "--keep", "first"]),
        Case("train", "--image-shape 3x", [*train, "--image-shape", "3x"]),
        Case("train", "--augment-shift 2 without --image-shape", [*train, "--augment-shift", "2"]),
        Case(
            "train",
            "--image-shape 4x4 for 6 features",
            [*train, "--augment-shift", "1", "--image-shape", "4x4"],
        ),
        Case(
            "train",
            "--device cuda (no GPU here)" if not _cuda() else "--device cuda:9",
            [*train, "--device", "cuda" if not _cuda() else "cuda:9"],
        ),
        Case("train", "--device tpu", [*train, "--device", "tpu"]),
        Case("train", "--binarizer nonsense", [*train, "--binarizer", "nonsense"]),
        Case("train", "--binarizer quantile:0", [*train, "--binarizer", "quantile:0"]),
        Case("train", "--preset nope", [*train, "--preset", "nope"]),
        Case(
            "train",
            "--preset paper --bias-kind threshold",
            [*train, "--preset", "paper", "--bias-kind", "threshold"],
        ),
        Case(
            "train",
            "--preset best --bias-kind bias",
            [*train, "--preset", "best", "--bias-kind", "bias"],
        ),
        Case(
            "train",
            "--preset paper --binarizer wta:64:4",
            [*train, "--preset", "paper", "--binarizer", "wta:64:4"],
        ),
        Case(
            "train",
            "mnist with --val-fraction 0.2",
            ["train", "mnist", "-o", "t.bnn", "--val-fraction", "0.2"],
        ),
        # ---- train: data
        Case("train", "data missing", ["train", "nowhere.npz", "-o", "t.bnn"]),
        Case("train", "data a folder", ["train", "folder", "-o", "t.bnn", *tiny]),
        Case("train", "scalar y", ["train", "scalar.npz", "-o", "t.bnn", *tiny]),
        Case("train", "one class only", ["train", "yone.npz", "-o", "t.bnn", *tiny]),
        Case("train", "string labels", ["train", "strings.npz", "-o", "t.bnn", *tiny]),
        Case("train", "X with NaN", ["train", "xnan.npz", "-o", "t.bnn", *tiny]),
        Case("train", "CSV of one column", ["train", "one.csv", "-o", "t.bnn", *tiny]),
        Case(
            "train",
            "CSV --label-column none",
            ["train", "one.csv", "-o", "t.bnn", "--label-column", "none"],
        ),
        # ---- train: output paths (all refused before training starts)
        Case("train", "-o exists", ["train", "d.npz", "-o", "m.bnn", *tiny]),
        Case("train", "-o a folder, --force", ["train", "d.npz", "-o", "folder", "--force", *tiny]),
        Case(
            "train",
            "-o into a missing folder",
            ["train", "d.npz", "-o", "no/t.bnn", *tiny],
            absent=["no"],
        ),
        Case("train", "-o into a read-only folder", ["train", "d.npz", "-o", f"{ro}/t.bnn", *tiny]),
        Case(
            "train",
            "--checkpoint into a missing folder",
            [*train, "--checkpoint", "no/c.ckpt"],
            absent=["t.bnn", "no"],
        ),
        Case(
            "train",
            "-o the data file, --force",
            ["train", "d.npz", "-o", "d.npz", "--force", *tiny],
        ),
        Case("train", "-o and --checkpoint the same", [*train, "--checkpoint", "t.bnn"]),
        Case(
            "train",
            "an earlier run's checkpoint, no --resume",
            [*train, "--checkpoint", "stale.ckpt"],
            absent=["t.bnn"],
        ),
        Case(
            "train", "--resume without a checkpoint", ["train", "d.npz", "-o", "r.bnn", "--resume"]
        ),
        Case(
            "train",
            "--resume --checkpoint a folder",
            ["train", "d.npz", "-o", "r.bnn", "--resume", "--checkpoint", "ckpt.dir"],
        ),
        Case(
            "train",
            "--resume of a file that is no checkpoint",
            ["train", "d.npz", "-o", "r.bnn", "--resume", "--checkpoint", "stale.ckpt"],
        ),
        Case(
            "train",
            "--resume with --seed",
            ["train", "d.npz", "-o", "r.bnn", "--resume", "--seed", "3"],
        ),
        Case(
            "train",
            "a run that works (fine)",
            ["train", "d.npz", "-o", "ok.bnn", *tiny, "--keep-checkpoint"],
            0,
        ),
        Case(
            "train",
            "--resume of a finished run's checkpoint with other data",
            ["train", "other.npz", "-o", "ok2.bnn", "--resume", "--checkpoint", "ok.bnn.ckpt"],
            absent=["ok2.bnn"],
        ),
        # ---- Ctrl-C
        *(
            Case(
                "ctrl-c",
                f"Ctrl-C {delay:g} s after start" + (" (importing)" if delay < 0.5 else ""),
                [*long, "-o", f"{name}.bnn"],
                130,
                absent=[f"{name}.bnn"],
                sigint=(delay,),
            )
            for name, delay in (("i1", 0.2), ("i0", 0.5), ("i7", 1.5), ("i2", 1.0), ("i3", 2.0))
        ),
        Case(
            "ctrl-c",
            "Ctrl-C when training has started",
            [*long, "-o", "i4.bnn"],
            130,
            absent=["i4.bnn"],
            sigint=("device:", 0.3),
        ),
        Case(
            "ctrl-c",
            "Ctrl-C in the second epoch",
            [*long, "-o", "i5.bnn"],
            130,
            absent=["i5.bnn"],
            sigint=("round 1 epoch 1/3", 0.3),
        ),
        Case(
            "ctrl-c",
            "Ctrl-C twice in the second epoch",
            [*long, "-o", "i6.bnn"],
            130,
            absent=["i6.bnn"],
            sigint=("round 1 epoch 1/3", 0.3, 0.002),
        ),
        Case(
            "ctrl-c",
            "Ctrl-C during eval of big data",
            ["eval", "m.bnn", "big.npz"],
            130,
            sigint=(0.05,),
        ),
        # ---- other commands
        Case("predict", "a recording for a model of features", ["predict", "m.bnn", "x.wav"]),
        Case("predict", "two data files", ["predict", "m.bnn", "d.npz", "d.csv"]),
        Case("train", "an empty folder of recordings", ["train", "folder", "-o", "t.bnn", *tiny]),
        Case("report", "model missing", ["report", "nowhere.bnn", "-o", "r"]),
        Case("report", "a classifier without --data", ["report", "m.bnn", "-o", "r"]),
        Case("report", "-o onto a file", ["report", "m.bnn", "-o", "d.csv", "--data", "d.npz"]),
        Case(
            "report",
            "-o into a missing folder's folder",
            ["report", "m.bnn", "-o", "no/such/r", "--data", "d.npz"],
            absent=["no"],
        ),
        Case("report", "string labels", ["report", "m.bnn", "-o", "r", "--data", "strings.npz"]),
        Case("report", "labels 0.5, 1.5", ["report", "m.bnn", "-o", "r", "--data", "yhalf.npz"]),
        Case(
            "denoise",
            "a classifier as the denoiser",
            ["denoise", "m.bnn", "x.wav", "-o", "y.wav"],
            absent=["y.wav"],
        ),
        Case(
            "denoise",
            "a wav that is not one",
            ["denoise", str(ROOT / "models" / "denoise-8k.bnn"), "x.wav", "-o", "y.wav"],
            absent=["y.wav"],
        ),
        Case(
            "denoise",
            "input missing",
            ["denoise", str(ROOT / "models" / "denoise-8k.bnn"), "nowhere.wav", "-o", "y.wav"],
        ),
        Case("denoise", "-o exists", ["denoise", "m.bnn", "x.wav", "-o", "d.csv"]),
    ]
    return c


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


@dataclass
class Result:
    case: Case
    status: int
    message: str
    lines: int
    problems: list[str]


def run_case(case: Case, w: Path) -> Result:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1", **case.env}
    env.pop("BITNN_DEBUG", None)
    cmd = [sys.executable, "-m", "bitnn", *case.args]
    proc = subprocess.Popen(
        cmd, cwd=w, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    err: list[str] = []
    seen = threading.Event()
    reader = threading.Thread(target=_read_lines, args=(proc.stderr, err, case.sigint, seen))
    reader.start()
    if case.sigint:
        steps = list(case.sigint)
        if isinstance(steps[0], str):
            seen.wait(timeout=300)
            steps = steps[1:]
        for i, delay in enumerate(steps):
            time.sleep(float(delay))
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            if i == 0 and len(steps) == 1:
                break
    try:
        out = proc.stdout.read()
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    text = "".join(err)
    problems = []
    if "Traceback" in text:
        problems.append("traceback")
    if proc.returncode != case.status:
        problems.append(f"exit {proc.returncode}, expected {case.status}")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    messages = [ln for ln in lines if ln.startswith("bitnn: error") or ln.startswith("bitnn: ")]
    if case.status != 0 and len(messages) != 1 and not any("usage:" in ln for ln in lines):
        problems.append(f"{len(messages)} message lines")
    for path in case.absent:
        if (w / path).exists():
            problems.append(f"{path} was left behind")
    message = messages[-1] if messages else (lines[-1] if lines else out.strip()[-100:])
    if case.status == 0 and not messages:
        message = "(fine) " + (out.strip().splitlines() or [""])[-1]
    return Result(case, proc.returncode, message, len(lines), problems)


def _read_lines(stream, into: list[str], sigint: tuple, seen: threading.Event) -> None:
    wait_for = sigint[0] if sigint and isinstance(sigint[0], str) else None
    for line in stream:
        into.append(line)
        if wait_for is not None and wait_for in line:
            seen.set()
    seen.set()


def prepare(case: Case, w: Path) -> None:
    """Cases that need what an earlier case made start from it; nothing else is shared."""
    for path in case.absent:
        target = w / path
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def table(results: list[Result], ro: str) -> str:
    tracebacks = sum("traceback" in r.problems for r in results)
    failed = sum(bool(r.problems) for r in results)
    rows = [
        "# Bad input through the bitnn command",
        "",
        "Generated by `python benchmarks/robustness.py --write docs/results/robustness.md`: each "
        "case runs `python -m bitnn ...` in its own process on small files in a temporary "
        "folder. Checked for each: no Python traceback, the expected exit status (2 bad input, "
        "130 Ctrl-C, 0 where the input is fine), one message line (argparse's usage line aside), "
        "no output left behind by a failed command. Ctrl-C cases send SIGINT at the moment "
        "named (timings depend on the machine: the 0.2 s case lands while Python imports).",
        "",
        f"**{len(results)} cases: {tracebacks} tracebacks, {failed} failed checks.** "
        f"Read-only folder used: `{ro}`.",
        "",
        "| # | case | command | exit | message |",
        "|---:|---|---|---:|---|",
    ]
    for i, r in enumerate(results, 1):
        command = "bitnn " + " ".join(r.case.args)
        if r.case.env:
            command = " ".join(f"{k}={v}" for k, v in r.case.env.items()) + " " + command
        msg = r.message.replace("|", "\\|")
        if r.problems:
            msg += " **(" + "; ".join(r.problems) + ")**"
        what = f"{r.case.group}: {r.case.what}"
        rows.append(f"| {i} | {what} | `{command}` | {r.status} | {msg} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", help="also write the Markdown table here")
    ap.add_argument("--only", help="only cases whose group or description contains this")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bitnn-robustness-") as tmp:
        w = Path(tmp)
        ro = make_files(w)
        results = []
        for case in cases(ro):
            if opts.only and opts.only not in f"{case.group}: {case.what}":
                continue
            prepare(case, w)
            r = run_case(case, w)
            results.append(r)
            flag = "FAIL " + "; ".join(r.problems) if r.problems else "ok"
            print(f"[{flag}] {case.group}: {case.what}: exit {r.status}: {r.message}", flush=True)
        if w.joinpath("readonly").exists():
            w.joinpath("readonly").chmod(0o755)
    text = table(results, ro)
    if opts.write:
        Path(opts.write).write_text(text)
    bad = [r for r in results if r.problems]
    print(f"{len(results)} cases, {len(bad)} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
