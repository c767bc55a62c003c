import hashlib
import json
import os
import re
import struct
import tracemalloc

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
    with pytest.raises(ModelFormatError, match=r"layers\.0\.weight"):
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


# ---- the strict loader (docs/format.md, section 6) ---------------------------------------------


def _edit(buf, tensors=None, description=None):
    """Re-encode ``buf`` after changing its tensors and/or description (checksum recomputed)."""
    t, d = io.decode_container(buf)
    t = {k: np.array(v) for k, v in t.items()}
    if tensors:
        t = tensors(t) or t
    if description:
        description(d)
    return io.encode_container(t, d)


def _seal(header: bytes, data: bytes = b"") -> bytes:
    """A container from raw header text holding a zero digest: pad it, set the real digest."""
    header += b" " * (-(8 + len(header)) % 8)
    raw = struct.pack("<Q", len(header)) + header + data
    digest = hashlib.sha256(raw).hexdigest().encode()
    return raw.replace(b'"checksum":"sha256:' + b"0" * 64, b'"checksum":"sha256:' + digest)


def _header(description_text: str, tensors: str = "") -> bytes:
    meta = json.dumps({"bitnn": description_text, "checksum": "sha256:" + "0" * 64})
    return ('{"__metadata__":' + meta.replace(" ", "") + tensors + "}").encode()


def _set(t, name, value):
    t[name] = value


def _drop(t, name):
    del t[name]


def _flip_last(t, name, bit):
    t[name][-1] |= np.uint8(1 << bit)


def _weight_outside_mask(t):
    w, m = t["layers.1.weight"], t["layers.1.mask"]
    free = ~m
    free[-1] &= 0x7F  # 63 bits: the last byte's top bit is padding
    t["layers.1.weight"] = w | free


def _speech(**extra) -> dict:
    """A denoiser's metadata entry (docs/format.md, section 5) plus ``extra`` keys."""
    spectrogram = {"rate": 8000, "frame": 512, "hop": 128, "window": "hann", "context": 0,
                   "floor_percentile": 0.0}  # fmt: skip
    return {"level_rms": 0.05, "spectrogram": spectrogram, **extra}


def test_speech_metadata_keeps_its_optional_majority_vote():
    net = small_network()
    for extra in ({}, {"mask_majority_frames": 3}):
        net.metadata = {"speech": _speech(**extra)}
        assert io.model_from_bytes(io.model_to_bytes(net)).metadata == net.metadata


REFUSED = [
    ("unknown tensor", lambda t: _set(t, "extra", np.zeros(4, np.uint8)), None, "'extra'"),
    ("weight padding", lambda t: _flip_last(t, "layers.0.weight", 7), None, "padding bits"),
    ("bias padding", lambda t: _flip_last(t, "layers.0.bias", 7), None, "padding bits"),
    ("mask padding", lambda t: _flip_last(t, "layers.1.mask", 7), None, "padding bits"),
    (
        "float threshold",
        lambda t: _set(t, "layers.1.threshold", t["layers.1.threshold"].astype(np.float32)),
        None,
        "layers.1.threshold.*dtype F32",
    ),
    (
        "wide threshold",
        lambda t: _set(t, "layers.1.threshold", t["layers.1.threshold"].astype(np.int32)),
        None,
        "layers.1.threshold.*smallest",
    ),
    (
        "unreachable threshold",
        lambda t: _set(t, "layers.1.threshold", np.full(7, 11, np.int8)),
        None,
        "layers.1.threshold.*beyond",
    ),
    (
        "short bias",
        lambda t: _set(t, "layers.0.bias", t["layers.0.bias"][:1]),
        None,
        "layers.0.bias.*shape",
    ),
    (
        "threshold under bias_kind none",
        lambda t: _set(t, "layers.2.threshold", np.zeros(3, np.int8)),
        None,
        "layers.2.threshold.*not used",
    ),
    ("weight where absent", _weight_outside_mask, None, "layers.1.weight.*mask"),
    ("missing tensor", lambda t: _drop(t, "layers.1.mask"), None, "layers.1.mask.*missing"),
    (
        "NaN edge",
        lambda t: t["binarizer.edges_"].__setitem__((0, 0), np.nan),
        None,
        "edges_.*NaN",
    ),
    (
        "subnormal edge",
        lambda t: t["binarizer.edges_"].__setitem__((0, 0), -1e-40),
        None,
        "edges_.*subnormal",
    ),
    (
        "unsorted edges",
        lambda t: t["binarizer.edges_"].__setitem__((0, 0), 1e30),
        None,
        "edges_.*sorted",
    ),
    ("unknown key", None, lambda d: d.update(extra=1), "unknown keys \\['extra'\\]"),
    ("unknown layer key", None, lambda d: d["layers"][1].update(x=1), "layers\\[1\\]"),
    ("unknown metadata", None, lambda d: d["metadata"].update(note="x"), "metadata.note"),
    (
        "even majority vote",
        None,
        lambda d: d["metadata"].update(speech=_speech(mask_majority_frames=4)),
        "mask_majority_frames must be an odd number from 1 to 15",
    ),
    (
        "unknown speech key",
        None,
        lambda d: d["metadata"].update(speech=_speech(smoothing=3)),
        "metadata.speech.*optionally mask_majority_frames",
    ),
    ("bool as int", None, lambda d: d["layers"][0].update(n_out=True), "layers\\[0\\].n_out"),
    ("other shape", None, lambda d: d["layers"][2].update(n_out=4), "layers.2.weight.*shape"),
    ("unknown code", None, lambda d: d["binarizer"]["params"].update(code="x"), "params.code"),
    ("unknown input", None, lambda d: d["binarizer"].update(input="u16"), "binarizer.input"),
    ("unknown output", None, lambda d: d.update(output="soft"), "output"),
    ("unknown kind", None, lambda d: d["layers"][0].update(bias_kind="b"), "bias_kind"),
    ("long command", None, lambda d: d["metadata"].update(command="x" * 2000), "command"),
    ("version as bool", None, lambda d: d.update(format_version=True), "format_version"),
    (
        "bits do not match",
        None,
        lambda d: d["binarizer"]["params"].update(n_bits=1, code="binary"),
        "binarizer",
    ),
]


