"""Named training configurations.

``paper`` follows Kim & Smaragdis (2015) as far as the paper specifies it: one-bit biases,
tanh weight compression then noisy backpropagation, population-based (quantile) input bits
scattered to input units, dropout; on MNIST 3 hidden layers of 1024 units. What the paper
leaves open we chose by measurement (docs/results/mnist-exploration.md): Adam with a cosine
schedule, 2-bit thermometer codes, and on MNIST random shifts of up to 2 pixels.
``best`` adds BatchNorm folded into integer thresholds at conversion (inference stays all-bit:
XNOR, popcount, integer compare); on MNIST 3 hidden layers of 2048 units.

A preset's ``fixed`` settings define it: giving another value explicitly is a conflict, not an
override. Everything else (epochs, learning rates, widths) may be overridden.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

from bitnn.errors import InputError


@dataclass(frozen=True)
class Preset:
    config: dict[str, Any]
    binarizer: str
    description: str
    fixed: tuple[str, ...] = ()  # config keys whose preset value may not be changed
    binarizer_kinds: tuple[str, ...] = ()  # allowed binarizer kinds (empty: any)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-dataset defaults
    binarizers: dict[str, str] = field(default_factory=dict)  # per-dataset binarizer specs

    def binarizer_for(self, dataset: str | None) -> str:
        return self.binarizers.get(dataset or "", self.binarizer)


# What every run on a named dataset knows about its inputs, with or without a preset.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {"mnist": {"image_shape": (28, 28)}}

# Batches of 400 with 3x the learning rates and bfloat16 matmuls where the CPU has them: the
# paper's 1.33% in about 11 minutes on 2 cores instead of 45 (chosen on the validation split:
# docs/results/mnist.md, runs [10]-[13], [16], [17], [20]).
_MNIST = {
    "hidden": (1024, 1024, 1024),
    "epochs_round1": 30,
    "epochs_round2": 90,
    "augment_shift": 2,
    "batch_size": 400,
    "lr_round1": 0.03,
    "lr_round2": 0.009,
    "precision": "auto",
}

# Speech denoising (bitnn train-denoiser): the paper's 2 x 2048 network, frames as samples.
# Chosen on held-out voices and a held-out noise type (docs/results/denoise.md): validation
# bit accuracy peaks within a few epochs of round 1, so few epochs; each round ends with its
# last epoch. bfloat16 or float32-fast where the CPU suits them: the same validation SDR as
# float32 (docs/results/denoise-exploration.md, runs 14-15 and 33, 38).
_DENOISE = {
    "hidden": (2048, 2048),
    "epochs_round1": 3,
    "epochs_round2": 9,
    "batch_size": 512,
    "lr_round1": 3e-3,
    "lr_round2": 1e-3,
    "dropout_input": 0.2,
    "dropout_hidden": 0.2,
    "keep": "last",
    "precision": "auto",
}

# Keyword classification from utterance features (FSDD digits, users' audio class folders):
# a few thousand recordings, so a smaller network with strong dropout; chosen on FSDD takes
# 5-9 as validation, never on the test takes 0-4 (docs/results/speech-digits.md).
_KEYWORDS = {
    "hidden": (512, 512),
    "epochs_round1": 30,
    "epochs_round2": 30,
    "batch_size": 64,
    "dropout_input": 0.3,
    "dropout_hidden": 0.3,
    "keep": "last",
}

PRESETS: dict[str, Preset] = {
    "paper": Preset(
        config={
            "bias_kind": "bias",
            "output_bias_kind": "bias",
            "round2_weights": "tanh",
            "optimizer": "adam",
            "schedule": "cosine",
            "dropout_input": 0.1,
            "dropout_hidden": 0.2,
        },
        binarizer="quantile:2:thermometer",
        description="the paper's method: bias bits, tanh compression, noisy backprop",
        fixed=("bias_kind", "output_bias_kind", "round2_weights"),
        binarizer_kinds=("quantile",),
        datasets={
            "mnist": _MNIST,
            "denoise": _DENOISE,
            "keywords": _KEYWORDS,
        },
    ),
    "best": Preset(
        config={
            "bias_kind": "threshold",
            "output_bias_kind": "bias",
            "optimizer": "adam",
            "schedule": "cosine",
            "dropout_input": 0.1,
            "dropout_hidden": 0.2,
        },
        binarizer="quantile:2:thermometer",
        description="integer thresholds (folded BatchNorm), cosine schedule",
        fixed=("bias_kind", "output_bias_kind"),
        datasets={
            "mnist": {**_MNIST, "hidden": (2048, 2048, 2048), "epochs_round2": 80},
            "denoise": _DENOISE,
            "keywords": _KEYWORDS,
        },
        # 3 bits per magnitude: +0.8 dB SDR over 2 on held-out voices and noise
        # (docs/results/denoise-exploration.md, runs 13-14)
        binarizers={"denoise": "quantile:3:thermometer"},
    ),
}


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "(none)"
    return str(value)


def describe_presets(flags: dict[str, str], datasets: tuple[str, ...] = ("mnist",)) -> str:
    """What each preset sets, for ``--help``: ``flags`` maps config keys to option names."""
    flags = {"output_bias_kind": "output layer bias", **flags}
    lines = ["presets (an option you give replaces the preset's value unless marked fixed):"]
    wrap = textwrap.TextWrapper(width=92, initial_indent="    ", subsequent_indent="      ")
    for name, preset in PRESETS.items():
        lines.append(f"  {name}: {preset.description}")
        sets = [
            f"{flags.get(k, k)} {_show(v)}" + (" (fixed)" if k in preset.fixed else "")
            for k, v in preset.config.items()
        ]
        kinds = " or ".join(preset.binarizer_kinds)
        sets.append(f"--binarizer {preset.binarizer}" + (f" ({kinds} only)" if kinds else ""))
        lines += wrap.wrap("sets " + "; ".join(sets))
        for dataset in datasets:
            extra = preset.datasets.get(dataset, {})
            shown = [f"{flags.get(k, k)} {_show(v)}" for k, v in extra.items()]
            if dataset in preset.binarizers:
                shown.append(f"--binarizer {preset.binarizers[dataset]}")
            if shown:
                lines += wrap.wrap(f"on {dataset} also {'; '.join(shown)}")
        lines += wrap.wrap("on your own data every other option keeps the default shown above")
    lines.append(
        "without --preset every option keeps its default (binarizer quantile:2:thermometer)"
    )
    return "\n".join(lines)


def overrides(
    preset_name: str | None, explicit: dict[str, Any], dataset: str | None = None
) -> list[tuple[str, Any, Any]]:
    """``(key, given, preset's value)`` for each explicit option that replaces a preset value."""
    if preset_name is None:
        return []
    preset = get_preset(preset_name)
    values = {**preset.config, **preset.datasets.get(dataset or "", {})}
    return [(k, v, values[k]) for k, v in explicit.items() if k in values and values[k] != v]


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def resolve(
    preset_name: str | None,
    explicit: dict[str, Any],
    binarizer: str | None = None,
    dataset: str | None = None,
) -> tuple[dict[str, Any], str]:
    """TrainConfig values and binarizer spec from a preset, a dataset and explicit options.

    Explicit options override the preset's defaults, except its ``fixed`` settings and
    binarizer kind, where a different value raises :class:`InputError`.
    """
    known = DATASET_DEFAULTS.get(dataset or "", {})
    if preset_name is None:
        return {**known, **explicit}, binarizer or "quantile:2:thermometer"
    preset = get_preset(preset_name)
    values = {**known, **preset.config, **preset.datasets.get(dataset or "", {})}
    for key, value in explicit.items():
        if key in preset.fixed and value != preset.config[key]:
            raise InputError(
                f"{key}={value!r} conflicts with --preset {preset_name} ({preset.description}: "
                f"{key}={preset.config[key]!r}); drop one of them"
            )
        values[key] = value
    spec = binarizer or preset.binarizer_for(dataset)
    kind = spec.split(":")[0]
    if preset.binarizer_kinds and kind not in preset.binarizer_kinds:
        raise InputError(
            f"binarizer {spec!r} conflicts with --preset {preset_name}, which uses "
            f"{' or '.join(preset.binarizer_kinds)} binarizers"
        )
    return values, spec
