"""The denoising protocol on the offline corpora (fixed before any test result was seen).

Like the paper's (10 TIMIT speakers and 4 non-stationary noise types for training; 5 other
speakers and an unseen noise type for testing): speakers are disjoint between training and
test, and the test noises come from another source than the training noises.

- training voices (9): allison (English and Spanish prompts, one voice), menardi (Italian),
  ivr-ru (Russian), fillets-v (Dutch game dialogue), fsdd-george, -jackson, -lucas, -nicolas,
  -yweweler (English digits);
- test voices (4): carlo (Italian, male), june (Canadian French, female), fillets-m (Dutch),
  fsdd-theo (English digits);
- training noises (4 types of real ambience recordings): traffic, crowd, water, industry;
- test noises, never heard in training: pub (a pub's ambience) and applause;
- SNRs -5, 0, +5 dB; training mixtures drawn uniformly over voice, noise type and SNR.
"""

from __future__ import annotations

from pathlib import Path

from bitnn.data.corpora import require_noise_types, require_voices
from bitnn.speech.mixtures import AudioCache, MixtureSpec, grid_mixtures

TRAIN_VOICES = (
    "allison",
    "menardi",
    "ivr-ru",
    "fillets-v",
    "fsdd-george",
    "fsdd-jackson",
    "fsdd-lucas",
    "fsdd-nicolas",
    "fsdd-yweweler",
)
TEST_VOICES = ("carlo", "june", "fillets-m", "fsdd-theo")
TRAIN_NOISES = ("traffic", "crowd", "water", "industry")
TEST_NOISES = ("pub", "applause")
SNRS_DB = (-5.0, 0.0, 5.0)
N_TRAIN = 6000  # training mixtures (about 760,000 frames)
TEST_PER_CELL = 5  # test utterances per (voice, noise type, SNR)


def test_mixtures(
    audio: AudioCache, seed: int = 2, cache: Path | None = None
) -> dict[str, list[MixtureSpec]]:
    """``test``: unseen voices with the unseen noises at every SNR; ``test_seen_noise``:
    unseen voices with two training noise types (other stretches of them) at 0 dB."""
    voices = require_voices(TEST_VOICES, cache=cache)
    unseen = require_noise_types(TEST_NOISES, cache=cache)
    seen = require_noise_types(("traffic", "crowd"), cache=cache)
    return {
        "test": grid_mixtures(voices, unseen, SNRS_DB, TEST_PER_CELL, seed, audio),
        "test_seen_noise": grid_mixtures(voices, seen, (0.0,), TEST_PER_CELL, seed + 1, audio),
    }
