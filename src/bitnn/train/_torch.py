"""PyTorch for the training modules, loaded with Ctrl-C held until it has loaded: a Ctrl-C in
the seconds its import takes would otherwise abort the ``bitnn`` command from PyTorch's C++
start-up (:class:`bitnn.interrupts.Held`). Modules of bitnn import ``torch`` from here.

Before PyTorch loads, its OpenMP runtime is asked to spin for 10,000 rounds rather than
300,000 (``GOMP_SPINCOUNT``) before its idle workers sleep, unless the user set an OpenMP wait
policy or spin count. At float32-fast, round 2's gradients and products run on bitnn's own
threads (:mod:`bitnn.engine.compiled`) between PyTorch's ops; with the default spin (on an AMD
EPYC, several milliseconds) the idle workers held the second core through them, and the table
product ran no faster on two threads than on one. Measured, not assumed: round 2's step went from
57-70 ms to 42-46 ms and the float32 MLP's stayed within its noise (docs/results/training.md,
session 18). Where PyTorch was imported before bitnn the setting cannot apply (libgomp reads it
once, when it loads) and steps keep their earlier speed."""

import os
import sys

from bitnn import interrupts

if "torch" not in sys.modules and not {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(os.environ):
    os.environ["GOMP_SPINCOUNT"] = "10000"

with interrupts.Held():
    import torch

__all__ = ["torch"]
