"""Separation and intelligibility metrics (wrappers of mir_eval and pystoi).

SDR, SIR and SAR are BSS Eval v3 (``mir_eval.separation.bss_eval_sources``) with the clean
speech and the noise as the two references and, as the two estimates, the denoised speech and
what the denoiser removed (mixture - denoised); the speech's row is reported. Permutations are
not searched: estimate 0 is speech. STOI is ``pystoi.stoi`` (classic, not extended); it needs
about 30 frames of 25.6 ms of speech after pystoi drops silent frames, and for shorter
utterances (a spoken digit) pystoi returns 1e-5 with a warning: that is reported as NaN here,
so averages can leave it out instead of counting an intelligibility of zero.

An all-zero estimate has no defined SDR in BSS Eval; a dither of 1e-8 (about -160 dBFS)
keeps every estimate non-silent without changing any reported figure at two decimals.
"""

from __future__ import annotations

import numpy as np

from bitnn.errors import InputError

DITHER = 1e-8


def separation_metrics(
    speech: np.ndarray, noise: np.ndarray, estimate: np.ndarray, rate: int
) -> dict[str, float]:
    """SDR, SIR, SAR (dB) and STOI of ``estimate`` against the clean ``speech``."""
    import warnings

    from mir_eval.separation import bss_eval_sources
    from pystoi import stoi

    s = np.asarray(speech, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    e = np.asarray(estimate, dtype=np.float64)
    if not (s.shape == n.shape == e.shape) or s.ndim != 1:
        raise InputError("speech, noise and estimate must be 1-D signals of one length")
    dither = DITHER * np.random.default_rng(0).standard_normal((2, s.size))
    estimates = np.stack([e, (s + n) - e]) + dither
    with warnings.catch_warnings():  # mir_eval 0.8 warns that bss_eval_sources leaves in 0.9
        warnings.simplefilter("ignore", FutureWarning)
        sdr, sir, sar, _ = bss_eval_sources(np.stack([s, n]), estimates, compute_permutation=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        intelligibility = float(stoi(s, e, rate, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        intelligibility = float("nan")  # too short for STOI
    return {
        "sdr": float(sdr[0]),
        "sir": float(sir[0]),
        "sar": float(sar[0]),
        "stoi": intelligibility,
    }
