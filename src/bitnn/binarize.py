"""Input binarizers: real-valued features -> bits, fitted on training data.

They follow scikit-learn's conventions: ``__init__`` only stores parameters, ``fit`` learns
attributes whose names end in ``_``, ``transform`` never learns. ``transform`` returns uint8
0/1 bits ``(n_samples, n_bits_out_)``; ``transform_packed`` returns them packed (see
:mod:`bitnn.bits`). Comparisons are made in float32 against float32 edges, so a binarizer
gives the same bits before and after a save/load round trip and in the C engines.

Multi-bit codes place the ``k`` bits of feature ``f`` at output units ``f*k .. f*k+k-1``
("scattered" to ``k`` input units, as in the paper).

Edges are never subnormal floats: an edge that would be (a feature that is always 0 in
training gives the edge just above 0) becomes the nearest normal number with the same effect
on every input that is not itself subnormal (:func:`normal_edges`), so a platform that flushes
subnormals to zero computes the same bits. Edge binarizers fitted on ``uint8`` data have whole
number edges (``x >= ceil(edge)`` is what the fitted edge means for whole numbers): they are
stored as bytes and compared exactly by integer code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bitnn.bits import pack_bits
from bitnn.errors import InputError, NotFittedError

CODES = ("binary", "gray", "thermometer")
INPUT_DTYPES = ("float32", "uint8")
_TINY = np.float32(np.finfo(np.float32).tiny)  # 2**-126, the smallest normal float32


def normal_edges(edges: Any) -> np.ndarray:
    """float32 edges with every subnormal one replaced by a normal number that gives the same
    bit ``x >= edge`` for every float32 ``x`` that is not itself subnormal: a positive subnormal
    edge becomes 2**-126, a negative one (and -0.0) becomes 0.0. With subnormal inputs flushed
    to zero the comparison is then the same as without flushing."""
    e = np.array(edges, dtype=np.float32)
    sub = np.abs(e) < _TINY
    e[sub & (e > 0)] = _TINY
    e[sub & (e <= 0)] = 0.0
    return e


def _is_uint8(X: Any) -> bool:
    return getattr(X, "dtype", None) == np.uint8


def check_features(X: Any, n_features: int | None = None, what: str = "X") -> np.ndarray:
    """Validate raw inputs: 2-D, numeric, non-empty, finite; return float32."""
    try:
        a = np.asarray(X)
    except (TypeError, ValueError) as exc:  # ragged lists and the like
        raise InputError(f"{what} could not be read as an array: {exc}") from None
    if (
        a.dtype == object
        or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_)
        or np.issubdtype(a.dtype, np.complexfloating)
    ):
        raise InputError(
            f"{what} must hold real numbers, got dtype {a.dtype}; convert it with "
            "np.asarray(X, dtype=np.float32)"
        )
    if a.ndim != 2:
        raise InputError(f"{what} must be 2-D (n_samples, n_features), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{what} is empty (shape {a.shape}); give at least one sample")
    if n_features is not None and a.shape[1] != n_features:
        raise InputError(
            f"{what} has {a.shape[1]} features but this binarizer was fitted on {n_features}"
        )
    x = a.astype(np.float32, copy=False)
    if np.issubdtype(a.dtype, np.floating):
        finite = np.isfinite(x)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            raise InputError(
                f"{what} contains NaN or infinity (first at row {r}, column {c}); "
                "clean or impute the data first"
            )
    return x


class Binarizer:
    """Base class: parameter handling, validation, packing, serialisation."""

    kind: ClassVar[str] = ""
    _param_names: ClassVar[tuple[str, ...]] = ()
    _array_names: ClassVar[tuple[str, ...]] = ()

    n_features_in_: int
    n_bits_out_: int

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X) first")

    def fit(self, X: Any, y: Any = None) -> Binarizer:
        raise NotImplementedError

    def transform(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X, y).transform(X)

    def transform_packed(self, X: Any) -> np.ndarray:
        return pack_bits(self.transform(X))

    # ---- serialisation (no pickle: JSON parameters + named numpy arrays) ---------------------

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(JSON-able description, arrays)``; arrays in the smallest exact dtypes."""
        self._check_fitted()
        meta = {
            "kind": self.kind,
            "params": self.get_params(),
            "n_features_in": self.n_features_in_,
        }
        return meta, {name: getattr(self, name) for name in self._array_names}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Binarizer:
        try:
            klass = BINARIZERS[meta["kind"]]
            obj = klass(**meta["params"])
            missing = [n for n in klass._array_names if n not in arrays]
            if missing:
                raise InputError(f"binarizer arrays missing: {missing}")
            obj._restore(int(meta["n_features_in"]), arrays, meta.get("input", "float32"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"invalid binarizer description: {exc}") from None
        return obj

    def _restore(
        self, n_features: int, arrays: dict[str, np.ndarray], input_dtype: str = "float32"
    ) -> None:
        if input_dtype != "float32":
            raise InputError(f"a {self.kind} binarizer takes float32 inputs, not {input_dtype}")
        for name in self._array_names:
            setattr(self, name, arrays[name])
        self.n_features_in_ = n_features
        self._set_output_size()
        self._validate_fitted()

    def _set_output_size(self) -> None:
        raise NotImplementedError

    def _validate_fitted(self) -> None:
        """Check restored arrays are consistent (shapes, dtypes)."""


class ThresholdBinarizer(Binarizer):
    """One bit per feature: 1 iff ``x >= threshold``. ``threshold=0`` is the sign binarizer."""

    kind = "threshold"
    _param_names = ("threshold",)
    _array_names = ("thresholds_",)

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    def fit(self, X: Any, y: Any = None) -> ThresholdBinarizer:
        if not np.isfinite(self.threshold):
            raise InputError("threshold must be a finite number")
        x = check_features(X)
        self.thresholds_ = normal_edges(np.full(x.shape[1], self.threshold, dtype=np.float32))
        self.n_features_in_ = x.shape[1]
        self._set_output_size()
        return self

    def _set_output_size(self) -> None:
        self.n_bits_out_ = self.n_features_in_

    def _validate_fitted(self) -> None:
        self.thresholds_ = np.asarray(self.thresholds_, dtype=np.float32)
        if self.thresholds_.shape != (self.n_features_in_,):
            raise InputError("thresholds_ does not match n_features_in_")
        if not np.all(np.isfinite(self.thresholds_)):
            raise InputError("thresholds_ must be finite")

    def transform(self, X: Any) -> np.ndarray:
        self._check_fitted()
        x = check_features(X, self.n_features_in_)
        return (x >= self.thresholds_).view(np.uint8)


def _encode_levels(levels: np.ndarray, n_bits: int, code: str) -> np.ndarray:
    """Levels ``(n, f)`` -> bits ``(n, f * n_bits)``, bits of feature f adjacent."""
    if code == "thermometer":
        j = np.arange(n_bits, dtype=levels.dtype)
        bits = levels[:, :, None] > j
    else:
        if code == "gray":
            levels = levels ^ (levels >> 1)
        j = np.arange(n_bits, dtype=levels.dtype)
        bits = (levels[:, :, None] >> j) & 1
    return bits.astype(np.uint8).reshape(levels.shape[0], -1)


class _EdgeBinarizer(Binarizer):
    """Quantize each feature into levels separated by per-feature edges, then encode in bits.

    ``level(x) = number of edges <= x``; ``binary``/``gray`` codes use ``2**n_bits`` levels,
    ``thermometer`` uses ``n_bits + 1`` levels (bit j set iff level > j).

    ``input_dtype_`` is ``"uint8"`` when ``fit`` was given a uint8 array: the edges are then
    whole numbers in 0..256 (256: never reached), else ``"float32"``.
    """

    input_dtype_: str = "float32"

    def __init__(self, n_bits: int = 2, code: str = "thermometer") -> None:
        self.n_bits = n_bits
        self.code = code

    def _check_params(self) -> None:
        if self.code not in CODES:
            raise InputError(f"code must be one of {CODES}, got {self.code!r}")
        if not isinstance(self.n_bits, int) or not 1 <= self.n_bits <= 8:
            raise InputError(f"n_bits must be an integer from 1 to 8, got {self.n_bits!r}")

    @property
    def n_levels(self) -> int:
        return self.n_bits + 1 if self.code == "thermometer" else 2**self.n_bits

    def _set_output_size(self) -> None:
        self.n_bits_out_ = self.n_features_in_ * self.n_bits

    def _finish_edges(self, edges: np.ndarray, X: Any) -> None:
        """Set ``edges_`` from fitted float edges: whole numbers for uint8 inputs (``x >= e``
        and ``x >= ceil(e)`` agree on whole numbers), never subnormal otherwise."""
        if _is_uint8(X):
            self.input_dtype_ = "uint8"
            whole = np.clip(np.ceil(np.asarray(edges, dtype=np.float64)), 0, 256)
            self.edges_ = np.ascontiguousarray(whole, dtype=np.float32)
        else:
            self.input_dtype_ = "float32"
            self.edges_ = np.ascontiguousarray(normal_edges(edges))

    def for_uint8_inputs(self) -> _EdgeBinarizer:
        """A copy for uint8 inputs (0..255): edges ``ceil(edge)``, which give the same bits as
        this binarizer on every whole number, stored as bytes (a binarizer fitted on float
        data of pixels, say)."""
        self._check_fitted()
        other = type(self)(**self.get_params())
        other._finish_edges(self.edges_, np.zeros(0, dtype=np.uint8))
        other.n_features_in_ = self.n_features_in_
        other._set_output_size()
        return other

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super().to_state()
        meta["input"] = self.input_dtype_
        if self.input_dtype_ == "uint8":  # whole numbers 0..256: bytes, or uint16 for a 256
            dt = np.uint8 if self.edges_.size == 0 or self.edges_.max() <= 255 else np.uint16
            arrays["edges_"] = self.edges_.astype(dt)
        return meta, arrays

    def _restore(
        self, n_features: int, arrays: dict[str, np.ndarray], input_dtype: str = "float32"
    ) -> None:
        if input_dtype not in INPUT_DTYPES:
            raise InputError(f"input must be one of {INPUT_DTYPES}, got {input_dtype!r}")
        self.input_dtype_ = input_dtype
        for name in self._array_names:
            setattr(self, name, arrays[name])
        self.n_features_in_ = n_features
        self._set_output_size()
        self._validate_fitted()

    def _validate_fitted(self) -> None:
        self._check_params()
        self.edges_ = np.asarray(self.edges_, dtype=np.float32)
        if self.edges_.shape != (self.n_features_in_, self.n_levels - 1):
            raise InputError("edges_ does not match n_features_in_ and the number of levels")
        if np.any(np.diff(self.edges_, axis=1) < 0) or not np.all(np.isfinite(self.edges_)):
            raise InputError("edges_ must be finite and sorted along each feature")
        if self.input_dtype_ == "uint8" and (
            np.any(self.edges_ != np.round(self.edges_))
            or np.any((self.edges_ < 0) | (self.edges_ > 256))
        ):
            raise InputError("edges_ of a uint8 binarizer must be whole numbers from 0 to 256")

    def levels(self, X: Any) -> np.ndarray:
        """Quantization level of every value (uint8, ``(n, n_features)``)."""
        self._check_fitted()
        x = check_features(X, self.n_features_in_)
        lv = np.zeros(x.shape, dtype=np.uint8)
        for j in range(self.edges_.shape[1]):
            lv += x >= self.edges_[:, j]
        return lv

    def transform(self, X: Any) -> np.ndarray:
        return _encode_levels(self.levels(X), self.n_bits, self.code)


class QuantileBinarizer(_EdgeBinarizer):
    """Population-based quantization (the paper's): equal-population bins per feature.

    Tied values are never split, so a value shared by many samples (the zero of a mostly
    blank MNIST pixel) forms a bin of its own and the remaining values are shared equally among
    the remaining bins: no bin boundary falls inside a run of ties, and an edge lies midway
    between the largest value below it and the smallest above. With ``n`` distinct values the
    bins hold ``n // L`` or ``n // L + 1`` of them; every level is used when there are at least
    ``L`` distinct values. Edges that no fitting value can separate (fewer distinct values than
    levels) sit just above the largest value.
    """

    kind = "quantile"
    _param_names = ("n_bits", "code")
    _array_names = ("edges_",)

    def fit(self, X: Any, y: Any = None) -> QuantileBinarizer:
        self._check_params()
        x = np.sort(check_features(X), axis=0)
        edges = np.stack([_population_edges(x[:, f], self.n_levels) for f in range(x.shape[1])])
        self._finish_edges(edges, X)
        self.n_features_in_ = x.shape[1]
        self._set_output_size()
        return self


def _population_edges(col: np.ndarray, n_levels: int) -> np.ndarray:
    """Edges cutting one sorted float32 feature into bins as equally populated as ties allow."""
    n = col.size
    starts = np.flatnonzero(col[1:] != col[:-1]) + 1  # where a run of equal values begins
    edges = np.full(n_levels - 1, np.nextafter(col[-1], np.float32(np.inf)), dtype=np.float32)
    lo = 0  # first sample of the bin being cut
    for j in range(n_levels - 1):
        # Leave one run start for each bin still to come, so that every level is used when
        # there are at least as many distinct values as levels.
        candidates = starts[starts > lo]
        candidates = candidates[: max(candidates.size - (n_levels - 2 - j), 1)]
        if candidates.size == 0:
            break
        target = lo + (n - lo) // (n_levels - j)  # equal shares of what is left
        i = np.searchsorted(candidates, target)
        near = candidates[max(i - 1, 0) : i + 1]  # the run starts on either side of target
        p = int(near[np.argmin(np.abs(near - target))])
        mid = np.float32((np.float64(col[p - 1]) + np.float64(col[p])) / 2)
        edges[j] = mid if col[p - 1] < mid <= col[p] else col[p]
        lo = p
    return edges


class LloydMaxBinarizer(_EdgeBinarizer):
    """Lloyd-Max quantization: per feature, levels that minimise the squared error (1-D
    k-means, started from the :class:`QuantileBinarizer`'s bins); edges are midpoints between
    levels."""

    kind = "lloyd-max"
    _param_names = ("n_bits", "code", "max_iter")
    _array_names = ("edges_",)  # centers_ (the levels' means) are not needed to binarize

    def __init__(self, n_bits: int = 2, code: str = "thermometer", max_iter: int = 30) -> None:
        super().__init__(n_bits, code)
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any = None) -> LloydMaxBinarizer:
        self._check_params()
        x = check_features(X)
        self.n_features_in_ = x.shape[1]
        x = np.sort(x, axis=0)
        xs = x.astype(np.float64)
        n, L = xs.shape[0], self.n_levels
        cums = np.vstack([np.zeros((1, xs.shape[1])), np.cumsum(xs, axis=0)])
        cols = np.arange(xs.shape[1])

        def bin_means(edges: np.ndarray, fallback: np.ndarray) -> np.ndarray:
            # Sorted data: each bin is a contiguous run, so its mean comes from cumulative sums.
            cut = np.stack([np.searchsorted(xs[:, f], edges[f], side="left") for f in cols], axis=0)
            cut = np.hstack([np.zeros((xs.shape[1], 1), int), cut, np.full((xs.shape[1], 1), n)])
            counts = np.diff(cut, axis=1)
            sums = cums[cut[:, 1:], cols[:, None]] - cums[cut[:, :-1], cols[:, None]]
            return np.where(counts > 0, sums / np.maximum(counts, 1), fallback)

        # Start from the (tie-aware) equal-population bins: centres are the bin means.
        start = np.stack([_population_edges(x[:, f], L) for f in cols]).astype(np.float64)
        top = np.repeat(start[:, -1:], L, axis=1)  # empty bins sit at their upper edge
        centers = bin_means(start, top)
        for _ in range(self.max_iter):
            centers = np.sort(centers, axis=1)
            new = bin_means((centers[:, 1:] + centers[:, :-1]) / 2, centers)
            if np.allclose(new, centers, rtol=0, atol=1e-7):
                centers = new
                break
            centers = new
        centers = np.sort(centers, axis=1)
        self.centers_ = centers.astype(np.float32)
        self._finish_edges(((centers[:, 1:] + centers[:, :-1]) / 2).astype(np.float32), X)
        self._set_output_size()
        return self


