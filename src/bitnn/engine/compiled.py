"""The compiled engine: C kernels (``_kernels.c``) in three variants chosen at run time.

``portable`` (plain C, 64-bit popcount), ``avx2`` and ``avx512`` (VPOPCNTDQ). The best variant
the CPU runs is used unless ``BITNN_KERNEL=portable|avx2|avx512`` forces one. Weights are laid
out for the kernels once per layer (cached on the layer); arrays are validated here, so a
wrong dtype, shape or memory layout is converted or refused, never a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from bitnn.binarize import Binarizer, check_features, edge_code
from bitnn.bits import WORD_DTYPE, n_words, pack_bits
from bitnn.errors import InputError
from bitnn.network import BitLayer

try:
    from bitnn.engine import _kernels
except ImportError:  # the extension did not build: callers fall back to the reference
    _kernels = None

VARIANTS = ("portable", "avx2", "avx512")
QUAD = 32  # output units per kernel panel


def extension_available() -> bool:
    return _kernels is not None


def available_variants() -> list[str]:
    return list(_kernels.available()) if _kernels is not None else []


def default_variant() -> str:
    """``BITNN_KERNEL`` if set, else the fastest variant this CPU runs."""
    forced = os.environ.get("BITNN_KERNEL", "").strip().lower()
    avail = available_variants()
    if forced:
        if forced not in VARIANTS:
            raise InputError(f"BITNN_KERNEL={forced!r} is not one of {VARIANTS}")
        if forced not in avail:
            raise InputError(f"BITNN_KERNEL={forced} is not supported by this CPU ({avail} are)")
        return forced
    return avail[-1]


def thread_limit() -> int:
    return _kernels.threads() if _kernels is not None else 1


@dataclass
class KernelLayout:
    """A layer's weights in the kernels' layout: units padded to 32, ``w[q][k][32]``."""

    weight: np.ndarray
    mask: np.ndarray | None
    limit: np.ndarray  # fire iff count <= limit (padding units: -1, never)
    offset: np.ndarray  # score = offset - 2 * count  (offset = n_present - threshold)
    n_quads: int
    n_out: int
    in_words: int
    out_words: int


def _to_quads(words: np.ndarray, n_quads: int) -> np.ndarray:
    n_out, k = words.shape
    padded = np.zeros((n_quads * QUAD, k), dtype=WORD_DTYPE)
    padded[:n_out] = words
    return np.ascontiguousarray(padded.reshape(n_quads, QUAD, k).transpose(0, 2, 1))


def kernel_layout(layer: BitLayer) -> KernelLayout:
    cached = getattr(layer, "_kernel_layout", None)
    if cached is not None:
        return cached
    q = -(-layer.n_out // QUAD)
    limit = np.full(q * QUAD, -1, dtype=np.int64)
    limit[: layer.n_out] = layer.popcount_limit
    offset = np.zeros(q * QUAD, dtype=np.int64)  # int64: n_present - threshold cannot overflow
    offset[: layer.n_out] = layer.n_present - layer.threshold.astype(np.int64)
    layout = KernelLayout(
        _to_quads(layer.weight, q),
        None if layer.mask is None else _to_quads(layer.mask, q),
        limit,
        offset,
        q,
        layer.n_out,
        n_words(layer.n_in),
        n_words(layer.n_out),
    )
    layer._kernel_layout = layout  # type: ignore[attr-defined]
    return layout


def _check_input(x: np.ndarray, words: int) -> np.ndarray:
    if (
        type(x) is np.ndarray
        and x.dtype == WORD_DTYPE
        and x.ndim == 2
        and x.shape[1] == words
        and x.flags.c_contiguous
    ):
        return x  # the common case, checked cheaply: batch-1 calls take microseconds
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != words:
        raise InputError(f"packed input must have shape (batch, {words}), got {x.shape}")
    if x.dtype.kind != "u" or x.dtype.itemsize != 8:
        raise InputError(f"packed input must be uint64 words, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=WORD_DTYPE)  # copies non-contiguous views


def masked_dot(
    x: np.ndarray,
    x_mask: np.ndarray,
    x_present: np.ndarray,
    w: np.ndarray,
    threads: int,
    out: np.ndarray,
) -> np.ndarray:
    """``out[i, j]`` = the sum over the positions k where ``x_mask[i]`` has a 1 of
    ``x[i, k] * w[j, k]``, for +1/-1 values packed as bits (1 = +1) in uint64 rows of equal
    length, ``x_present[i]`` being the count of ``x_mask[i]``'s ones (int64): training's exact
    round-2 products (``bitnn.train.layers``), a batch ``x`` with dropout's zeros as its mask
    against a layer's sign bits ``w``. ``out``: int64, ``(len(x), len(w))``, C-contiguous.

    The rows of ``w`` are the layer kernel's units and each row of ``x`` brings its mask (one
    broadcast per word), except in the avx512 variant, whose tiles load a mask per unit: there
    the rows of ``x`` are the units (their masks in quads) and the result comes back transposed."""
    n_x, words = x.shape
    x_present = np.ascontiguousarray(x_present, dtype=np.int64)
    variant = default_variant()
    if variant == "avx512":
        quads = -(-n_x // QUAD)
        offset = np.zeros(quads * QUAD, dtype=np.int64)
        offset[:n_x] = x_present  # score = present - 2 * mismatches
        scores = np.empty((len(w), n_x), dtype=np.int64)
        _kernels.layer(
            VARIANTS.index(variant), w, _to_quads(x, quads), _to_quads(x_mask, quads),
            offset, len(w), words, quads, n_x, 1, scores, threads,
        )  # fmt: skip
        out[...] = scores.T
        return out
    quads = -(-len(w) // QUAD)
    _kernels.layer(
        VARIANTS.index(variant), x, _to_quads(w, quads), None, np.zeros(quads * QUAD, np.int64),
        n_x, words, quads, len(w), 1, out, threads, x_mask, x_present,
    )  # fmt: skip
    return out


def _check_float_matrix(a: np.ndarray, name: str, shape: tuple | None = None) -> None:
    if not (
        isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 2
        and a.flags.c_contiguous and (shape is None or a.shape == shape)
    ):  # fmt: skip
        want = "" if shape is None else f" of shape {shape}"
        raise InputError(f"{name} must be a C-contiguous float32 matrix{want}")


def sign_planes(s: np.ndarray, ternary: bool, threads: int) -> tuple:
    """The signs of float32 ``s`` (K x N, C-contiguous) as :func:`sign_matmul`'s bit planes:
    ``(p, q)``, uint8 arrays of ceil(K/8) x N bytes, bit r of byte (c, n) standing for
    ``s[8c + r, n]``. ``ternary``: p where s > 0, q where s < 0 (-1/0/+1 values); else p
    where s is not negative (-0 and NaN count as +1, as training's sign(W)) and q is None."""
    _check_float_matrix(s, "s")
    k, n = s.shape
    p = np.empty((-(-k // 8), n), dtype=np.uint8)
    q = np.empty_like(p) if ternary else None
    _kernels.sign_planes(s, k, n, p, q, threads)
    return p, q


def sign_matmul(
    a: np.ndarray,
    planes: tuple,
    out: np.ndarray,
    transpose_a: bool = False,
    alpha: float = 1.0,
    mul: np.ndarray | None = None,
    threads: int = 0,
    variant: str | None = None,
) -> np.ndarray:
    """``out = alpha * A @ S``, times ``mul`` elementwise if given (float32, out's shape).
    A is float32 ``a`` (C-contiguous) or, with ``transpose_a``, ``a.T``; S is +-1 or -1/0/+1,
    given as :func:`sign_planes` made it. Training's round-2 gradients at float32-fast
    (``bitnn.train.layers``): a table-lookup product, 1.6-2.5x float32 sgemm's speed on AVX2
    (``_kernels.c``), equal to a matmul up to the order in which float sums round.
    ``variant``: ``"avx2"`` where the CPU runs it (also on AVX-512 CPUs), else ``"portable"``;
    both give the same bits, on any number of ``threads`` (0: the engine's limit)."""
    _check_float_matrix(a, "a")
    rows, cols = a.shape
    m, k = (cols, rows) if transpose_a else (rows, cols)
    sam, sak = (1, cols) if transpose_a else (cols, 1)
    p, q = planes
    for name, plane in (("p", p), ("q", q)):
        if (plane is not None or name == "p") and not (
            isinstance(plane, np.ndarray) and plane.dtype == np.uint8 and plane.ndim == 2
            and plane.flags.c_contiguous and plane.shape[0] == -(-k // 8)
        ):  # fmt: skip
            raise InputError(f"plane {name} must be C-contiguous uint8 of {-(-k // 8)} rows")
    if q is not None and q.shape != p.shape:
        raise InputError(f"planes p and q differ in shape: {p.shape} and {q.shape}")
    for name, arr in (("out", out), ("mul", mul)):
        if arr is not None:
            _check_float_matrix(arr, name, (m, p.shape[1]))
    if variant is None:
        variant = "avx2" if "avx2" in available_variants() else "portable"
    _kernels.sign_matmul(
        VARIANTS.index(variant), a, sam, sak, m, k, p.shape[1], p, q, alpha, mul, out, threads
    )
    return out


class CompiledEngine:
    """An engine bound to one kernel variant; same interface as ``reference``."""

    def __init__(self, variant: str | None = None, threads: int = 0) -> None:
        if _kernels is None:
            raise InputError(
                "the compiled kernels are not built; reinstall bitnn with a C compiler"
            )
        variant = variant or default_variant()
        if variant not in available_variants():
            raise InputError(
                f"kernel variant {variant!r} is not available here ({available_variants()} are)"
            )
        self.variant = variant
        self.NAME = f"compiled-{variant}"
        self._code = VARIANTS.index(variant)
        self.threads = threads  # 0: the kernels' own choice

    def __repr__(self) -> str:
        return f"CompiledEngine({self.variant!r})"

    def _run(self, x: np.ndarray, layer: BitLayer, mode: int) -> np.ndarray:
        lay = kernel_layout(layer)
        x = _check_input(x, lay.in_words)
        b = x.shape[0]
        if mode == 0:
            out = np.zeros((b, lay.out_words), dtype=WORD_DTYPE)
            lim = lay.limit
        else:
            out = np.empty((b, lay.n_out), dtype=np.int64)
            lim = lay.offset
        _kernels.layer(
            self._code, x, lay.weight, lay.mask, lim, b, lay.in_words, lay.n_quads,
            lay.n_out, mode, out, self.threads,
        )  # fmt: skip
        return out

    def layer_bits(self, x: np.ndarray, layer: BitLayer) -> np.ndarray:
        return self._run(x, layer, 0)

    def layer_scores(self, x: np.ndarray, layer: BitLayer) -> np.ndarray:
        return self._run(x, layer, 1)

    def binarize(self, binarizer: Binarizer, X: np.ndarray) -> np.ndarray:
        """Raw inputs -> packed bits, in C for threshold/quantile/Lloyd-Max binarizers."""
        plan = _binarize_plan(binarizer)
        if plan is None:
            return binarizer.transform_packed(X)
        binarizer._check_fitted()
        a = np.asarray(X)
        is_u8 = a.dtype == np.uint8 and a.ndim == 2
        if not is_u8:
            if a.dtype != np.float32 or a.ndim != 2:
                a = check_features(a, binarizer.n_features_in_)  # validates, converts to float32
        if a.shape[0] == 0 or a.shape[1] != binarizer.n_features_in_:
            check_features(a, binarizer.n_features_in_)  # raises the specific error
        rows, row_stride = _rows_in_place(a)
        thr, never = (plan.thr_u8, plan.never) if is_u8 else (plan.thr_f32, None)
        out = np.zeros((a.shape[0], n_words(binarizer.n_bits_out_)), dtype=WORD_DTYPE)
        bad = _kernels.binarize(
            self._code, rows, int(is_u8), thr, never, a.shape[0], a.shape[1], plan.f_pad,
            plan.n_edges, plan.k, plan.flips, plan.c0, out, self.threads, row_stride,
        )  # fmt: skip
        if bad:
            check_features(a, binarizer.n_features_in_)  # raises with the row and column
        return out


def _rows_in_place(a: np.ndarray) -> tuple[np.ndarray, int]:
    """``(contiguous memory, row stride in elements)`` from which the C binarizer reads the
    rows of the 2-D ``a``: rows a constant stride apart with adjacent elements, such as the
    overlapping rows of a sliding window over frames, are read where they are; other
    layouts are copied into a contiguous array first."""
    step, item = a.strides[0], a.itemsize
    if a.flags.c_contiguous or not (
        a.strides[1] == item and step >= 0 and step % item == 0 and a.flags.aligned
    ):
        a = np.ascontiguousarray(a)
        return a, a.shape[1]
    span = (a.shape[0] - 1) * (step // item) + a.shape[1]
    return np.lib.stride_tricks.as_strided(a, (span,), (item,)), step // item


def _binarize_plan(b: Binarizer) -> SimpleNamespace | None:
    """The binarizer's :class:`EdgeCode` laid out for the C binarizer (cached on it while its
    fitted edges stay the same object), or None if the C binarizer cannot run it."""
    cached = getattr(b, "_kernel_plan", None)
    if cached is not None and cached.edges_id is _edges_of(b):
        return cached
    code = edge_code(b)
    if code is None or code.edges.shape[1] > 64:
        return None
    f, e = code.edges.shape
    f_pad = -(-f // 64) * 64  # whole 64-feature chunks
    thr_f32 = np.zeros((e, f_pad), dtype=np.float32)
    thr_f32[:, :f] = code.edges.T
    # uint8 inputs: integer edges as bytes; an edge of 256 can never be reached.
    thr_u8 = np.zeros((e, f_pad), dtype=np.uint8)
    thr_u8[:, :f] = np.minimum(code.int_edges.T, 255)
    never = np.zeros((e, f_pad), dtype=np.uint8)
    never[:, :f] = code.int_edges.T > 255
    plan = SimpleNamespace(
        thr_f32=thr_f32, thr_u8=thr_u8, never=pack_bits(never),
        flips=np.array(code.flips, dtype=np.uint64), c0=code.c0, k=code.k, n_edges=e,
        f_pad=f_pad, edges_id=_edges_of(b),
    )  # fmt: skip
    b._kernel_plan = plan  # type: ignore[attr-defined]
    return plan


def _edges_of(b: Binarizer) -> object:
    return getattr(b, "edges_", getattr(b, "thresholds_", None))
