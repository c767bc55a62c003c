"""`bitnn train` under torchrun: 2 processes on one machine (gloo) against 1 process."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from bitnn.io import load_model, read_provenance


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 6)) * 2
    y = rng.integers(0, 3, 600)
    np.savez(tmp_path / "d.npz", X=centers[y] + rng.standard_normal((600, 6)), y=y)
    # No BatchNorm and no dropout: then the two runs differ only in summation order.
    args = ["train", str(tmp_path / "d.npz"), "--hidden", "32", "--bias-kind", "bias",
            "--dropout-input", "0", "--dropout-hidden", "0", "--epochs1", "2", "--epochs2", "2",
            "--batch-size", "40", "--seed", "1", "--binarizer", "quantile:2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "bitnn", *args,
         "-o", str(tmp_path / "two.bnn")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert (two.stdout + two.stderr).count("saved ") == 1  # only rank 0 writes
    one = subprocess.run(
        [sys.executable, "-m", "bitnn", *args, "-o", str(tmp_path / "one.bnn")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_model(tmp_path / "two.bnn"), load_model(tmp_path / "one.bnn")
    # the training history is beside each model (MODEL.json)
    loss_a = [h["loss"] for h in read_provenance(tmp_path / "two.bnn")["training"]["history"]]
    loss_b = [h["loss"] for h in read_provenance(tmp_path / "one.bnn")["training"]["history"]]
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    for la, lb in zip(a.layers, b.layers, strict=True):
        agree = np.mean(la.weight_values() == lb.weight_values())
        assert agree >= 0.999, agree  # a weight sitting at 0 may round to either sign
    # the checkpoints are removed after the runs finished (rank 0 alone wrote one)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "d.npz",
        "one.bnn",
        "one.bnn.json",
        "two.bnn",
        "two.bnn.json",
    ]
