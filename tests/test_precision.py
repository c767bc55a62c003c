"""precision=bfloat16: round 2's forward products exact in int8, bfloat16 gradients close to
float32's, bit-exact conversion, and a fallback to float32-fast that says so; float32-fast:
float32's values with the compiled passes and cheaper dropout masks."""

import contextlib
import io as stdio
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bitnn.binarize import QuantileBinarizer  # noqa: E402
from bitnn.errors import InputError  # noqa: E402
from bitnn.train import layers  # noqa: E402
from bitnn.train import trainer as trainer_module  # noqa: E402
from bitnn.train.layers import BitMLP, _int8_signs, _sign, keep_mask  # noqa: E402
from bitnn.train.trainer import TrainConfig, to_bipolar, train_network  # noqa: E402

fast = pytest.mark.skipif(
    not trainer_module.fast_bfloat16(), reason="this CPU has no fast bfloat16 (AMX, AVX512-BF16)"
)
compiled = pytest.mark.skipif(layers._fused is None, reason="bitnn.train._fused not built")


def _model(round_, precision, sparsity=0.0, bias_kind="threshold", dropout=(0.1, 0.2)):
    torch.manual_seed(0)
    m = BitMLP(96, (64, 48), 10, bias_kind, "bias", sparsity, *dropout)
    m.set_round(round_)
    m.set_precision(precision)
    return m.train()


def _step(model, x, y, seed):
    """Logits and parameter gradients of one training step with the same dropout masks."""
    torch.manual_seed(seed)
    out = model(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def _batch(n=40, n_in=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n, n_in), generator=g).float() * 2 - 1
    return x, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize(
    ("precision", "sparsity"),
    [
        pytest.param("bfloat16", 0.0, marks=fast),
        pytest.param("bfloat16", 0.3, marks=fast),
        # XNOR-popcount (float32-fast leaves absent weights to F.linear)
        pytest.param("float32-fast", 0.0, marks=compiled),
    ],
)
def test_round_2_forward_is_the_exact_integer_product(precision, sparsity):
    """Every layer's dot product in training (dropout on) is the exact integer product of
    the -1/0/+1 inputs and weights, times the dropout scale once."""
    model = _model(2, precision, sparsity)
    x, _ = _batch()
    seen = []

    def record(layer, inputs, _out):
        (h,) = inputs
        w = layer.effective_weight().detach().double()
        absent = (w == 0).double().mean().item()  # sparsity's share, up to the sample's estimate
        assert absent == pytest.approx(sparsity, abs=0.02)
        scale = layer.input_scale
        ints = torch.round(h.detach().double() / scale)
        assert set(ints.unique().tolist()) <= {-1.0, 0.0, 1.0}
        seen.append((layer._dot(h).detach(), (ints @ w.t()).float() * scale))  # scaled once

    hooks = [layer.register_forward_hook(record) for layer in model.layers]
    torch.manual_seed(5)
    model(x)
    for h in hooks:
        h.remove()
    assert len(seen) == 3
    for got, want in seen:
        assert torch.equal(got, want)


@compiled
def test_float32_fast_round_2_takes_the_popcount_kernel(monkeypatch):
    """float32-fast's round 2 multiplies with the engine's XNOR-popcount kernel (every layer,
    the thread count PyTorch runs), not with a float32 matmul."""
    calls = []
    real = layers._engine._kernels

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def layer(self, *args):
            calls.append(args[11])  # the thread count
            return real.layer(*args)

    monkeypatch.setattr(layers._engine, "_kernels", Spy())
    x, y = _batch()
    torch.set_num_threads(1)
    try:
        _step(_model(2, "float32-fast"), x, y, 9)
    finally:
        torch.set_num_threads(2)
    assert calls == [1, 1, 1]


