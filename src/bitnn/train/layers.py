"""PyTorch modules that train a bitwise network with the paper's two rounds.

Round 1, weight compression (``binary=False``)
    ``w = tanh(W)``, ``b = tanh(B)``: every parameter lies in (-1, 1); hidden units use tanh.
Round 2, noisy backpropagation (``binary=True``)
    The forward pass uses ``sign(tanh(W))`` (= sign(W)), or 0 for the weights of smallest
    ``|W|`` (a ``sparsity`` fraction of them: absent weights, the paper's beta),
    ``sign(tanh(B))`` and ``sign`` activations (sign(0) = +1). Gradients go to the real-valued
    ``W``, ``B`` through these surrogate derivatives:

    - weights and bias: straight-through, d ternarize(v)/dv := 1 (so dL/dW = dL/dw * tanh'(W));
    - activations: d sign(z)/dz := 1 - tanh(z)**2, the derivative of round 1's activation at
      the same scaled pre-activation.

Pre-activations are scaled by ``1/sqrt(n_in)`` (a positive factor, so signs and thus the bit
network are unchanged) to keep tanh out of saturation. With ``bias_kind="threshold"`` a
BatchNorm replaces the bias; at conversion it folds into one integer threshold per unit.

``precision="bfloat16"`` (:meth:`BitMLP.set_precision`) changes only how training multiplies:
round 1 from bfloat16 operands, round 2's forward exactly in int8 (-1/0/+1 by -1/0/+1, int32
sums) and its gradients from bfloat16 operands; dropout draws its masks from uniform
integers instead of Bernoulli draws (:func:`keep_mask`: faster, the same distribution up to
p rounded to 2**-16); and with latent weights, the passes over W (its signs, tanh' for its
gradient) run compiled where ``bitnn.train._fused`` is built (x86-64; tanh then is bitnn's
own vector code, within 2.5 units in the last place of the exact tanh).
``precision="float32-fast"`` (for CPUs without fast bfloat16) takes round 2's forward exactly
by XNOR-popcount in the inference engine's compiled kernel (:class:`_PopcountBitLinear`), its
gradients by the engine's table-lookup product of the float32 gradient with the bits of sign(W)
and of the -1/0/+1 inputs (float32 sums, rounded in another order than a matmul's), and the
rest of bfloat16's faster ops: dropout masks from :func:`keep_mask` (here drawn, applied and
scaled in one compiled pass: :class:`_CompiledDropout`), compiled passes over W; its tanh runs
compiled too (round 1's weight compression and activations, round 2's activation surrogate:
:func:`fast_tanh`); and round 1's first layer, whose inputs are the network's +1/-1 bits, takes
both its products with them by the same table lookups (:class:`_SignInputLinear`). ``float32``
runs PyTorch's own ops throughout, as every earlier version did. Evaluation always runs in float32.

In ``binary`` *eval* mode every layer returns its exact integer score ``dot - threshold``
(with the folded integer thresholds), which is what the deployed :class:`BitNetwork` computes,
so the two agree bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from bitnn.engine import compiled as _engine
from bitnn.errors import InputError
from bitnn.train._torch import torch
from bitnn.train.config import PRECISIONS

F, nn = torch.nn.functional, torch.nn

try:
    from bitnn.train import _fused
except ImportError:  # not built (no C compiler, not x86-64 with glibc): PyTorch's ops run
    _fused = None


def _sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, else -1 (sign(0) = +1), in x's dtype. sign(), shift, sign() again: a
    tenth of the time of torch.where with scalar arguments on the CPU."""
    return torch.sign(x).add_(0.5).sign_()


def _ternary(v: torch.Tensor, t) -> torch.Tensor:
    """:func:`_sign` of v, and 0 where |v| < t (absent weights; t = 0: none)."""
    out = _sign(v)
    return out.masked_fill_(v.abs() < t, 0.0) if t else out


def _tanh_values(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) of a CPU float32 tensor by one compiled pass (bitnn's tanh, within 2.5 units in
    the last place of the exact tanh; PyTorch's took 3.5x glibc's libmvec's time on one AVX2
    thread, and libmvec's 1.6x this one's)."""
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    _fused.set_threads(torch.get_num_threads())
    with torch.profiler.record_function("bitnn_fused::tanh"):
        _fused.tanh(x.data_ptr(), out.data_ptr(), x.numel())
    return out


class _CompiledTanh(torch.autograd.Function):
    """tanh forward by :func:`_tanh_values`; backward by PyTorch's tanh_backward from the saved
    output, as torch.tanh's."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        out = _tanh_values(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, out)


