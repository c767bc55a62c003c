"""Spectra of speech and their bits: STFT, frame features, Ideal Binary Masks, resynthesis.

The STFT is ``scipy.signal.ShortTimeFFT``'s (computed faster in float32, see :func:`stft`): a
periodic Hann window of ``frame`` samples moved
by ``hop`` samples (defaults 512 and 128 at 8 kHz: 64 ms frames, 16 ms hop, 257 bins of
15.6 Hz), frame ``p`` centred on sample ``p * hop``, no scaling of the FFT (``scale_to=None``:
a bin is the plain sum of window * signal * exp(-j...)). The inverse uses scipy's canonical
dual window, so ``istft(stft(x)) == x`` up to float rounding (75% overlap of a Hann window is
invertible). Zeros are padded on both ends, so every sample is covered by full frames.

Frame features are magnitudes ``|X|`` (optionally relative to each bin's noise floor, see
``floor_percentile``) of ``2 * context + 1`` neighbouring frames side by side (frames beyond
either end repeat the first or last frame), one row per frame: the raw input of a denoising
network, binarized by its own fitted ``QuantileBinarizer``.

An Ideal Binary Mask keeps a bin where speech dominates noise:
``20 * log10(|S| / |N|) > lc_db`` (``lc_db = 0``: ``|S| > |N|``). A network's estimate may be
smoothed by a majority vote over neighbouring frames (:func:`majority_over_frames`).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import ShortTimeFFT, get_window

from bitnn.errors import InputError
from bitnn.io import MAX_MAJORITY_FRAMES, majority_frames_value


@dataclass(frozen=True)
class SpectrogramConfig:
    """How audio becomes frames of spectra (stored in a denoising model's metadata)."""

    rate: int = 8000  # samples per second
    frame: int = 512  # window length = FFT length
    hop: int = 128
    window: str = "hann"  # periodic (FFT-ready) window, any scipy.signal.get_window name
    context: int = 0  # frames on each side that the network also sees
    # 0: magnitudes as they are (at the fixed input level). P > 0: each bin's magnitudes are
    # divided by that bin's P-th percentile over the recording, a noise floor estimate, so
    # the bits say how far a bin stands above its floor (a local SNR), whatever the noise.
    floor_percentile: float = 0.0

    def __post_init__(self) -> None:
        ints = (self.rate, self.frame, self.hop, self.context)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
            raise InputError(f"rate, frame, hop and context must be whole numbers, got {ints}")
        if self.rate < 1000 or self.frame < 16 or not 0 < self.hop <= self.frame // 2:
            raise InputError(
                "spectrogram needs rate >= 1000 Hz, frame >= 16 and 0 < hop <= frame / 2"
            )
        if self.frame % 2 or self.frame % self.hop:
            raise InputError(
                f"frame ({self.frame}) must be even and a whole multiple of hop ({self.hop})"
            )
        if not 0 <= self.context <= 8:
            raise InputError(f"context must be 0..8 frames, got {self.context}")
        try:
            get_window(self.window, self.frame, fftbins=True)
        except (ValueError, TypeError) as exc:
            raise InputError(f"unknown window {self.window!r} ({exc})") from None
        if not 0 <= self.floor_percentile < 100:
            raise InputError(f"floor_percentile must be in [0, 100), got {self.floor_percentile}")

    @property
    def n_bins(self) -> int:
        return self.frame // 2 + 1

    @property
    def n_frames_seen(self) -> int:
        return 2 * self.context + 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SpectrogramConfig:
        if not isinstance(d, dict):
            raise InputError(f"spectrogram settings must be a mapping, got {d!r}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise InputError(f"invalid spectrogram settings {d!r}: {exc}") from None

    def transform(self) -> ShortTimeFFT:
        win = get_window(self.window, self.frame, fftbins=True)
        return ShortTimeFFT(win, self.hop, self.rate, fft_mode="onesided", scale_to=None)


def stft(x: np.ndarray, config: SpectrogramConfig, centred: bool = True) -> np.ndarray:
    """Mono signal ``(n,)`` -> complex64 spectrum ``(n_frames, n_bins)``, one row per frame:
    exactly ``ShortTimeFFT.stft`` (frames ``p_min .. p_max(n) - 1``, time origin of each FFT
    at its window's centre), computed in float32 by framing the signal and
    ``scipy.fft.rfft`` (ShortTimeFFT itself works in float64 and takes several times longer).

    ``centred=False`` leaves each FFT's time origin at its frame's first sample: bin k is
    multiplied by ``(-1)**k``, so the magnitudes are the same, and ``istft(..., centred=False)``
    inverts it (one pass over the spectrum less each way)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise InputError(f"stft takes a mono signal (1-D), got shape {x.shape}")
    if x.size == 0:
        raise InputError("cannot take the spectrum of an empty signal")
    g = _geometry(config, x.size)
    padded = np.zeros(g.n_frames * config.hop + config.frame, np.float32)
    padded[g.offset : g.offset + x.size] = x
    frames = sliding_window_view(padded, config.frame)[:: config.hop][: g.n_frames]
    X = scipy.fft.rfft(frames * g.window, axis=1, overwrite_x=True)
    if centred:
        X *= g.centre_phase
    return X.astype(np.complex64, copy=False)


def istft(
    X: np.ndarray, config: SpectrogramConfig, n_samples: int, centred: bool = True
) -> np.ndarray:
    """Inverse of :func:`stft` (``ShortTimeFFT.istft`` with its canonical dual window):
    ``(n_frames, n_bins)`` -> float32 signal of ``n_samples``, by overlap-add; ``centred`` as
    the spectrum was computed."""
    X = np.asarray(X)
    g = _geometry(config, n_samples)
    if X.ndim != 2 or X.shape != (g.n_frames, config.n_bins):
        raise InputError(
            f"a spectrum of {n_samples} samples has shape ({g.n_frames}, {config.n_bins}), "
            f"got {X.shape}"
        )
    if centred:
        X = X * g.centre_phase
    frames = scipy.fft.irfft(X, n=config.frame, axis=1, overwrite_x=centred)
    frames = frames.astype(np.float32, copy=False)
    frames *= g.dual_window
    hop, r = config.hop, config.frame // config.hop
    blocks = np.zeros((g.n_frames + r - 1, hop), np.float32)
    for j in range(r):  # the j-th hop-long piece of frame p lands in block p + j
        blocks[j : j + g.n_frames] += frames[:, j * hop : (j + 1) * hop]
    return np.ascontiguousarray(blocks.reshape(-1)[g.offset : g.offset + n_samples])


@dataclass(frozen=True)
class _Geometry:
    n_frames: int
    offset: int  # where sample 0 of the signal sits in the padded frame grid
    window: np.ndarray
    dual_window: np.ndarray
    centre_phase: np.ndarray  # (-1)**k: each FFT's time origin at its window's centre


def _geometry(config: SpectrogramConfig, n_samples: int) -> _Geometry:
    t = _transform(config)
    # Signals shorter than half a frame get the frames of one that long (zeros beyond).
    n_frames = t.p_max(max(n_samples, config.frame // 2)) - t.p_min
    offset = t.m_num_mid - t.p_min * config.hop  # frame p_min starts offset samples early
    return _Geometry(n_frames, offset, *_windows(config))


@functools.cache
def _transform(config: SpectrogramConfig) -> ShortTimeFFT:
    return config.transform()


@functools.cache
def _windows(config: SpectrogramConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = _transform(config)
    phase = np.where(np.arange(config.n_bins) % 2, -1.0, 1.0).astype(np.float32)
    return t.win.astype(np.float32), t.dual_win.astype(np.float32), phase


FLOOR_EPS = 1e-3  # added to floors: a digitally silent bin does not divide by zero
# Floors are estimated per block of this many frames (96 s at the default hop), so they follow
# a noise that changes over a long recording; a last block under half this size joins the
# one before. Every training mixture of the released model is shorter than one block.
FLOOR_BLOCK_FRAMES = 6000


def relative_to_floor(magnitude: np.ndarray, percentile: float) -> np.ndarray:
    """Each bin's magnitudes divided by that bin's ``percentile``-th value (plus
    ``FLOOR_EPS``) over the frames of its block (see ``FLOOR_BLOCK_FRAMES``)."""
    n = magnitude.shape[0]
    bounds = [*range(0, n, FLOOR_BLOCK_FRAMES), n]
    if len(bounds) > 2 and n - bounds[-2] < FLOOR_BLOCK_FRAMES // 2:
        del bounds[-2]
    out = np.empty_like(magnitude)
    for a, b in itertools.pairwise(bounds):
        floor = column_percentile(magnitude[a:b], percentile).astype(np.float32)
        out[a:b] = magnitude[a:b] / (floor + FLOOR_EPS)
    return out


def column_percentile(values: np.ndarray, percentile: float) -> np.ndarray:
    """``np.percentile(values, percentile, axis=0)`` (linear interpolation) of a finite 2-D
    array, bit for bit, 5x faster: numpy partitions for four ranks at once (its NaN checks
    included), which is its slow path; here one single-rank partition per column and a min.
    The interpolation is numpy's own (``_lerp``: float32 arithmetic for float32 values)."""
    n = values.shape[0]
    virtual = (n - 1) * (np.float64(percentile) / 100)  # as numpy: (n - 1) * q, in float64
    if virtual >= n - 1:
        return values.max(axis=0) if n else np.percentile(values, percentile, axis=0)
    lower = int(np.floor(virtual))
    columns = np.ascontiguousarray(values.T)  # partitions along contiguous rows
    columns.partition(lower, axis=1)
    a = columns[:, lower]
    b = columns[:, lower + 1 :].min(axis=1)  # the next order statistic
    gamma = float(virtual - lower)
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma


def _repeat_ends(frames: np.ndarray, n: int) -> np.ndarray:
    """``frames`` with its first row repeated ``n`` times before it and its last after it."""
    return np.concatenate([np.repeat(frames[:1], n, 0), frames, np.repeat(frames[-1:], n, 0)])


def frame_features(magnitude: np.ndarray, context: int) -> np.ndarray:
    """``(n_frames, n_bins)`` magnitudes -> ``(n_frames, (2 * context + 1) * n_bins)``: frame
    ``t - context`` first, ``t + context`` last; the ends repeat the first and last frame.

    With context, a read-only view: row t is the ``2 * context + 1`` frames that start at
    frame t of the padded magnitudes, one ``n_bins`` stride after row t - 1, so the rows
    overlap in memory and are not copied (the compiled binarizer reads them in place)."""
    m = np.asarray(magnitude, dtype=np.float32)
    if context == 0:
        return m
    padded = _repeat_ends(m, context)
    n, n_bins = m.shape
    window = (2 * context + 1) * n_bins
    if n == 0:
        return np.empty((0, window), np.float32)
    return sliding_window_view(padded.reshape(-1), window)[::n_bins][:n]


def ideal_binary_mask(speech: np.ndarray, noise: np.ndarray, lc_db: float = 0.0) -> np.ndarray:
    """uint8 mask: 1 where ``20 log10(|S| / |N|) > lc_db`` (spectra of the same shape)."""
    s, n = np.abs(speech).astype(np.float64), np.abs(noise).astype(np.float64)
    if s.shape != n.shape:
        raise InputError(f"speech {s.shape} and noise {n.shape} spectra must match")
    return (s > n * 10.0 ** (lc_db / 20.0)).astype(np.uint8)


def mask_error_weights(speech: np.ndarray, noise: np.ndarray, power: float) -> np.ndarray:
    """float32 per-bin loss weights ``| |S|^2 - |N|^2 | ** power``, divided by their mean over
    the recording (all ones where that is 0). A mask bit of 1 lets the noise N through, a 0
    drops the speech S, so a wrong bit adds ``| |S|^2 - |N|^2 |`` to the error energy that SDR
    counts; ``power`` < 1 softens the weights' spread. A recording's weights add up to its
    number of bins, as without weights."""
    s, n = np.abs(speech).astype(np.float64), np.abs(noise).astype(np.float64)
    if s.shape != n.shape:
        raise InputError(f"speech {s.shape} and noise {n.shape} spectra must match")
    if not (math.isfinite(power) and power > 0):
        raise InputError(f"the loss weights' power must be a positive number, not {power!r}")
    d = np.abs(s * s - n * n)
    peak = d.max() if d.size else 0.0
    if not peak > 0:
        return np.ones_like(d, dtype=np.float32)
    w = (d / peak) ** power  # in [0, 1], the peak 1: no overflow, and the mean is > 0
    return (w / w.mean()).astype(np.float32)


def check_majority_frames(frames: Any) -> int:
    """``frames`` as an int when it is an odd whole number (numpy integers too, not bools)
    from 1 to ``MAX_MAJORITY_FRAMES`` (:func:`bitnn.io.majority_frames_value`)."""
    n = majority_frames_value(frames)
    if n is None:
        raise InputError(
            f"a majority vote over frames takes an odd number of frames from 1 (no vote) to "
            f"{MAX_MAJORITY_FRAMES}, not {frames!r}"
        )
    return n


def majority_over_frames(mask: np.ndarray, frames: int) -> np.ndarray:
    """uint8 ``(n_frames, n_bins)`` mask whose bit ``(t, k)`` is the majority of bin k's bits
    in frames ``t - frames // 2 .. t + frames // 2`` (the first and last frame repeated beyond
    either end): bit logic that drops a bin's 1 set for a single frame (a burst of noise let
    through) and fills a single-frame 0 inside speech. ``frames`` is odd; 1 leaves the mask
    as it is."""
    check_majority_frames(frames)
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"a mask is (frames, bins), got shape {m.shape}")
    m = (m != 0).view(np.uint8)
    half, n = frames // 2, m.shape[0]
    if half == 0 or n == 0:
        return m.copy()
    padded = _repeat_ends(m, half)
    votes = padded[:n].copy()
    for i in range(1, frames):
        votes += padded[i : i + n]
    return (votes > half).view(np.uint8)


def apply_mask(mixture: np.ndarray, mask: np.ndarray, in_place: bool = False) -> np.ndarray:
    """The mixture's spectrum (magnitude and phase) where the mask is 1, zero elsewhere, as
    complex64; ``in_place=True`` zeroes a complex64 ``mixture`` itself and returns it."""
    if in_place:
        if mixture.dtype != np.complex64:
            raise InputError(f"only a complex64 spectrum is masked in place, not {mixture.dtype}")
        np.copyto(mixture, 0, where=np.asarray(mask) == 0)
        return mixture
    return np.where(np.asarray(mask, dtype=bool), mixture, np.complex64(0)).astype(
        np.complex64, copy=False
    )
