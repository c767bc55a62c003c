"""Every compiled kernel variant against the numpy reference engine, bit for bit."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnn.binarize import (
    LloydMaxBinarizer,
    QuantileBinarizer,
    ThresholdBinarizer,
    WTAHashBinarizer,
)
from bitnn.bits import pack_signs
from bitnn.engine import compiled, get_engine, reference
from bitnn.errors import InputError
from bitnn.network import BitLayer, BitNetwork

pytestmark = pytest.mark.skipif(not compiled.extension_available(), reason="kernels not built")
VARIANTS = compiled.available_variants() if compiled.extension_available() else []


def random_layer(rng, n_in, n_out, kind, sparse):
    w = rng.choice([-1, 1], size=(n_out, n_in))
    if sparse:
        w[rng.random(w.shape) < rng.uniform(0.05, 0.9)] = 0
    if kind == "bias":
        return BitLayer.from_values(w, bias=rng.choice([-1, 1], n_out))
    if kind == "threshold":
        return BitLayer.from_values(w, threshold=rng.integers(-n_in - 2, n_in + 3, n_out))
    return BitLayer.from_values(w)


@st.composite
def cases(draw):
    n_in = draw(st.one_of(st.integers(1, 300), st.sampled_from([64, 128, 1000, 2048])))
    n_out = draw(st.one_of(st.integers(1, 100), st.sampled_from([32, 64, 65, 257])))
    batch = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 64, 300]))
    kind = draw(st.sampled_from(["bias", "threshold", "none"]))
    sparse = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return n_in, n_out, batch, kind, sparse, seed


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_variant_matches_reference(variant, case):
    n_in, n_out, batch, kind, sparse, seed = case
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, n_in, n_out, kind, sparse)
    x = pack_signs(rng.choice([-1, 1], size=(batch, n_in)))
    eng = get_engine(variant)
    np.testing.assert_array_equal(eng.layer_scores(x, layer), reference.layer_scores(x, layer))
    np.testing.assert_array_equal(eng.layer_bits(x, layer), reference.layer_bits(x, layer))


@pytest.mark.parametrize("variant", VARIANTS)
def test_large_batches_use_threads_and_stay_exact(variant):
    rng = np.random.default_rng(1)
    net = BitNetwork([random_layer(rng, 784, 1024, "threshold", False),
                      random_layer(rng, 1024, 1024, "bias", True),
                      random_layer(rng, 1024, 10, "bias", False)])  # fmt: skip
    x = pack_signs(rng.choice([-1, 1], size=(1500, 784)))
    np.testing.assert_array_equal(
        net.forward_packed(x, variant), net.forward_packed(x, "reference")
    )
    eng = compiled.CompiledEngine(variant, threads=1)
    np.testing.assert_array_equal(
        eng.layer_bits(x, net.layers[0]), reference.layer_bits(x, net.layers[0])
    )


BINARIZERS = [
    ThresholdBinarizer(100.5),
    ThresholdBinarizer(0.0),
    QuantileBinarizer(1, "binary"),
    QuantileBinarizer(2, "thermometer"),
    QuantileBinarizer(2, "binary"),
    QuantileBinarizer(3, "gray"),
    QuantileBinarizer(3, "thermometer"),
    QuantileBinarizer(5, "binary"),
    QuantileBinarizer(7, "thermometer"),
    QuantileBinarizer(4, "thermometer"),
    QuantileBinarizer(4, "binary"),
    QuantileBinarizer(8, "thermometer"),
    LloydMaxBinarizer(2, "binary"),
    WTAHashBinarizer(16, 4),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("binarizer", BINARIZERS, ids=repr)
@pytest.mark.parametrize("n_features", [1, 31, 33, 100])
def test_fast_binarize_matches_numpy(variant, binarizer, n_features):
    rng = np.random.default_rng(n_features)
    if isinstance(binarizer, WTAHashBinarizer) and n_features < 4:
        return
    pixels = rng.integers(0, 256, (257, n_features), dtype=np.uint8)
    pixels[:, 0] = 0  # a constant feature: tied edges
    binarizer.fit(pixels)
    eng = get_engine(variant)
    for X in (pixels, pixels.astype(np.float32) / 7, pixels.astype(np.float64) - 100.25):
        np.testing.assert_array_equal(eng.binarize(binarizer, X), binarizer.transform_packed(X))
    # uint8 input against float edges that fall between integers, and edges above 255
    b = ThresholdBinarizer(17.5).fit(pixels)
    np.testing.assert_array_equal(eng.binarize(b, pixels), b.transform_packed(pixels))
    pixels[:, -1] = 255
    for b in (ThresholdBinarizer(255.5), QuantileBinarizer(3, "binary")):
        b.fit(pixels.astype(np.float32) * 2 - 100)  # edges from -100 to 410
        np.testing.assert_array_equal(eng.binarize(b, pixels), b.transform_packed(pixels))


@pytest.mark.parametrize("variant", VARIANTS)
def test_binarize_reads_rows_a_stride_apart_in_place(variant):
    """Rows that overlap (a sliding window over frames), rows of a wider array, a repeated row
    (stride 0), a reversed or column-strided view: the same bits as a contiguous copy."""
    rng = np.random.default_rng(5)
    eng = get_engine(variant)
    frames = rng.gamma(1.0, 1.0, (40, 9)).astype(np.float32)
    window = np.lib.stride_tricks.sliding_window_view(frames.reshape(-1), 27)[::9]
    assert window.strides == (36, 4) and not window.flags.c_contiguous
    memory, stride = compiled._rows_in_place(window)  # read where they are, not copied
    assert stride == 9 and np.shares_memory(memory, frames)
    wide = rng.gamma(1.0, 1.0, (30, 40)).astype(np.float32)
    pixels = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    views = [
        window,
        wide[:, 5:32],
        np.broadcast_to(frames[3, :1].repeat(27), (6, 27)),
        wide[::-1, :27],
        np.repeat(wide, 2, axis=1)[:, :54:2],
        pixels[3:, 7:34],
        pixels[:1, 13:40],
    ]
    for view in views:
        b = QuantileBinarizer(3, "thermometer").fit(np.ascontiguousarray(view))
        contiguous = np.ascontiguousarray(view)
        np.testing.assert_array_equal(eng.binarize(b, view), b.transform_packed(contiguous))
    bad = frames.copy()
    bad[5, 4] = np.nan  # in row 5 at column 4 of the frames: rows 4 and 5 of the window
    window = np.lib.stride_tricks.sliding_window_view(bad.reshape(-1), 27)[::9]
    b = QuantileBinarizer(2).fit(np.ascontiguousarray(window[6:]))
    with pytest.raises(InputError, match="NaN"):
        eng.binarize(b, window)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bad_arrays_are_refused_or_converted(variant):
    rng = np.random.default_rng(0)
    layer = random_layer(rng, 100, 40, "threshold", True)
    eng = get_engine(variant)
    x = pack_signs(rng.choice([-1, 1], size=(10, 100)))
    with pytest.raises(InputError, match="uint64"):
        eng.layer_bits(x.astype(np.float64), layer)
    with pytest.raises(InputError, match="shape"):
        eng.layer_bits(x[:, :1], layer)
    with pytest.raises(InputError, match="shape"):
        eng.layer_bits(x.reshape(-1), layer)
    strided = np.repeat(x, 2, axis=0)[::2]  # a non-contiguous view
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(
        eng.layer_scores(strided, layer), reference.layer_scores(x, layer)
    )
    fortran = np.asfortranarray(x)
    np.testing.assert_array_equal(eng.layer_bits(fortran, layer), reference.layer_bits(x, layer))
    assert eng.layer_scores(x[:0], layer).shape == (0, 40)
    b = QuantileBinarizer(2).fit(rng.standard_normal((50, 5)))
    bad = rng.standard_normal((4, 5)).astype(np.float32)
    bad[2, 3] = np.inf
    with pytest.raises(InputError, match="row 2, column 3"):
        eng.binarize(b, bad)
    with pytest.raises(InputError, match="fitted on 5"):
        eng.binarize(b, np.zeros((3, 6), np.float32))
    with pytest.raises(InputError, match="empty"):
        eng.binarize(b, np.zeros((0, 5), np.uint8))
    with pytest.raises(InputError, match="real numbers"):
        eng.binarize(b, np.array([["a"] * 5]))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    ("n_x", "n_w", "n_bits"), [(1, 1, 1), (33, 10, 64), (400, 70, 1568), (7, 1024, 2000)]
)
def test_masked_dot_is_the_sum_over_the_mask(monkeypatch, variant, n_x, n_w, n_bits):
    """masked_dot (training's exact round-2 product) in every variant: for +1/-1 rows x and w
    and a mask per row of x, the sum of x * w where the mask is 1, as numpy computes it."""
    from bitnn.bits import pack_bits

    rng = np.random.default_rng(n_bits)
    x = rng.choice([-1, 1], (n_x, n_bits))
    w = rng.choice([-1, 1], (n_w, n_bits))
    mask = rng.random((n_x, n_bits)) < 0.8
    mask[0] = False  # a row with nothing present: 0
    want = (x * mask) @ w.T
    monkeypatch.setenv("BITNN_KERNEL", variant)
    out = np.empty((n_x, n_w), dtype=np.int64)
    got = compiled.masked_dot(pack_signs(x), pack_bits(mask), mask.sum(1), pack_signs(w), 2, out)
    assert got is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_row_masks_are_refused_where_the_kernel_cannot_apply_them(variant):
    """A mask per input row comes with its row offsets, in scores mode, without unit masks and
    not in the avx512 variant; a row mask or offset buffer too small is refused."""
    v, layer = compiled.VARIANTS.index(variant), compiled._kernels.layer
    x, w = np.full((2, 1), 2**64 - 1, np.uint64), np.zeros((1, 1, 32), np.uint64)  # +1s, -1s
    lim, out = np.zeros(32, np.int64), np.zeros((2, 32), np.int64)
    row_mask = np.array([[2**64 - 1], [2**32 - 1]], np.uint64)  # rows of 64 and 32 present
    row_offset = np.array([64, 32], np.int64)  # the present counts: scores = dot products
    ok = (v, x, w, None, lim, 2, 1, 1, 32, 1, out, 1)
    bad = [
        (*ok, row_mask),  # no offsets
        (*ok[:3], w, *ok[4:], row_mask, row_offset),  # and unit masks
        (*ok[:9], 0, *ok[10:], row_mask, row_offset),  # bits mode
        (*ok, row_mask[:1], row_offset),  # one row's mask for two rows
        (*ok, row_mask, row_offset[:1]),
    ]
    if variant == "avx512":
        bad.append((*ok, row_mask, row_offset))
    else:
        layer(*ok, row_mask, row_offset)
        assert (out[0] == -64).all() and (out[1] == -32).all()
    for args in bad:
        with pytest.raises(ValueError):
            layer(*args)


def test_engine_selection(monkeypatch):
    monkeypatch.setenv("BITNN_KERNEL", "portable")
    assert compiled.default_variant() == "portable"
    monkeypatch.setenv("BITNN_KERNEL", "sse9")
    with pytest.raises(InputError, match="BITNN_KERNEL"):
        compiled.default_variant()
    monkeypatch.delenv("BITNN_KERNEL")
    assert compiled.default_variant() == VARIANTS[-1]
    with pytest.raises(InputError, match="unknown engine"):
        get_engine("gpu")


def test_fallback_when_the_extension_is_missing(monkeypatch):
    import bitnn.engine as engine_pkg

    monkeypatch.setattr(compiled, "_kernels", None)
    engine_pkg._warn_no_extension.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert get_engine() is reference
        assert get_engine() is reference
    assert len(caught) == 1 and "reference engine" in str(caught[0].message)
    net = BitNetwork(
        [BitLayer.from_values(np.ones((3, 70)))], ThresholdBinarizer().fit(np.zeros((1, 70)))
    )
    assert net.predict(np.ones((2, 70))).tolist() == [0, 0]
    engine_pkg._warn_no_extension.cache_clear()


SANITIZER_SCRIPT = r"""
import numpy as np, sys
sys.path.insert(0, sys.argv[1])
import _kernels
from bitnn.engine import compiled, reference
compiled._kernels = _kernels
from bitnn.bits import pack_signs
from bitnn.binarize import QuantileBinarizer
from bitnn.network import BitLayer
rng = np.random.default_rng(0)
for variant in _kernels.available():
    eng = compiled.CompiledEngine(variant)
    shapes = [(1, 1, 1), (63, 33, 5), (64, 64, 4), (65, 100, 9), (300, 257, 70), (2048, 64, 3)]
    for n_in, n_out, batch in shapes:
        for sparse in (False, True):
            w = rng.choice([-1, 0, 1] if sparse else [-1, 1], (n_out, n_in))
            layer = BitLayer.from_values(w, threshold=rng.integers(-3, 4, n_out))
            x = pack_signs(rng.choice([-1, 1], (batch, n_in)))
            assert np.array_equal(eng.layer_scores(x, layer), reference.layer_scores(x, layer))
            assert np.array_equal(eng.layer_bits(x, layer), reference.layer_bits(x, layer))
    for f in (1, 31, 33, 784):
        X = rng.integers(0, 256, (37, f), dtype=np.uint8)
        codes = ((1, "binary"), (2, "thermometer"), (4, "binary"), (8, "thermometer"), (3, "gray"),
                 (3, "thermometer"), (5, "binary"), (6, "thermometer"))
        for k, code in codes:
            b = QuantileBinarizer(k, code).fit(X)
            assert np.array_equal(eng.binarize(b, X), b.transform_packed(X))
            Xf = X.astype(np.float32)
            assert np.array_equal(eng.binarize(b, Xf), b.transform_packed(Xf))
    # thresholds at int32's ends: exact int64 scores, no signed overflow anywhere
    for t in (2**31 - 1, -(2**31)):
        layer = BitLayer.from_values(rng.choice([-1, 1], (5, 70)), threshold=np.full(5, t))
        x = pack_signs(rng.choice([-1, 1], (3, 70)))
        assert np.array_equal(eng.layer_scores(x, layer), reference.layer_scores(x, layer))
        assert np.array_equal(eng.layer_bits(x, layer), reference.layer_bits(x, layer))
    # huge dimensions with small buffers: the size check refuses them, never wraps around
    v = compiled.VARIANTS.index(variant)
    small, lim = np.zeros(64, np.uint64), np.zeros(32, np.int64)
    for B, K, Q in ((2**62, 1, 1), (2**61 + 1, 4, 1), (1, 2**60, 1), (1, 1, 2**60)):
        try:
            _kernels.layer(v, small, small, None, lim, B, K, Q, 1, 0, small, 1)
        except ValueError:
            pass
        else:
            raise AssertionError(f"B={B} K={K} Q={Q} passed the size check")
    f32 = np.zeros(64, np.float32)
    for B, F, S in ((2**62, 1, 1), (1, 2**61, 2**61), (2**40, 1, 2**40), (3, 2**62, 2**62)):
        try:
            _kernels.binarize(v, f32, 0, f32, None, B, F, 2**62, 1, 64, small, 0, small, 1, S)
        except ValueError:
            pass
        else:
            raise AssertionError(f"B={B} F={F} stride={S} passed the size check")
print("sanitized kernels ok")
"""


def test_kernels_under_address_and_undefined_behaviour_sanitizers(tmp_path, sanitized_kernels):
    env = sanitized_kernels
    script = tmp_path / "check.py"
    script.write_text(SANITIZER_SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0 and "sanitized kernels ok" in r.stdout, r.stderr[-3000:]
    assert "runtime error" not in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("variant", ["reference", *VARIANTS])
@pytest.mark.parametrize("t", [2**31 - 1, 2**31 - 2, -(2**31), -(2**31) + 1, 0])
def test_engines_agree_at_the_ends_of_the_threshold_range(variant, t):
    """Thresholds anywhere in int32 (what the model format stores): scores exactly
    ``dot - threshold`` in int64 and the same bits in every engine. int32 scores and limits
    overflowed here (bit 1 in the reference, 0 in the kernels at 2**31 - 1)."""
    rng = np.random.default_rng(7)
    n_in = 70
    w = rng.choice([-1, 0, 1], (40, n_in))
    thresholds = np.full(40, t, dtype=np.int64)
    thresholds[::3] = -t if -t < 2**31 else t  # both signs in one layer
    layer = BitLayer.from_values(w, threshold=thresholds)
    x = rng.choice([-1, 1], (9, n_in))
    expected = x.astype(np.int64) @ w.T.astype(np.int64) - thresholds
    eng = get_engine(variant)
    xw = pack_signs(x)
    scores = eng.layer_scores(xw, layer)
    assert scores.dtype == np.int64
    np.testing.assert_array_equal(scores, expected)
    from bitnn.bits import unpack_bits

    np.testing.assert_array_equal(unpack_bits(eng.layer_bits(xw, layer), 40), expected >= 0)
    limit = layer.popcount_limit
    assert limit.min() >= -1 and np.all(limit <= layer.n_present)


def test_thresholds_int32_cannot_hold_are_refused_not_wrapped():
    with pytest.raises(InputError, match="int32"):
        BitLayer.from_values(np.ones((1, 3)), threshold=np.array([2**31]))
    with pytest.raises(InputError, match="int32"):
        BitLayer.from_values(np.ones((1, 3)), threshold=np.array([-(2**31) - 1]))
    with pytest.raises(InputError, match="integers"):
        BitLayer.from_values(np.ones((1, 3)), threshold=np.array([0.5]))


SIZE_CHECK_SCRIPT = r"""
import numpy as np
from bitnn.engine import _kernels, compiled
small, lim, f32 = np.zeros(64, np.uint64), np.zeros(32, np.int64), np.zeros(64, np.float32)
for v, variant in enumerate(compiled.VARIANTS):
    if variant not in _kernels.available():
        continue
    for B, K, Q in ((2**62, 1, 1), (2**61 + 1, 4, 1), (1, 2**60, 1), (1, 1, 2**60)):
        try:
            _kernels.layer(v, small, small, None, lim, B, K, Q, 1, 0, small, 1)
            raise SystemExit(f"{variant}: layer B={B} K={K} Q={Q} passed the size check")
        except ValueError:
            pass
    for B, F, S in ((2**62, 1, 1), (1, 2**61, 2**61), (2**40, 1, 2**40), (3, 2**62, 2**62)):
        try:
            _kernels.binarize(v, f32, 0, f32, None, B, F, 2**62, 1, 64, small, 0, small, 1, S)
            raise SystemExit(f"{variant}: binarize B={B} F={F} stride={S} passed the size check")
        except ValueError:
            pass
print("refused")
"""


def test_size_checks_refuse_dimensions_that_would_overflow():
    """The private kernel entry points re-check buffer sizes; with huge dimensions the size
    products must not wrap around (UBSan, then a segfault, before). In a child process, so a
    regression fails this test instead of crashing pytest."""
    r = subprocess.run(
        [sys.executable, "-c", SIZE_CHECK_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and r.stdout.strip() == "refused", (r.returncode, r.stderr[-2000:])


def _forked_child_result(queue):
    rng = np.random.default_rng(3)
    layer = random_layer(rng, 2048, 512, "threshold", False)
    x = pack_signs(rng.choice([-1, 1], size=(256, 2048)))
    same = np.array_equal(get_engine().layer_bits(x, layer), reference.layer_bits(x, layer))
    queue.put(same)


def test_threads_work_in_a_forked_child():
    """After fork only the forking thread exists; the pool must start afresh, not hang."""
    import multiprocessing

    rng = np.random.default_rng(2)
    layer = random_layer(rng, 2048, 512, "threshold", False)
    x = pack_signs(rng.choice([-1, 1], size=(256, 2048)))
    get_engine().layer_bits(x, layer)  # the parent's pool is running now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_forked_child_result, args=(queue,))
    child.start()
    try:
        child.join(timeout=60)
        hung = child.is_alive()
    finally:
        if child.is_alive():  # never leave a hung child behind: pytest would not exit
            child.kill()
            child.join(timeout=10)
    assert not hung, "the forked child hung (killed after 60 s)"
    assert child.exitcode == 0, f"the forked child crashed (exit code {child.exitcode})"
    assert queue.get(timeout=5) is True
