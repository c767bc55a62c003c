"""The Free Spoken Digit Dataset (FSDD): 8 kHz WAV recordings of the digits 0-9.

File names are ``{digit}_{speaker}_{take}.wav``. The dataset's own split puts takes 0-4 in
the test set. :func:`load_fsdd` returns fixed-size log band-energy features per recording.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnn.errors import DatasetError

DEFAULT_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fsdd"


@dataclass
class FSDD:
    X: np.ndarray  # (n, n_segments * n_bands) float32 log band energies
    y: np.ndarray  # digit 0-9
    speaker: np.ndarray  # speaker names
    take: np.ndarray  # take number (0-4: the dataset's test split)


def read_wav(path: Path) -> np.ndarray:
    """Mono 16-bit PCM WAV -> float32 in [-1, 1)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise DatasetError(f"{path}: expected 16-bit mono PCM")
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def band_energies(signal: np.ndarray, n_segments: int = 8, n_bands: int = 32) -> np.ndarray:
    """Log energy in ``n_bands`` linear frequency bands, averaged over ``n_segments`` equal
    time segments of the recording (256-sample Hann frames, hop 128)."""
    frame, hop = 256, 128
    if signal.size < frame:
        signal = np.pad(signal, (0, frame - signal.size))
    n_frames = 1 + (signal.size - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(signal[idx] * np.hanning(frame), axis=1)) ** 2
    bands = spec[:, 1:].reshape(n_frames, n_bands, -1).sum(axis=2)
    segs = np.array_split(np.arange(n_frames), n_segments)
    feats = np.stack([bands[s].mean(axis=0) if s.size else bands[-1] for s in segs])
    return np.log(feats + 1e-8).astype(np.float32).reshape(-1)


def load_fsdd(root: str | Path | None = None) -> FSDD:
    root = Path(root) if root is not None else DEFAULT_ROOT
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    files = sorted(folder.glob("*_*_*.wav"))
    if not files:
        raise DatasetError(
            f"no FSDD recordings found in {folder}; pass the folder that holds "
            "{digit}_{speaker}_{take}.wav files"
        )
    X, y, spk, take = [], [], [], []
    for f in files:
        digit, speaker, t = f.stem.split("_")
        X.append(band_energies(read_wav(f)))
        y.append(int(digit))
        spk.append(speaker)
        take.append(int(t))
    return FSDD(np.stack(X), np.array(y), np.array(spk), np.array(take))
