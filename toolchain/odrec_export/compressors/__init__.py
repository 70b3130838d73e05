"""The item-table compressors, one module each (see ``base.Compressor`` for what a module defines).

A module of this package that defines ``COMPRESSORS`` (a tuple of ``Compressor`` instances) is found
here by name: adding a compressor is adding its module.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:  # the modules load torch: imported on first use, so `from .compressors import UNCOMPRESSED` is light
    from .base import Compressor

__all__ = ["UNCOMPRESSED", "all_compressors", "get", "names"]

UNCOMPRESSED = "none"  # the plain table: a teacher's, or bench's baseline (full_table.py)


@cache
def all_compressors() -> dict[str, Compressor]:
    """Every compressor by name, the uncompressed table ("none") first, then by name."""
    found: dict[str, Compressor] = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        for compressor in getattr(importlib.import_module(f"{__name__}.{module}"), "COMPRESSORS", ()):
            found[compressor.name] = compressor
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != UNCOMPRESSED, kv[0])))


def names() -> list[str]:
    return list(all_compressors())


def get(name: str) -> Compressor:
    """The compressor called ``name``; a UsageError names the known ones otherwise."""
    known = all_compressors()
    if name not in known:
        raise UsageError(f"unknown compressor '{name}' (known: {', '.join(sorted(known))})")
    return known[name]
