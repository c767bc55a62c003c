"""The deployed, all-bit network.

A :class:`BitLayer` maps ``n_in`` input bits to ``n_out`` output bits. For unit ``u``::

    dot[u]   = sum over present connections i of x[i] * w[u, i]      (x, w in {-1, +1})
             = 2 * popcount(XNOR(x, w[u]) AND mask[u]) - popcount(mask[u])
    score[u] = dot[u] - threshold[u]
    bit[u]   = 1 (+1) if score[u] >= 0 else 0 (-1)          # sign(0) = +1

``threshold`` is an integer per unit. The paper's one-bit bias ``b`` in {-1, +1} is the special
case ``threshold = -b`` (``bias_kind="bias"``, stored as one bit per unit); a normalisation
folded at conversion gives any integer (``bias_kind="threshold"``); ``bias_kind="none"`` means
threshold 0. A missing ``mask`` means every connection is present.

A :class:`BitNetwork` chains layers. Its last layer either returns integer scores
(``output="scores"``, classification: the predicted class is the argmax, ties going to the
lowest index) or bits (``output="bits"``, e.g. a binary mask).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bitnn.bits import WORD_BITS, WORD_DTYPE, n_words, pack_bits, unpack_bits
from bitnn.errors import InputError

if TYPE_CHECKING:
    from bitnn.binarize import Binarizer

BIAS_KINDS = ("bias", "threshold", "none")
OUTPUT_KINDS = ("scores", "bits")


def valid_bits_mask(n_bits: int) -> np.ndarray:
    """One row of words whose first ``n_bits`` bits are 1 and padding bits are 0."""
    return pack_bits(np.ones(n_bits, dtype=np.uint8))


@dataclass(eq=False)
class BitLayer:
    """One fully connected bit layer (see the module docstring for the arithmetic)."""

    weight: np.ndarray  # (n_out, n_words(n_in)) uint64, bit 1 <=> weight +1
    n_in: int
    threshold: np.ndarray  # (n_out,) int32: unit fires iff dot >= threshold (int32's full range)
    mask: np.ndarray | None = None  # (n_out, n_words(n_in)) uint64, bit 1 <=> present
    bias_kind: str = "threshold"
    _dense_mask: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.weight = np.ascontiguousarray(self.weight, dtype=WORD_DTYPE)
        self.threshold = _int32_thresholds(self.threshold)
        if self.weight.ndim != 2 or self.weight.shape[1] != n_words(self.n_in):
            raise InputError(
                f"weight must have shape (n_out, {n_words(self.n_in)}) for {self.n_in} inputs, "
                f"got {self.weight.shape}"
            )
        if self.n_in < 1 or self.weight.shape[0] < 1:
            raise InputError("a layer needs at least one input and one output")
        if self.threshold.shape != (self.n_out,):
            raise InputError(f"threshold must have shape ({self.n_out},)")
        if self.bias_kind not in BIAS_KINDS:
            raise InputError(f"bias_kind must be one of {BIAS_KINDS}, got {self.bias_kind!r}")
        valid = valid_bits_mask(self.n_in)
        pad = ~valid[-1]  # padding bits live in the last word only
        if _any_and(self.weight[:, -1], pad):
            raise InputError("weight padding bits (beyond n_in) must be 0")
        if self.mask is not None:
            self.mask = np.ascontiguousarray(self.mask, dtype=WORD_DTYPE)
            if self.mask.shape != self.weight.shape:
                raise InputError("mask must have the same shape as weight")
            if _any_and(self.mask[:, -1], pad):
                raise InputError("mask padding bits (beyond n_in) must be 0")
            if _any_and(self.weight, self.mask, invert=True):
                raise InputError("absent connections (mask bit 0) must have weight bit 0")
        if self.bias_kind == "bias" and not np.all(np.abs(self.threshold) == 1):
            raise InputError("a one-bit bias layer needs thresholds in {-1, +1}")
        if self.bias_kind == "none" and np.any(self.threshold != 0):
            raise InputError("a layer without bias needs thresholds of 0")
        self._dense_mask = np.broadcast_to(valid, self.weight.shape)

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    @property
    def effective_mask(self) -> np.ndarray:
        """The mask with absent rows filled in: all valid bits present when there is no mask."""
        return self._dense_mask if self.mask is None else self.mask

    @property
    def n_present(self) -> np.ndarray:
        """Present connections per unit (int64)."""
        if self.mask is None:
            return np.full(self.n_out, self.n_in, dtype=np.int64)
        return np.bitwise_count(self.mask).sum(axis=1, dtype=np.int64)

    @property
    def popcount_limit(self) -> np.ndarray:
        """Per unit: the unit fires iff popcount((x XOR w) AND mask) <= this (int64).

        From dot = n_present - 2 * popcount(XOR & mask) >= threshold. Fast engines use it.
        Computed in int64 (``n_present - threshold`` overflows int32 for thresholds near
        -2**31) and clipped to ``[-1, n_present]``: the count lies in ``[0, n_present]``, so
        -1 still means "never fires" and ``n_present`` "always fires", and every limit fits
        the int32 of generated C whatever the threshold.
        """
        n_present = self.n_present
        limit = np.floor_divide(n_present - self.threshold.astype(np.int64), 2)
        return np.clip(limit, -1, n_present)

    @classmethod
    def from_values(
        cls,
        weights: np.ndarray,
        threshold: np.ndarray | None = None,
        bias: np.ndarray | None = None,
    ) -> BitLayer:
        """Build a layer from a ternary weight matrix (+1, -1, or 0 for absent connections).

        Give either ``bias`` (+1/-1 per unit, the paper's bias bit), ``threshold`` (integers),
        or neither (threshold 0).
        """
        w = np.asarray(weights)
        if w.ndim != 2 or not np.all(np.isin(w, (-1, 0, 1))):
            raise InputError("weights must be a 2-D array of -1, 0 and +1")
        if bias is not None and threshold is not None:
            raise InputError("give either a bias or a threshold, not both")
        mask = pack_bits(w != 0) if np.any(w == 0) else None
        if bias is not None:
            b = np.asarray(bias)
            if not np.all(np.abs(b) == 1):
                raise InputError("bias values must be +1 or -1")
            t, kind = -b, "bias"
        elif threshold is not None:
            t, kind = np.asarray(threshold), "threshold"
        else:
            t, kind = np.zeros(w.shape[0], dtype=np.int32), "none"
        return cls(pack_bits(w > 0), w.shape[1], t, mask, kind)

    def weight_values(self) -> np.ndarray:
        """The ternary weight matrix (int8: +1, -1, 0 for absent)."""
        w = unpack_bits(self.weight, self.n_in).astype(np.int8) * 2 - 1
        if self.mask is not None:
            w[unpack_bits(self.mask, self.n_in) == 0] = 0
        return w

    def parameter_bits(self) -> int:
        """Bits this layer's parameters take in the model file."""
        bits = self.n_in * self.n_out * (1 if self.mask is None else 2)
        if self.bias_kind == "bias":
            bits += self.n_out
        elif self.bias_kind == "threshold":
            bits += self.n_out * threshold_dtype(self.threshold).itemsize * 8
        return bits

    def binary_ops(self) -> int:
        """Bit operations per input vector: XNOR and popcount-add per connection (+AND)."""
        per_bit = 2 if self.mask is None else 3
        return per_bit * self.n_in * self.n_out


def _int32_thresholds(threshold: Any) -> np.ndarray:
    """Thresholds as int32, refusing values int32 cannot hold (never wrapping them)."""
    t = np.asarray(threshold)
    if t.dtype.kind not in "iub":
        if t.dtype.kind != "f" or not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
            raise InputError(f"thresholds must be integers, got dtype {t.dtype}")
    info = np.iinfo(np.int32)
    if t.size and (t.min() < info.min or t.max() > info.max):
        raise InputError(
            f"thresholds must lie in [{info.min}, {info.max}] (int32), got {t.min()}..{t.max()}"
        )
    return np.ascontiguousarray(t, dtype=np.int32)


def _any_and(a: np.ndarray, b: np.ndarray, invert: bool = False) -> bool:
    """``np.any(a & b)`` (``a & ~b`` with ``invert``) in blocks of rows, so that checking a
    large layer needs no temporary of its size."""
    step = max(1, (1 << 20) // max(1, a[:1].size))
    for r in range(0, a.shape[0], step):
        other = b[r : r + step] if b.ndim == a.ndim and b.shape[0] == a.shape[0] else b
        if np.any(a[r : r + step] & (~other if invert else other)):
            return True
    return False


def threshold_dtype(threshold: np.ndarray) -> np.dtype:
    """Smallest signed dtype (int8/16/32) that holds every threshold."""
    for dt in (np.int8, np.int16):
        info = np.iinfo(dt)
        if threshold.size == 0 or (threshold.min() >= info.min and threshold.max() <= info.max):
            return np.dtype(dt)
    return np.dtype(np.int32)


class BitNetwork:
    """A chain of :class:`BitLayer` with an optional fitted input binarizer."""

    def __init__(
        self,
        layers: list[BitLayer],
        binarizer: Binarizer | None = None,
        output: str = "scores",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not layers:
            raise InputError("a network needs at least one layer")
        for i, (a, b) in enumerate(itertools.pairwise(layers)):
            if a.n_out != b.n_in:
                raise InputError(
                    f"layer {i} has {a.n_out} outputs but layer {i + 1} expects {b.n_in} inputs"
                )
        if output not in OUTPUT_KINDS:
            raise InputError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        if binarizer is not None and binarizer.n_bits_out_ != layers[0].n_in:
            raise InputError(
                f"the binarizer makes {binarizer.n_bits_out_} bits but the first layer "
                f"expects {layers[0].n_in}"
            )
        self.layers = list(layers)
        self.binarizer = binarizer
        self.output = output
        self.metadata = dict(metadata or {})

    @property
    def n_inputs(self) -> int:
        """Input bits of the first layer."""
        return self.layers[0].n_in

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out

    def __repr__(self) -> str:
        widths = "-".join(str(w) for w in [self.n_inputs] + [ly.n_out for ly in self.layers])
        return f"BitNetwork({widths}, output={self.output!r})"

    # ---- forward on packed bits --------------------------------------------------------------

    def check_packed(self, x: np.ndarray) -> np.ndarray:
        """Validate a packed input batch, returning it C-contiguous as uint64."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != n_words(self.n_inputs):
            raise InputError(
                f"packed input must have shape (batch, {n_words(self.n_inputs)}) for "
                f"{self.n_inputs} input bits, got {x.shape}"
            )
        if x.dtype != WORD_DTYPE:
            if x.dtype != np.uint64:
                raise InputError(f"packed input must be uint64 words, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=WORD_DTYPE)
        pad = self.n_inputs % WORD_BITS
        if pad and np.any(x[:, -1] >> np.uint64(pad)):
            raise InputError("padding bits of packed input (beyond n_inputs) must be 0")
        return x

    def forward_packed(self, x: np.ndarray, engine: str | None = None) -> np.ndarray:
        """Packed input bits -> int64 scores ``(batch, n_out)`` or packed output bits."""
        from bitnn.engine import get_engine

        eng = get_engine(engine)
        h = self.check_packed(x)
        for layer in self.layers[:-1]:
            h = eng.layer_bits(h, layer)
        last = self.layers[-1]
        if self.output == "scores":
            return eng.layer_scores(h, last)
        return eng.layer_bits(h, last)

    def hidden_packed(self, x: np.ndarray, engine: str | None = None) -> list[np.ndarray]:
        """Packed output bits of every layer (the last one thresholded too)."""
        from bitnn.engine import get_engine

        eng = get_engine(engine)
        h = self.check_packed(x)
        out = []
        for layer in self.layers:
            h = eng.layer_bits(h, layer)
            out.append(h)
        return out

    # ---- forward on raw inputs ---------------------------------------------------------------

    def binarize(self, X: np.ndarray, engine: str | None = None) -> np.ndarray:
        """Raw inputs -> packed input bits, with the network's fitted binarizer."""
        from bitnn.engine import get_engine

        if self.binarizer is None:
            raise InputError(
                "this network has no input binarizer: pass packed bits to forward_packed"
            )
        return get_engine(engine).binarize(self.binarizer, X)

    def scores(self, X: np.ndarray, engine: str | None = None) -> np.ndarray:
        """Raw inputs -> int64 scores of the last layer (``output="scores"`` networks)."""
        if self.output != "scores":
            raise InputError("this network outputs bits; use predict() to get them")
        return self.forward_packed(self.binarize(X, engine), engine)

    def predict(self, X: np.ndarray, engine: str | None = None) -> np.ndarray:
        """Raw inputs -> class indices (argmax, lowest index on ties) or output bits (0/1)."""
        out = self.forward_packed(self.binarize(X, engine), engine)
        if self.output == "scores":
            return np.argmax(out, axis=1)
        return unpack_bits(out, self.n_outputs)

    # ---- sizes -------------------------------------------------------------------------------

    def parameter_bits(self) -> int:
        return sum(layer.parameter_bits() for layer in self.layers)

    def float32_bytes(self) -> int:
        """Bytes a float32 network of the same shape (weights + biases) takes."""
        return sum(4 * (ly.n_in * ly.n_out + ly.n_out) for ly in self.layers)

    def binary_ops(self) -> int:
        return sum(layer.binary_ops() for layer in self.layers)
