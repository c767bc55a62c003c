"""Data-parallel training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node=N -m bitnn train ...`` starts N processes; each takes every N-th
sample of each global minibatch (``batch_size`` stays the global batch), gradients are
averaged across processes, and only rank 0 writes checkpoints, models and log lines. The
backend is NCCL on GPUs (with SyncBatchNorm, so normalisation sees the global batch) and gloo
on CPUs (where PyTorch has no SyncBatchNorm: each process normalises with its own share of the
batch). Without BatchNorm and dropout a run with N processes follows a single-process run
with the same global batch up to floating-point summation order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bitnn.train._torch import torch

dist = torch.distributed


@dataclass(frozen=True)
class Cluster:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> Cluster:
    """Join the process group torchrun describes (no-op for a single process)."""
    if not launched_by_torchrun():
        return Cluster()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Cluster(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def sum_across(values: list[float], cluster: Cluster) -> list[float]:
    """Element-wise sum over all processes (the values themselves for one process)."""
    if not cluster.active:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
