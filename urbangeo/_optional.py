"""Lazy imports of optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from urbangeo.errors import MissingExtraError


def import_optional(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or fail with a message naming ``pip install 'urbangeo[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the optional package '{module.split('.')[0]}', "
            f"which is not installed ({exc}).",
            hint=f"Install it with: pip install 'urbangeo[{extra}]'",
        ) from exc
