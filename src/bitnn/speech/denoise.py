"""Bitwise denoising: a :class:`BitNetwork` that maps bits of noisy spectra to mask bits.

The network is an ordinary ``output="bits"`` BitNetwork (same engines, same model file) whose
metadata key ``"speech"`` holds the :class:`SpectrogramConfig` and the input level. For each
STFT frame its raw input is the magnitudes of ``2 * context + 1`` frames (see
:func:`frame_features`), binarized by the network's own fitted quantile binarizer; its output
is one bit per frequency bin, the estimated Ideal Binary Mask, optionally smoothed by a
majority vote of each bin's bits over ``mask_majority_frames`` neighbouring frames (metadata;
1, no vote, in files made before it existed). The masked mixture spectrum, with the mixture's
phase, is inverted to the denoised signal.

Level: before the spectrum is binarized the signal is scaled to an RMS of ``level_rms``
(training mixtures the same way), so a recording's loudness does not move its bits. The mask
is applied to the unscaled mixture, so the output keeps the input's level.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitnn.errors import InputError
from bitnn.network import BitNetwork
from bitnn.progress import ProgressBar
from bitnn.speech.mixtures import power
from bitnn.speech.spectra import (
    SpectrogramConfig,
    apply_mask,
    check_majority_frames,
    frame_features,
    ideal_binary_mask,
    istft,
    majority_over_frames,
    mask_error_weights,
    relative_to_floor,
    stft,
)

SPEECH_KEY = "speech"
BLOCK_FRAMES = 8192  # frames per engine call when progress is shown (about 2 min at 8 kHz)
DEFAULT_LEVEL_RMS = 0.05


def level_gain(x: np.ndarray, level_rms: float) -> float:
    """The factor that brings ``x`` to RMS ``level_rms`` (1 for a silent signal)."""
    rms = math.sqrt(power(x))
    return 1.0 if rms == 0.0 else level_rms / rms


def mixture_features(
    x: np.ndarray, config: SpectrogramConfig, level_rms: float, centred: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(spectrum of x, raw network input)``: the magnitudes of x brought to the fixed level
    (the STFT is linear: one transform serves both). ``centred`` as for :func:`stft`."""
    X = stft(x, config, centred)
    magnitude = np.abs(X)
    magnitude *= np.float32(level_gain(x, level_rms))
    if config.floor_percentile:
        magnitude = relative_to_floor(magnitude, config.floor_percentile)
    return X, frame_features(magnitude, config.context)


def training_examples(
    mixtures: Iterable[Any],
    config: SpectrogramConfig,
    level_rms: float,
    lc_db: float = 0.0,
    loss_weights: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Frames of many :class:`~bitnn.speech.mixtures.Mixture` -> ``(features, IBM bits, loss
    weights)``: the weights (float16, :func:`mask_error_weights` at ``loss_weights``) only
    where ``loss_weights`` > 0, else None."""
    xs, ys, ws = [], [], []
    for m in mixtures:
        _, feats = mixture_features(m.mixture, config, level_rms)
        xs.append(feats)
        S, N = stft(m.speech, config), stft(m.noise, config)
        ys.append(ideal_binary_mask(S, N, lc_db))
        if loss_weights:
            w = mask_error_weights(S, N, loss_weights)  # mean 1, so in float16's range but
            # for energy in a few bins of a long recording: capped there, never infinite
            ws.append(np.minimum(w, np.finfo(np.float16).max).astype(np.float16))
    if not xs:
        raise InputError("no mixtures to learn from")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws) if ws else None


@dataclass
class Denoiser:
    """Runs a denoising BitNetwork on signals at its rate. ``mask_majority_frames`` (odd)
    replaces the model's own majority vote over frames (1: the network's bits as they are)."""

    network: BitNetwork
    engine: str | None = None
    mask_majority_frames: int | None = None

    def __post_init__(self) -> None:
        meta = self.network.metadata.get(SPEECH_KEY)
        if self.network.output != "bits" or not isinstance(meta, dict):
            raise InputError(
                "this model is not a denoiser (it has no speech settings and bit outputs); "
                "train one with `bitnn train-denoiser`"
            )
        try:
            self.config = SpectrogramConfig.from_json(meta["spectrogram"])
            self.level_rms = float(meta["level_rms"])
        except (KeyError, TypeError, ValueError):
            raise InputError(
                "the model's speech settings are incomplete; retrain it or download it again"
            ) from None
        if not (np.isfinite(self.level_rms) and self.level_rms > 0):
            raise InputError("the model's input level must be a positive number; retrain it")
        if self.mask_majority_frames is None:
            try:
                self.mask_majority_frames = check_majority_frames(
                    meta.get("mask_majority_frames", 1)
                )
            except InputError as exc:
                raise InputError(f"the model's speech settings: {exc}; retrain it") from None
        else:
            self.mask_majority_frames = check_majority_frames(self.mask_majority_frames)
        n_in = self.network.binarizer.n_features_in_ if self.network.binarizer else None
        if self.network.n_outputs != self.config.n_bins or n_in != (
            self.config.n_bins * self.config.n_frames_seen
        ):
            raise InputError(
                "the model's layer sizes do not match its spectrogram settings; the file is "
                "inconsistent: retrain or re-download it"
            )

    @property
    def rate(self) -> int:
        return self.config.rate

    def mask(
        self, x: np.ndarray, progress: ProgressBar | None = None, centred: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(mixture spectrum, mask bits)``, both ``(n_frames, n_bins)``: the network's bits
        after the majority vote over frames (:meth:`smooth`); ``centred`` as for
        :func:`stft`."""
        X, feats = mixture_features(x, self.config, self.level_rms, centred)
        if progress is None:
            return X, self.smooth(self.network.predict(feats, self.engine))
        progress.total = max(1, feats.shape[0])
        masks = []
        for start in range(0, feats.shape[0], BLOCK_FRAMES):
            masks.append(self.network.predict(feats[start : start + BLOCK_FRAMES], self.engine))
            progress.update(min(start + BLOCK_FRAMES, feats.shape[0]))
        progress.close()
        return X, self.smooth(np.concatenate(masks))

    def smooth(self, mask: np.ndarray) -> np.ndarray:
        """A mask of this model's network (or of its real-valued twin) after the model's
        majority vote over frames."""
        if self.mask_majority_frames == 1:
            return mask
        return majority_over_frames(mask, self.mask_majority_frames)

    def __call__(self, x: np.ndarray, progress: ProgressBar | None = None) -> np.ndarray:
        """Denoise a mono float signal at :attr:`rate`; same length out. ``progress`` shows
        the frames done (for long recordings)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 1 or x.size == 0:
            raise InputError(f"denoising takes a non-empty mono signal, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise InputError("the signal holds NaN or infinite samples; repair or drop the file")
        if not np.any(x):
            warnings.warn("the input is silent; the output is silent too", stacklevel=2)
            return x.copy()
        # uncentred both ways and masked in place: the same samples, three passes fewer
        X, m = self.mask(x, progress, centred=False)
        return istft(apply_mask(X, m, in_place=True), self.config, x.size, centred=False)


def speech_metadata(
    config: SpectrogramConfig, level_rms: float, mask_majority_frames: int = 1, **extra: Any
) -> dict[str, Any]:
    """The metadata entry a denoising network carries; ``mask_majority_frames`` only when it
    votes (above 1), so that files without a vote stay readable by bitnn before the key."""
    frames = check_majority_frames(mask_majority_frames)
    vote = {"mask_majority_frames": frames} if frames > 1 else {}
    return {SPEECH_KEY: {"spectrogram": config.to_json(), "level_rms": level_rms, **vote, **extra}}
