"""Noisy mixtures of speech and noise, reproducible from a seed and listed in a manifest.

A mixture is one speech utterance with ``pad`` samples of silence before and after, plus a
segment of one noise recording (from a seeded offset, looped if too short) scaled so that
``snr_db = 10 log10(P_speech / P_noise)``, with the speech power taken over the utterance and
the noise power over the whole mixture (utterance and pads). A manifest row names the set
(train, val, test...), the voice, the speech file, the noise type and file, the offset, the
SNR, the rate and the pad, so every mixture can be rebuilt from the files alone.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from bitnn.data.audio import AudioWarning, read_audio
from bitnn.errors import InputError
from bitnn.progress import log


@dataclass(frozen=True)
class MixtureSpec:
    """One row of a manifest."""

    voice: str
    speech_file: str
    noise_type: str
    noise_file: str
    noise_offset: int  # first noise sample used (at the mixing rate)
    snr_db: float
    rate: int
    pad: int  # samples of silence around the utterance


@dataclass
class Mixture:
    spec: MixtureSpec
    speech: np.ndarray  # float32, the padded clean utterance
    noise: np.ndarray  # float32, scaled noise of the same length

    @property
    def mixture(self) -> np.ndarray:
        return self.speech + self.noise


class AudioCache:
    """Decoded recordings at one rate, read once (noise files are reused many times)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._signals: dict[str, np.ndarray] = {}

    def __call__(self, path: str | Path) -> np.ndarray:
        key = str(path)
        if key not in self._signals:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AudioWarning)  # usable() judges silence
                self._signals[key] = read_audio(key, self.rate)[0]
        return self._signals[key]

    def usable(self, path: str | Path) -> bool:
        """Whether a corpus file can be mixed: readable, at least 0.1 s, not silent. Corpora
        hold a few empty or broken files; mixtures skip them (logged) instead of failing."""
        try:
            x = self(path)
        except InputError as exc:
            log(f"skipping {path}: {exc}")
            return False
        if x.size < self.rate // 10 or not power(x) > 0.0:
            log(f"skipping {path}: shorter than 0.1 s or silent")
            return False
        return True


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix(spec: MixtureSpec, audio: AudioCache) -> Mixture:
    """Build the mixture a manifest row describes."""
    if spec.rate != audio.rate:
        raise InputError(
            f"this mixture was drawn at {spec.rate} Hz, not {audio.rate} Hz: its offsets and "
            "pads would be wrong; read it at its own rate"
        )
    s = audio(spec.speech_file)
    s = np.pad(s, (spec.pad, spec.pad))
    n_all = audio(spec.noise_file)
    if not power(n_all) > 0.0:
        raise InputError(f"noise file {spec.noise_file} is silent; remove it from the noise set")
    idx = (spec.noise_offset + np.arange(s.size)) % n_all.size
    n = n_all[idx]
    ps = power(s[spec.pad : s.size - spec.pad])
    if not ps > 0.0:
        raise InputError(f"speech file {spec.speech_file} is silent; remove it from the corpus")
    pn = power(n)
    if not pn > 0.0:
        raise InputError(
            f"noise file {spec.noise_file} is silent from sample {spec.noise_offset} on; trim "
            "its silence or leave it out"
        )
    gain = float(np.sqrt(ps / (pn * 10.0 ** (spec.snr_db / 10.0))))
    return Mixture(spec, s.astype(np.float32), (n * gain).astype(np.float32))


def _usable(groups: dict[str, Sequence[Path]], audio: AudioCache) -> dict[str, list[Path]]:
    out = {name: sorted(f for f in files if audio.usable(f)) for name, files in groups.items()}
    for name, files in out.items():
        if not files:
            raise InputError(f"{name!r} has no usable audio files (all empty, silent or broken)")
    return out


def _spec(
    rng: np.random.Generator,
    voice: str,
    speech_file: Path,
    noise_type: str,
    noise_file: Path,
    snr_db: float,
    audio: AudioCache,
    pad_seconds: float,
) -> MixtureSpec:
    """A mixture of the chosen files, at a noise offset drawn now."""
    offset = int(rng.integers(audio(noise_file).size))
    return MixtureSpec(
        voice,
        str(speech_file),
        noise_type,
        str(noise_file),
        offset,
        float(snr_db),
        audio.rate,
        round(pad_seconds * audio.rate),
    )