@pytest.mark.parametrize(("tensors", "description", "match"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])  # fmt: skip
def test_strict_loader_refuses_and_names_the_field(tmp_path, tensors, description, match):
    net = small_network()
    net.metadata = {}
    path = tmp_path / "bent.bnn"
    path.write_bytes(_edit(io.model_to_bytes(net), tensors, description))
    with pytest.raises(ModelFormatError) as err:
        io.load_model(path)
    message = str(err.value)
    assert re.search(match, message), message
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    "description",
    [
        '{"a":' * 40 + "1" + "}" * 40,  # deep nesting: RecursionError before
        '{"format":"bitnn-model","format_version":2,"layers":[{"n_out":' + "9" * 5000 + "}]}",
        '{"format":"bitnn-model","format_version":2,"layers":[{"n_out":Infinity}]}',
        '{"format":"bitnn-model","format_version":2,"x":NaN}',
        '{"format":"bitnn-model","format_version":2,"x":1e999}',
        '{"format":"bitnn-model","format":"bitnn-model"}',
    ],
    ids=["depth", "digits", "infinity", "nan", "overflow", "duplicate"],
)
def test_json_limits_give_model_format_errors(description):
    buf = _seal(_header(description))
    with pytest.raises(ModelFormatError):
        io.model_from_bytes(buf)
    deep = _seal(_header("{}", ',"t":' + '{"a":' * 5000 + "1" + "}" * 5000))
    with pytest.raises(ModelFormatError, match="nests"):
        io.model_from_bytes(deep)


def test_checksum_is_checked_before_the_json_is_parsed():
    deep = _header("{}", ',"t":' + "[" * 100000 + "]" * 100000)
    sealed = _seal(deep)
    broken = sealed[:20] + (b"1" if sealed[20:21] == b"0" else b"0") + sealed[21:]
    # a header that would take the JSON parser 100,000 levels deep: refused on its checksum
    with pytest.raises(ModelFormatError, match="checksum"):
        io.decode_container(broken)  # the container's limit (checkpoints): 16 MiB of header
    with pytest.raises(ModelFormatError, match="nests"):
        io.decode_container(sealed)
    with pytest.raises(ModelFormatError, match="at most 65536"):
        io.model_from_bytes(sealed)  # a model's header: 64 KiB at most


def test_version_1_files_load(tmp_path):
    """A version 1 file (training history in the metadata, float edges that may be subnormal,
    no binarizer input field) loads; its provenance is dropped and its edges made normal."""
    net = small_network()
    buf = io.model_to_bytes(net)

    def to_v1(d):
        d["format_version"] = 1
        d["binarizer"].pop("input")
        d["metadata"] = {"command": "bitnn train x", "training": {"history": [1] * 500}}

    def subnormal(t):
        t["binarizer.edges_"][0, 0] = np.float32(1.4e-45)
        t["binarizer.edges_"][0, 1] = max(t["binarizer.edges_"][0, 1], np.float32(1))
        t["layers.1.threshold"] = np.array([300, -300, 0, 1, 2, 3, 4], np.int16)

    old = io.model_from_bytes(_edit(buf, subnormal, to_v1))
    assert old.metadata == {"command": "bitnn train x"}
    assert old.binarizer.edges_[0, 0] == np.finfo(np.float32).tiny
    # version 1 stored unreachable thresholds: a hidden layer's load clamped (the same bits)
    assert old.layers[1].threshold.tolist() == [10, -10, 0, 1, 2, 3, 4]
    # ... but a classifier's score offsets cannot be clamped: refused, saying what reads them
    net.layers[2] = BitLayer(net.layers[2].weight, 7, np.array([1, 2, 3]))
    scores = _edit(
        io.model_to_bytes(net),
        lambda t: _set(t, "layers.2.threshold", np.array([100, 0, 0], np.int8)),
        to_v1,
    )
    with pytest.raises(ModelFormatError, match=r"layers\.2\.threshold.*bitnn that wrote it"):
        io.model_from_bytes(scores)
    newer = _edit(buf, None, lambda d: d.update(format_version=3))
    with pytest.raises(ModelFormatError, match=r"version 3.*reads versions 1 to 2.*upgrade"):
        io.model_from_bytes(newer)


