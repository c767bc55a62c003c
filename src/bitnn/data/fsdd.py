"""The Free Spoken Digit Dataset (FSDD): 8 kHz WAV recordings of the digits 0-9.

File names are ``{digit}_{speaker}_{take}.wav``. The dataset's own split puts takes 0-4 in
the test set. :func:`load_fsdd` returns the utterance features of
:mod:`bitnn.speech.keywords` per recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnn.errors import DatasetError

DEFAULT_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fsdd"
DIGITS = [str(d) for d in range(10)]  # class names: class id d is the digit d


@dataclass
class FSDD:
    X: np.ndarray  # (n, n_features) float32 utterance features
    y: np.ndarray  # digit 0-9
    speaker: np.ndarray  # speaker names
    take: np.ndarray  # take number (0-4: the dataset's test split)
    files: list[Path]

    @property
    def test(self) -> np.ndarray:
        """The dataset's own test split: takes 0-4 of every speaker and digit."""
        return self.take < 5


def fsdd_recordings(root: str | Path | None = None) -> list[Path]:
    """The recordings of an FSDD checkout (its ``recordings`` folder, or the folder itself)."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    files = sorted(folder.glob("*_*_*.wav"))
    if not files:
        raise DatasetError(
            f"no FSDD recordings found in {folder}; pass the folder that holds "
            "{digit}_{speaker}_{take}.wav files"
        )
    return files


def recording_label(path: Path) -> tuple[int, str, int]:
    """``(digit, speaker, take)`` of a recording named ``{digit}_{speaker}_{take}.wav``."""
    digit, speaker, take = path.stem.split("_")
    return int(digit), speaker, int(take)


def load_fsdd(root: str | Path | None = None, config=None) -> FSDD:
    """Every recording's features (``config``: a :class:`UtteranceFeatures`, default settings)."""
    from bitnn.speech.keywords import UtteranceFeatures, features_of_files

    files = fsdd_recordings(root)
    y, spk, take = [], [], []
    for f in files:
        digit, speaker, t = recording_label(f)
        y.append(digit)
        spk.append(speaker)
        take.append(t)
    X, _ = features_of_files(files, config or UtteranceFeatures())
    return FSDD(X, np.array(y), np.array(spk), np.array(take), files)