def fast_tanh(x: torch.Tensor, compiled: bool) -> torch.Tensor:
    """torch.tanh(x), or with ``compiled`` (float32-fast's round 1: its weight compression
    and activations) the compiled pass where ``bitnn.train._fused`` takes x."""
    return _CompiledTanh.apply(x) if compiled and _fusable(x) else torch.tanh(x)


class _SignTanhSurrogate(torch.autograd.Function):
    """sign(z) forward (sign(0) = +1); tanh'(z) backward. ``fused`` (float32-fast): by one
    compiled pass (:func:`_latent_grad`) or else PyTorch's fused tanh_backward, equal up to
    rounding; otherwise by the separate ops earlier versions used."""

    @staticmethod
    def forward(ctx, z, fused=False):  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.fused = fused
        return _sign(z)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        if ctx.fused:  # grad * tanh'(z) in one compiled pass where available
            return _latent_grad(grad, z), None
        return grad * (1 - torch.tanh(z) ** 2), None


class _TernarizeStraightThrough(torch.autograd.Function):
    """sign(v), or 0 where |v| < beta, forward; identity backward."""

    @staticmethod
    def forward(ctx, v, beta):  # type: ignore[override]
        return _ternary(v, beta)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None


class _SignOfTanhStraightThrough(torch.autograd.Function):
    """ternarize(tanh(W)) forward, which is sign(W) since tanh keeps signs, and 0 where
    ``|W| < t``; tanh'(W) backward. The values and gradients of the composed ops, in two
    passes over the weights per step instead of seven (round 2 is dominated by them at small
    batches). ``compiled``: each pass is one compiled loop where available
    (:func:`_latent_signs_float`, :func:`_latent_grad`; precision float32-fast)."""

    @staticmethod
    def forward(ctx, p, t, compiled=False):  # type: ignore[override]
        ctx.save_for_backward(p)
        ctx.compiled = compiled
        return _latent_signs_float(p, t) if compiled else _ternary(p, t)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (p,) = ctx.saved_tensors
        if ctx.compiled:
            return _latent_grad(grad, p), None, None
        return torch.ops.aten.tanh_backward(grad, torch.tanh(p)), None, None


class _Bfloat16Linear(torch.autograd.Function):
    """x @ w.T with both operands rounded to bfloat16 (oneDNN: AMX or AVX512-BF16 dot products,
    float32 sums, the result rounded to bfloat16): round 1's matmuls at ``precision=bfloat16``.
    The gradients are computed the same way from the saved bfloat16 operands."""

    @staticmethod
    def forward(ctx, x, w):  # type: ignore[override]
        xb, wb = x.to(torch.bfloat16), w.to(torch.bfloat16)
        ctx.save_for_backward(xb, wb)
        return torch.mm(xb, wb.t()).float()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        xb, wb = ctx.saved_tensors
        gb = grad.to(torch.bfloat16)
        return torch.mm(gb, wb).float(), torch.mm(gb.t(), xb).float()


def _int8_signs(p: torch.Tensor, t: float = 0.0) -> torch.Tensor:
    """+1 where p >= 0, else -1 (as :func:`_sign`), and 0 where |p| < t, as int8: one float
    pass, then bytes (the bool result viewed as 0/1 bytes, not copied)."""
    signs = torch.ge(p, 0.0).view(torch.int8).mul_(2).sub_(1)
    return signs.masked_fill_(p.abs() < t, 0) if t else signs


def _fusable(w: torch.Tensor) -> bool:
    """Whether the compiled passes (``bitnn.train._fused``) take this latent weight."""
    return _fused is not None and w.device.type == "cpu" and w.dtype == torch.float32