def test_loading_memory_is_bounded_by_the_file_size():
    """The worst case: a 1-input layer of 2**21 units (one bit each) in a 256 KiB file."""
    n_out = 1 << 21
    weight = np.random.default_rng(0).integers(0, 256, n_out // 8, dtype=np.uint8)
    description = {
        "format": "bitnn-model", "format_version": 2, "output": "bits", "binarizer": None,
        "metadata": {}, "layers": [{"n_in": 1, "n_out": n_out, "bias_kind": "none",
                                    "masked": False}],
    }  # fmt: skip
    buf = io.encode_container({"layers.0.weight": weight}, description)
    tracemalloc.start()
    try:
        net = io.model_from_bytes(buf)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert net.layers[0].n_out == n_out
    # 8 bytes of words and 4 of threshold per unit (96 per file byte), a few MiB of buffers
    assert peak <= 110 * len(buf) + (16 << 20), peak / len(buf)


def test_provenance_beside_the_model(tmp_path):
    net = small_network()
    net.metadata = {"command": "bitnn train d.csv", "training": {"history": [{"loss": 1.0}] * 900}}
    path = tmp_path / "m.bnn"
    size = io.save_model(net, path)
    assert size - (net.parameter_bits() + 10 * 2 * 32) / 8 < 2048  # the history is not in it
    assert io.load_model(path).metadata == {"command": "bitnn train d.csv"}
    assert io.read_provenance(path)["training"]["history"][0] == {"loss": 1.0}
    path.write_bytes(path.read_bytes())  # the same file: still its provenance
    assert io.read_provenance(path) is not None
    net.metadata = {}
    io.save_model(net, path)  # nothing left to record: the stale one goes
    assert not io.provenance_path(path).exists() and io.read_provenance(path) is None


def test_info_shows_the_provenance_beside_the_model(tmp_path, capsys):
    from bitnn.cli import main

    net = small_network()
    history = [{"epoch": e, "loss": 1.0 / e, "round": 1, "val_accuracy": 0.5} for e in (1, 2, 3)]
    training = {"history": history, "best_val_accuracy": {"1": 0.75}}
    net.metadata = {"command": "bitnn train d.csv", "training": training}
    path = tmp_path / "m.bnn"
    io.save_model(net, path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "75.00% accuracy" in out and f"3 epochs in {path}.json" in out
    assert main(["info", "--json", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["provenance"]["training"]["history"] == history
    io.provenance_path(path).unlink()  # without it: the model alone
    assert main(["info", str(path)]) == 0
    assert "epochs in" not in capsys.readouterr().out


@pytest.mark.parametrize("code", ["thermometer", "binary", "gray"])
def test_uint8_edges_are_whole_bytes_and_give_the_same_bits(code):
    from bitnn.binarize import LloydMaxBinarizer

    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, (300, 6), dtype=np.uint8)
    X[:, 0], X[:, 1] = 0, 255  # constant features: an edge of 1 (not 1.4e-45) and of 256
    every = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 6, axis=1)
    for klass in (QuantileBinarizer, LloydMaxBinarizer):
        floats = klass(2, code).fit(X.astype(np.float32))
        whole = klass(2, code).fit(X)
        assert whole.input_dtype_ == "uint8" and floats.input_dtype_ == "float32"
        assert np.array_equal(whole.edges_, np.round(whole.edges_))
        if klass is QuantileBinarizer:  # (Lloyd-Max's midpoints of equal centres: edge 0)
            assert whole.edges_[0].min() >= 1 and whole.edges_[1].max() == 256
        np.testing.assert_array_equal(whole.transform(every), floats.transform(every))
        np.testing.assert_array_equal(floats.for_uint8_inputs().edges_, whole.edges_)
        # stored as U16 here (an edge of 256), loaded back exactly
        net = BitNetwork([BitLayer.from_values(rng.choice([-1, 1], (3, 12)))], whole)
        tensors, description = io.decode_container(io.model_to_bytes(net))
        assert tensors["binarizer.edges_"].dtype == np.uint16
        assert description["binarizer"]["input"] == "uint8"
        again = io.model_from_bytes(io.model_to_bytes(net))
        np.testing.assert_array_equal(again.predict(every), net.predict(every))
        # float32 fits never give subnormal edges: an always-0 feature's -> 2**-126
        edges = floats.edges_[np.nonzero(floats.edges_)]
        assert np.abs(edges).min() >= np.finfo(np.float32).tiny
        if klass is QuantileBinarizer:
            assert floats.edges_[0].min() == np.finfo(np.float32).tiny
