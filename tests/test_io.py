import json
import os
import struct

import numpy as np
import pytest

from bitnn import io
from bitnn.binarize import QuantileBinarizer
from bitnn.errors import ModelFormatError
from bitnn.network import BitLayer, BitNetwork


def small_network(seed=0, n_in=20, sparse=True):
    rng = np.random.default_rng(seed)
    binarizer = QuantileBinarizer(2, "thermometer").fit(rng.standard_normal((50, n_in // 2)))
    w1 = rng.choice([-1, 1], (9, n_in))
    w2 = rng.choice([-1, 0, 1] if sparse else [-1, 1], (7, 9))
    w3 = rng.choice([-1, 1], (3, 7))
    layers = [
        BitLayer.from_values(w1, bias=rng.choice([-1, 1], 9)),
        BitLayer.from_values(w2, threshold=rng.integers(-300, 300, 7)),
        BitLayer.from_values(w3),
    ]
    return BitNetwork(layers, binarizer, metadata={"note": "test"})


def test_round_trip(tmp_path):
    net = small_network()
    path = tmp_path / "m.bnn"
    size = io.save_model(net, path)
    assert size == path.stat().st_size
    again = io.load_model(path)
    for a, b in zip(net.layers, again.layers, strict=True):
        np.testing.assert_array_equal(a.weight, b.weight)
        # thresholds no unit can reach are stored clamped to +-(n_in + 1): the same bits
        reach = a.n_in + 1
        np.testing.assert_array_equal(np.clip(a.threshold, -reach, reach), b.threshold)
        assert (a.mask is None) == (b.mask is None) and a.bias_kind == b.bias_kind
    assert np.abs(net.layers[1].threshold).max() > 10  # the clamp was exercised
    X = np.random.default_rng(5).standard_normal((100, 10))
    np.testing.assert_array_equal(net.scores(X), again.scores(X))
    # metadata the format does not know is provenance: in MODEL.json beside the model
    assert again.metadata == {}
    assert io.read_provenance(path) == {"note": "test"}
    assert io.provenance_path(path) == tmp_path / "m.bnn.json"
    assert again.layers[1].threshold.dtype == np.int32


def test_size_on_disk_is_the_bit_count():
    rng = np.random.default_rng(0)
    layers = [
        BitLayer.from_values(rng.choice([-1, 1], (256, 784)), bias=rng.choice([-1, 1], 256)),
        BitLayer.from_values(rng.choice([-1, 1], (256, 256)), threshold=rng.integers(-9, 9, 256)),
        BitLayer.from_values(rng.choice([-1, 1], (10, 256)), bias=rng.choice([-1, 1], 10)),
    ]
    net = BitNetwork(layers)
    size = len(io.model_to_bytes(net))
    bits = net.parameter_bits()
    assert bits == 784 * 256 + 256 + 256 * 256 + 256 * 8 + 256 * 10 + 10
    assert size <= (bits / 8) * 1.01 + 4096


def test_readable_by_safetensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "m.bnn"
    io.save_model(small_network(), path)
    tensors = safetensors_numpy.load_file(str(path))
    assert tensors["layers.0.weight"].dtype == np.uint8
    assert tensors["layers.0.weight"].size == (9 * 20 + 7) // 8


def test_every_truncation_is_detected():
    buf = io.model_to_bytes(small_network())
    for n in range(len(buf)):
        with pytest.raises(ModelFormatError):
            io.model_from_bytes(buf[:n])


def test_every_byte_corruption_is_detected():
    buf = bytearray(io.model_to_bytes(small_network()))
    for i in range(len(buf)):
        bad = bytearray(buf)
        bad[i] ^= 0x01 if i % 2 else 0x80
        with pytest.raises(ModelFormatError):
            io.model_from_bytes(bytes(bad))
    with pytest.raises(ModelFormatError):
        io.model_from_bytes(bytes(buf) + b"\0")


def _rewrite_description(buf, change):
    tensors, description = io.decode_container(buf)
    change(description)
    return io.encode_container(tensors, description)


def test_newer_version_and_foreign_files():
    buf = io.model_to_bytes(small_network())
    newer = _rewrite_description(buf, lambda d: d.update(format_version=99))
    with pytest.raises(ModelFormatError, match="upgrade bitnn"):
        io.model_from_bytes(newer)
    foreign = _rewrite_description(buf, lambda d: d.update(format="something-else"))
    with pytest.raises(ModelFormatError, match="not a bitnn model"):
        io.model_from_bytes(foreign)
    broken = _rewrite_description(buf, lambda d: d["layers"][0].update(n_in=21))
    with pytest.raises(ModelFormatError, match="layers.0.weight"):
        io.model_from_bytes(broken)
    header = json.dumps({"__metadata__": {"x": "1"}}).encode()
    header += b" " * (-(8 + len(header)) % 8)
    with pytest.raises(ModelFormatError, match="checksum field is missing"):
        io.model_from_bytes(struct.pack("<Q", len(header)) + header)


def test_atomic_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.bnn"
    io.save_model(small_network(0), path)
    before = path.read_bytes()

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        io.save_model(small_network(1), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bnn", "m.bnn.json"]
