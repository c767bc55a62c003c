"""The two-round trainer: round 1 (weight compression), round 2 (noisy backpropagation).

Reproducible from ``TrainConfig.seed``; writes a checkpoint after every epoch and, on a
stop request (Ctrl-C), after the current batch. A run resumed from a checkpoint takes exactly
the same steps as one that never stopped: the checkpoint holds the model, the optimizer, both
random generators, the epoch's shuffle order and the position within it. Checkpoints use the
model file's container (no pickle).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitnn.binarize import Binarizer, ThresholdBinarizer, check_features, edge_code
from bitnn.errors import InputError, ModelFormatError, TrainingInterrupted
from bitnn.interrupts import TrainingStop
from bitnn.io import atomic_write_bytes, decode_container, encode_container
from bitnn.network import BitNetwork
from bitnn.progress import ProgressBar, format_duration, log
from bitnn.train import distributed, layers
from bitnn.train._torch import torch
from bitnn.train.config import TrainConfig
from bitnn.train.convert import to_bit_network
from bitnn.train.layers import BitMLP

F = torch.nn.functional

CHECKPOINT_FORMAT = "bitnn-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class TrainData:
    """Binarized training data: +1/-1 inputs (int8) and targets."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    n_outputs: int
    output: str  # "scores" (y: class ids) or "bits" (y: 0/1 matrix)
    x_train_raw: np.ndarray | None = None  # float32 raw inputs, for augmentation
    w_train: np.ndarray | None = None  # per-bit loss weights (bit outputs), like y_train


