"""An independent reader of the model file, written from docs/format.md alone (numpy, json,
hashlib: nothing from bitnn), checked against bitnn on the released models; and the released
models under flush-to-zero semantics."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).resolve().parent.parent / "models"
RELEASED = ("mnist-small", "mnist-paper", "mnist-best", "denoise-8k", "denoise-8k-paper")
TINY = np.float32(2.0**-126)

# ---- the reader (docs/format.md, sections 1-4) ------------------------------------------------

DTYPES = {"U8": "<u1", "U16": "<u2", "I8": "<i1", "I16": "<i2", "I32": "<i4", "F32": "<f4"}


class SpecError(Exception):
    pass


def read_model(buf: bytes) -> tuple[dict, dict]:
    """-> (description, tensors). Checks the container as section 1 says."""
    (n,) = struct.unpack("<Q", buf[:8])
    if n > 65536 or 8 + n > len(buf) or (8 + n) % 8:
        raise SpecError("header length")
    header = buf[8 : 8 + n]
    key = b'"checksum":"sha256:'
    at = header.find(key)
    if at < 0 or header.count(key) != 1 or header.count(b'"checksum"') != 1:
        raise SpecError("checksum field")
    digest = header[at + len(key) : at + len(key) + 64]
    zeroed = buf[: 8 + at + len(key)] + b"0" * 64 + buf[8 + at + len(key) + 64 :]
    if hashlib.sha256(zeroed).hexdigest().encode() != digest:
        raise SpecError("checksum")
    head = json.loads(header.decode("utf-8"))
    meta = head.pop("__metadata__")
    description = json.loads(meta["bitnn"])
    data = buf[8 + n :]
    tensors = {}
    for name, entry in head.items():
        begin, end = entry["data_offsets"]
        dtype = np.dtype(DTYPES[entry["dtype"]])
        tensors[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(entry["shape"])
    if sum(t.nbytes for t in tensors.values()) != len(data):
        raise SpecError("data size")
    return description, tensors


def bit_matrix(stream: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Section 4.1: bit k = r * cols + c is bit k % 8 of byte k // 8 (LSB first)."""
    bits = (stream[:, None] >> np.arange(8, dtype=np.uint8)) & 1
    return bits.reshape(-1)[: rows * cols].reshape(rows, cols)


def input_bits(binarizer: dict, tensors: dict, X: np.ndarray, ftz: bool = False) -> np.ndarray:
    """Section 4.3: raw features -> input bits (0/1, float32), for every binarizer kind."""
    x = X.astype(np.float32)
    kind, params = binarizer["kind"], binarizer["params"]
    if kind == "wta":
        windows = tensors["binarizer.windows_"].astype(np.int64)
        winner = np.argmax(x[:, windows], axis=2)  # (n, H): the first largest
        if params["code"] == "onehot":
            bits = winner[:, :, None] == np.arange(params["window"])
        else:
            per = int(np.ceil(np.log2(params["window"])))
            bits = (winner[:, :, None] >> np.arange(per)) & 1
        return bits.reshape(len(X), -1).astype(np.float32)
    if kind == "threshold":
        edges, k, code = tensors["binarizer.thresholds_"][:, None].astype(np.float32), 1, "binary"
    else:
        edges = tensors["binarizer.edges_"].astype(np.float32)
        k, code = params["n_bits"], params["code"]
    if ftz:  # a platform that flushes subnormal inputs and operands to zero
        x = np.where(np.abs(x) < TINY, np.float32(0), x)
        edges = np.where(np.abs(edges) < TINY, np.float32(0), edges)
    level = (x[:, :, None] >= edges[None]).sum(axis=2)
    if code == "gray":
        level = level ^ (level >> 1)
    j = np.arange(k)
    bits = level[:, :, None] > j if code == "thermometer" else (level[:, :, None] >> j) & 1
    return bits.reshape(len(X), -1).astype(np.float32)  # bit i * k + j


def forward(description: dict, tensors: dict, X: np.ndarray, ftz: bool = False) -> np.ndarray:
    """Sections 4.2-4.3: classes (output "scores") or output bits (output "bits"). Without a
    binarizer, ``X`` holds the input bits (0/1)."""
    if description["binarizer"] is None:
        x = X.astype(np.float32) * 2 - 1
    else:
        x = input_bits(description["binarizer"], tensors, X, ftz) * 2 - 1  # bit 1 = +1
    layers = description["layers"]
    for i, spec in enumerate(layers):
        n_in, n_out = spec["n_in"], spec["n_out"]
        w = bit_matrix(tensors[f"layers.{i}.weight"], n_out, n_in).astype(np.float32) * 2 - 1
        if spec["masked"]:
            w *= bit_matrix(tensors[f"layers.{i}.mask"], n_out, n_in)
        if spec["bias_kind"] == "bias":
            t = -(bit_matrix(tensors[f"layers.{i}.bias"], 1, n_out)[0].astype(np.int64) * 2 - 1)
        elif spec["bias_kind"] == "threshold":
            t = tensors[f"layers.{i}.threshold"].astype(np.int64)
        else:
            t = np.zeros(n_out, dtype=np.int64)
        dot = np.rint(x @ w.T).astype(np.int64)  # exact: whole numbers below 2**24
        score = dot - t
        if i == len(layers) - 1 and description["output"] == "scores":
            return np.argmax(score, axis=1)  # ties: the lowest index
        x = np.where(score >= 0, 1, -1).astype(np.float32)
    return (x > 0).astype(np.uint8)