def draw_mixtures(
    voices: dict[str, Sequence[Path]],
    noises: dict[str, Sequence[Path]],
    snrs_db: Sequence[float],
    n_mixtures: int,
    seed: int,
    audio: AudioCache,
    pad_seconds: float = 0.2,
) -> list[MixtureSpec]:
    """``n_mixtures`` specs: voice, noise type and SNR drawn uniformly (so every voice and
    noise type weighs the same, however many files it has), then a file of each and an
    offset into the noise."""
    if not voices or not noises or not snrs_db:
        raise InputError("mixtures need at least one voice, one noise type and one SNR")
    voices, noises = _usable(voices, audio), _usable(noises, audio)
    rng = np.random.default_rng(seed)
    voice_names, noise_names = sorted(voices), sorted(noises)
    specs = []
    for _ in range(n_mixtures):
        v = voice_names[rng.integers(len(voice_names))]
        t = noise_names[rng.integers(len(noise_names))]
        snr = float(snrs_db[rng.integers(len(snrs_db))])
        sfile = voices[v][rng.integers(len(voices[v]))]
        nfile = noises[t][rng.integers(len(noises[t]))]
        specs.append(_spec(rng, v, sfile, t, nfile, snr, audio, pad_seconds))
    return specs


def grid_mixtures(
    voices: dict[str, Sequence[Path]],
    noises: dict[str, Sequence[Path]],
    snrs_db: Sequence[float],
    per_cell: int,
    seed: int,
    audio: AudioCache,
    pad_seconds: float = 0.2,
) -> list[MixtureSpec]:
    """A balanced test set: ``per_cell`` utterances for every (voice, noise type, SNR)."""
    voices, noises = _usable(voices, audio), _usable(noises, audio)
    rng = np.random.default_rng(seed)
    specs = []
    for v in sorted(voices):
        files = voices[v]
        for t in sorted(noises):
            nfiles = noises[t]
            for snr in snrs_db:
                picks = rng.choice(len(files), size=min(per_cell, len(files)), replace=False)
                for i in picks:
                    nfile = nfiles[rng.integers(len(nfiles))]
                    specs.append(_spec(rng, v, files[i], t, nfile, snr, audio, pad_seconds))
    return specs


def iter_mixtures(
    specs: Sequence[MixtureSpec], audio: AudioCache, label: str = ""
) -> Iterator[Mixture]:
    """The mixtures, built one by one; with a ``label``, a log line every 1,000."""
    for i, spec in enumerate(specs):
        if label and i and i % 1000 == 0:
            log(f"{label}: {i:,} of {len(specs):,} mixtures")
        yield mix(spec, audio)


_COLUMNS = ["set", *(f.name for f in fields(MixtureSpec))]


def manifest_csv(sets: dict[str, Sequence[MixtureSpec]]) -> str:
    """A manifest of named sets of mixtures (column ``set``), as CSV text."""
    out = io.StringIO()
    w = csv.DictWriter(out, _COLUMNS, lineterminator="\n")
    w.writeheader()
    for name, specs in sets.items():
        for s in specs:
            w.writerow({"set": name, **asdict(s)})
    return out.getvalue()


def read_manifest(path: str | Path) -> dict[str, list[MixtureSpec]]:
    """The named sets of mixtures of a manifest written by :func:`manifest_csv`."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read the manifest {path}: {exc.strerror}") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or set(rows[0]) != set(_COLUMNS):
        raise InputError(f"{path} is not a mixture manifest (columns {', '.join(_COLUMNS)})")
    sets: dict[str, list[MixtureSpec]] = {}
    try:
        for r in rows:
            sets.setdefault(r["set"], []).append(
                MixtureSpec(
                    r["voice"],
                    r["speech_file"],
                    r["noise_type"],
                    r["noise_file"],
                    int(r["noise_offset"]),
                    float(r["snr_db"]),
                    int(r["rate"]),
                    int(r["pad"]),
                )
            )
    except ValueError as exc:
        raise InputError(f"{path}: a manifest row has a bad number ({exc})") from None
    return sets
