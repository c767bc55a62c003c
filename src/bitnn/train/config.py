"""The settings of a training run (no PyTorch needed to build, check or show them)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from bitnn.errors import InputError

# The ops training can run (BitMLP.set_precision); TrainConfig.precision adds "auto".
PRECISIONS = ("float32", "float32-fast", "bfloat16")


@dataclass
class TrainConfig:
    """Everything that defines a training run. See ``bitnn.train.presets`` for named sets."""

    hidden: tuple[int, ...] = (256, 256)
    bias_kind: str = "threshold"  # hidden layers: "bias" (paper), "threshold" (folded BN), "none"
    output_bias_kind: str = "bias"
    sparsity: float = 0.0  # target fraction of absent weights (beta from its quantile)
    # Round 2's real-valued weights: "tanh" keeps the latent W behind tanh (the paper);
    # "clip" starts round 2 from tanh(W) and updates those values directly, clipped to [-1, 1].
    round2_weights: str = "tanh"
    epochs_round1: int = 10
    epochs_round2: int = 10
    batch_size: int = 100
    optimizer: str = "adam"  # adam | adamw | sgd
    lr_round1: float = 1e-2
    lr_round2: float = 3e-3
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine | exponential | constant (per round)
    weight_decay: float = 0.0
    # Classification only: cross-entropy against targets that give this share of the
    # probability to the other classes evenly (label smoothing); 0 = one-hot targets.
    label_smoothing: float = 0.0
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0
    # Data augmentation for images: every training sample is moved by a random whole number of
    # pixels in [-augment_shift, augment_shift] along each axis (pixels moved in are 0), then
    # binarized. Needs image_shape = (height, width) of the row-major raw input.
    augment_shift: int = 0
    # Elastic distortions (Simard et al. 2003) on top: each pixel is taken from up to about
    # augment_elastic x (smoothed uniform noise) pixels away, the noise smoothed by a Gaussian
    # of augment_elastic_sigma pixels; 0 = off. Needs image_shape too.
    augment_elastic: float = 0.0
    augment_elastic_sigma: float = 4.0
    image_shape: tuple[int, ...] = ()
    val_fraction: float = 0.1
    # Which epoch's network ends each round: "best" (highest validation accuracy, or training
    # accuracy without a validation split) or "last" (then, without a validation split, no
    # epoch is evaluated: training on all the data with a fixed schedule costs no extra pass).
    keep: str = "best"
    seed: int = 0
    device: str = "auto"
    # Ops in training: "float32" (PyTorch's own, as in every earlier version), "bfloat16"
    # (operands rounded to bfloat16 with float32 sums where the CPU has fast bfloat16 dot
    # products; round 2's forward products, -1/0/+1 by -1/0/+1, exact in int8; cheaper dropout
    # masks and compiled passes over the weights), or "float32-fast" (for CPUs without fast
    # bfloat16: round 2's forward exactly by XNOR-popcount, float32 gradients, bfloat16's
    # other fast ops). Where the CPU lacks fast bfloat16, bfloat16 falls back to
    # float32-fast with a warning, and off the CPU both fall back to float32 with one; "auto"
    # is bfloat16 where it is fast and float32-fast elsewhere (float32 off the CPU), without
    # a warning.
    precision: str = "float32"

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        self.image_shape = tuple(int(d) for d in self.image_shape)
        problems = []
        if any(h < 1 for h in self.hidden):
            problems.append("hidden sizes must be positive")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            problems.append(f"optimizer must be adam, adamw or sgd, not {self.optimizer!r}")
        if self.round2_weights not in ("tanh", "clip"):
            problems.append(f"round2_weights must be tanh or clip, not {self.round2_weights!r}")
        if self.keep not in ("best", "last"):
            problems.append(f"keep must be best or last, not {self.keep!r}")
        if self.schedule not in ("cosine", "exponential", "constant"):
            problems.append(
                f"schedule must be cosine, exponential or constant, not {self.schedule!r}"
            )
        if self.epochs_round1 < 0 or self.epochs_round2 < 0:
            problems.append("epoch counts cannot be negative")
        if self.epochs_round1 + self.epochs_round2 == 0:
            problems.append("train for at least one epoch")
        if self.augment_shift < 0:
            problems.append("augment_shift cannot be negative")
        if not (math.isfinite(self.augment_elastic) and self.augment_elastic >= 0):
            problems.append(f"augment_elastic must be a number >= 0, not {self.augment_elastic!r}")
        sigma = self.augment_elastic_sigma
        if not (math.isfinite(sigma) and sigma > 0):
            problems.append(f"augment_elastic_sigma must be a positive number, not {sigma!r}")
        if self.augments_images and (len(self.image_shape) != 2 or min(self.image_shape) < 1):
            what = "augment_shift" if self.augment_shift else "augment_elastic"
            problems.append(f"{what} needs image_shape = (height, width)")
        if self.batch_size < 1:
            problems.append("batch_size must be positive")
        for name in ("lr_round1", "lr_round2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name} must be a positive number, not {value!r}")
        for name in ("weight_decay", "momentum"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a number >= 0, not {value!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append("val_fraction must be in [0, 1)")
        for name in ("dropout_input", "dropout_hidden", "sparsity", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1)")
        if self.precision not in (*PRECISIONS, "auto"):
            problems.append(
                f"precision must be float32, float32-fast, bfloat16 or auto, not {self.precision!r}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device must be auto, cpu or cuda, not {self.device!r}")
        if problems:
            raise InputError("invalid training configuration: " + "; ".join(problems))

    @property
    def augments_images(self) -> bool:
        """True if training moves its images (shifts or elastic distortions)."""
        return bool(self.augment_shift or self.augment_elastic)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {"precision": "float32", **d}  # checkpoints from before the option: float32
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown training options: {sorted(unknown)}")
        return cls(**d)