class WTAHashBinarizer(Binarizer):
    """Winner-Take-All hashing: for each of ``n_hashes`` random windows of ``window`` features,
    the index of the largest (first on ties) is encoded one-hot (``window`` bits) or in binary
    (``ceil(log2 window)`` bits). An ordinal code: unchanged by any strictly increasing
    transform of the input."""

    kind = "wta"
    _param_names = ("n_hashes", "window", "code", "random_state")
    _array_names = ("windows_",)

    def __init__(
        self, n_hashes: int = 256, window: int = 4, code: str = "onehot", random_state: int = 0
    ) -> None:
        self.n_hashes = n_hashes
        self.window = window
        self.code = code
        self.random_state = random_state

    def _check_params(self, n_features: int) -> None:
        if self.code not in ("onehot", "binary"):
            raise InputError(f"code must be 'onehot' or 'binary', got {self.code!r}")
        if not isinstance(self.n_hashes, int) or self.n_hashes < 1:
            raise InputError("n_hashes must be a positive integer")
        if not isinstance(self.window, int) or not 2 <= self.window <= n_features:
            raise InputError(
                f"window must be an integer from 2 to the number of features ({n_features})"
            )

    @property
    def bits_per_hash(self) -> int:
        return self.window if self.code == "onehot" else int(np.ceil(np.log2(self.window)))

    def fit(self, X: Any, y: Any = None) -> WTAHashBinarizer:
        x = check_features(X)
        self._check_params(x.shape[1])
        rng = np.random.default_rng(self.random_state)
        self.windows_ = np.stack(
            [rng.permutation(x.shape[1])[: self.window] for _ in range(self.n_hashes)]
        ).astype(np.int32)
        self.n_features_in_ = x.shape[1]
        self._set_output_size()
        return self

    def _set_output_size(self) -> None:
        self.n_bits_out_ = self.n_hashes * self.bits_per_hash

    def _validate_fitted(self) -> None:
        self._check_params(self.n_features_in_)
        self.windows_ = np.asarray(self.windows_, dtype=np.int32)
        if self.windows_.shape != (self.n_hashes, self.window):
            raise InputError("windows_ does not match n_hashes and window")
        if self.windows_.min() < 0 or self.windows_.max() >= self.n_features_in_:
            raise InputError("windows_ refers to features that do not exist")

    def winners(self, X: Any) -> np.ndarray:
        """Index of the winner within each window, ``(n, n_hashes)``."""
        self._check_fitted()
        x = check_features(X, self.n_features_in_)
        return np.argmax(x[:, self.windows_], axis=2)

    def transform(self, X: Any) -> np.ndarray:
        win = self.winners(X)
        if self.code == "onehot":
            bits = win[:, :, None] == np.arange(self.window)
        else:
            bits = (win[:, :, None] >> np.arange(self.bits_per_hash)) & 1
        return bits.astype(np.uint8).reshape(win.shape[0], -1)


