"""Engines that run a :class:`~bitnn.network.BitLayer`.

``reference`` (numpy) is the definition. Every engine offers ``layer_scores(x, layer)`` and
``layer_bits(x, layer)`` on packed uint64 batches and must agree with it bit for bit.
"""

from __future__ import annotations

from types import ModuleType

from bitnn.engine import reference
from bitnn.errors import InputError

ENGINES = ("reference",)


def get_engine(name: str | None = None) -> ModuleType:
    """The engine called ``name`` (default: the fastest available)."""
    if name is None or name in ("auto", "reference"):
        return reference
    raise InputError(f"unknown engine {name!r}; choose one of {ENGINES}")
