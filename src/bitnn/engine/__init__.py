"""Engines that run a :class:`~bitnn.network.BitLayer`.

``reference`` (numpy) is the definition. The compiled engine (C kernels, variants
``portable``, ``avx2``, ``avx512``) is the default where it built; every engine offers
``layer_scores(x, layer)``, ``layer_bits(x, layer)`` and ``binarize(binarizer, X)`` and must
agree with the reference bit for bit.
"""

from __future__ import annotations

import warnings
from functools import cache
from typing import Any

from bitnn.engine import compiled, reference
from bitnn.errors import InputError

ENGINES = ("auto", "reference", "compiled", *compiled.VARIANTS)


@cache
def _compiled(variant: str | None) -> compiled.CompiledEngine:
    return compiled.CompiledEngine(variant)


@cache
def _warn_no_extension() -> None:
    warnings.warn(
        "bitnn's compiled kernels are not built (no C compiler at install time?); using the "
        "much slower numpy reference engine. Reinstall bitnn with gcc or clang to fix this.",
        RuntimeWarning,
        stacklevel=3,
    )


def get_engine(name: str | None = None) -> Any:
    """The engine called ``name``: ``auto`` (default) is the fastest available."""
    if name is None or name == "auto":
        if not compiled.extension_available():
            _warn_no_extension()
            return reference
        return _compiled(compiled.default_variant())
    if name == "reference":
        return reference
    if name == "compiled":
        return _compiled(compiled.default_variant())
    if name in compiled.VARIANTS:
        return _compiled(name)
    raise InputError(f"unknown engine {name!r}; choose one of {ENGINES}")