def _gaussian_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n, n): row i holds the normalised Gaussian weights of every position for position i,
    those beyond the edges added to the edge (replicate padding)."""
    # 3 sigma, but at most 4n: the farther taps would all land on the edge positions (which
    # changes only sigmas far above the image's size, where the field is nearly flat anyway)
    radius = max(1, min(math.ceil(3 * sigma), 4 * n))
    offsets = torch.arange(-radius, radius + 1.0)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps /= taps.sum()
    out = torch.zeros(n, n)
    for i in range(n):
        cols = (i + offsets.long()).clamp(0, n - 1)
        out[i].index_add_(0, cols, taps)
    return out


class ImageAugmenter:
    """Moves raw images and binarizes them on the training device.

    Whole-pixel shifts (``max_shift``) and, with ``elastic_alpha`` > 0, elastic distortions
    (Simard, Steinkraus & Platt 2003): a field of uniform noise in [-1, 1] per axis, smoothed by
    a Gaussian of ``elastic_sigma`` pixels and scaled by ``elastic_alpha``, says how far each
    pixel is taken from; the image is resampled there at the nearest pixel (0 outside) and
    shifted in the same pass. Nearest, not bilinear: interpolation blurs strokes, and their
    binarized codes would then differ from those of undistorted images (on MNIST's 2-bit
    codes, 25% fewer pixels reach the upper edge). The bits are exactly the binarizer's
    (float32 comparisons against its float32 edges, same codes): no shift and no distortion
    give ``to_bipolar(binarizer.transform(x))``.
    """

    def __init__(
        self,
        binarizer: Binarizer,
        shape: tuple[int, ...],
        max_shift: int,
        device: torch.device,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
    ) -> None:
        code = edge_code(binarizer)
        if code is None:
            raise InputError(f"image augmentation needs a binarizer with edges, not {binarizer!r}")
        n_features = binarizer.n_features_in_
        if len(shape) != 2 or shape[0] * shape[1] != n_features:
            raise InputError(
                f"image_shape {tuple(shape)} does not match the {n_features} input features"
            )
        self.shape = (int(shape[0]), int(shape[1]))
        self.max_shift = max_shift
        self.elastic_alpha = float(elastic_alpha)
        # The Gaussian as one matrix per axis (edges repeated): field = G_rows @ noise @ G_cols^T,
        # two small matmuls (a 1-channel conv2d costs 60x more on the CPU).
        self.smooth = [
            _gaussian_matrix(n, elastic_sigma).to(device) for n in self.shape if elastic_alpha
        ]
        self.edges = torch.tensor(code.edges, device=device)  # (features, levels - 1)
        self.codes = torch.tensor(code.codes.astype(np.float32) * 2 - 1, device=device)
        # Thermometer codes over sorted edges: bit j is x >= edge j, so the comparisons are
        # the bits themselves (no level count, no table lookup: a third of the time).
        levels, k = code.codes.shape
        self.thermometer = bool(
            levels == k + 1
            and np.array_equal(code.codes, np.arange(levels)[:, None] > np.arange(k))
            and np.all(np.diff(code.edges, axis=1) >= 0)
        )

    def __call__(
        self, x: torch.Tensor, shifts: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw ``(b, features)`` float32, ``(b, 2)`` (down, right) shifts, each at most
        ``max_shift`` in size, and with elastic distortions ``(b, 2, h, w)`` uniform noise in
        [-1, 1] (rows, columns) -> +1/-1 input bits ``(b, features * k)``."""
        if noise is None and self._compiled(x, shifts):
            return self._shift_codes(x, shifts)
        moved = self._shift(x, shifts) if noise is None else self._distort(x, shifts, noise)
        above = moved[:, :, None] >= self.edges  # (b, features, levels - 1)
        if self.thermometer:
            return above.view(torch.int8).reshape(x.shape[0], -1).float().mul_(2).sub_(1)
        return self.codes[above.sum(-1)].reshape(x.shape[0], -1)

    def _compiled(self, x: torch.Tensor, shifts: torch.Tensor) -> bool:
        """Whether bitnn.train._fused moves and binarizes this batch (CPU tensors)."""
        return (
            layers._fused is not None
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and shifts.dtype == torch.int64
            and self.edges.dtype == torch.float32
        )

    def _shift_codes(self, x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """Shift and binarize in one compiled pass: the same bits as :meth:`_shift` followed by
        the comparisons (the same float32 comparisons), in a sixth of their time."""
        (b, n_features), (h, w) = x.shape, self.shape
        levels, k = self.codes.shape
        x, shifts = x.contiguous(), shifts.contiguous()
        out = torch.empty((b, n_features * k), dtype=torch.float32)
        layers._fused.shift_codes(
            x.data_ptr(), b, h, w, shifts.data_ptr(), self.edges.data_ptr(), levels - 1,
            self.codes.data_ptr(), k, self.thermometer, out.data_ptr(),
        )  # fmt: skip
        return out

    def _shift(self, x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        b, (h, w), s = x.shape[0], self.shape, self.max_shift
        img = F.pad(x.view(b, h, w), (s, s, s, s))
        rows = (s - shifts[:, :1]) + torch.arange(h, device=x.device)  # (b, h)
        cols = (s - shifts[:, 1:]) + torch.arange(w, device=x.device)  # (b, w)
        # Rows, then columns: two gathers along one axis each are faster than one
        # three-index gather.
        moved = torch.gather(img, 1, rows[:, :, None].expand(b, h, w + 2 * s))
        return torch.gather(moved, 2, cols[:, None, :].expand(b, h, w)).reshape(b, h * w)

    def _distort(self, x: torch.Tensor, shifts: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        b, (h, w) = x.shape[0], self.shape
        rows, cols = self.smooth
        field = (rows @ noise @ cols.T) * self.elastic_alpha  # (b, 2, h, w)
        # where each output pixel takes its value from, in pixels, then in grid_sample's
        # [-1, 1] coordinates (without align_corners: -1 and 1 are the outer edges of the edge
        # pixels, so pixel i's centre is (2 i + 1) / n - 1, for any n including 1)
        src_r = torch.arange(h, device=x.device).view(1, h, 1) - shifts[:, :1, None] + field[:, 0]
        src_c = torch.arange(w, device=x.device).view(1, 1, w) - shifts[:, 1:, None] + field[:, 1]
        grid = torch.stack(((2 * src_c + 1) / w - 1, (2 * src_r + 1) / h - 1), -1)
        moved = F.grid_sample(
            x.view(b, 1, h, w), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        return moved.reshape(b, h * w)


def validate_targets(
    y: Any, n_samples: int, n_classes: int | None = None
) -> tuple[np.ndarray, str, int]:
    """Check labels: class ids 0..C-1 (1-D) or 0/1 bit targets (2-D). Returns (y, output, C)."""
    a = np.asarray(y)
    if a.ndim == 0:
        raise InputError(f"y must hold one label per sample, got a single value {a.item()!r}")
    if a.shape[0] != n_samples:
        raise InputError(f"X has {n_samples} samples but y has {a.shape[0]}; they must match")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise InputError(f"labels must be numbers, got dtype {a.dtype}")
    if a.size and not np.all(np.isfinite(a.astype(np.float64))):
        raise InputError("labels contain NaN or infinity")
    if a.size and np.any(a != np.round(a)):
        raise InputError("labels must be whole numbers (class ids 0..C-1, or 0/1 bits)")
    if a.ndim == 1:
        ids = a.astype(np.int64)
        if ids.size and ids.min() < 0:
            raise InputError("class labels must be 0..C-1; found a negative label")
        n = int(ids.max()) + 1 if n_classes is None else n_classes
        if ids.size and ids.max() >= n:
            raise InputError(
                f"label {int(ids.max())} is out of range for {n} classes "
                f"(labels must be 0..{n - 1})"
            )
        if n < 2:
            raise InputError("classification needs at least 2 classes")
        return ids, "scores", n
    if a.ndim == 2:
        if np.any((a != 0) & (a != 1)):
            raise InputError("2-D targets are output bits and must be 0 or 1")
        return a.astype(np.uint8), "bits", a.shape[1]
    raise InputError(f"y must be 1-D class ids or 2-D 0/1 bits, got shape {a.shape}")


def validate_bit_weights(w: Any, y: np.ndarray, output: str) -> np.ndarray:
    """Check per-bit loss weights against bit targets ``y``: same shape, finite, >= 0, not all
    0. Returns them as float32, or float16 when given so (half the memory on large sets)."""
    if output != "bits":
        raise InputError("bit_weights weigh the loss of bit outputs; these targets are classes")
    a = np.asarray(w)
    if a.shape != y.shape:
        raise InputError(f"bit_weights have shape {a.shape}; the targets' is {y.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"bit_weights must be numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float16 if a.dtype == np.float16 else np.float32)
    if a.size and not (np.all(np.isfinite(a)) and a.min() >= 0):
        raise InputError("bit_weights must be finite numbers >= 0")
    if a.size and not a.any():
        raise InputError(
            "bit_weights are all 0: no bit's loss would count, nothing would be learned"
        )
    return a


def data_fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _silent(message: str) -> None:
    """Log lines of ranks other than 0 are dropped."""


def resolve_device(name: str) -> torch.device:
    """The torch device for ``TrainConfig.device``; a CUDA device this machine lacks is an
    :class:`InputError` (checked before any data is read or training starts)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {name}: PyTorch sees no CUDA GPU here (or was built without CUDA); "
                "use --device cpu, or auto to take a GPU when there is one"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"numbered from 0"
            )
    return device


def fast_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot products in hardware (AMX, or AVX512-BF16 as on
    AMD Zen 4), which make ``precision=bfloat16`` faster, and PyTorch has the int8 matmul.
    (oneDNN also runs bfloat16 on older AVX-512 CPUs, emulated: no faster than float32.)"""
    cpu = torch.cpu
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        native = any(getattr(cpu, name)() for name in checks if hasattr(cpu, name))
    except RuntimeError:
        return False
    return native and hasattr(torch, "_int_mm")


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision a run trains at. ``bfloat16`` only on a CPU with fast bfloat16; on a CPU
    without, float32-fast (float32 matmuls, the other fast ops). ``bfloat16`` and
    ``float32-fast`` are for the CPU: elsewhere float32. Each fallback says why in one warning
    (never silently). ``auto`` (the MNIST presets): the fastest without a warning: bfloat16
    where it is fast, else float32-fast on the CPU, float32 elsewhere."""
    if name == "auto":
        if device.type != "cpu":
            return "float32"
        return "bfloat16" if fast_bfloat16() else "float32-fast"
    if name == "float32" or (device.type == "cpu" and name == "float32-fast"):
        return name
    if device.type != "cpu":
        why = f"precision {name} is for CPUs; on {device.type} training runs in float32"
        fallback = "float32"
    elif not fast_bfloat16():
        why = (
            "this CPU has no fast bfloat16 dot products (AMX or AVX512-BF16): training runs in "
            "float32-fast, float32 matmuls (--precision float32-fast says so without this "
            "warning)"
        )
        fallback = "float32-fast"
    else:
        return "bfloat16"
    warnings.warn(why, stacklevel=3)
    return fallback


def _announce_stop() -> None:
    log("\nstopping after this batch and saving a checkpoint (Ctrl-C again to abort)")


def _state_to_numpy(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": v.detach().cpu().numpy() for k, v in state.items()}


def tensors_to_state(prefix: str, tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {
        k.removeprefix(prefix): torch.from_numpy(np.array(v))
        for k, v in tensors.items()
        if k.startswith(prefix)
    }


@dataclass
class _Position:
    round: int = 1  # 1 or 2
    epoch: int = 0  # within the round
    batch: int = 0  # within the epoch
    round_started: bool = False


@dataclass
class Trainer:
    """Runs the two rounds on :class:`TrainData`; see the module docstring."""

    config: TrainConfig
    data: TrainData
    binarizer: Binarizer | None = None
    checkpoint_path: Path | None = None
    fingerprint: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    on_batch: Callable[[Trainer], None] | None = None  # called after every optimizer step
    metadata: dict[str, Any] = field(default_factory=dict)  # the model's; kept in checkpoints

    def __post_init__(self) -> None:
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.cluster = distributed.setup(self.device)
        if self.cluster.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.cluster.local_rank)
        torch.manual_seed(cfg.seed)
        self.model = BitMLP(
            self.data.x_train.shape[1],
            cfg.hidden,
            self.data.n_outputs,
            bias_kind=cfg.bias_kind,
            output_bias_kind=cfg.output_bias_kind,
            sparsity=cfg.sparsity,
            dropout_input=cfg.dropout_input,
            dropout_hidden=cfg.dropout_hidden,
            output=self.data.output,
        ).to(self.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.model.set_precision(self.precision)
        self.metadata["precision"] = self.precision  # the one trained at, after any fallback
        self.forward = self.model  # what training steps call: the DDP wrapper when distributed
        if self.cluster.active:
            from torch.nn.parallel import DistributedDataParallel

            if self.device.type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.forward = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            torch.manual_seed(cfg.seed + 7919 * self.cluster.rank)  # own dropout masks
        self.shuffle = torch.Generator().manual_seed(cfg.seed + 1)
        self.position = _Position()
        self.perm: torch.Tensor | None = None  # this epoch's shuffle order
        self.perm_for: list[int] = []  # the [round, epoch] it was drawn for
        self.best: dict[int, tuple[float | None, dict[str, torch.Tensor]]] = {}
        self.optimizer = self._make_optimizer(cfg.lr_round1)
        self.stop = {"stop": False}
        self.epoch_losses: list[float] = []  # this epoch's batch losses so far
        # The whole training set lives on the device: one copy, no per-batch transfers. That
        # is the (int8) input bits, or with image augmentation the raw images, whose moved
        # copies are binarized there batch by batch.
        self.y_train = torch.from_numpy(self.data.y_train).to(self.device)
        self.w_train = None
        if self.data.w_train is not None:
            self.w_train = torch.from_numpy(self.data.w_train).to(self.device)
        self.augment: ImageAugmenter | None = None
        if cfg.augments_images:
            if self.data.x_train_raw is None or self.binarizer is None:
                raise InputError(
                    "image augmentation needs the raw training inputs and the binarizer"
                )
            self.augment = ImageAugmenter(
                self.binarizer, cfg.image_shape, cfg.augment_shift, self.device,
                cfg.augment_elastic, cfg.augment_elastic_sigma,
            )  # fmt: skip
            self.x_train_raw = torch.from_numpy(self.data.x_train_raw).to(self.device)
        else:
            self.x_train = torch.from_numpy(self.data.x_train).to(self.device)

    # ---- pieces ------------------------------------------------------------------------------

    def _make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        cfg = self.config
        decay = [layer.weight for layer in self.model.layers]
        ids = {id(p) for p in decay}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
        klass = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return klass(groups, lr=lr, fused=True)

    def _epochs(self, round_: int) -> int:
        return self.config.epochs_round1 if round_ == 1 else self.config.epochs_round2

    def _lr(self, round_: int, step: int, total: int) -> float:
        cfg = self.config
        lr0 = cfg.lr_round1 if round_ == 1 else cfg.lr_round2
        frac = step / max(1, total)
        if cfg.schedule == "cosine":
            return lr0 * 0.5 * (1 + math.cos(math.pi * frac))
        if cfg.schedule == "exponential":
            return lr0 * 0.01**frac
        return lr0

    def _loss(
        self, out: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.data.output == "scores":
            return F.cross_entropy(out, y, label_smoothing=self.config.label_smoothing)
        w = None if weight is None else weight.float()
        return F.binary_cross_entropy_with_logits(out, y.float(), weight=w)

    @torch.no_grad()
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy (classes) or bit accuracy (bits) of the model in its current round."""
        self.model.eval()
        correct = 0.0
        for start in range(0, x.shape[0], 4096):
            xb = torch.from_numpy(x[start : start + 4096]).to(self.device).float()
            out = self.model(xb).cpu()
            yb = torch.from_numpy(y[start : start + 4096])
            if self.data.output == "scores":
                correct += (out.argmax(1) == yb).sum().item()
            else:
                correct += ((out >= 0).to(torch.uint8) == yb).float().mean(1).sum().item()
        self.model.train()
        return correct / x.shape[0]

    def _start_round(self, round_: int) -> None:
        if round_ == 2:
            if 1 in self.best:  # noisy backpropagation starts from round 1's best network
                self.model.load_state_dict(self.best[1][1])
            if self.config.round2_weights == "clip":
                for layer in self.model.layers:
                    layer.decompress()
            self.optimizer = self._make_optimizer(self.config.lr_round2)
        self.model.set_round(round_)
        self.position.round_started = True

    # ---- the loop ----------------------------------------------------------------------------

    def run(self) -> BitMLP:
        """Train to the end (or raise :class:`TrainingInterrupted`); return the best model."""
        with TrainingStop(self.stop, _announce_stop):
            self._run()
        return self.final_model()

    def final_model(self) -> BitMLP:
        """The best network of the last round, in binary eval mode."""
        final_round = 2 if self.config.epochs_round2 > 0 else 1
        self.model.load_state_dict(self.best[final_round][1])
        self.model.set_round(2)
        self.model.eval()
        return self.model

    def round_accuracies(self, sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
        """Accuracy of each round's best network (round 1 as trained: tanh, real-valued) on
        each named set of +1/-1 inputs; leaves the model in an arbitrary state."""
        out: dict[str, Any] = {name: {} for name in sets}
        for r, (_, state) in sorted(self.best.items()):
            self.model.load_state_dict(state)
            self.model.set_round(r)
            for name, (x, y) in sets.items():
                out[name][str(r)] = self.evaluate(x, y)
        return out

    def _batches_left(self) -> int:
        """Optimizer steps from the current position to the end of round 2."""
        pos, left = self.position, 0
        for r in (1, 2):
            if r == pos.round:
                left += max(0, self._epochs(r) - pos.epoch) * self._n_batches - pos.batch
            elif r > pos.round:
                left += self._epochs(r) * self._n_batches
        return left

    def run_eta(self) -> str:
        """The whole run's progress and time left, from this process's pace so far (its
        steps and evaluations), e.g. ``run 40% done, about 1m20s left``."""
        left = self._batches_left()
        done = self._eta_left0 - left
        total = self._n_batches * (self.config.epochs_round1 + self.config.epochs_round2)
        share = f"run {100 * (total - left) / max(1, total):.0f}% done"
        if done <= 0 or left == 0:
            return share
        per_step = (time.perf_counter() - self._eta_start) / done
        return f"{share}, about {format_duration(per_step * left)} left"

    def _run(self) -> None:
        cfg, pos = self.config, self.position
        n = self.y_train.shape[0]
        n_batches = math.ceil(n / cfg.batch_size)
        world, rank = self.cluster.world, self.cluster.rank
        if n % cfg.batch_size and n % cfg.batch_size < world:
            n_batches -= 1  # a last batch too small to give every process a sample is dropped
        self._n_batches = n_batches
        self._eta_start, self._eta_left0 = time.perf_counter(), self._batches_left()
        last_note = time.perf_counter()
        self.model.train()
        while pos.round <= 2:
            epochs = self._epochs(pos.round)
            if pos.epoch >= epochs:
                pos.round, pos.epoch, pos.batch, pos.round_started = pos.round + 1, 0, 0, False
                continue
            if not pos.round_started:
                self._start_round(pos.round)
            self.model.set_round(pos.round)
            if self.perm_for != [pos.round, pos.epoch]:  # not yet drawn (or restored)
                self.perm = torch.randperm(n, generator=self.shuffle)
                self.perm_for = [pos.round, pos.epoch]
            bar = ProgressBar(
                n_batches,
                f"round {pos.round} epoch {pos.epoch + 1}/{epochs}",
                enabled=self.cluster.main,
            )
            losses = self.epoch_losses
            while pos.batch < n_batches:
                if self.cluster.active:  # every process stops at the same batch
                    self.stop["stop"] = (
                        distributed.sum_across([self.stop["stop"]], self.cluster)[0] > 0
                    )
                if self.stop["stop"]:
                    bar.close()
                    self.save_checkpoint()
                    raise TrainingInterrupted(self.checkpoint_path or Path("(none)"))
                idx = self.perm[pos.batch * cfg.batch_size : (pos.batch + 1) * cfg.batch_size]
                if self.augment is not None:  # drawn for the global batch: same on every rank
                    s = cfg.augment_shift
                    shifts = torch.randint(-s, s + 1, (len(idx), 2), generator=self.shuffle)
                    noise = None
                    if cfg.augment_elastic:
                        size = (len(idx), 2, *cfg.image_shape)
                        noise = torch.rand(size, generator=self.shuffle).mul_(2).sub_(1)
                        noise = noise[rank::world].to(self.device)
                idx = idx[rank::world].to(self.device)  # this process's share of the batch
                if self.augment is not None:
                    xb = self.augment(
                        self.x_train_raw[idx], shifts[rank::world].to(self.device), noise
                    )
                else:
                    xb = self.x_train[idx].float()
                yb = self.y_train[idx]
                lr = self._lr(pos.round, pos.epoch * n_batches + pos.batch, epochs * n_batches)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                wb = None if self.w_train is None else self.w_train[idx]
                loss = self._loss(self.forward(xb), yb, wb)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                for layer in self.model.layers:
                    layer.clip_()  # no-op unless round 2 updates clipped real weights
                loss_sum, count = distributed.sum_across(  # the global batch's mean loss
                    [loss.item() * len(idx), float(len(idx))], self.cluster
                )
                losses.append(loss_sum / count)
                pos.batch += 1
                bar.update(pos.batch, f"loss {np.mean(losses[-50:]):.4f} | {self.run_eta()} |")
                if not bar.live and self.cluster.main and time.perf_counter() - last_note > 60:
                    last_note = time.perf_counter()  # a log file hears of long epochs too
                    log(
                        f"round {pos.round} epoch {pos.epoch + 1}/{epochs}: batch {pos.batch}/"
                        f"{n_batches}, loss {np.mean(losses[-50:]):.4f}; {self.run_eta()}"
                    )
                if self.on_batch is not None:
                    self.on_batch(self)
            bar.close()
            self._end_epoch(float(np.mean(losses)) if losses else float("nan"), bar.start)

    def _end_epoch(self, train_loss: float, started: float) -> None:
        pos = self.position
        record: dict[str, Any] = {"round": pos.round, "epoch": pos.epoch + 1, "loss": train_loss}
        metric: float | None = None
        if self.data.x_val is not None and self.data.y_val is not None:
            metric = self.evaluate(self.data.x_val, self.data.y_val)
        elif self.config.keep == "best":  # no validation split: select on the training data
            metric = self.evaluate(self.data.x_train, self.data.y_train)
        record["val_accuracy"] = metric
        record["seconds"] = round(time.perf_counter() - started, 3)
        self.history.append(record)
        best = self.best.get(pos.round)
        if self.config.keep == "last" or best is None or metric > best[0]:
            self.best[pos.round] = (metric, copy.deepcopy(self.model.state_dict()))
        shown = "" if metric is None else f"  val accuracy {100 * metric:.2f}%"
        epoch = f"round {pos.round} epoch {pos.epoch + 1}/{self._epochs(pos.round)}"
        pos.epoch, pos.batch = pos.epoch + 1, 0
        (log if self.cluster.main else _silent)(
            f"{epoch}: loss {train_loss:.4f}{shown}  ({record['seconds']:.1f}s; {self.run_eta()})"
        )
        self.epoch_losses = []
        self.save_checkpoint()

    # ---- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None or not self.cluster.main:
            return
        tensors = _state_to_numpy("model.", self.model.state_dict())
        for r, (_, state) in self.best.items():
            tensors.update(_state_to_numpy(f"best{r}.", state))
        opt = self.optimizer.state_dict()
        for idx, pstate in opt["state"].items():
            for key, value in pstate.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{idx}.{key}"] = value.detach().cpu().numpy()
        tensors["rng.torch"] = torch.get_rng_state().numpy()
        if self.device.type == "cuda":  # dropout on the GPU draws from the device's generator
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device).numpy()
        tensors["rng.shuffle"] = self.shuffle.get_state().numpy()
        if self.perm is not None:
            tensors["epoch_order"] = self.perm.numpy()
        description: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "config": self.config.to_json(),
            "position": dataclasses.asdict(self.position),
            "best_metric": {str(r): m for r, (m, _) in self.best.items()},
            "history": self.history,
            "epoch_losses": self.epoch_losses,
            "epoch_order_for": self.perm_for,
            "optimizer_groups": [
                {k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]
            ],
            "fingerprint": self.fingerprint,
            "output": self.data.output,
            "n_outputs": self.data.n_outputs,
            "binarizer": None,
            "metadata": self.metadata,
        }
        if self.binarizer is not None:
            bmeta, arrays = self.binarizer.to_state()
            description["binarizer"] = bmeta
            tensors.update({f"binarizer.{k}": v for k, v in arrays.items()})
        atomic_write_bytes(self.checkpoint_path, encode_container(tensors, description))

    def load_checkpoint_state(
        self, tensors: dict[str, np.ndarray], description: dict[str, Any]
    ) -> None:
        """Restore everything :meth:`save_checkpoint` wrote (config already applied)."""
        self.position = _Position(**description["position"])
        self.model.set_round(self.position.round if self.position.round <= 2 else 2)
        self.model.load_state_dict(tensors_to_state("model.", tensors))
        self.best = {
            int(r): (None if m is None else float(m), tensors_to_state(f"best{r}.", tensors))
            for r, m in description["best_metric"].items()
        }
        self.history = list(description["history"])
        self.epoch_losses = list(description["epoch_losses"])
        self.perm_for = list(description["epoch_order_for"])
        if self.position.round == 2 and self.position.round_started:
            self.optimizer = self._make_optimizer(self.config.lr_round2)
        opt_state: dict[str, Any] = {"state": {}, "param_groups": []}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                opt_state["state"].setdefault(int(idx), {})[name] = torch.from_numpy(
                    np.array(value)
                )
        groups = self.optimizer.state_dict()["param_groups"]
        for group, saved in zip(groups, description["optimizer_groups"], strict=True):
            opt_state["param_groups"].append({**saved, "params": group["params"]})
        self.optimizer.load_state_dict(opt_state)
        torch.set_rng_state(torch.from_numpy(np.array(tensors["rng.torch"])))
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(torch.from_numpy(np.array(tensors["rng.cuda"])), self.device)
        self.shuffle.set_state(torch.from_numpy(np.array(tensors["rng.shuffle"])))
        self.perm = (
            torch.from_numpy(np.array(tensors["epoch_order"])) if "epoch_order" in tensors else None
        )


def read_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        buf = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"no checkpoint at {path}: nothing to resume (drop --resume)") from None
    tensors, description = decode_container(buf, str(path), allow_nan=True)  # NaN losses
    if description.get("format") != CHECKPOINT_FORMAT:
        raise ModelFormatError(f"{path} is not a bitnn training checkpoint")
    if description.get("format_version") != CHECKPOINT_VERSION:
        raise ModelFormatError(
            f"{path} is a checkpoint of format version {description.get('format_version')}; "
            f"this bitnn resumes version {CHECKPOINT_VERSION} only"
        )
    return tensors, description


def checkpoint_binarizer(
    tensors: dict[str, np.ndarray], description: dict[str, Any]
) -> Binarizer | None:
    """The fitted input binarizer a checkpoint holds (None if the run had none)."""
    if not description["binarizer"]:
        return None
    arrays = {
        k.removeprefix("binarizer."): v for k, v in tensors.items() if k.startswith("binarizer.")
    }
    return Binarizer.from_state(description["binarizer"], arrays)


def to_bipolar(bits: np.ndarray) -> np.ndarray:
    """0/1 bits -> int8 +1/-1 (the training modules' input)."""
    return bits.astype(np.int8) * 2 - 1


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``range(n)`` into (train, validation) index arrays."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * fraction)
    if fraction > 0 and (n_val == 0 or n_val == n):
        raise InputError(f"cannot hold out {fraction:.0%} of {n} samples for validation")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """PyTorch's CPU threads set to ``n`` (None: left alone) for the block, then restored."""
    saved = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _own_running() -> int:
    """This process's threads that are running or runnable now."""
    own = 0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/stat") as f:
            own += f.read().rsplit(")", 1)[1].split()[0] == "R"
    return own


def _busy_elsewhere(samples: int = 3, gap: float = 0.01) -> int:
    """CPUs that other processes keep busy right now: the kernel's count of runnable threads
    (/proc/loadavg) less this process's own (its PyTorch threads may still be spinning after
    earlier work), the least of ``samples`` readings ``gap`` seconds apart: a thread that is
    runnable for an instant (one of ours going to sleep between two reads, a kernel worker) is
    not a busy neighbour, and once took a test's training down to one thread. 0 where the
    counts cannot be read."""
    busy = []
    try:
        for i in range(samples):
            if i:
                time.sleep(gap)
            before = _own_running()
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
            own = max(before, _own_running())  # ours that ran at either side of the reading
            busy.append(max(0, running - max(own, 1)))
    except (OSError, ValueError, IndexError):
        return 0
    return min(busy)


def cpu_threads(requested: int | None = None) -> int:
    """Threads for training on the CPU: ``requested``, else the CPUs this process may use (at
    most PyTorch's setting, e.g. ``OMP_NUM_THREADS``) less those other processes keep busy when
    training starts, at least 1.

    PyTorch's own default (one thread per core) collapses when another process shares the
    cores: every op waits for all its threads, and one that is descheduled holds the others up
    (on 2 cores, round 2's steps ran 12-25x slower beside one busy process, bitnn's default
    1.5-1.8x: docs/results/training.md). The count is recorded in the model's training
    metadata, and a resumed run keeps it. The default depends on the load when training starts,
    so two runs of one command can differ in it and in their results; ``requested`` fixes it.
    Runs with the same seed on one thread are bit-identical; with several, PyTorch's CPU sums
    can differ from one process to the next (tests/test_cli.py's resume test).
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise InputError(f"threads must be a whole number >= 1, got {requested!r}")
        return requested
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    # torch.get_num_threads() is PyTorch's own setting: OMP_NUM_THREADS when the user set it
    return max(1, min(cpus, torch.get_num_threads()) - _busy_elsewhere())


def train_network(
    X: Any,
    y: Any,
    config: TrainConfig | None = None,
    binarizer: Binarizer | None = None,
    *,
    X_val: Any = None,
    y_val: Any = None,
    n_classes: int | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    on_batch: Callable[[Trainer], None] | None = None,
    report: dict[str, tuple[Any, Any]] | None = None,
    threads: int | None = None,
    bit_weights: Any = None,
) -> BitNetwork:
    """Train a bitwise network on raw ``(X, y)`` and return the deployed :class:`BitNetwork`.

    ``binarizer`` (unfitted) turns X into input bits; it is fitted on the training part only.
    Without ``X_val``, ``config.val_fraction`` of ``(X, y)`` is held out (seeded). With
    ``resume=True`` the run continues from ``checkpoint_path`` with the checkpoint's own
    configuration; the data must be the same as when it started. ``report`` names extra
    ``(X, y)`` sets (say, a test set) on which each round's best network is measured; the
    accuracies go to the metadata (``training.round_accuracy``), nothing is selected on them.
    ``threads``: PyTorch threads on the CPU (default: :func:`cpu_threads`; a resumed run: the
    count it started with), set for the run and restored after it. ``bit_weights``: for bit
    outputs, a loss weight (>= 0) per target bit, shaped like ``y``: bits that matter more to
    the result count more in both rounds' loss (they are part of the data: a resumed run needs
    the same ones).
    """
    x_all = check_features(X)
    y_all, output, n_outputs = validate_targets(y, x_all.shape[0], n_classes)
    w_all = None if bit_weights is None else validate_bit_weights(bit_weights, y_all, output)
    fingerprint = data_fingerprint(x_all, y_all, *([] if w_all is None else [w_all]))
    tensors: dict[str, np.ndarray] = {}
    description: dict[str, Any] = {}
    if resume:
        if checkpoint_path is None:
            raise InputError("resume needs a checkpoint path")
        tensors, description = read_checkpoint(Path(checkpoint_path))
        if description["fingerprint"] != fingerprint:
            raise InputError(
                "the data differ from the data this checkpoint was trained on; resume with the "
                "same data, or start a new run without --resume"
            )
        config = TrainConfig.from_json(description["config"])
        started = description.get("metadata") or {}
        if metadata and started.get("command") and metadata.get("command") != started["command"]:
            # the model keeps the command that started it, and says how it was resumed
            metadata = {
                **metadata,
                "command": started["command"],
                "resumed_with": metadata["command"],
            }
        binarizer = checkpoint_binarizer(tensors, description)
    config = config or TrainConfig()
    if config.label_smoothing and output == "bits":
        raise InputError("label_smoothing is for class labels; these targets are output bits")
    w_tr = w_all
    if X_val is not None:
        x_tr, y_tr = x_all, y_all
        x_va = check_features(X_val, x_all.shape[1], "X_val")
        y_va, _, _ = validate_targets(
            y_val, x_va.shape[0], n_outputs if output == "scores" else None
        )
    elif config.val_fraction > 0:
        tr, va = split_validation(x_all.shape[0], config.val_fraction, config.seed)
        x_tr, y_tr, x_va, y_va = x_all[tr], y_all[tr], x_all[va], y_all[va]
        w_tr = None if w_all is None else w_all[tr]
    else:
        x_tr, y_tr, x_va, y_va = x_all, y_all, None, None
    if binarizer is None:
        binarizer = ThresholdBinarizer(0.0)
    if not resume:  # uint8 data (pixels) give whole-number edges, stored as bytes
        uint8 = getattr(X, "dtype", None) == np.uint8
        binarizer.fit(x_tr.astype(np.uint8) if uint8 else x_tr)
    data = TrainData(
        to_bipolar(binarizer.transform(x_tr)),
        y_tr,
        None if x_va is None else to_bipolar(binarizer.transform(x_va)),
        y_va,
        n_outputs,
        output,
        x_tr if config.augments_images else None,
        w_tr,
    )
    trainer = Trainer(
        config,
        data,
        binarizer,
        Path(checkpoint_path) if checkpoint_path is not None else None,
        fingerprint,
        on_batch=on_batch,
        metadata=dict(metadata or {}),  # plus the run state (threads, precision) for checkpoints
    )
    before = description.get("metadata", {}).get("threads") if resume else None
    if threads is None and isinstance(before, int) and before >= 1:
        threads = before  # a resumed run continues on the thread count it started with
    n_threads = cpu_threads(threads) if trainer.device.type == "cpu" else None
    if resume and n_threads is not None:
        if isinstance(before, int) and before != n_threads:
            warnings.warn(
                f"this run trained on {before} CPU thread(s) before and resumes on {n_threads}: "
                f"its result can differ from an uninterrupted run's (--threads {before} keeps "
                "it the same)",
                stacklevel=2,
            )
    was = description.get("metadata", {}).get("precision") if resume else None
    if isinstance(was, str) and was != trainer.precision:
        warnings.warn(
            f"this run trained at precision {was} before and resumes at {trainer.precision} "
            "(bfloat16 falls back to float32-fast where the CPU lacks it): its result can differ "
            "from an uninterrupted run's",
            stacklevel=2,
        )
    if n_threads is not None:
        trainer.metadata["threads"] = n_threads  # kept in checkpoints, for the resume check
    with _torch_threads(n_threads):
        if trainer.cluster.main:
            targets = f"{n_outputs} classes" if output == "scores" else f"{n_outputs} output bits"
            held = "no validation split" if x_va is None else f"{x_va.shape[0]:,} for validation"
            if X_val is None and x_va is not None:
                held += f" ({config.val_fraction:g} of the data, seeded)"
            threads = torch.get_num_threads() if trainer.device.type == "cpu" else None
            auto_precision = trainer.config.precision == "auto"
            log(
                f"data: {x_tr.shape[0]:,} training samples x {x_all.shape[1]} features "
                f"-> {binarizer.n_bits_out_} input bits ({binarizer!r}), {targets}; {held}"
            )
            log(
                f"device: {trainer.device}"
                + (f" ({threads} threads)" if threads else "")
                + (f", {trainer.cluster.world} processes" if trainer.cluster.active else "")
                + (f"; precision auto: {trainer.precision}" if auto_precision else "")
            )
        if resume:
            trainer.load_checkpoint_state(tensors, description)
            pos = trainer.position
            log(f"resuming at round {pos.round}, epoch {pos.epoch + 1}, batch {pos.batch}")
        model = trainer.run()
        round_accuracy = {}
        if report:
            sets = {}
            for name, (Xr, yr) in report.items():
                xr = check_features(Xr, x_all.shape[1], f"report set {name!r}")
                yr, _, _ = validate_targets(
                    yr, xr.shape[0], n_outputs if output == "scores" else None
                )
                sets[name] = (to_bipolar(binarizer.transform(xr)), yr)
            round_accuracy = trainer.round_accuracies(sets)
            model = trainer.final_model()
        final = trainer.history[-1] if trainer.history else {}
        meta = {
            "training": {
                "config": config.to_json(),
                "history": trainer.history,
                "best_val_accuracy": {str(r): m for r, (m, _) in trainer.best.items()},
                "n_train": int(x_tr.shape[0]),
                "n_val": 0 if x_va is None else int(x_va.shape[0]),
                "data_sha256": fingerprint,
                "final_epoch": final,
                "round_accuracy": round_accuracy,
                **({"threads": n_threads} if n_threads is not None else {}),
                "precision": trainer.precision,
            },
            **(metadata or {}),
        }
        return to_bit_network(model.cpu(), binarizer, meta)