@dataclass(frozen=True)
class EdgeCode:
    """A fitted threshold/quantile/Lloyd-Max binarizer as tables for compiled code (the C
    kernels and the C export): per feature f and edge j, ``t_j = x_f >= edges[f, j]``; code bit
    b of the feature is ``bit b of c0`` XOR the parity of ``t & flips[b]`` (exact for any code,
    since the ``t_j`` of sorted edges are nested)."""

    edges: np.ndarray  # (n_features, n_edges) float32
    int_edges: np.ndarray  # (n_features, n_edges) int64: ceil(edge) in [0, 256], 256 = never
    flips: tuple[int, ...]  # per code bit: the edges where that bit changes
    c0: int  # code bits of level 0
    k: int  # bits per feature
    codes: np.ndarray  # (n_edges + 1, k) uint8: the code bits of each level


def edge_code(b: Binarizer) -> EdgeCode | None:
    """The :class:`EdgeCode` of a fitted binarizer, or None for kinds without edges (WTA)."""
    if isinstance(b, ThresholdBinarizer):
        edges = b.thresholds_[:, None]
        codes = np.array([[0], [1]], dtype=np.uint8)
    elif isinstance(b, _EdgeBinarizer):
        edges = b.edges_
        codes = _encode_levels(np.arange(b.n_levels, dtype=np.uint8)[:, None], b.n_bits, b.code)
    else:
        return None
    k = codes.shape[1]
    flips = tuple(
        sum(1 << int(j) for j in np.nonzero(codes[1:, bit] != codes[:-1, bit])[0])
        for bit in range(k)
    )
    # For integer inputs (uint8), x >= e  <=>  x >= ceil(e).
    int_edges = np.clip(np.ceil(edges.astype(np.float64)), 0, 256).astype(np.int64)
    c0 = sum(int(codes[0, bit]) << bit for bit in range(k))
    return EdgeCode(np.asarray(edges, dtype=np.float32), int_edges, flips, c0, k, codes)