@compiled
@pytest.mark.parametrize("cols", [1, 63, 64, 65, 130, 1568])
def test_packed_signs_are_numpy_s_bits(cols):
    """Bit j of a row: x >= 0 (-0 and NaN as +1, float32's signs); mask: x != 0; counts:
    the mask's ones; LSB first in 64-bit words, the last word's high bits 0; every variant."""
    g = torch.Generator().manual_seed(cols)
    x = torch.randint(-1, 2, (37, cols), generator=g).float() * 1.25
    x.view(-1)[:3] = torch.tensor([-0.0, float("nan"), -1e-30])[: x.numel()]
    flat = x.numpy()
    sign = ~(flat < 0)
    nonzero = flat != 0

    def words(b):
        padded = np.zeros((b.shape[0], -(-cols // 64) * 64), bool)
        padded[:, :cols] = b
        return np.packbits(padded, axis=1, bitorder="little").view(np.uint64)

    for variant in layers._fused.variants():
        bits, mask, counts = layers._packed_signs(x)
        rows = bits.shape[0]
        b2, m2 = np.empty_like(bits), np.empty_like(mask)
        c2 = np.empty_like(counts)
        layers._fused.pack_signs(
            x.data_ptr(), rows, cols, b2.ctypes.data, m2.ctypes.data, c2.ctypes.data, variant
        )
        for got_bits, got_mask, got_counts in ((bits, mask, counts), (b2, m2, c2)):
            np.testing.assert_array_equal(got_bits, words(sign))
            np.testing.assert_array_equal(got_mask, words(nonzero))
            np.testing.assert_array_equal(got_counts, nonzero.sum(1))


@compiled
@pytest.mark.parametrize("cols", [1, 63, 64, 65, 1568])
def test_the_weight_pass_gives_bits_and_tanh_prime_as_the_separate_passes(cols):
    """float32-fast's one pass over W: pack_signs's bits and 1 - tanh(W)^2 (tanh_grad_float's
    values for a gradient of ones), in every variant."""
    w = _latent(7 * cols + 8)[8 : 8 + 7 * cols].reshape(7, cols).clone()
    w.view(-1)[: min(8, w.numel())] = _latent(8)[: min(8, w.numel())]
    bits_ref, _, _ = layers._packed_signs(w)
    dtanh_ref = layers._latent_grad(torch.ones_like(w), w)
    for variant in layers._fused.variants():
        bits = np.empty_like(bits_ref)
        dtanh = torch.empty_like(w)
        layers._fused.weight_pass(
            w.data_ptr(), 7, cols, bits.ctypes.data, dtanh.data_ptr(), variant
        )
        np.testing.assert_array_equal(bits, bits_ref)
        torch.testing.assert_close(dtanh, dtanh_ref, rtol=1e-5, atol=1e-6)
    bits, dtanh = layers._weight_pass(w)
    np.testing.assert_array_equal(bits, bits_ref)
    assert torch.equal(dtanh, dtanh_ref)  # the widest variant, as tanh_grad_float's


def test_the_fused_sign_surrogate_is_the_separate_ops_up_to_rounding():
    z = torch.randn(4000, generator=torch.Generator().manual_seed(2)) * 3
    z[:3] = torch.tensor([0.0, -0.0, 40.0])
    grads = {}
    for fused in (False, True):
        zz = z.clone().requires_grad_()
        out = layers.sign_activation(zz, fused)
        assert torch.equal(out, layers._sign(z))
        out.backward(torch.linspace(-2, 2, 4000))
        grads[fused] = zz.grad
    assert torch.equal(grads[False], torch.linspace(-2, 2, 4000) * (1 - torch.tanh(z) ** 2))
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-5, atol=1e-6)


def test_int8_weight_signs_are_the_float_signs():
    """round 2's int8 weights are sign() of the latent weights, sign(0) = sign(-0) = +1."""
    p = torch.tensor([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0]).repeat(7, 3)
    assert torch.equal(_int8_signs(p), _sign(p).to(torch.int8))
    assert _int8_signs(p).dtype == torch.int8


def _latent(n, seed=0):
    """Latent weights with the edge cases: zeros of both signs, tiny, huge, infinite, NaN."""
    w = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 2
    w[:8] = torch.tensor([-0.0, 0.0, -1e-38, 1e-38, 40.0, -40.0, float("inf"), float("-inf")])
    return w


@compiled
@pytest.mark.parametrize("n", [1, 15, 16, 17, 63, 1000, 16 * 4099 + 5])  # tails and a long run
def test_compiled_signs_are_pytorch_s_signs(n, monkeypatch):
    w = _latent(max(n, 8))[:n]
    if n > 8:
        w[8] = float("nan")  # torch.ge says False: -1
    wi, wb = layers._latent_signs(w)
    monkeypatch.setattr(layers, "_fused", None)
    ti, tb = layers._latent_signs(w)
    assert wi.dtype == torch.int8 and wb.dtype == torch.bfloat16
    assert torch.equal(wi, ti)
    assert torch.equal(wb.view(torch.int16), tb.view(torch.int16))  # the same bits


@compiled
@pytest.mark.parametrize("n", [9, 17, 1000, 16 * 4099 + 5])
@pytest.mark.parametrize("t", [0.5, 2.0, float("inf")])
def test_compiled_signs_leave_out_the_weights_below_a_threshold(n, t, monkeypatch):
    """0 where |W| < t (the absent weights of sparsity): PyTorch's answer, bit for bit; NaN
    is never absent (-1, as without a threshold); t = inf leaves out all finite weights."""
    w = _latent(n)
    w[8] = float("nan")
    wi, wb = layers._latent_signs(w, t)
    monkeypatch.setattr(layers, "_fused", None)
    ti, tb = layers._latent_signs(w, t)
    assert torch.equal(wi, ti)
    assert torch.equal(wb.view(torch.int16), tb.view(torch.int16))
    assert torch.equal(wi == 0, w.abs() < t) and wi[8] == -1
    assert 0 < int((wi == 0).sum()) < n


@compiled
@pytest.mark.parametrize("n", [1, 15, 17, 1000, 16 * 4099 + 5])
@pytest.mark.parametrize("t", [0.0, 0.5, float("inf")])
def test_compiled_float_signs_are_pytorch_s_ternary(n, t, monkeypatch):
    """float32-fast's weights: sign(W) as float32 (sign(-0) = +1, NaN +1 as float32's
    PyTorch ops have it), 0 where |W| < t, bit for bit what PyTorch's ops give."""
    w = _latent(max(n, 9))[:n]
    if n > 8:
        w[8] = float("nan")
    got = layers._latent_signs_float(w, t)
    monkeypatch.setattr(layers, "_fused", None)
    want = layers._latent_signs_float(w, t)
    assert got.dtype == torch.float32
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # no -0.0 for +0.0
    assert torch.equal(want, layers._ternary(w, t))


@compiled
@pytest.mark.parametrize("n", [1, 7, 16, 33, 1000, 16 * 4099 + 5])
def test_compiled_float_tanh_grad_is_pytorch_s_within_a_few_ulp(n, monkeypatch):
    """G * (1 - tanh(W)^2) with G in float32 (float32-fast's weight gradient), in every
    vector width this CPU runs."""
    w = _latent(max(n, 8))[:n]
    g = torch.randn(n, generator=torch.Generator().manual_seed(1))
    got = layers._latent_grad(g, w)
    variants = layers._fused.variants()
    widths = {}
    for variant in variants:
        widths[variant] = torch.empty(n)
        layers._fused.tanh_grad_float(
            w.data_ptr(), g.data_ptr(), widths[variant].data_ptr(), n, variant
        )
    monkeypatch.setattr(layers, "_fused", None)
    want = torch.ops.aten.tanh_backward(g, torch.tanh(w))
    assert torch.equal(layers._latent_grad(g, w), want)  # PyTorch's ops where not compiled
    for out in (got, *widths.values()):
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
        assert torch.all(out[4:8] == 0)
    assert torch.equal(got, widths[variants[-1]])


@compiled
@pytest.mark.parametrize("n", [1, 7, 16, 33, 1000, 16 * 4099 + 5])
def test_compiled_tanh_grad_is_pytorch_s_within_a_few_ulp(n, monkeypatch):
    """float(G) * (1 - tanh(W)^2) with bitnn's tanh: the same up to rounding (where tanh is
    near +-1 the difference of two nearby numbers magnifies it; bounded here absolutely), in
    every vector width this CPU runs (the widest is the one training uses)."""
    w = _latent(max(n, 8))[:n]
    g = torch.randn(n, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    got = layers._latent_grad(g, w)
    variants = layers._fused.variants()  # narrowest first
    widths = {}
    for variant in variants:
        widths[variant] = torch.empty(n)
        layers._fused.tanh_grad(w.data_ptr(), g.data_ptr(), widths[variant].data_ptr(), n, variant)
    monkeypatch.setattr(layers, "_fused", None)
    want = layers._latent_grad(g, w)
    assert got.dtype == torch.float32 and got.shape == w.shape
    for out in (got, *widths.values()):
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
        assert torch.all(out[4:8] == 0)  # +-40 and +-inf: tanh' is 0
    assert torch.equal(got, widths[variants[-1]])  # training uses the widest


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units in the last place of exact rounded to float32."""
    return np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(exact.astype(np.float32)))


@compiled
def test_compiled_tanh_is_within_2_5_ulp_of_the_exact_tanh():
    """bitnn's tanh over a dense sample of float32 (every 4001st from 2^-149 to 12, both signs)
    against float64's, in every variant this CPU runs."""
    x = np.arange(1, 0x41400000, 4001, dtype=np.uint32).view(np.float32)
    x = np.concatenate([x, -x])
    exact = np.tanh(x.astype(np.float64))
    for variant in layers._fused.variants():
        out = np.empty_like(x)
        layers._fused.tanh(x.ctypes.data, out.ctypes.data, x.size, variant)
        err = _ulps(out, exact)
        assert err.max() <= 2.5, (variant, x[err.argmax()], err.max())
        assert err.mean() < 0.1
        assert np.array_equal(np.signbit(out), np.signbit(x))


@compiled
@pytest.mark.parametrize("n", [1, 7, 16, 33, 1000, 16 * 4099 + 5])
def test_compiled_tanh_is_pytorch_s_within_a_few_ulp(n):
    """float32-fast's tanh (round 1's compression and activations), in every vector width this
    CPU runs, and its gradient PyTorch's tanh_backward of its output."""
    x = _latent(max(n, 8))[:n]
    if n > 8:
        x[-1] = float("nan")
    want = torch.tanh(x)
    for variant in layers._fused.variants():
        out = torch.empty(n)
        layers._fused.tanh(x.data_ptr(), out.data_ptr(), n, variant)
        torch.testing.assert_close(out, want, rtol=4e-7, atol=1e-30, equal_nan=True)
        assert torch.equal(torch.signbit(out[:2]), torch.signbit(want[:2]))  # tanh(-0) = -0
    xg = x.clone().requires_grad_()
    out = layers.fast_tanh(xg, True)
    exact = {"rtol": 0, "atol": 0, "equal_nan": True}
    torch.testing.assert_close(out.detach(), layers._tanh_values(x), **exact)  # the widest
    g = torch.linspace(-1, 1, n)
    out.backward(g)
    torch.testing.assert_close(xg.grad, torch.ops.aten.tanh_backward(g, out.detach()), **exact)


def test_fast_tanh_is_torch_s_where_it_does_not_compile(monkeypatch):
    x = torch.randn(50, dtype=torch.float64)
    assert torch.equal(layers.fast_tanh(x, True), torch.tanh(x))  # not float32
    x = x.float()
    assert torch.equal(layers.fast_tanh(x, False), torch.tanh(x))
    monkeypatch.setattr(layers, "_fused", None)
    assert torch.equal(layers.fast_tanh(x, True), torch.tanh(x))


@compiled
def test_compiled_passes_write_on_the_cpu_whatever_the_default_device():
    """A default device elsewhere (a notebook's torch.set_default_device) must not send the
    outputs there: the C loops would write through a pointer that is not host memory."""
    w = _latent(100)
    g = torch.randn(100).to(torch.bfloat16)
    with torch.device("meta"):
        wi, wb = layers._latent_signs(w)
        grad = layers._latent_grad(g, w)
    assert wi.device.type == wb.device.type == grad.device.type == "cpu"
    assert torch.equal(wi, layers._int8_signs(w))


@compiled
def test_compiled_tanh_grad_refuses_a_variant_this_cpu_lacks():
    with pytest.raises(ValueError, match="no variant avx9"):
        layers._fused.tanh_grad(0, 0, 0, 0, "avx9")
    with pytest.raises(ValueError, match="tanh_grad_float: no variant avx9"):
        layers._fused.tanh_grad_float(0, 0, 0, 0, "avx9")


@compiled
def test_compiled_passes_refuse_a_gradient_of_another_shape():
    w = torch.zeros(4, 5)
    with pytest.raises(ValueError, match="bfloat16 or float32 gradient"):
        layers._latent_grad(torch.zeros(4, 6, dtype=torch.bfloat16), w)
    with pytest.raises(ValueError, match="bfloat16 or float32 gradient"):
        layers._latent_grad(torch.zeros(4, 6), w)
    with pytest.raises(ValueError, match="bfloat16 or float32 gradient"):
        layers._latent_grad(torch.zeros(4, 5, dtype=torch.float64), w)


@fast
def test_a_round_2_step_with_and_without_the_compiled_passes(monkeypatch):
    """Same logits (signs are exact), weight gradients equal up to tanh's rounding."""
    if layers._fused is None:
        pytest.skip("bitnn.train._fused not built")
    x, y = _batch()
    out_c, g_c = _step(_model(2, "bfloat16", bias_kind="bias"), x, y, 9)
    monkeypatch.setattr(layers, "_fused", None)
    out_t, g_t = _step(_model(2, "bfloat16", bias_kind="bias"), x, y, 9)
    assert torch.equal(out_c, out_t)
    assert g_c.keys() == g_t.keys()
    for name in g_c:
        torch.testing.assert_close(g_c[name], g_t[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("round_", [1, 2])
@pytest.mark.parametrize("sparsity", [0.0, 0.3])
def test_float32_fast_steps_are_float32_s_up_to_tanh_rounding(round_, sparsity, monkeypatch):
    """Without dropout (whose masks it draws differently) float32-fast computes float32's
    round-2 logits bit for bit (the same signs, the same float32 matmuls), its round-1 logits
    and all gradients up to the rounding of the compiled tanh; with compiled passes absent,
    float32's exactly."""
    x, y = _batch()
    calls, products = [], []
    tanh_values = layers._tanh_values
    monkeypatch.setattr(layers, "_tanh_values", lambda t: calls.append(t.shape) or tanh_values(t))
    sign_matmul = layers._engine.sign_matmul
    monkeypatch.setattr(
        layers._engine,
        "sign_matmul",
        lambda a, planes, out, *args, **kw: (
            products.append(out.shape) or sign_matmul(a, planes, out, *args, **kw)
        ),
    )
    steps = {}
    for precision in ("float32", "float32-fast"):
        model = _model(round_, precision, sparsity, bias_kind="bias", dropout=(0, 0))
        steps[precision] = _step(model, x, y, 9)
        if precision == "float32":
            assert not calls
    (out32, g32), (outf, gf) = steps["float32"], steps["float32-fast"]
    if layers._fused is None:
        assert torch.equal(out32, outf) and not calls
    elif round_ == 2:  # the biases' tanh, whose signs are the same
        assert torch.equal(out32, outf)
        assert calls == [(64,), (48,), (10,)]
        if sparsity == 0:  # table products: W's gradient in every layer, x's in layers 2, 3
            assert sorted(products) == [(10, 48), (40, 48), (40, 64), (48, 64), (64, 96)]
    else:  # round 1's tanh: bitnn's against PyTorch's; the first layer's table products
        torch.testing.assert_close(outf, out32, rtol=1e-5, atol=1e-6)
        assert len(calls) == 3 * 2 + 2  # the weights and biases of 3 layers, 2 activations
        if layers._engine.extension_available():  # layer 1's forward (transposed), W's grad
            assert products == [(64, 40), (64, 96)]
    assert g32.keys() == gf.keys()
    for name in g32:
        torch.testing.assert_close(gf[name], g32[name], rtol=1e-5, atol=1e-7)


@compiled
@pytest.mark.parametrize("p_drop", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(1, 1, 1), (40, 96, 64), (13, 1568, 37)])
def test_round_1_first_layer_by_table_products_is_the_matmul_up_to_rounding(p_drop, shape):
    """x @ w.T and W's gradient g.T @ x for x of +-1 (times dropout's mask and scale) by the
    engine's table products: a matmul's values up to the order of float sums."""
    if not layers._engine.extension_available():
        pytest.skip("the compiled engine is not built")
    n, n_in, n_out = shape
    g = torch.Generator().manual_seed(n_in)
    x = torch.randint(0, 2, (n, n_in), generator=g).float() * 2 - 1
    scale = 1.0 / (1.0 - p_drop)
    if p_drop:
        x = x * (torch.rand(x.shape, generator=g) >= p_drop) * scale
    w = (torch.rand(n_out, n_in, generator=g) * 2 - 1).requires_grad_()
    out = layers._SignInputLinear.apply(x, w, scale)
    near = {"rtol": 1e-5, "atol": 3e-8 * n_in}  # float32 sums of n_in terms below 2 in size
    exact = (x.double() @ w.detach().double().t()).float()
    torch.testing.assert_close(out, exact, **near)
    grad = torch.randn(n, n_out, generator=g)
    out.backward(grad)
    near["atol"] = 1e-7 * n
    torch.testing.assert_close(w.grad, (grad.double().t() @ x.double()).float(), **near)


@compiled
def test_round_1_takes_table_products_only_for_bipolar_inputs(monkeypatch):
    """The first layer's table products need x in {-1, +1}: other inputs, later layers, round 2,
    float32 and evaluation take the matmuls."""
    if not layers._engine.extension_available():
        pytest.skip("the compiled engine is not built")
    calls = []
    apply = layers._SignInputLinear.apply
    monkeypatch.setattr(layers._SignInputLinear, "apply", lambda *a: calls.append(1) or apply(*a))
    x, _ = _batch()
    one_off = {v: x.clone() for v in (0.0, float("nan"), 1.0000001)}
    for v, inputs in one_off.items():
        inputs[-1, -1] = v
    for round_, precision, inputs, training, want in [
        (1, "float32-fast", x, True, 1),
        (1, "float32-fast", x * 0.5, True, 0),
        *[(1, "float32-fast", inputs, True, 0) for inputs in one_off.values()],
        (1, "float32-fast", x, False, 0),
        (1, "float32", x, True, 0),
        (2, "float32-fast", x, True, 0),
    ]:
        calls.clear()
        model = _model(round_, precision)
        model.train(training)
        model(inputs)
        assert len(calls) == want, (round_, precision, training)


@compiled
def test_round_1_checks_the_input_bits_only_where_table_products_can_run(monkeypatch):
    """Without the compiled engine the first layer takes the matmul, so the pass that checks
    for +-1 inputs is not run either."""
    checked = []
    bipolar = layers._bipolar
    monkeypatch.setattr(layers, "_bipolar", lambda x: checked.append(1) or bipolar(x))
    x, _ = _batch()
    _model(1, "float32-fast")(x)
    assert checked == ([1] if layers._engine.extension_available() else [])
    monkeypatch.setattr(layers._engine, "extension_available", lambda: False)
    checked.clear()
    _model(1, "float32-fast")(x)
    assert checked == []


def _splitmix64_keep(n: int, key: int, threshold: int) -> np.ndarray:
    """keep_mask's definition in numpy: element i is kept where the int16 slice i % 4 of
    SplitMix64's output number i // 4 for the key is at least the threshold."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (np.arange(1, (n + 3) // 4 + 1, dtype=np.uint64)
                              * np.uint64(0x9E3779B97F4A7C15))  # fmt: skip
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z.view(np.int16)[:n] >= threshold).view(np.uint8)  # little-endian slices


@compiled
@pytest.mark.parametrize("n", [1, 3, 4, 15, 16, 17, 64, 87, 3 * 65536 + 11])
def test_compiled_keep_masks_are_splitmix64_s_outputs(n):
    """The vectorized generator (16 elements at a time, the last ones through the same step,
    parts on threads) against its definition, for keep_mask and dropout alike."""
    key, threshold = 0xD1B54A32D192ED03, round(0.2 * 65536) - 32768
    want = _splitmix64_keep(n, key, threshold)
    got = np.empty(n, np.uint8)
    h = torch.randn(n)
    out, keep = torch.empty(n), torch.empty(n, dtype=torch.uint8)
    for threads in (1, 3):
        layers._fused.set_threads(threads)
        try:
            layers._fused.keep_mask(got.ctypes.data, n, key, threshold)
            layers._fused.dropout(h.data_ptr(), keep.data_ptr(), out.data_ptr(), n, key,
                                  threshold, 1.25)  # fmt: skip
        finally:
            layers._fused.set_threads(torch.get_num_threads())
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(keep.numpy(), want)
        assert torch.equal(out, h * torch.from_numpy(want).float() * 1.25)


@compiled
@pytest.mark.parametrize("n", [1, 5, 17, 65, 1000, 3 * 65536 + 7])  # tails, several threads
def test_compiled_dropout_is_the_separate_ops_bit_for_bit(n):
    """One pass of draws, mask and scale: keep_mask's draws, (h * keep) * scale forward and
    (g * scale) * keep backward, the same bits as PyTorch's ops (-0, NaN and inf included) on
    any thread count."""
    h = torch.randn(n, generator=torch.Generator().manual_seed(n))
    h[:4] = torch.tensor([-0.0, float("nan"), float("inf"), -5.0])[: min(4, n)]
    g = torch.randn(n, generator=torch.Generator().manual_seed(n + 1))

    def run(fn, threads):
        torch.manual_seed(5)
        x = h.clone().requires_grad_()
        before = torch.get_num_threads()
        torch.set_num_threads(threads)  # the compiled passes split over PyTorch's count
        try:
            out = fn(x)
            out.backward(g)
        finally:
            torch.set_num_threads(before)
        return out.detach().view(torch.int32), x.grad.view(torch.int32)

    want = run(lambda x: (x * keep_mask(x, 0.2).view(torch.int8)).mul_(1.0 / 0.8), 1)
    for threads in (1, 3):
        got = run(lambda x: layers._CompiledDropout.apply(x, 0.2), threads)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_float32_fast_dropout_is_bfloat16_s(monkeypatch):
    """Both draw keep_mask's masks: with the same seed, the same kept units."""
    h = torch.ones(64, 300)
    outs = {}
    for precision in ("float32", "float32-fast", "bfloat16"):
        torch.manual_seed(3)
        outs[precision] = _model(2, precision)._dropout(_model(2, precision).dropout_hidden, h)
    assert torch.equal(outs["float32-fast"], outs["bfloat16"])
    assert not torch.equal(outs["float32-fast"], outs["float32"])  # nn.Dropout's own draws


@fast
@pytest.mark.parametrize("round_", [1, 2])
@pytest.mark.parametrize("bias_kind", ["bias", "threshold"])
def test_bfloat16_steps_match_float32_steps_closely(round_, bias_kind):
    x, y = _batch()  # without dropout: the two precisions draw their masks differently
    out32, g32 = _step(_model(round_, "float32", bias_kind=bias_kind, dropout=(0, 0)), x, y, 9)
    out16, g16 = _step(_model(round_, "bfloat16", bias_kind=bias_kind, dropout=(0, 0)), x, y, 9)
    assert g32.keys() == g16.keys()
    tol = 1e-5 if round_ == 2 else 2e-2  # round 2's forward is exact; round 1 rounds operands
    assert torch.allclose(out16, out32, rtol=tol, atol=tol)
    for name in g32:  # bfloat16 operands: about 3 significant digits per product
        err = (g16[name] - g32[name]).norm() / g32[name].norm().clamp_min(1e-12)
        assert err < 3e-2, (name, float(err))


@pytest.mark.parametrize("precision", ["bfloat16", "float32-fast"])
def test_fast_dropout_keeps_1_minus_p_scaled_and_masks_gradients(precision):
    model = _model(2, precision)
    h = torch.ones(400, 500, requires_grad=True)
    torch.manual_seed(3)
    out = model._dropout(model.dropout_hidden, h)  # p = 0.2
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.01
    assert torch.all(out[kept] == torch.tensor(1 / 0.8))
    out.sum().backward()
    assert torch.equal(h.grad, out.detach())  # d out / d h = the scaled mask
    model.eval()  # no dropout outside training
    assert torch.equal(model._dropout(model.dropout_hidden, h), h)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_masks_keep_1_minus_p_with_independent_neighbours(p):
    """Four neighbours share one 64-bit draw: their 16-bit slices must not be correlated."""
    torch.manual_seed(4)
    keep = keep_mask(torch.empty(1001, 999), p).float()  # not a multiple of 4 units
    assert keep.shape == (1001, 999)
    assert abs(keep.mean().item() - (1 - p)) < 0.003  # 7 standard deviations at p = 0.5
    flat = keep.flatten() - keep.mean()
    for lag in (1, 2, 3, 4):  # the correlation of units `lag` apart
        r = (flat[:-lag] * flat[lag:]).mean() / flat.var()
        assert abs(r.item()) < 0.005


def test_keep_masks_keep_nothing_when_p_rounds_to_1():
    assert not keep_mask(torch.empty(10, 10), 1 - 2**-18).any()  # not a wrapped threshold
    assert keep_mask(torch.empty(1000), 1 - 2**-16).float().mean() < 0.01


def _blobs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, 8)) * 2
    y = rng.integers(0, 4, n)
    return centers[y] + rng.standard_normal((n, 8)), y


def _cfg(**kw):
    base = dict(hidden=(32,), epochs_round1=2, epochs_round2=2, batch_size=32, seed=3)
    base.update(kw)
    return TrainConfig(**base, device="cpu")


@fast
def test_bfloat16_training_records_its_precision_and_learns_as_float32_does():
    X, y = _blobs()
    nets = {}
    for precision in ("float32", "bfloat16"):
        with contextlib.redirect_stderr(stdio.StringIO()):
            nets[precision] = train_network(
                X, y, _cfg(precision=precision, dropout_hidden=0.1, epochs_round1=4),
                QuantileBinarizer(2), threads=1,
            )  # fmt: skip
    training = nets["bfloat16"].metadata["training"]
    assert training["precision"] == "bfloat16"
    assert training["config"]["precision"] == "bfloat16"
    assert "precision" not in nets["bfloat16"].metadata  # run state stays under "training"
    acc = {p: (net.predict(X) == y).mean() for p, net in nets.items()}
    assert acc["bfloat16"] > 0.6 and acc["bfloat16"] > acc["float32"] - 0.05, acc


def test_a_module_trained_in_bfloat16_converts_bit_exactly():
    """Training precision does not reach inference: eval mode is float32's exact scores."""
    from bitnn.train.convert import to_bit_network
    from bitnn.train.trainer import TrainData, Trainer

    X, y = _blobs()
    b = QuantileBinarizer(2).fit(X)
    x = to_bipolar(b.transform(X))
    data = TrainData(x, y, None, None, 4, "scores")
    with contextlib.redirect_stderr(stdio.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # where bfloat16 falls back, the same holds
        model = Trainer(_cfg(precision="bfloat16", dropout_input=0.1), data, b).run()
    net = to_bit_network(model, b)
    with torch.no_grad():
        scores = model(torch.from_numpy(x).float()).numpy()
    np.testing.assert_array_equal(net.scores(X), scores.astype(np.int64))


def test_bfloat16_falls_back_to_float32_fast_with_one_warning(monkeypatch):
    monkeypatch.setattr(trainer_module, "fast_bfloat16", lambda: False)
    X, y = _blobs()
    cfg = _cfg(precision="bfloat16", dropout_hidden=0.2)
    with contextlib.redirect_stderr(stdio.StringIO()), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        net = train_network(X, y, cfg, QuantileBinarizer(2), threads=1)
    messages = [str(m.message) for m in w if "bfloat16" in str(m.message)]
    assert len(messages) == 1 and "runs in float32-fast" in messages[0]
    assert net.metadata["training"]["precision"] == "float32-fast"
    runs = {}
    for precision in ("float32-fast", "float32"):
        with contextlib.redirect_stderr(stdio.StringIO()):
            cfg = _cfg(precision=precision, dropout_hidden=0.2)
            runs[precision] = train_network(X, y, cfg, QuantileBinarizer(2), threads=1)
    same = [
        np.array_equal(a.weight, b.weight)
        for a, b in zip(net.layers, runs["float32-fast"].layers, strict=True)
    ]
    assert all(same)  # the fallback is float32-fast itself
    other = [
        np.array_equal(a.weight, b.weight)
        for a, b in zip(net.layers, runs["float32"].layers, strict=True)
    ]
    assert not all(other)  # not plain float32 (another dropout stream)


def test_a_resume_at_another_precision_says_so(tmp_path, monkeypatch):
    X, y = _blobs()
    ckpt = tmp_path / "m.ckpt"
    monkeypatch.setattr(trainer_module, "fast_bfloat16", lambda: True)
    monkeypatch.setattr(trainer_module.BitMLP, "set_precision", lambda self, p: None)
    with contextlib.redirect_stderr(stdio.StringIO()):
        train_network(X, y, _cfg(precision="bfloat16"), QuantileBinarizer(2), threads=1,
                      checkpoint_path=ckpt)  # fmt: skip
    monkeypatch.setattr(trainer_module, "fast_bfloat16", lambda: False)
    with contextlib.redirect_stderr(stdio.StringIO()), pytest.warns(UserWarning) as w:
        train_network(X, y, None, None, checkpoint_path=ckpt, resume=True)
    text = " ".join(str(m.message) for m in w)
    assert "runs in float32-fast" in text
    assert "trained at precision bfloat16 before and resumes at float32-fast" in text


@pytest.mark.parametrize("fast_here", [True, False])
def test_auto_precision_is_bfloat16_where_fast_and_float32_fast_without_a_warning(
    monkeypatch, fast_here
):
    monkeypatch.setattr(trainer_module, "fast_bfloat16", lambda: fast_here)
    X, y = _blobs()
    err = stdio.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        net = train_network(X, y, _cfg(precision="auto"), QuantileBinarizer(2), threads=1)
    assert not [m for m in w if "bfloat16" in str(m.message)]
    training = net.metadata["training"]
    assert training["precision"] == ("bfloat16" if fast_here else "float32-fast")
    assert f"precision auto: {training['precision']}" in err.getvalue()  # said at the start
    assert training["config"]["precision"] == "auto"  # what was asked, beside what it ran at
    assert trainer_module.resolve_precision("auto", torch.device("meta")) == "float32"  # off CPU
    assert trainer_module.resolve_precision("float32-fast", torch.device("cpu")) == "float32-fast"


@pytest.mark.parametrize("precision", ["bfloat16", "float32-fast"])
def test_cpu_precisions_fall_back_to_float32_elsewhere_with_one_warning(precision):
    """Their ops (compiled passes, the popcount kernel) are the CPU's: on another device the
    run is float32, and says so."""
    with pytest.warns(UserWarning, match=f"precision {precision} is for CPUs") as w:
        got = trainer_module.resolve_precision(precision, torch.device("meta"))
    assert got == "float32" and len(w) == 1


def test_precision_is_checked_and_old_configs_read_as_float32():
    with pytest.raises(InputError, match="precision must be float32, float32-fast, bfloat16 or"):
        TrainConfig(precision="float16")
    old = TrainConfig().to_json()
    del old["precision"]
    assert TrainConfig.from_json(old).precision == "float32"
    with pytest.raises(InputError, match="precision must be float32, float32-fast or bfloat16"):
        BitMLP(4, (4,), 2).set_precision("int8")


@pytest.mark.parametrize(
    ("env", "torch_first", "want"),
    [({}, False, "10000"), ({"OMP_WAIT_POLICY": "passive"}, False, None),
     ({"GOMP_SPINCOUNT": "5"}, False, "5"), ({}, True, None)],
)  # fmt: skip
def test_bitnn_shortens_openmp_s_spin_unless_told_or_too_late(env, torch_first, want):
    """Loading PyTorch through bitnn sets GOMP_SPINCOUNT=10000 (the table products' second
    thread otherwise finds PyTorch's idle workers spinning on its core), unless the user set a
    wait policy or spin count, or PyTorch was loaded first (libgomp has read its settings)."""
    import os
    import subprocess
    import sys

    code = ("import torch; " if torch_first else "") + (
        "import os, bitnn.train._torch; print(os.environ.get('GOMP_SPINCOUNT'))"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    r = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(want)


@compiled
def test_compiled_passes_give_the_same_bits_on_any_thread_count():
    """tanh, tanh_grad, tanh_grad_float and weight_pass split large calls over set_threads(n)
    threads at multiples of 64 elements (or at rows): every element goes through the same
    vector code, so 1 and 3 threads give the same bits, tails included."""
    fused = layers._fused
    n, rows, cols = 200_003, 301, 1_571  # 3 parts of tanh's n; a weight_pass of 7 parts' work
    x = _latent(n, seed=4)
    g = torch.randn(n, generator=torch.Generator().manual_seed(5))
    gb = g.to(torch.bfloat16)
    w = _latent(rows * cols, seed=6).reshape(rows, cols)
    words = -(-cols // 64)

    def run():
        outs = [torch.empty(n) for _ in range(3)] + [torch.empty(rows, cols)]
        bits = np.empty((rows, words), np.uint64)
        fused.tanh(x.data_ptr(), outs[0].data_ptr(), n)
        fused.tanh_grad(x.data_ptr(), gb.data_ptr(), outs[1].data_ptr(), n)
        fused.tanh_grad_float(x.data_ptr(), g.data_ptr(), outs[2].data_ptr(), n)
        fused.weight_pass(w.data_ptr(), rows, cols, bits.ctypes.data, outs[3].data_ptr())
        return outs, bits

    try:
        fused.set_threads(1)
        (one, bits_one) = run()
        fused.set_threads(3)
        (three, bits_three) = run()
    finally:
        fused.set_threads(torch.get_num_threads())
    for a, b in zip(one, three, strict=True):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    np.testing.assert_array_equal(bits_one, bits_three)
    assert torch.equal(one[0], layers._tanh_values(x))  # the layers' call, as training makes it
    with pytest.raises(ValueError, match="at least 1"):
        fused.set_threads(0)


@compiled
def test_keep_masks_repeat_with_the_seed_on_any_thread_count(monkeypatch):
    """The compiled generator is keyed by PyTorch's: the same seed gives the same mask whatever
    the thread count, the next call another; without the compiled passes PyTorch's own draws
    give the same distribution."""
    h = torch.empty(700, 1001)  # 700,700 units: 11 parts of 64 on 11 threads
    masks = []
    for threads in (1, 11):
        monkeypatch.setattr(torch, "get_num_threads", lambda t=threads: t)
        torch.manual_seed(9)
        masks.append((keep_mask(h, 0.2), keep_mask(h, 0.2)))
    (a, b), (c, d) = masks
    assert torch.equal(a, c) and torch.equal(b, d)
    assert not torch.equal(a, b)
    assert abs(a.float().mean().item() - 0.8) < 0.003
    monkeypatch.setattr(layers, "_fused", None)
    torch.manual_seed(9)
    e = keep_mask(h, 0.2)
    assert not torch.equal(e, a) and abs(e.float().mean().item() - 0.8) < 0.003