# ---- checks against bitnn ----------------------------------------------------------------------


def mnist_test_images() -> tuple[np.ndarray, str]:
    """The 10,000 MNIST test images if they are on this machine, else fixed random pixels."""
    try:
        from bitnn.data.mnist import load_mnist

        return load_mnist(source="cache").X_test, "MNIST"
    except Exception:  # any missing dataset: fall back to random pixels
        x = np.random.default_rng(0).integers(0, 256, (2000, 784), dtype=np.uint8)
        return x, "random"


def denoiser_frames(n_features: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.lognormal(-1.0, 2.0, (2000, n_features)).astype(np.float32)


@pytest.fixture(scope="module")
def mnist_images():
    return mnist_test_images()[0]


@pytest.mark.parametrize("name", RELEASED)
def test_spec_reader_agrees_with_bitnn(name, mnist_images):
    from bitnn import load_model

    buf = (MODELS / f"{name}.bnn").read_bytes()
    description, tensors = read_model(buf)
    assert description["format_version"] == 2
    X = mnist_images if name.startswith("mnist") else None
    if X is None:
        X = denoiser_frames(description["binarizer"]["n_features_in"])
    net = load_model(MODELS / f"{name}.bnn")
    ours = forward(description, tensors, X)
    np.testing.assert_array_equal(ours, net.predict(X))
    # flush-to-zero semantics give the same answers: no edge is subnormal
    few = X[:2000]
    np.testing.assert_array_equal(forward(description, tensors, few, ftz=True), ours[:2000])
    if name.startswith("mnist"):
        assert description["binarizer"]["input"] == "uint8"
        assert tensors["binarizer.edges_"].dtype == np.uint8
        floats = few.astype(np.float32)
        np.testing.assert_array_equal(forward(description, tensors, floats), ours[:2000])


def test_released_models_are_their_bit_count():
    """bytes on disk <= parameter bits / 8 x 1.01 + 4 KiB, for every released model."""
    for name in RELEASED:
        buf = (MODELS / f"{name}.bnn").read_bytes()
        description, tensors = read_model(buf)
        bits = 0
        for i, spec in enumerate(description["layers"]):
            bits += spec["n_in"] * spec["n_out"] * (2 if spec["masked"] else 1)
            if spec["bias_kind"] == "bias":
                bits += spec["n_out"]
            elif spec["bias_kind"] == "threshold":
                bits += tensors[f"layers.{i}.threshold"].nbytes * 8
        bits += sum(t.nbytes * 8 for k, t in tensors.items() if k.startswith("binarizer."))
        assert len(buf) <= bits / 8 * 1.01 + 4096, (name, len(buf), bits / 8)
        assert len(buf) - bits / 8 < 1600  # the header: about 1.5 KB


def test_subnormal_edges_would_break_under_flush_to_zero(mnist_images):
    """The version 1 files' edges (1.4e-45 for pixels always 0 in training) give other bits when
    subnormals are flushed: the check above can fail, and normalised edges do not."""
    from bitnn.binarize import normal_edges

    description, tensors = read_model((MODELS / "mnist-small.bnn").read_bytes())
    whole = tensors["binarizer.edges_"].astype(np.float32)
    v1 = np.where(whole == 1, np.float32(1.4e-45), whole - np.float32(0.5))
    X = mnist_images[:2000]
    old = {**tensors, "binarizer.edges_": v1}
    assert np.any(forward(description, old, X, ftz=True) != forward(description, old, X))
    fixed = {**tensors, "binarizer.edges_": normal_edges(v1)}
    np.testing.assert_array_equal(
        forward(description, fixed, X, ftz=True), forward(description, old, X)
    )


CC = shutil.which("gcc") or shutil.which("cc")

FAST_MATH_MAIN = r"""
#include <stdio.h>
#include "m.h"
int main(void) {
    float x[M_FEATURES];
    uint32_t work[M_WORK_WORDS];
    while (fread(x, 4, M_FEATURES, stdin) == M_FEATURES) printf("%d\n", m_predict_f32(x, work));
    return 0;
}
"""


@pytest.mark.skipif(CC is None, reason="no C compiler")
def test_exported_model_under_fast_math(tmp_path, mnist_images):
    """mnist-small exported to C and compiled with -ffast-math (flush-to-zero, no NaN/Inf
    care): the float entry point gives bitnn's classes."""
    from bitnn import load_model
    from bitnn.export.c import export_c

    net = load_model(MODELS / "mnist-small.bnn")
    export_c(net, tmp_path, "m")
    (tmp_path / "main.c").write_text(FAST_MATH_MAIN)
    exe = tmp_path / "run"
    subprocess.run(
        [CC, "-std=c99", "-O2", "-ffast-math", str(tmp_path / "main.c"), str(tmp_path / "m.c"),
         "-o", str(exe)],
        check=True, capture_output=True,
    )  # fmt: skip
    X = mnist_images[:3000].astype(np.float32)
    X[:, :3] = np.float32(1e-40)  # subnormal inputs: flushed by -ffast-math, still class-exact
    r = subprocess.run([str(exe)], input=X.tobytes(), capture_output=True, check=True)
    got = np.array([int(v) for v in r.stdout.split()])
    np.testing.assert_array_equal(got, net.predict(X, "reference"))


def test_fuzz_reduced():
    """A few hundred mutants of benchmarks/format_fuzz.py (the benchmark runs 100,000): only
    ModelFormatError, and every loaded file computes what it specifies, in every engine."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "format_fuzz.py"
    spec = importlib.util.spec_from_file_location("format_fuzz", path)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    outcomes, _, _ = fuzz.fuzz(600, seed=12)
    assert sum(outcomes.values()) == 600
    bad = {k: v for k, v in outcomes.items() if not k.startswith(("refused", "loaded"))}
    assert not bad, bad
    assert outcomes["refused"] > 300 and outcomes["loaded, same predictions"] > 10


LOADED_UNDER_ASAN = r"""
import importlib.util, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import _kernels
from bitnn.engine import compiled
compiled._kernels = _kernels
from bitnn import io
from bitnn.bits import pack_bits
from bitnn.binarize import QuantileBinarizer
from bitnn.network import BitLayer, BitNetwork
spec = importlib.util.spec_from_file_location("format_fuzz", sys.argv[2])
fuzz = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz)
rng = np.random.default_rng(5)
files = [buf for _, buf, _ in fuzz.base_models()]
# shapes at the edges of words and panels; thresholds at +-(n_in + 1); a 256 ("never") edge
for n_in, n_out in ((1, 1), (1, 97), (63, 33), (64, 32), (65, 31), (129, 1)):
    w = rng.choice([-1, 0, 1], (n_out, n_in))
    t = rng.choice([-(n_in + 1), n_in + 1, 0], n_out)
    out = BitLayer.from_values(rng.choice([-1, 1], (3, n_out)), threshold=[-(n_out + 1), 0, 1])
    files.append(io.model_to_bytes(BitNetwork([BitLayer.from_values(w, threshold=t), out])))
