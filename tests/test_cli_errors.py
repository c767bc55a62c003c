"""The CLI's error boundary: every bad input is one line and a non-zero exit, never a
traceback, and every output path is checked before any work starts."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bitnn import cli, interrupts
from bitnn.binarize import QuantileBinarizer
from bitnn.cli import main
from bitnn.io import save_model
from bitnn.network import BitLayer, BitNetwork

SRC = str(Path(cli.__file__).resolve().parents[1])
TINY = ["--hidden", "8", "--epochs1", "1", "--epochs2", "1"]


@pytest.fixture
def w(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 6)), rng.integers(0, 3, 300)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    net = BitNetwork(
        [BitLayer.from_values(rng.choice([-1, 1], (3, 12)))], QuantileBinarizer(2).fit(X)
    )
    save_model(net, tmp_path / "m.bnn")
    return tmp_path


def error_of(capsys, argv, status=2):
    """Run the CLI in-process; return its one stderr line."""
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def readonly_folder(tmp_path):
    """A folder no one may create files in (root ignores mode bits, so /sys/kernel then)."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    ro = Path("/sys/kernel")
    try:
        (ro / "bitnn-probe").touch()
    except OSError:
        return ro
    pytest.fail("no read-only folder found for this test")


def test_data_that_is_a_folder_or_not_an_npz(w, capsys):
    (w / "folder").mkdir()
    assert "is a folder" in error_of(capsys, ["eval", str(w / "m.bnn"), str(w / "folder")])
    (w / "text.npz").write_text("X,y\n1,2\n")
    msg = error_of(capsys, ["eval", str(w / "m.bnn"), str(w / "text.npz")])
    assert "not a .npz file" in msg and "pickle" not in msg


def test_eval_labels_must_be_numbers_one_per_sample(w, capsys):
    X = np.load(w / "d.npz")["X"]
    np.savez(w / "s.npz", X=X, y=np.array(["a", "b", "c"])[np.arange(300) % 3])
    assert "labels must be numbers" in error_of(
        capsys, ["eval", str(w / "m.bnn"), str(w / "s.npz")]
    )
    for n in (1, 100):
        np.savez(w / "n.npz", X=X, y=np.zeros(n, int))
        msg = error_of(capsys, ["eval", str(w / "m.bnn"), str(w / "n.npz")])
        assert f"300 samples but {n} label" in msg


def test_info_of_a_model_with_metadata_of_its_own(w, capsys):
    from bitnn.io import load_model

    net = load_model(w / "m.bnn")
    net.metadata = {"training": "notes"}
    save_model(net, w / "notes.bnn")
    assert main(["info", str(w / "notes.bnn")]) == 0
    assert "binary ops" in capsys.readouterr().out


def test_predict_never_overwrites_silently(w, capsys):
    out = w / "p.csv"
    out.write_text("keep me\n")
    argv = ["predict", str(w / "m.bnn"), str(w / "d.npz"), "-o", str(out)]
    assert "already exists" in error_of(capsys, argv) and out.read_text() == "keep me\n"
    assert main([*argv, "--force"]) == 0 and len(out.read_text().split()) == 300
    assert "is a folder" in error_of(capsys, [*argv[:-1], str(w)])
    assert "does not exist" in error_of(capsys, [*argv[:-1], str(w / "no" / "p.csv")])
    argv = ["predict", str(w / "m.bnn"), str(w / "d.npz"), "-o", str(w / "d.npz"), "--force"]
    assert "also an input" in error_of(capsys, argv)


def test_outputs_in_a_read_only_folder(w, capsys):
    ro = readonly_folder(w)
    msg = error_of(capsys, ["predict", str(w / "m.bnn"), str(w / "d.npz"), "-o", f"{ro}/p.csv"])
    assert f"cannot write in folder {ro}" in msg
    assert "cannot write" in error_of(capsys, ["export", str(w / "m.bnn"), "-o", f"{ro}/c"])


