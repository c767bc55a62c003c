"""A training run's PyTorch network as it ended a round, read back from its checkpoint.

Round 1's network is the BNN's real-valued twin: the same structure on the same input bits,
with tanh-compressed real weights and tanh activations. Round 2's is the binarized network the
BNN was converted from (bit-exact with it). Benchmarks compare the BNN with its twin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitnn.errors import InputError
from bitnn.train._torch import torch
from bitnn.train.layers import BitMLP
from bitnn.train.trainer import (
    TrainConfig,
    checkpoint_binarizer,
    read_checkpoint,
    tensors_to_state,
    to_bipolar,
)


class CheckpointNetwork:
    """The network of ``checkpoint`` at the end of round ``round_`` (1: the real-valued twin)."""

    def __init__(self, checkpoint: str | Path, round_: int = 1) -> None:
        tensors, desc = read_checkpoint(Path(checkpoint))
        cfg = TrainConfig.from_json(desc["config"])
        binarizer = checkpoint_binarizer(tensors, desc)
        if binarizer is None:
            raise InputError(f"{checkpoint} holds no input binarizer (raw bits were given)")
        self.binarizer = binarizer
        self.output = desc["output"]
        state = tensors_to_state(f"best{round_}.", tensors)
        if not state:
            raise InputError(f"{checkpoint} holds no network of round {round_} (not trained)")
        self.model = BitMLP(
            self.binarizer.n_bits_out_,
            cfg.hidden,
            desc["n_outputs"],
            bias_kind=cfg.bias_kind,
            output_bias_kind=cfg.output_bias_kind,
            sparsity=cfg.sparsity,
            output=self.output,
        )
        self.model.load_state_dict(state)
        self.model.set_round(round_)
        self.model.eval()

    @torch.no_grad()
    def scores(self, features: np.ndarray) -> np.ndarray:
        """Raw features -> the last layer's real-valued outputs, one row per sample."""
        x = torch.from_numpy(to_bipolar(self.binarizer.transform(features))).float()
        return self.model(x).numpy()

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class ids (argmax, first on ties) or output bits (uint8, 1 where the output >= 0),
        as the deployed network answers."""
        s = self.scores(features)
        if self.output == "bits":
            return (s >= 0).astype(np.uint8)
        return np.argmax(s, axis=1)
