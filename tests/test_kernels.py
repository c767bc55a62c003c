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


SIGN_MATMUL_VARIANTS = [v for v in ("portable", "avx2") if v in VARIANTS]


def _planes_want(s):
    """sign_planes by numpy: bit r of byte (c, n) for s[8c + r, n]."""
    pack = lambda b: np.packbits(b, axis=0, bitorder="little")  # noqa: E731
    return pack(s > 0), pack(s < 0), pack(~(s < 0))


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (8, 5), (9, 70), (400, 1568)])
def test_sign_planes_pack_each_column_s_signs_in_groups_of_8(shape):
    """-1/0/+1: p where s > 0, q where s < 0 (0, -0 and NaN in neither); +-1: p where s is not
    negative (-0 and NaN +1, as training's sign(W))."""
    rng = np.random.default_rng(shape[0])
    s = rng.standard_normal(shape).astype(np.float32) * (rng.random(shape) < 0.8)
    s.flat[:6] = [0.0, -0.0, np.nan, np.inf, -np.inf, -1e-30][: s.size]
    pos, neg, not_neg = _planes_want(s)
    p, q = compiled.sign_planes(s, True, 2)
    np.testing.assert_array_equal(p, pos)
    np.testing.assert_array_equal(q, neg)
    p, q = compiled.sign_planes(s, False, 2)
    np.testing.assert_array_equal(p, not_neg)
    assert q is None


def _sign_matrix(rng, k, n, ternary):
    s = rng.choice([-1.0, 1.0], (k, n)).astype(np.float32)
    return s * (rng.random((k, n)) < 0.8) if ternary else s


@pytest.mark.parametrize("variant", SIGN_MATMUL_VARIANTS)
@pytest.mark.parametrize("ternary", [False, True])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize(("m", "k", "n"), [(1, 1, 1), (7, 9, 3), (13, 21, 11), (40, 400, 77)])
def test_sign_matmul_is_exact_on_integers(variant, ternary, transpose_a, m, k, n):
    """With small integers in A every partial sum is exact, so the table-lookup product must be
    A @ S exactly, in every tail of M (8 rows a vector), K (8 a table) and N (8 columns a
    group), for +-1 and -1/0/+1 S, A read directly or transposed, times alpha and mul."""
    rng = np.random.default_rng(m * k * n)
    a = rng.integers(-8, 9, (m, k)).astype(np.float32)
    s = _sign_matrix(rng, k, n, ternary)
    mul = rng.integers(-3, 4, (m, n)).astype(np.float32)
    buf = np.ascontiguousarray(a.T) if transpose_a else a
    planes = compiled.sign_planes(s, ternary, 2)
    out = np.full((m, n), np.nan, np.float32)
    compiled.sign_matmul(buf, planes, out, transpose_a, 0.5, mul, threads=2, variant=variant)
    np.testing.assert_array_equal(out, 0.5 * (a @ s) * mul)


@pytest.mark.parametrize("ternary", [False, True])
def test_sign_matmul_variants_and_threads_give_the_same_bits(ternary):
    """Real-valued A: the portable and AVX2 variants add the same values in the same order, and
    each block of 8 rows is one thread's, so every variant and thread count gives the same
    bits, within float32 rounding of the float64 product. The padding bits of K's last byte
    are ignored whatever they hold."""
    rng = np.random.default_rng(5)
    m, k, n = 50, 203, 130
    a = rng.standard_normal((m, k)).astype(np.float32)
    s = _sign_matrix(rng, k, n, ternary)
    p, q = compiled.sign_planes(s, ternary, 2)
    p[-1] |= np.uint8(0xF8)  # K = 203: the last byte's bits 3-7 are padding
    if q is not None:
        q[-1] |= np.uint8(0xF8)
    outs = []
    for variant in SIGN_MATMUL_VARIANTS:
        for threads in (1, 2):
            out = np.empty((m, n), np.float32)
            outs.append(compiled.sign_matmul(a, (p, q), out, threads=threads, variant=variant))
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    want = a.astype(np.float64) @ s
    bound = 1e-6 * (np.abs(a).astype(np.float64) @ np.abs(s)) + 1e-30
    assert (np.abs(outs[0] - want) <= bound).all()


def test_sign_matmul_refuses_short_buffers_and_the_avx512_variant():
    """The entry point re-checks sizes: planes, A or the output too small raise, never read or
    write out of bounds; the avx512 variant has no table product."""
    smm = compiled._kernels.sign_matmul
    a, out = np.zeros((8, 16), np.float32), np.zeros((4, 5), np.float32)
    p = np.zeros((2, 5), np.uint8)
    smm(0, a, 16, 1, 4, 16, 5, p, None, 1.0, None, out, 1)  # the right sizes pass
    with pytest.raises(ValueError, match="p buffer"):
        smm(0, np.zeros((4, 17), np.float32), 17, 1, 4, 17, 5, p, None, 1.0, None, out, 1)
    with pytest.raises(ValueError, match="a buffer"):
        smm(0, a, 43, 1, 4, 16, 5, p, None, 1.0, None, out, 1)  # rows 43 apart: past a's end
    with pytest.raises(ValueError, match="output buffer"):
        smm(0, a, 16, 1, 5, 16, 5, p, None, 1.0, None, out, 1)
    with pytest.raises(ValueError, match="mul buffer"):
        smm(0, a, 16, 1, 4, 16, 5, p, None, 1.0, out[:3], out, 1)
    with pytest.raises(ValueError, match="dimensions"):
        smm(0, a, 16, 1, 4, 0, 5, p, None, 1.0, None, out, 1)
    with pytest.raises(ValueError, match="variant"):
        smm(2, a, 16, 1, 4, 16, 5, p, None, 1.0, None, out, 1)
    with pytest.raises(ValueError, match="s buffer"):
        compiled._kernels.sign_planes(a, 17, 16, p, None, 1)  # 17 rows: a holds 8
    with pytest.raises(ValueError, match="p buffer"):
        compiled._kernels.sign_planes(a, 8, 16, p, None, 1)  # 1 x 16 bytes: p holds 10


def test_sign_matmul_and_sign_planes_refuse_wrong_arrays():
    """The Python entry points check dtypes, layouts and shapes before the C code sees them."""
    a = np.zeros((4, 16), np.float32)
    planes = compiled.sign_planes(np.ones((16, 5), np.float32), True, 1)
    out = np.zeros((4, 5), np.float32)
    compiled.sign_matmul(a, planes, out)  # the right arrays pass
    with pytest.raises(InputError, match="a must be"):
        compiled.sign_matmul(a.astype(np.float64), planes, out)
    with pytest.raises(InputError, match="a must be"):
        compiled.sign_matmul(np.zeros((16, 4), np.float32).T, planes, out)  # not C-contiguous
    with pytest.raises(InputError, match="out must be"):
        compiled.sign_matmul(a, planes, np.zeros((4, 6), np.float32))
    with pytest.raises(InputError, match="mul must be"):
        compiled.sign_matmul(a, planes, out, mul=np.zeros((5, 4), np.float32))
    with pytest.raises(InputError, match="plane p"):
        compiled.sign_matmul(a, (planes[0][:1], None), out)  # K = 16 needs 2 rows
    with pytest.raises(InputError, match="plane p"):
        compiled.sign_matmul(a, (None, None), out)
    with pytest.raises(InputError, match="differ in shape"):
        compiled.sign_matmul(a, (planes[0], planes[1][:, :4].copy()), out)
    with pytest.raises(InputError, match="s must be"):
        compiled.sign_planes(np.ones((16, 5)), True, 1)  # float64