def test_export_onto_a_file_or_over_existing_sources(w, capsys):
    (w / "f").write_text("x")
    assert "is a file" in error_of(capsys, ["export", str(w / "m.bnn"), "-o", str(w / "f")])
    assert main(["export", str(w / "m.bnn"), "-o", str(w / "c")]) == 0
    capsys.readouterr()
    assert "already exist" in error_of(capsys, ["export", str(w / "m.bnn"), "-o", str(w / "c")])
    assert main(["export", str(w / "m.bnn"), "-o", str(w / "c"), "--force"]) == 0


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--lr1", "nan"], "--lr1 must be a positive number"),
        (["--lr1", "-5"], "--lr1 must be a positive number"),
        (["--weight-decay", "inf"], "--weight-decay must be a number >= 0"),
        (["--preset", "best", "--bias-kind", "bias"], "conflicts with --preset best"),
    ],
)
def test_training_settings_are_refused_before_data_is_read(tmp_path, capsys, options, expected):
    pytest.importorskip("torch")
    argv = ["train", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "m.bnn"), *options]
    assert expected in error_of(capsys, argv)


def test_device_without_cuda_is_refused_up_front(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    device = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    argv = ["train", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "m.bnn")]
    assert f"--device {device}" in error_of(capsys, [*argv, "--device", device])


def test_train_output_paths_are_checked_before_training(w, capsys):
    pytest.importorskip("torch")
    data = str(w / "d.npz")
    for argv, expected in [
        (["-o", str(w / "no" / "m.bnn")], "does not exist"),
        (["-o", str(w), "--force"], "is a folder"),
        (["-o", str(w / "m2.bnn"), "--checkpoint", str(w / "no" / "c")], "does not exist"),
        (["-o", str(w / "m2.bnn"), "--resume", "--checkpoint", str(w)], "is a folder"),
        (["-o", str(w / "m2.bnn"), "--resume"], "nothing to resume"),
        (["-o", str(w / "m2.bnn"), "--checkpoint", str(w / "m2.bnn")], "two paths"),
        (["-o", data, "--force"], "also an input"),
    ]:
        started = time.perf_counter()
        options = [] if "--resume" in argv else TINY
        assert expected in error_of(capsys, ["train", data, *argv, *options])
        assert time.perf_counter() - started < 5  # refused at once, not after training
    assert not (w / "m2.bnn").exists() and not (w / "m2.bnn.ckpt").exists()
    (w / "m2.bnn.ckpt").write_bytes(b"an earlier run's")  # never clobbered without --force
    msg = error_of(capsys, ["train", data, "-o", str(w / "m2.bnn"), *TINY])
    assert "--resume continues that run, --force starts a new one" in msg


def test_keep_checkpoint_keeps_it(w, capsys):
    pytest.importorskip("torch")
    argv = ["train", str(w / "d.npz"), "-o", str(w / "k.bnn"), *TINY, "--keep-checkpoint"]
    assert main(argv) == 0
    assert (w / "k.bnn.ckpt").exists() and "checkpoint kept" in capsys.readouterr().out


def test_preset_values_replaced_by_options_are_reported(w, capsys):
    pytest.importorskip("torch")
    argv = ["train", str(w / "d.npz"), "-o", str(w / "p.bnn"), *TINY, "--preset", "best"]
    assert main([*argv, "--dropout-hidden", "0"]) == 0
    assert "note: --dropout-hidden 0 replaces --preset best's 0.2" in capsys.readouterr().err


