"""The released models (``models/``) give the same answers as when they were released.

Each model's predictions (and a classifier's integer scores) on fixed, seeded inputs are pinned
by a SHA-256 of their values, through ``predict()``/``scores()`` with every engine. This catches
what round-trip tests cannot: a change made consistently to saving *and* loading (say, the
bias bits in the other bit order) that still round-trips but reads the released files
differently. The pins are of answers, not file bytes: a re-released file with the same network
keeps them.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from bitnn.engine import compiled
from bitnn.io import load_model

MODELS = Path(__file__).resolve().parents[1] / "models"
ENGINES = ["reference", *(compiled.available_variants() if compiled.extension_available() else [])]

# model file -> (sha256 of predict(), sha256 of scores() for classifiers)
GOLDEN = {
    "mnist-small.bnn": (
        "f91ccca8d3fd1522b3236e256294632ded5a86374969489bf5a366f7752a695a",
        "326fb975c95e914829be38dec887ca75b6e27bb561dea2daeec1f9e03e27024a",
    ),
    "mnist-paper.bnn": (
        "e9d57eb4c02073d9e4c167ce1daa9b4fc79fc64fb0b16986ef2a8fcfee37d41f",
        "c6a95a2866c79003f04496fa9f505bdeb30bd9accdff7ef1c0f234194cd5249b",
    ),
    "mnist-best.bnn": (
        "daababe68f65a371fbab678649fe7e0b9f5e21471906225e78c8c2470bdd5a13",
        "e7bd302cd6cb93c33ab640fffd0b4010a2316fad9819e7cf49651ba4144ac487",
    ),
    "denoise-8k.bnn": ("156ce26dc3df7dc9ea2be89b8def3323ef794fb8540ce56140ea1d94d2d98360", None),
    "digits-8k.bnn": (
        "3861646217d3b3c0904b5120ce2aac9365642881f086a7d68559df71de9e6b02",
        "5cb8263f47e01a0bad484fcfa809873caf58c242f73a8c20a9c998315a144a7f",
    ),
    "denoise-8k-paper.bnn": (
        "bb880e6cee479c1519a404dde229c8293e234ba7e895a794a6403c8c21a557ba",
        None,
    ),
}


def fixed_inputs(net, n=256, seed=2015):
    """Seeded inputs in each model's own range: sparse uint8 images for the MNIST models
    (80% zero pixels, like handwriting), values spread over the binarizer's edges for the
    others (denoisers, keywords), so that many input bits and hidden units take both values."""
    rng = np.random.default_rng(seed)
    f = net.binarizer.n_features_in_
    if f == 28 * 28:
        ink = rng.integers(1, 256, (n, f))
        return np.where(rng.random((n, f)) < 0.8, 0, ink).astype(np.uint8)
    edges = net.binarizer.edges_
    middle = edges[:, edges.shape[1] // 2]
    return (middle * np.exp(rng.normal(0, 1.5, (n, f)))).astype(np.float32)


def digest(values):
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<i8").tobytes()).hexdigest()


def test_every_released_model_is_pinned():
    assert sorted(GOLDEN) == sorted(p.name for p in MODELS.glob("*.bnn"))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_released_model_answers_are_unchanged(name, engine):
    net = load_model(MODELS / name)
    X = fixed_inputs(net)
    pred_pin, scores_pin = GOLDEN[name]
    assert digest(net.predict(X, engine)) == pred_pin
    if scores_pin is not None:
        assert digest(net.scores(X, engine)) == scores_pin


def test_released_denoisers_vote_as_released():
    """The best denoiser's mask is a majority vote over 5 frames (given to the same network in
    session 12, scripts/set_mask_majority.py); the paper one's is used as it is."""
    from bitnn.speech.denoise import Denoiser

    assert Denoiser(load_model(MODELS / "denoise-8k.bnn")).mask_majority_frames == 5
    assert Denoiser(load_model(MODELS / "denoise-8k-paper.bnn")).mask_majority_frames == 1
