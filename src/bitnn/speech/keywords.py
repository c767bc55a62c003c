"""Short utterances as fixed-size features, for bitwise keyword classification (spoken digits,
and users' own classes of recordings).

An utterance becomes a map of ``n_segments x n_bands`` levels:

1. its STFT (:func:`bitnn.speech.spectra.stft`; by default 256-sample periodic Hann frames
   moved by 64 samples at 8 kHz: 32 ms frames, 8 ms hop);
2. power in ``n_bands`` triangular bands equally spaced on the mel scale (HTK formula) from
   ``f_min`` to half the sample rate;
3. the speech part: frames whose total power is within ``trim_db`` of the loudest frame, from
   the first to the last such frame (silence before and after is dropped);
4. averaged over ``n_segments`` equal stretches of that part (a 0.3 s and a 1 s "seven" give the
   same layout; a part shorter than ``n_segments`` frames repeats frames);
5. in dB relative to the utterance's loudest value, floored at ``floor_db``: the features do not
   depend on the recording's gain.

The network's own fitted :class:`~bitnn.binarize.QuantileBinarizer` turns each level into bits.
A model trained on these features carries the settings and class names in its metadata
(:func:`keyword_metadata`), so ``bitnn predict MODEL file.wav`` computes the same features.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnn.errors import InputError

KEYWORDS_KEY = "keywords"  # the metadata entry of a model trained on utterance features


@dataclass(frozen=True)
class UtteranceFeatures:
    """How a recording becomes features (stored in a keyword model's metadata)."""

    rate: int = 8000
    frame: int = 256
    hop: int = 64
    n_bands: int = 32
    n_segments: int = 16
    f_min: float = 50.0
    trim_db: float = 20.0
    floor_db: float = -80.0

    def __post_init__(self) -> None:
        self.spectrogram  # noqa: B018 (validates rate, frame and hop)
        if not (isinstance(self.n_bands, int) and 2 <= self.n_bands <= self.frame // 4):
            raise InputError(f"n_bands must be a whole number in 2..{self.frame // 4}")
        if not (isinstance(self.n_segments, int) and 1 <= self.n_segments <= 256):
            raise InputError("n_segments must be a whole number in 1..256")
        if not 0 <= self.f_min < self.rate / 4:
            raise InputError(f"f_min must be in [0, {self.rate / 4}) Hz, got {self.f_min}")
        if not (self.trim_db > 0 and self.floor_db < 0):
            raise InputError("trim_db must be > 0 and floor_db < 0")

    @property
    def n_features(self) -> int:
        return self.n_segments * self.n_bands

    @property
    def spectrogram(self) -> Any:  # a SpectrogramConfig (scipy is imported only when used)
        from bitnn.speech.spectra import SpectrogramConfig

        return SpectrogramConfig(rate=self.rate, frame=self.frame, hop=self.hop)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> UtteranceFeatures:
        if not isinstance(d, dict):
            raise InputError(f"utterance feature settings must be a mapping, got {d!r}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise InputError(f"invalid utterance feature settings {d!r}: {exc}") from None


@functools.lru_cache(maxsize=8)
def mel_filterbank(config: UtteranceFeatures) -> np.ndarray:
    """``(n_bins, n_bands)`` triangular filters, centres equally spaced in mel (HTK)."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(config.f_min), mel(config.rate / 2), config.n_bands + 2))
    freqs = np.arange(config.frame // 2 + 1) * config.rate / config.frame
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    bank = np.clip(np.minimum(rising, falling), 0.0, None).T
    # A band narrower than a bin still gets the nearest bin, so no band is always empty.
    for b in np.flatnonzero(bank.sum(axis=0) == 0):
        bank[np.argmin(np.abs(freqs - edges[b + 1])), b] = 1.0
    return bank.astype(np.float32)


def segment_means(frames: np.ndarray, n_segments: int) -> np.ndarray:
    """``(n, d)`` -> ``(n_segments, d)``: means over equal stretches of the rows; with fewer rows
    than segments each segment takes the row under its centre."""
    n = frames.shape[0]
    if n < n_segments:
        return frames[((np.arange(n_segments) + 0.5) * n / n_segments).astype(int)]
    bounds = np.linspace(0, n, n_segments + 1).round().astype(int)
    sums = np.add.reduceat(frames, bounds[:-1], axis=0)
    return sums / np.diff(bounds)[:, None]


def utterance_features(x: np.ndarray, config: UtteranceFeatures | None = None) -> np.ndarray:
    """A mono signal at ``config.rate`` -> ``(n_segments * n_bands,)`` float32 levels in dB
    (0 = the utterance's loudest, down to ``floor_db``), segment-major."""
    from bitnn.speech.spectra import stft

    config = config or UtteranceFeatures()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"utterance features take a non-empty mono signal, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("the signal holds NaN or infinite samples; repair or drop the file")
    X = stft(x, config.spectrogram)
    power = X.real**2 + X.imag**2
    bands = power @ mel_filterbank(config)
    loudness = bands.sum(axis=1)
    peak = loudness.max()
    if peak <= 0:  # a silent recording: every level at the floor
        return np.full(config.n_features, config.floor_db, np.float32)
    loud = np.flatnonzero(loudness >= peak * 10.0 ** (-config.trim_db / 10.0))
    speech = bands[loud[0] : loud[-1] + 1]
    levels = segment_means(speech, config.n_segments)
    top = levels.max()
    db = 10.0 * np.log10(np.maximum(levels / top, 10.0 ** (config.floor_db / 10.0)))
    return db.astype(np.float32).reshape(-1)


def features_of_files(
    files: list[Path], config: UtteranceFeatures, progress: Any = None
) -> tuple[np.ndarray, list[str]]:
    """Features of each file (read and converted by :func:`bitnn.data.audio.read_audio`), one row
    per file, and the notes (conversions) made while reading, each naming its file."""
    from bitnn.data.audio import read_audio

    X = np.empty((len(files), config.n_features), np.float32)
    notes: list[str] = []
    for i, path in enumerate(files):
        x, file_notes = read_audio(path, config.rate)
        notes += [f"{path}: {n}" for n in file_notes]
        X[i] = utterance_features(x, config)
        if progress is not None:
            progress.update(i + 1)
    return X, notes


def audio_class_folders(folder: str | os.PathLike[str]) -> tuple[list[Path], np.ndarray, list[str]]:
    """A folder with one sub-folder of recordings per class -> (files, class ids, class names).

    Classes are the sub-folders' names in sorted order; recordings are found in each sub-folder
    and below it. Hidden folders are skipped.
    """
    from bitnn.data.audio import AudioError, list_audio_files

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of class sub-folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise InputError(
            f"{root} needs one sub-folder of recordings per class (at least 2), "
            f"found {len(classes)}"
        )
    files: list[Path] = []
    labels: list[int] = []
    for c, name in enumerate(classes):
        try:
            found = list_audio_files(root / name)
        except AudioError as exc:
            raise InputError(f"class {name!r}: {exc}") from None
        files += found
        labels += [c] * len(found)
    return files, np.array(labels, dtype=np.int64), classes


def keyword_metadata(config: UtteranceFeatures, classes: list[str]) -> dict[str, Any]:
    """The metadata entry of a network that classifies utterances."""
    return {KEYWORDS_KEY: {"features": config.to_json(), "classes": list(classes)}}


def keyword_settings(metadata: dict[str, Any]) -> tuple[UtteranceFeatures, list[str]] | None:
    """(feature settings, class names) of a keyword model's metadata, None for other models."""
    entry = metadata.get(KEYWORDS_KEY)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("classes"), list):
        raise InputError(f"the model's {KEYWORDS_KEY!r} metadata is malformed: {entry!r}")
    return UtteranceFeatures.from_json(entry.get("features")), [str(c) for c in entry["classes"]]
