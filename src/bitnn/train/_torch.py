"""PyTorch for the training modules, loaded with Ctrl-C held until it has loaded: a Ctrl-C in
the seconds its import takes would otherwise abort the ``bitnn`` command from PyTorch's C++
start-up (:class:`bitnn.interrupts.Held`). Modules of bitnn import ``torch`` from here."""

from bitnn import interrupts

with interrupts.Held():
    import torch

__all__ = ["torch"]
