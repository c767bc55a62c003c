"""Reading and writing audio for the speech path.

:func:`read_audio` turns any recording libsndfile reads (WAV, FLAC, Ogg Vorbis/Opus, NIST
SPHERE such as TIMIT's ``.WAV`` files) into float32 mono samples in [-1, 1] at one sample rate,
and says in plain words what it changed (downmix, resampling). It refuses files that would
silently poison training data: missing, not audio, empty, truncated, or holding NaN/inf
samples (:class:`AudioError`), and warns (:class:`AudioWarning`) about silent and clipped ones.

:func:`write_wav` writes 16-bit PCM mono atomically and never overwrites unless asked;
:func:`list_audio_files` lists the recordings in a folder.

libsndfile returns the available part of a truncated WAV or SPHERE file without complaint, so
both headers are checked here against the file size; a truncated FLAC or Ogg file fails inside
libsndfile and is reported the same way.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from math import gcd
from pathlib import Path

import numpy as np

from bitnn.errors import InputError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".sph")
SILENCE_LEVEL = 1e-5  # every sample below this magnitude: the file is silent
CLIP_LEVEL = 0.999  # samples at or above this magnitude count as clipped
CLIP_FRACTION = 0.001  # more than this fraction of clipped samples: the file is clipped


class AudioError(InputError):
    """An audio file is missing, unreadable, empty, truncated or holds NaN/inf samples."""


class AudioWarning(UserWarning):
    """An audio file is usable but suspect: silent, or clipped."""


def _soundfile():
    try:
        import soundfile
    except ImportError:  # pragma: no cover - soundfile is a dependency of the speech path
        raise AudioError(
            "reading audio needs the soundfile package (libsndfile): pip install soundfile"
        ) from None
    return soundfile


# ---- header checks libsndfile does not make --------------------------------------------------


def _riff_truncation(path: Path, size: int) -> str | None:
    """For a RIFF WAVE file: a sentence if its data chunk is cut short or never finalized."""
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size == 0 and available > 0:
                    return (
                        f"{path}: the WAV header announces no audio but {available} bytes "
                        "follow: the recording was never finalized (the writer was "
                        "interrupted); repair the header (e.g. `sox --ignore-length IN OUT`) "
                        "or record again"
                    )
                if 0 < chunk_size < 0xFFFFFFF0 and available < chunk_size:
                    return (
                        f"{path} is truncated: its WAV header announces {chunk_size} bytes of "
                        f"audio but only {available} are present; copy or download it again"
                    )
                return None
            offset += 8 + chunk_size + (chunk_size & 1)
    return None


def _sphere_header(path: Path) -> dict[str, str] | None:
    """The fields of a NIST SPHERE header, or ``None`` if the file is not SPHERE."""
    with path.open("rb") as f:
        head = f.read(1024)
    if not head.startswith(b"NIST_1A"):
        return None
    lines = head.split(b"\n")
    fields = {"header_size": lines[1].strip().decode("ascii", "replace") if len(lines) > 1 else ""}
    for line in lines[2:]:
        parts = line.decode("ascii", "replace").split(None, 2)
        if not parts or parts[0] == "end_head":
            break
        if len(parts) == 3:
            fields[parts[0]] = parts[2].strip()
    return fields


def _sphere_problem(path: Path, size: int) -> str | None:
    """For a NIST SPHERE file: a sentence if it is compressed (unsupported) or truncated."""
    fields = _sphere_header(path)
    if fields is None:
        return None
    coding = fields.get("sample_coding", "pcm")
    if "shorten" in coding or "wavpack" in coding:
        return (
            f"{path} is a compressed NIST SPHERE file ({coding}), which libsndfile cannot "
            "decode; convert it to WAV first (e.g. `sph2pipe -f wav IN OUT`)"
        )
    try:
        header = int(fields["header_size"])
        expected = (
            int(fields["sample_count"])
            * int(fields.get("sample_n_bytes", 2))
            * int(fields.get("channel_count", 1))
        )
    except (KeyError, ValueError):
        return None
    if size - header < expected:
        return (
            f"{path} is truncated: its SPHERE header announces {expected} bytes of audio but "
            f"only {max(0, size - header)} are present; copy or download it again"
        )
    return None


# ---- reading ---------------------------------------------------------------------------------


def _check_rate(rate: object, what: str = "rate") -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise InputError(f"{what} must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a mono float32 signal (soxr "HQ"; scipy's polyphase filter without soxr)."""
    if in_rate == out_rate:
        return x
    try:
        import soxr
    except ImportError:
        from scipy.signal import resample_poly

        g = gcd(in_rate, out_rate)
        return resample_poly(x, out_rate // g, in_rate // g).astype(np.float32)
    return soxr.resample(np.ascontiguousarray(x), in_rate, out_rate, quality="HQ").astype(
        np.float32, copy=False
    )


def _open_problem(path: Path, exc: Exception) -> AudioError:
    message = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
    if "malformed" in message or "lost sync" in message or "EOF" in message:
        return AudioError(
            f"{path} could not be decoded ({message.strip()}): the file is damaged or "
            "truncated; copy or download it again"
        )
    return AudioError(
        f"{path} is not an audio file libsndfile can read ({message.strip()}); pass a WAV, "
        "FLAC, Ogg or NIST SPHERE file, or convert it first (e.g. with ffmpeg or sox)"
    )


def read_audio(path: str | os.PathLike[str], rate: int = 8000) -> tuple[np.ndarray, list[str]]:
    """Read a recording as float32 mono in [-1, 1] at ``rate`` Hz.

    Returns ``(samples, notes)``: ``notes`` says in words what was changed on the way
    (``"downmixed 2 channels to mono"``, ``"resampled 44100 Hz -> 8000 Hz"``). Raises
    :class:`AudioError` for a missing, unreadable, empty or truncated file and for NaN/inf
    samples; warns (:class:`AudioWarning`) when the file is silent or clipped.
    """
    rate = _check_rate(rate)
    path = Path(path)
    if not path.exists():
        raise AudioError(f"no such audio file: {path}; check the path")
    if path.is_dir():
        raise AudioError(
            f"{path} is a folder, not an audio file; pass one file (list_audio_files lists a "
            "folder's recordings)"
        )
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{path} is an empty file (0 bytes); drop it or copy it again")
    problem = _riff_truncation(path, size) or _sphere_problem(path, size)
    if problem:
        raise AudioError(problem)
    sf = _soundfile()
    try:
        with sf.SoundFile(str(path)) as f:
            in_rate, channels, frames = f.samplerate, f.channels, f.frames
            x = f.read(dtype="float32", always_2d=True)
    except (RuntimeError, sf.SoundFileError) as exc:
        raise _open_problem(path, exc) from None
    if x.shape[0] == 0:
        raise AudioError(f"{path} holds no samples (0 frames); drop it or record it again")
    if x.shape[0] < frames:
        raise AudioError(
            f"{path} is truncated: its header announces {frames} frames but only "
            f"{x.shape[0]} could be read; copy or download it again"
        )
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise AudioError(
            f"{path} holds {bad} NaN or infinite samples (a float file written from broken "
            "data); fix the program that wrote it or drop the file"
        )
    notes: list[str] = []
    if channels > 1:
        x = x.mean(axis=1, dtype=np.float32, keepdims=True)
        notes.append(f"downmixed {channels} channels to mono")
    x = x[:, 0]
    over = int(np.count_nonzero(np.abs(x) > 1.0))
    if over:
        np.clip(x, -1.0, 1.0, out=x)
        notes.append(f"clipped {over} samples outside [-1, 1] (float file)")
    magnitude = np.abs(x)
    if magnitude.max() < SILENCE_LEVEL:
        warnings.warn(
            f"{path} is silent (every sample is below {SILENCE_LEVEL:g} in magnitude); check "
            "the recording level or leave the file out",
            AudioWarning,
            stacklevel=2,
        )
    clipped = float(np.mean(magnitude >= CLIP_LEVEL))
    if clipped > CLIP_FRACTION:
        warnings.warn(
            f"{path} is clipped ({100 * clipped:.2g}% of its samples are at full scale): it is "
            "distorted; prefer a take recorded at a lower level",
            AudioWarning,
            stacklevel=2,
        )
    if in_rate != rate:
        x = resample(x, in_rate, rate)
        np.clip(x, -1.0, 1.0, out=x)  # the resampling filter may overshoot near full scale
        notes.append(f"resampled {in_rate} Hz -> {rate} Hz")
    return np.ascontiguousarray(x, dtype=np.float32), notes


def audio_duration(path: str | os.PathLike[str]) -> float:
    """Length of a recording in seconds, from its header (no decoding)."""
    sf = _soundfile()
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.SoundFileError) as exc:
        raise _open_problem(Path(path), exc) from None
    return info.frames / info.samplerate