def _latent_signs(w: torch.Tensor, t: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """sign(W) as int8 and as bfloat16, +1 where W >= 0, 0 where |W| < t: one compiled pass
    where available."""
    if not _fusable(w):
        wi = _int8_signs(w, t)
        return wi, wi.to(torch.bfloat16)
    w = w.contiguous()  # outputs on w's device (the CPU), whatever the default device is
    wi = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    wb = torch.empty(w.shape, dtype=torch.bfloat16, device=w.device)
    with torch.profiler.record_function("bitnn_fused::signs"):  # named in profiles
        _fused.signs(w.data_ptr(), wi.data_ptr(), wb.data_ptr(), w.numel(), t)
    return wi, wb


def _latent_signs_float(w: torch.Tensor, t: float = 0.0) -> torch.Tensor:
    """:func:`_ternary` of the latent W as float32 (+1 where W >= 0, 0 where |W| < t): one
    compiled pass where available."""
    if not _fusable(w):
        return _ternary(w, t)
    w = w.contiguous()
    out = torch.empty(w.shape, dtype=torch.float32, device=w.device)
    with torch.profiler.record_function("bitnn_fused::signs_float"):
        _fused.signs_float(w.data_ptr(), out.data_ptr(), w.numel(), t)
    return out


def _latent_grad(grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """float(grad) * tanh'(W) for the bfloat16 or float32 gradient of sign(W) (and, with W the
    pre-activations, float32-fast's sign activation surrogate): one compiled pass where
    available (bitnn's tanh, within 2.5 units in the last place of the exact tanh), else
    PyTorch's ops."""
    if not _fusable(w):
        return torch.ops.aten.tanh_backward(grad.float(), torch.tanh(w))
    kernels = {torch.bfloat16: _fused.tanh_grad, torch.float32: _fused.tanh_grad_float}
    if grad.shape != w.shape or grad.dtype not in kernels or grad.device != w.device:
        raise ValueError(
            f"_latent_grad needs a {tuple(w.shape)} bfloat16 or float32 gradient on the CPU"
        )
    w, grad = w.contiguous(), grad.contiguous()  # the C loop reads them as flat arrays
    out = torch.empty(w.shape, dtype=torch.float32, device=w.device)
    _fused.set_threads(torch.get_num_threads())
    with torch.profiler.record_function("bitnn_fused::tanh_grad"):
        kernels[grad.dtype](w.data_ptr(), grad.data_ptr(), out.data_ptr(), w.numel())
    return out


class _ExactBitLinear(torch.autograd.Function):
    """Round 2's x @ w.T at ``precision=bfloat16``: x holds -1/0/+1 times ``scale`` (the
    dropout scale 1/(1-p), 1 without dropout) and w holds -1/0/+1, so the product is taken
    exactly in int8 with int32 sums and scaled once (the float32 path rounds the partial sums
    of the scaled products). The gradients, which are real-valued, come from bfloat16
    operands with float32 sums.

    ``latent=True``: ``w`` is the latent weight W itself and the layer uses sign(W), 0 where
    ``|W| < t``, with gradient tanh'(W) (as :class:`_SignOfTanhStraightThrough`), without a
    float copy of the signs: :func:`_latent_signs` and :func:`_latent_grad`."""

    @staticmethod
    def forward(ctx, x, w, scale, latent, t=0.0):  # type: ignore[override]
        xi = torch.sign(x).to(torch.int8)  # x is -1/0/+1 times a positive scale
        if latent:
            wi, wb = _latent_signs(w, t)
        else:
            wi = w.round().to(torch.int8)
            wb = None  # made in backward, when it is needed
        ctx.save_for_backward(xi, wi if wb is None else wb, w if latent else None)
        ctx.scale = scale
        out = torch._int_mm(xi, wi.t())
        return out.float() if scale == 1.0 else torch.mul(out, scale)  # int32 -> float

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        xi, wb, latent = ctx.saved_tensors
        gb = grad.to(torch.bfloat16)
        grad_x = torch.mm(gb, wb.to(torch.bfloat16)).float()
        if ctx.scale != 1.0:  # x's scale on the small operand, not on the weight-sized result
            gb = (grad * ctx.scale).to(torch.bfloat16)
        grad_w = torch.mm(gb.t(), xi.to(torch.bfloat16))
        if latent is not None:
            return grad_x, _latent_grad(grad_w, latent), None, None, None
        return grad_x, grad_w.float(), None, None, None


def _packed_signs(x: torch.Tensor) -> tuple:
    """Rows of float32 ``x`` as uint64 sign words (1 where x is not negative), words of
    x != 0 and their count per row (numpy views of PyTorch's buffers, which its allocator
    reuses from step to step): one compiled pass."""
    rows, cols = x.shape
    words = -(-cols // 64)
    bits = torch.empty((rows, words), dtype=torch.int64).numpy().view(np.uint64)
    mask = torch.empty((rows, words), dtype=torch.int64).numpy().view(np.uint64)
    counts = torch.empty(rows, dtype=torch.int64).numpy()
    with torch.profiler.record_function("bitnn_fused::pack_signs"):
        _fused.pack_signs(
            x.data_ptr(), rows, cols, bits.ctypes.data, mask.ctypes.data, counts.ctypes.data
        )
    return bits, mask, counts


def _weight_pass(w: torch.Tensor) -> tuple:
    """The latent W's rows as uint64 sign words (numpy) and 1 - tanh(W)^2 (a tensor): one
    compiled pass over W."""
    rows, cols = w.shape
    bits = torch.empty((rows, -(-cols // 64)), dtype=torch.int64).numpy().view(np.uint64)
    dtanh = torch.empty(w.shape, dtype=torch.float32)
    _fused.set_threads(torch.get_num_threads())
    with torch.profiler.record_function("bitnn_fused::weight_pass"):
        _fused.weight_pass(w.data_ptr(), rows, cols, bits.ctypes.data, dtanh.data_ptr())
    return bits, dtanh


def _popcount_ready(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether :class:`_PopcountBitLinear` takes these operands (CPU float32, compiled)."""
    return (
        _fusable(w)
        and _engine.extension_available()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 2
    )


class _PopcountBitLinear(torch.autograd.Function):
    """Round 2's x @ sign(W).T at ``precision=float32-fast``, for latent weights without absent
    ones: x holds -1/0/+1 times ``scale`` (dropout's 1/(1-p)) and sign(W) is +-1, so the product
    over the inputs dropout kept is ``kept - 2 * popcount(kept & (x XOR w))`` in bits: the
    compiled engine's layer kernel (the one inference uses, each sample bringing dropout's zeros
    as its mask: :func:`bitnn.engine.compiled.masked_dot`), exact integers scaled once, in a
    fifth of the float32 matmul's time on AVX2. The gradients multiply the real-valued output
    gradient by sign(W) and by x's -1/0/+1: the engine's table-lookup product
    (:func:`bitnn.engine.compiled.sign_matmul`, 1.6-2.5x float32 sgemm's speed on AVX2, equal
    to it up to rounding order) from their signs as bit planes; W's gradient comes out
    multiplied by tanh'(W), which the one pass over W that packs its bits gives (the values of
    :func:`_latent_grad`), so the backward takes no pass of its own over W."""

    @staticmethod
    def forward(ctx, x, w, scale):  # type: ignore[override]
        x, w = x.contiguous(), w.contiguous()
        threads = torch.get_num_threads()
        w_bits, dtanh = _weight_pass(w)
        x_bits, x_mask, kept = _packed_signs(x)
        out = torch.empty((x.shape[0], w.shape[0]), dtype=torch.int64)  # no fresh pages each step
        with torch.profiler.record_function("bitnn_engine::masked_dot"):
            _engine.masked_dot(x_bits, x_mask, kept, w_bits, threads, out.numpy())
        ctx.save_for_backward(x, dtanh)
        ctx.scale = scale
        ctx.dense = bool(len(kept) and kept.min() == x.shape[1])  # no zeros: +-1, one plane
        ctx.w_planes = None  # none for input bits
        if ctx.needs_input_grad[0]:
            with torch.profiler.record_function("bitnn_engine::sign_planes"):
                ctx.w_planes = _engine.sign_planes(w.detach().numpy(), False, threads)
        with torch.profiler.record_function("bitnn_engine::scores_to_float"):
            return torch.mul(out, scale)  # float32, exact before the scale: |out| < 2**24

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, dtanh = ctx.saved_tensors
        threads = torch.get_num_threads()
        g = grad.float().contiguous().numpy()
        with torch.profiler.record_function("bitnn_engine::sign_matmul"):
            grad_x = None
            if ctx.w_planes is not None:
                grad_x = torch.empty(x.shape, dtype=torch.float32)
                _engine.sign_matmul(g, ctx.w_planes, grad_x.numpy(), threads=threads)
            x_planes = _engine.sign_planes(x.detach().numpy(), not ctx.dense, threads)
            grad_w = torch.empty(dtanh.shape, dtype=torch.float32)
            _engine.sign_matmul(
                g, x_planes, grad_w.numpy(), transpose_a=True, alpha=ctx.scale,
                mul=dtanh.numpy(), threads=threads,
            )  # fmt: skip
        ctx.w_planes = None
        return grad_x, grad_w, None


def _bipolar(x: torch.Tensor) -> bool:
    """Whether every value of CPU float32 ``x`` is +1 or -1: one compiled pass, no copy."""
    x = x.contiguous()
    return _fused.bipolar(x.data_ptr(), x.numel())


class _SignInputLinear(torch.autograd.Function):
    """Round 1's first layer at ``precision=float32-fast``: x @ w.T where x is the network's
    +1/-1 input times dropout's keep mask and scale (-1/0/+1 times ``scale``) and w = tanh(W)
    is real-valued. Both products with x, the forward's and W's gradient, are the engine's
    table-lookup products (:func:`bitnn.engine.compiled.sign_matmul`) from x's signs as bit
    planes, as round 2's gradients; equal to the matmuls up to the order in which float sums
    round. x takes no gradient (it is data)."""

    @staticmethod
    def forward(ctx, x, w, scale):  # type: ignore[override]
        threads = torch.get_num_threads()
        x, w = x.detach().contiguous(), w.contiguous()
        ternary = scale != 1.0  # dropout's zeros: two planes; without dropout x is +-1
        with torch.profiler.record_function("bitnn_engine::sign_planes"):
            planes_t = _engine.sign_planes(x.t().contiguous().numpy(), ternary, threads)
        out_t = torch.empty((w.shape[0], x.shape[0]), dtype=torch.float32)
        with torch.profiler.record_function("bitnn_engine::sign_matmul"):
            _engine.sign_matmul(w.detach().numpy(), planes_t, out_t.numpy(), alpha=scale,
                                threads=threads)  # fmt: skip
        ctx.save_for_backward(x)
        ctx.scale, ctx.ternary = scale, ternary
        return out_t.t()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        threads = torch.get_num_threads()
        with torch.profiler.record_function("bitnn_engine::sign_matmul"):
            planes = _engine.sign_planes(x.numpy(), ctx.ternary, threads)
            grad_w = torch.empty((grad.shape[1], x.shape[1]), dtype=torch.float32)
            _engine.sign_matmul(grad.float().contiguous().numpy(), planes, grad_w.numpy(),
                                transpose_a=True, alpha=ctx.scale, threads=threads)  # fmt: skip
        return None, grad_w, None


def _keep_threshold(p: float) -> int | None:
    """:func:`keep_mask`'s int16 threshold for dropping with probability p; None where p is
    within 2**-17 of 1 (nothing is kept; not a wrapped int16)."""
    threshold = round(p * 65536) - 32768
    return None if threshold > 32767 else threshold


def _generator_key() -> int:
    """A 64-bit key for the compiled generator: one draw of PyTorch's (so seeds repeat)."""
    return int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)) % 2**64


def keep_mask(h: torch.Tensor, p: float) -> torch.Tensor:
    """A bool mask like ``h``, True with probability 1 - p, p rounded to a multiple of 2**-16
    (at most 7.7e-6 away): each 64-bit draw gives four 16-bit uniform integers, each compared
    with a threshold. On the CPU the draws come from a counter-based generator (SplitMix64,
    ``_fused.keep_mask``) keyed by one draw of PyTorch's generator, so seeded runs repeat; the
    masks are the same on any thread count. PyTorch's generator runs serially: its draws, one
    float per unit, were a seventh of a round-2 step at batch 400, and 64-bit words still 2.3 of
    its 45 ms."""
    threshold = _keep_threshold(p)
    if threshold is None:
        return torch.zeros(h.shape, dtype=torch.bool, device=h.device)
    n = h.numel()
    if _fused is not None and h.device.type == "cpu":
        out = torch.empty(h.shape, dtype=torch.bool)
        key = _generator_key()
        _fused.set_threads(torch.get_num_threads())
        with torch.profiler.record_function("bitnn_fused::keep_mask"):
            _fused.keep_mask(out.data_ptr(), n, key, threshold)
        return out
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=h.device)
    words.random_(-(2**63), 2**63 - 1)  # the whole 64-bit range (one value short)
    return words.view(torch.int16)[:n].view(h.shape) >= threshold


class _CompiledDropout(torch.autograd.Function):
    """``(h * keep_mask(h, p)) * (1 / (1 - p))`` in one compiled pass (``_fused.dropout``: the
    same draws, the same bits as those separate ops, in 0.29 ms against 0.79 for MNIST's
    400 x 1568 input bits on 2 AVX2 cores); backward ``(g * scale) * keep``, autograd's order
    for them. For CPU float32 h and p below 1 - 2**-17."""

    @staticmethod
    def forward(ctx, h, p):  # type: ignore[override]
        h = h.contiguous()
        keep = torch.empty(h.shape, dtype=torch.bool)
        out = torch.empty(h.shape, dtype=torch.float32)
        ctx.scale = 1.0 / (1.0 - p)
        key = _generator_key()
        _fused.set_threads(torch.get_num_threads())
        with torch.profiler.record_function("bitnn_fused::dropout"):
            _fused.dropout(h.data_ptr(), keep.data_ptr(), out.data_ptr(), h.numel(), key,
                           _keep_threshold(p), ctx.scale)  # fmt: skip
        ctx.save_for_backward(keep)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        grad = grad.float().contiguous()
        out = torch.empty(grad.shape, dtype=torch.float32)
        _fused.set_threads(torch.get_num_threads())
        with torch.profiler.record_function("bitnn_fused::dropout_grad"):
            _fused.dropout_grad(grad.data_ptr(), keep.data_ptr(), out.data_ptr(), grad.numel(),
                                ctx.scale)  # fmt: skip
        return out, None


# At most this many weights of a layer estimate its sparsity threshold (BitLinear.absent_below).
BETA_SAMPLE = 65536


def sign_activation(z: torch.Tensor, fused: bool = False) -> torch.Tensor:
    return _SignTanhSurrogate.apply(z, fused)


def ternarize(v: torch.Tensor, beta: float | torch.Tensor = 0.0) -> torch.Tensor:
    return _TernarizeStraightThrough.apply(v, beta)


class BitLinear(nn.Module):
    """A fully connected layer trained in two rounds; converts to a :class:`BitLayer`.

    ``bias_kind``: ``"bias"`` (the paper's one-bit bias), ``"threshold"`` (BatchNorm folded into
    integer thresholds), or ``"none"``. ``sparsity`` is the target fraction of absent weights:
    in round 2 those of smallest ``|W|`` are 0 (:meth:`absent_below`).
    """

    def __init__(
        self, in_features: int, out_features: int, bias_kind: str = "bias", sparsity: float = 0.0
    ) -> None:
        super().__init__()
        if bias_kind not in ("bias", "threshold", "none"):
            raise InputError(f"bias_kind must be bias, threshold or none, got {bias_kind!r}")
        if not 0.0 <= sparsity < 1.0:
            raise InputError(f"sparsity must be in [0, 1), got {sparsity}")
        self.in_features = in_features
        self.out_features = out_features
        self.bias_kind = bias_kind
        self.sparsity = sparsity
        self.binary = False
        # "float32", or "bfloat16": matmuls in training from bfloat16 operands (round 1) and,
        # in round 2, exact int8 products forward with bfloat16 gradients; or "float32-fast":
        # round 2's forward by XNOR-popcount, its gradients by table lookups (see the module
        # docstring). ``input_scale`` is the factor dropout gives the -1/0/+1 inputs in
        # training (1/(1-p)).
        self.precision = "float32"
        self.input_scale = 1.0
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1.0, 1.0))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias_kind == "bias" else None
        self.norm = nn.BatchNorm1d(out_features) if bias_kind == "threshold" else None
        self.scale = 1.0 / math.sqrt(in_features)
        # True: the parameters are latent values seen through tanh (the paper's compression).
        # False after decompress(): they are the compressed values themselves, kept in [-1, 1].
        self.register_buffer("compressed", torch.tensor(True))

    def real(self, p: torch.Tensor) -> torch.Tensor:
        """A parameter's real value in [-1, 1]."""
        if not bool(self.compressed):
            return p
        return fast_tanh(p, self.precision == "float32-fast" and self.training)

    @torch.no_grad()
    def decompress(self) -> None:
        """Replace latent parameters by their tanh so round 2 updates them directly (clipped)."""
        if bool(self.compressed):
            self.weight.copy_(torch.tanh(self.weight))
            if self.bias is not None:
                self.bias.copy_(torch.tanh(self.bias))
            self.compressed.fill_(False)

    @torch.no_grad()
    def clip_(self) -> None:
        if not bool(self.compressed):
            self.weight.clamp_(-1.0, 1.0)
            if self.bias is not None:
                self.bias.clamp_(-1.0, 1.0)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias_kind={self.bias_kind}, sparsity={self.sparsity}, binary={self.binary}"
        )

    def absent_below(self) -> float:
        """Round 2's weights are 0 where the stored ``|W|`` is below this (0.0: none are): the
        ``sparsity`` quantile of ``|W|`` over every k-th weight (at most ``BETA_SAMPLE`` of
        them, always the same ones). With the paper's compression the stored W is latent and
        its beta, on ``|tanh W|``, is the tanh of this (tanh keeps the order). Each round-2 step
        needs it: an exact quantile over a million weights cost 136 ms, more than three steps."""
        if self.sparsity == 0.0:
            return 0.0
        w = self.weight.detach().flatten()
        sample = w[:: -(-w.numel() // BETA_SAMPLE)].abs()
        k = 1 + round(self.sparsity * (sample.numel() - 1))  # kthvalue counts from 1
        return float(torch.kthvalue(sample.cpu(), k).values)

    def effective_weight(self) -> torch.Tensor:
        if not self.binary:
            return self.real(self.weight)
        if bool(self.compressed):
            compiled = self.precision == "float32-fast" and self.training
            return _SignOfTanhStraightThrough.apply(self.weight, self.absent_below(), compiled)
        return ternarize(self.weight, self.absent_below())

    def effective_bias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        b = self.real(self.bias)
        return ternarize(b) if self.binary else b

    @torch.no_grad()
    def folded_threshold(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sign, threshold)`` per unit so that the unit fires iff ``sign * dot >= threshold``.

        Exact for integer ``dot``: computed in float64 from the BatchNorm's running statistics
        (or from the bias bit); ``sign`` is -1 where the BatchNorm scale is negative.
        """
        n = self.in_features
        if self.bias_kind == "none":
            return np.ones(self.out_features, np.int8), np.zeros(self.out_features, np.int64)
        if self.bias_kind == "bias":
            b = np.where(self.real(self.bias).cpu().numpy() >= 0, 1, -1)
            return np.ones(self.out_features, np.int8), -b.astype(np.int64)
        bn = self.norm
        gamma = bn.weight.double().cpu().numpy()
        beta = bn.bias.double().cpu().numpy()
        mean = bn.running_mean.double().cpu().numpy()
        sd = np.sqrt(bn.running_var.double().cpu().numpy() + bn.eps)
        sign = np.where(gamma < 0, -1, 1).astype(np.int8)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = mean - beta * sd / gamma  # fires iff gamma * (dot - r) >= 0
        t = np.where(gamma > 0, np.ceil(r), np.ceil(-r))
        # gamma == 0: the unit is constant (fires iff beta >= 0).
        t = np.where(gamma == 0, np.where(beta >= 0, -(n + 1), n + 1), t)
        t = np.clip(np.nan_to_num(t, nan=0.0), -(n + 1), n + 1)
        return sign, t.astype(np.int64)

    def _dot(self, x: torch.Tensor, sign_input: bool = False) -> torch.Tensor:
        """x @ w.T at this layer's precision (float32 outside training). ``sign_input``: x is
        -1/0/+1 times ``input_scale`` (the network's input bits after dropout)."""
        if self.precision == "float32-fast" and self.training and _popcount_ready(x, self.weight):
            if self.binary and bool(self.compressed) and self.sparsity == 0:
                return _PopcountBitLinear.apply(x, self.weight, self.input_scale)
            if sign_input and not self.binary and not x.requires_grad:
                return _SignInputLinear.apply(x, self.effective_weight(), self.input_scale)
        if self.precision != "bfloat16" or not self.training or x.dim() != 2:
            return F.linear(x, self.effective_weight())
        if not self.binary:
            return _Bfloat16Linear.apply(x, self.effective_weight())
        if bool(self.compressed):  # sign(W) or 0, straight from W
            t = self.absent_below()
            return _ExactBitLinear.apply(x, self.weight, self.input_scale, True, t)
        return _ExactBitLinear.apply(x, self.effective_weight(), self.input_scale, False)

    def forward(self, x: torch.Tensor, sign_input: bool = False) -> torch.Tensor:
        dot = self._dot(x, sign_input)
        if self.binary and not self.training:
            sign, t = self.folded_threshold()
            sign = torch.as_tensor(sign, dtype=dot.dtype, device=dot.device)
            t = torch.as_tensor(t, dtype=dot.dtype, device=dot.device)
            return dot * sign - t  # exact integer score
        if self.norm is not None:
            return self.norm(dot)
        b = self.effective_bias()
        return (dot if b is None else dot + b) * self.scale


class BitMLP(nn.Module):
    """A multilayer perceptron of :class:`BitLinear` layers on +1/-1 inputs.

    ``output="scores"`` (classification: the last layer's scores are logits) or ``"bits"``
    (one sigmoid/bit per output unit). The last layer's bias is a bias bit or nothing: a
    folded normalisation would rescale the scores per unit, which integer scores cannot keep.
    """

    def __init__(
        self,
        n_in: int,
        hidden: tuple[int, ...] | list[int],
        n_out: int,
        bias_kind: str = "bias",
        output_bias_kind: str = "bias",
        sparsity: float = 0.0,
        dropout_input: float = 0.0,
        dropout_hidden: float = 0.0,
        output: str = "scores",
    ) -> None:
        super().__init__()
        if output_bias_kind not in ("bias", "none") and output == "scores":
            raise InputError("the output layer of a classifier takes bias_kind 'bias' or 'none'")
        sizes = [n_in, *hidden, n_out]
        kinds = [bias_kind] * len(hidden) + [output_bias_kind]
        self.layers = nn.ModuleList(
            BitLinear(a, b, k, sparsity)
            for a, b, k in zip(sizes[:-1], sizes[1:], kinds, strict=True)
        )
        self.dropout_input = nn.Dropout(dropout_input)
        self.dropout_hidden = nn.Dropout(dropout_hidden)
        self.output = output
        self.log_logit_scale = nn.Parameter(torch.zeros(()))  # temperature; argmax-invariant

    @property
    def binary(self) -> bool:
        return self.layers[0].binary

    def set_precision(self, precision: str) -> None:
        """``float32``, ``float32-fast`` or ``bfloat16`` ops in training (see the module
        docstring)."""
        if precision not in PRECISIONS:
            raise InputError(
                f"precision must be float32, float32-fast or bfloat16, got {precision!r}"
            )
        scales = [self.dropout_input.p] + [self.dropout_hidden.p] * (len(self.layers) - 1)
        for layer, p in zip(self.layers, scales, strict=True):
            layer.precision = precision
            layer.input_scale = 1.0 / (1.0 - p) if p > 0 else 1.0

    def _dropout(self, module: nn.Dropout, h: torch.Tensor) -> torch.Tensor:
        """``module(h)``; at precisions bfloat16 and float32-fast the same dropout (keep with
        probability 1-p, scale by 1/(1-p)) from :func:`keep_mask`, four times fewer calls of
        the random generator than nn.Dropout's draws (another random stream, so not at
        float32, whose results stay those of earlier versions)."""
        p = module.p
        if self.layers[0].precision == "float32" or not self.training or p == 0:
            return module(h)
        if _fusable(h) and _keep_threshold(p) is not None:
            return _CompiledDropout.apply(h, p)
        # the mask as bytes: the product promotes it, without a float copy of the mask
        return (h * keep_mask(h, p).view(torch.int8)).mul_(1.0 / (1.0 - p))

    def set_round(self, round_: int) -> None:
        """1: weight compression (tanh); 2: noisy backpropagation (binarized forward)."""
        if round_ not in (1, 2):
            raise InputError(f"round must be 1 or 2, got {round_}")
        for layer in self.layers:
            layer.binary = round_ == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """+1/-1 inputs -> logits (training) or exact integer scores (binary eval mode)."""
        first = self.layers[0]  # round 1 at float32-fast: table products where x is +-1
        sign_input = (
            first.precision == "float32-fast" and self.training and not self.binary
            and _popcount_ready(x, first.weight) and _bipolar(x)
        )  # fmt: skip
        h = self._dropout(self.dropout_input, x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            z = layer(h, sign_input=sign_input and i == 0)
            if i == last:
                if self.binary and not self.training:
                    return z
                return z * self.log_logit_scale.exp()
            fused = layer.precision == "float32-fast"
            h = sign_activation(z, fused) if self.binary else fast_tanh(z, fused and self.training)
            h = self._dropout(self.dropout_hidden, h)
        raise AssertionError("unreachable")

    @torch.no_grad()
    def hidden_signs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """+1/-1 output of every layer in binary eval mode (for checking the conversion)."""
        if not (self.binary and not self.training):
            raise InputError("hidden_signs needs binary eval mode: set_round(2) and eval()")
        out, h = [], x
        for layer in self.layers:
            h = torch.where(layer(h) >= 0, 1.0, -1.0)
            out.append(h)
        return out