def test_help_shows_defaults_and_what_each_preset_sets(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "hidden layer widths, e.g. 256,256 (default: 256,256)" in out
    assert "epochs of round 1 (weight compression) (default: 10)" in out
    assert "best: integer thresholds" in out and "--bias-kind threshold (fixed)" in out
    assert "on mnist also --hidden 2048,2048,2048" in out


def test_a_bug_is_one_line_and_debug_shows_the_traceback(w, capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("deliberately")

    monkeypatch.setattr(cli, "cmd_info", broken)
    monkeypatch.setattr(cli, "build_parser", _parser_with(broken))
    msg = error_of(capsys, ["info", str(w / "m.bnn")], 70)
    assert "internal error (ZeroDivisionError: deliberately)" in msg and "--debug" in msg
    for argv in (["--debug", "info", str(w / "m.bnn")], ["info", str(w / "m.bnn"), "--debug"]):
        assert main(argv) == 70
        assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("BITNN_DEBUG", "1")
    assert main(["info", str(w / "m.bnn")]) == 70
    assert "Traceback" in capsys.readouterr().err


def _parser_with(func):
    build = cli.build_parser

    def build_parser():
        p = build()
        p._subparsers._group_actions[0].choices["info"].set_defaults(func=func)
        return p

    return build_parser


def test_every_command_takes_debug():
    p = cli.build_parser()
    for name, sub in p._subparsers._group_actions[0].choices.items():
        assert any("--debug" in a.option_strings for a in sub._actions), name


# ---- Ctrl-C, through a real process and a real signal ----------------------------------------


def _run_with_sigint(argv, cwd, wait_for=None, delays=(0.3,), until_exit=False):
    """Start ``python -m bitnn ARGV``; after the stderr line ``wait_for`` (or at once) sleep
    each delay and send SIGINT (``until_exit``: stop sending once the process has ended);
    return (exit status, stderr). Never leaves the process."""
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bitnn", *argv], cwd=cwd, env=env, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    lines, seen = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if wait_for and wait_for in line:
                seen.set()
        seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if wait_for:
            assert seen.wait(timeout=300), "the run never got there"
        for delay in delays:
            time.sleep(delay)
            if until_exit and proc.poll() is not None:
                break
            assert proc.poll() is None, "the run ended before the signal: " + "".join(lines)
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    return proc.returncode, "".join(lines)


@pytest.fixture
def long_run(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 6000)
    np.savez(tmp_path / "big.npz", X=rng.standard_normal((6000, 20)) + y[:, None], y=y)
    return ["train", "big.npz", "--hidden", "256,256", "--epochs1", "3", "--epochs2", "3",
            "--batch-size", "20", "-o", "m.bnn"]  # fmt: skip


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_ctrl_c_while_starting_is_one_line(tmp_path, long_run, delay):
    """Ctrl-C while numpy and PyTorch load (from about 2 ms after the interpreter has started:
    a Ctrl-C during Python's own start-up is Python's to report)."""
    status, err = _run_with_sigint(long_run, tmp_path, delays=(delay,))
    assert status == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("bitnn: interrupted"), err
    assert not (tmp_path / "m.bnn").exists()


def test_ctrl_c_twice_while_training_is_one_line(tmp_path, long_run):
    pytest.importorskip("torch")
    status, err = _run_with_sigint(long_run, tmp_path, "round 1 epoch 1/3", (0.3, 0.01))
    assert status == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("bitnn: ") and "resume" in last, err
    assert not (tmp_path / "m.bnn").exists()


def test_a_burst_of_ctrl_c_while_training_is_one_line(tmp_path, long_run):
    """A held-down Ctrl-C: signals keep landing while the command stops and returns."""
    pytest.importorskip("torch")
    burst = (0.3, 0.01) + (0.0,) * 200_000
    status, err = _run_with_sigint(long_run, tmp_path, "round 1 epoch 1/3", burst, True)
    assert status == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("bitnn: "), err
    assert not (tmp_path / "m.bnn").exists()


def test_report_labels_must_be_class_ids(w, capsys):
    X = np.load(w / "d.npz")["X"]
    np.savez(w / "s.npz", X=X, y=np.array(["a", "b", "c"])[np.arange(300) % 3])
    argv = ["report", str(w / "m.bnn"), "-o", str(w / "r"), "--data", str(w / "s.npz")]
    assert "labels must be class ids 0..2" in error_of(capsys, argv)  # was a UFuncTypeError


def _ctrl_c_is_ignored():
    """Send this process a Ctrl-C and fail (rather than stop pytest) if it interrupts."""
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C interrupted where it must be ignored")


@pytest.fixture
def entry(monkeypatch):
    """bitnn.__main__ run in this process, with its exits recorded instead of taken."""
    import bitnn.__main__ as entry

    exits = []

    def leave(status):
        exits.append(status)
        raise SystemExit(status)

    monkeypatch.setattr(entry.sys, "exit", leave)
    monkeypatch.setattr(entry.os, "_exit", leave)
    monkeypatch.setattr(interrupts, "state", dict(interrupts.FRESH))
    previous = signal.getsignal(signal.SIGINT)
    yield entry, exits
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_after_the_outcome_is_decided_is_ignored(entry, monkeypatch):
    """The race behind a traceback on a quick second Ctrl-C: it landed after the command had
    returned, while the entry point was switching Ctrl-C off."""
    entry, exits = entry
    monkeypatch.setattr(cli, "main", lambda: 0)
    with pytest.raises(SystemExit):
        entry.run()
    assert exits == [0]
    _ctrl_c_is_ignored()  # the command's handler is still in place: ignored
    assert signal.getsignal(signal.SIGINT) is interrupts._on_ctrl_c


def test_a_ctrl_c_before_the_command_boundary_is_one_line(entry, monkeypatch, capsys):
    entry, exits = entry

    def interrupted_while_loading():
        signal.raise_signal(signal.SIGINT)
        pytest.fail("Ctrl-C did not interrupt")

    monkeypatch.setattr(cli, "main", interrupted_while_loading)
    with pytest.raises(SystemExit):
        entry.run()
    assert exits == [130]
    assert capsys.readouterr().err == "bitnn: interrupted\n"
    _ctrl_c_is_ignored()  # decided: a second one is ignored


def test_a_ctrl_c_while_pytorch_loads_waits_until_it_has_loaded(entry):
    """PyTorch's C++ start-up calls back into Python; a KeyboardInterrupt raised there aborted
    the process ("terminate called after throwing ... pybind11::error_already_set")."""
    interrupts.install()
    loaded = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.Held():
            with interrupts.Held():  # nested: only the outermost block's end interrupts
                signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # a second one inside: still one interruption
            loaded.append("the rest of the import ran")
    assert loaded and interrupts.state["held"] == 0 and not interrupts.state["pending"]
    _ctrl_c_is_ignored()  # decided: the one-line report stands
    interrupts.install()
    with interrupts.Held():
        pass  # no Ctrl-C: nothing happens
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # outside a block: at once


def test_a_training_stop_in_the_command_decides_the_outcome(entry):
    """First Ctrl-C: a clean stop; second: abort; after the stop, nothing more."""
    interrupts.install()
    flag, said = {"stop": False}, []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.TrainingStop(flag, lambda: said.append("stopping")):
            signal.raise_signal(signal.SIGINT)
            assert flag["stop"] and said == ["stopping"]
            signal.raise_signal(signal.SIGINT)
            pytest.fail("a second Ctrl-C did not abort")
    _ctrl_c_is_ignored()  # ignored from now on
    assert interrupts.state == {"ignore": True, "training": None, "held": 0, "pending": False}


def test_a_stop_asked_after_the_last_batch_leaves_ctrl_c_working(entry):
    """The loop sees no stop after its last batch: the run ends normally, and the next Ctrl-C
    must interrupt (it aborts, as the stop's message promised), not be ignored."""
    interrupts.install()
    flag = {"stop": False}
    with interrupts.TrainingStop(flag, lambda: None):
        signal.raise_signal(signal.SIGINT)  # during the last batch: a stop nobody acts on
    assert interrupts.state == {"ignore": False, "training": None, "held": 0, "pending": False}
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_an_error_report_is_not_cut_by_ctrl_c(entry, tmp_path, capsys):
    interrupts.install()
    assert main(["info", str(tmp_path / "missing.bnn")]) == 2
    _ctrl_c_is_ignored()  # while or after the one-line report: ignored
    assert capsys.readouterr().err.count("\n") == 1


def test_a_usage_error_switches_ctrl_c_off_too(entry, monkeypatch):
    entry, exits = entry

    def usage_error():
        raise SystemExit(2)  # what argparse does

    monkeypatch.setattr(cli, "main", usage_error)
    with pytest.raises(SystemExit):
        entry.run()
    assert exits == []  # argparse's own exit, passed on
    _ctrl_c_is_ignored()  # e.g. during the interpreter's teardown: ignored


def test_a_process_started_with_ctrl_c_ignored_keeps_ignoring_it(entry):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # nohup, a background job
    interrupts.install()
    flag = {"stop": False}
    with interrupts.TrainingStop(flag, lambda: None):
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        _ctrl_c_is_ignored()
    assert not flag["stop"]


def test_a_training_stop_in_a_library_restores_python_s_ctrl_c(entry):
    flag = {"stop": False}
    with interrupts.TrainingStop(flag, lambda: None):
        signal.raise_signal(signal.SIGINT)
        assert flag["stop"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