# ---- writing ---------------------------------------------------------------------------------


def write_wav(
    path: str | os.PathLike[str], x: np.ndarray, rate: int, overwrite: bool = False
) -> Path:
    """Write ``x`` (1-D, values clipped to [-1, 1]) as a 16-bit PCM mono WAV, atomically.

    Refuses to replace an existing file unless ``overwrite`` is true. Returns the path.
    """
    from bitnn.io import atomic_write_bytes

    rate = _check_rate(rate)
    path = Path(path)
    x = np.asarray(x)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise InputError(
            f"write_wav needs a 1-D mono signal, got shape {x.shape}; downmix it first "
            "(e.g. x.mean(axis=1))"
        )
    if x.size == 0:
        raise InputError(f"nothing to write to {path}: the signal has no samples")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputError(f"write_wav needs real numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise InputError(
            f"the signal for {path} holds NaN or infinite samples; fix them before writing"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist; create it first")
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name ending in .wav")
    if path.exists() and not overwrite:
        raise InputError(
            f"{path} already exists; pass overwrite=True (CLI: --force) or choose another name"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(
            f"cannot write {path}: folder {folder} is not writable; choose another output folder"
        )
    sf = _soundfile()
    buf = io.BytesIO()
    samples = np.clip(x.astype(np.float64), -1.0, 1.0)
    sf.write(buf, samples, rate, subtype="PCM_16", format="WAV")
    try:
        atomic_write_bytes(path, buf.getvalue())
    except PermissionError:
        raise InputError(
            f"cannot write {path}: permission denied; choose another output folder"
        ) from None
    return path


# ---- listing ---------------------------------------------------------------------------------


def is_audio_file(path: Path) -> bool:
    """An audio file by its name: a known extension, not hidden (``._x.wav`` is macOS metadata)."""
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def list_audio_files(folder: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """The audio files (``.wav .flac .ogg .sph``, any case) in ``folder``, sorted.

    Hidden files and folders (names starting with ``.``) are skipped. Raises
    :class:`AudioError` if the folder is missing, is not a folder, or holds no audio.
    """
    folder = Path(folder)
    if not folder.exists():
        raise AudioError(f"no such folder: {folder}; check the path")
    if not folder.is_dir():
        raise AudioError(f"{folder} is a file, not a folder; pass the folder that holds it")
    found: list[Path] = []
    if recursive:
        for parent, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(Path(parent) / name for name in files)
    else:
        found = list(folder.iterdir())
    audio = sorted(p for p in found if is_audio_file(p) and p.is_file())
    if not audio:
        where = "in or below" if recursive else "directly in"
        raise AudioError(
            f"no audio files {where} {folder}; put recordings with the extensions "
            f"{' '.join(AUDIO_EXTENSIONS)} there"
        )
    return audio
