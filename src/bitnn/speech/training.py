"""Training a denoiser (needs PyTorch): mixtures -> frames -> the two-round trainer.

The network learns one output bit per frequency bin with a per-bit loss in both rounds:
binary cross-entropy on the last layer's scaled pre-activation taken as a logit
(``sigmoid(z)`` is the probability that the bin's IBM bit is 1), each bit's term weighted, with
``loss_weights`` > 0, by the error energy a wrong bit would cost there
(:func:`bitnn.speech.spectra.mask_error_weights`: loud bins count more than faint ones). In
round 2 that pre-activation comes from binarized weights, bias and hidden bits, so the
deployed bit is exactly ``z >= 0``; the gradient reaches the real-valued weights through the
surrogates of :mod:`bitnn.train.layers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnn.binarize import Binarizer
from bitnn.errors import InputError
from bitnn.network import BitNetwork
from bitnn.progress import log
from bitnn.speech.denoise import DEFAULT_LEVEL_RMS, speech_metadata, training_examples
from bitnn.speech.mixtures import AudioCache, MixtureSpec, draw_mixtures, iter_mixtures
from bitnn.speech.spectra import SpectrogramConfig, check_majority_frames
from bitnn.train.trainer import TrainConfig, train_network

# Frames, loss and mask per preset: the paper's network sees one frame of plain magnitudes,
# every bit weighs the same and its mask is used as it is; "best" sees three, each bin relative
# to its noise floor, weighs each bit by the square root of what a wrong bit costs, and keeps
# a mask bit where most of its bin's bits in 5 frames are set (chosen on held-out voices and
# held-out noises: docs/results/denoise-exploration.md).
PRESET_DENOISING: dict[str, dict[str, float | int]] = {
    "paper": {
        "context": 0, "floor_percentile": 0.0, "loss_weights": 0.0, "mask_majority_frames": 1
    },
    "best": {
        "context": 1, "floor_percentile": 50.0, "loss_weights": 0.5, "mask_majority_frames": 5
    },
}  # fmt: skip


@dataclass
class DenoisingData:
    """Mixtures to learn from, how they become frames, and the decoded recordings."""

    train: list[MixtureSpec]
    val: list[MixtureSpec]
    spectrogram: SpectrogramConfig
    audio: AudioCache
    loss_weights: float = 0.0  # power of the per-bit loss weights (0: every bit the same)


def parse_snrs(text: str) -> tuple[float, ...]:
    try:
        snrs = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"SNRs are numbers in dB separated by commas, got {text!r}") from None
    if not snrs or not all(np.isfinite(snrs)):
        raise InputError(f"give at least one finite SNR in dB, got {text!r}")
    return snrs


def denoising_data(
    speech: str | Path | None = None,
    noise: str | Path | None = None,
    *,
    timit: bool = False,
    n_mixtures: int | None = None,
    snrs_db: str | Sequence[float] = "-5,0,5",
    seed: int = 0,
    context: int | None = None,
    floor_percentile: float | None = None,
    preset: str | None = None,
    rate: int = 8000,
    loss_weights: float | None = None,
) -> DenoisingData:
    """Training and validation mixtures from speaker folders (or TIMIT) and noise folders;
    without folders, the protocol's training voices and noises (:mod:`bitnn.speech.protocol`).
    Validation mixtures: the same voices and noises, another seed (one per 20 training)."""
    from bitnn.data.corpora import noise_folder, speaker_folders, timit_speakers
    from bitnn.speech import protocol

    if preset is not None and preset not in PRESET_DENOISING:
        raise InputError(f"unknown preset {preset!r}; choose one of {sorted(PRESET_DENOISING)}")
    defaults = PRESET_DENOISING[preset or "paper"]
    context = int(defaults["context"]) if context is None else context
    floor = defaults["floor_percentile"] if floor_percentile is None else floor_percentile
    weights = defaults["loss_weights"] if loss_weights is None else float(loss_weights)
    if not (np.isfinite(weights) and weights >= 0):
        raise InputError(
            f"the loss weights' power must be a number >= 0 (0: every bit the same; the best "
            f"preset uses 0.5), not {loss_weights!r}"
        )
    spectrogram = SpectrogramConfig(rate=rate, context=context, floor_percentile=floor)
    n = protocol.N_TRAIN if n_mixtures is None else n_mixtures
    if n < 1:
        raise InputError(f"train on at least one mixture, not {n}")
    snrs = parse_snrs(snrs_db) if isinstance(snrs_db, str) else tuple(snrs_db)
    if speech is None and timit:
        raise InputError("--timit describes the layout of --speech DIR; give the folder too")
    voices = (
        protocol.require_voices(protocol.TRAIN_VOICES)
        if speech is None
        else (timit_speakers(speech) if timit else speaker_folders(speech))
    )
    noises = (
        protocol.require_noise_types(protocol.TRAIN_NOISES)
        if noise is None
        else noise_folder(noise)
    )
    audio = AudioCache(rate)
    train = draw_mixtures(voices, noises, snrs, n, seed, audio)
    val = draw_mixtures(voices, noises, snrs, max(1, n // 20), seed + 1, audio)
    return DenoisingData(train, val, spectrogram, audio, weights)


def train_denoiser(
    data: DenoisingData,
    config: TrainConfig | None,
    binarizer: Binarizer | None,
    *,
    level_rms: float = DEFAULT_LEVEL_RMS,
    lc_db: float = 0.0,
    mask_majority_frames: int = 1,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None,
    threads: int | None = None,
) -> BitNetwork:
    """Train a denoising BitNetwork on the frames of ``data.train`` (IBM targets with the
    local SNR criterion ``lc_db``); ``data.val`` frames are measured after every epoch (bit
    accuracy); the model's denoiser then votes over ``mask_majority_frames`` frames of its
    mask (:class:`~bitnn.speech.denoise.Denoiser`). ``data_options`` (how the mixtures were
    drawn) go to the model's metadata and
    checkpoint, so that a resumed run can draw the same mixtures. With ``resume=True``,
    ``config`` and ``binarizer`` come from the checkpoint (pass None)."""
    spec = data.spectrogram
    check_majority_frames(mask_majority_frames)  # before the slow part
    X, Y, W = training_examples(
        iter_mixtures(data.train, data.audio, "training frames"), spec, level_rms, lc_db,
        data.loss_weights,
    )  # fmt: skip
    log(f"{len(data.train)} training mixtures: {X.shape[0]:,} frames of {X.shape[1]} magnitudes")
    X_val = Y_val = None
    if data.val:
        X_val, Y_val, _ = training_examples(
            iter_mixtures(data.val, data.audio), spec, level_rms, lc_db
        )
    meta = speech_metadata(
        spec, level_rms, mask_majority_frames, lc_db=lc_db, loss_weights=data.loss_weights,
        n_train_mixtures=len(data.train),
        data_options=data_options or {},
    )  # fmt: skip
    return train_network(
        X,
        Y,
        config,
        binarizer,
        X_val=X_val,
        y_val=Y_val,
        checkpoint_path=checkpoint_path,
        resume=resume,
        metadata={**meta, **(metadata or {})},
        threads=threads,
        bit_weights=W,
    )