x = rng.integers(0, 256, (40, 7), dtype=np.uint8)
x[:, 0] = 255
b = QuantileBinarizer(8, "thermometer").fit(x)
files.append(io.model_to_bytes(BitNetwork([BitLayer.from_values(rng.choice([-1, 1], (5, 56)))], b)))
for i in range(400):  # and the fuzz's mutants that load
    kind, m = fuzz.mutate(files[i % 5], rng)
    files.append(m)
loaded = 0
for buf in files:
    try:
        net = io.model_from_bytes(buf)
    except io.ModelFormatError:
        continue
    loaded += 1
    for variant in _kernels.available():
        eng = compiled.CompiledEngine(variant)
        if net.binarizer is None:
            X = pack_bits(rng.integers(0, 2, (17, net.n_inputs), dtype=np.uint8))
            ref = net.forward_packed(X, "reference")
            assert np.array_equal(net.forward_packed(X, eng.variant), ref)
            continue
        n = net.binarizer.n_features_in_
        xf = rng.standard_normal((17, n)).astype(np.float32) * 200
        for X in (rng.integers(0, 256, (17, n), dtype=np.uint8), xf):
            assert np.array_equal(net.predict(X, eng.variant), net.predict(X, "reference"))
print("loaded", loaded, "sanitized ok")
"""


def test_loaded_networks_under_address_sanitizer(tmp_path, sanitized_kernels):
    """Networks the loader accepts (edge shapes, extreme thresholds and edges, the fuzz's
    loadable mutants) run in every compiled kernel variant built with ASan and UBSan: no
    out-of-bounds access, no undefined behaviour, the reference engine's answers."""
    import sys

    env = sanitized_kernels
    script = tmp_path / "check.py"
    script.write_text(LOADED_UNDER_ASAN)
    fuzz = Path(__file__).resolve().parent.parent / "benchmarks" / "format_fuzz.py"
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(fuzz)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0 and "sanitized ok" in r.stdout, r.stderr[-3000:]
    assert "runtime error" not in r.stderr, r.stderr[-3000:]
    assert int(r.stdout.split()[1]) > 20  # enough loaded networks were run