BINARIZERS: dict[str, type[Binarizer]] = {
    cls.kind: cls
    for cls in (ThresholdBinarizer, QuantileBinarizer, LloydMaxBinarizer, WTAHashBinarizer)
}


def binarizer_from_spec(spec: str) -> Binarizer:
    """Build an unfitted binarizer from a short text spec, as the CLI takes it.

    ``threshold[:T]``, ``quantile:K[:CODE]``, ``lloyd-max:K[:CODE]``,
    ``wta:N_HASHES:WINDOW[:CODE]``. Example: ``quantile:2:thermometer``.
    """
    kind, *args = spec.split(":")
    try:
        if kind == "threshold":
            return ThresholdBinarizer(float(args[0]) if args else 0.0)
        if kind in ("quantile", "lloyd-max"):
            klass = QuantileBinarizer if kind == "quantile" else LloydMaxBinarizer
            b = klass(int(args[0]) if args else 2, args[1] if len(args) > 1 else "thermometer")
            b._check_params()
            return b
        if kind == "wta":
            code = args[2] if len(args) > 2 else "onehot"
            return WTAHashBinarizer(int(args[0]), int(args[1]), code)
    except (ValueError, IndexError):
        pass
    else:
        raise InputError(
            f"unknown binarizer {kind!r}; choose threshold, quantile, lloyd-max or wta"
        )
    raise InputError(
        f"cannot read binarizer spec {spec!r}; examples: threshold:0.5, quantile:2:thermometer, "
        "lloyd-max:2:binary, wta:256:4"
    )
