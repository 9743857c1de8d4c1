"""Lazy imports of optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
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


def package_folders(package: str) -> list[Path]:
    """The folders of an installed package, found without importing it (none: not
    installed), e.g. to find the data files it ships."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(folder) for folder in spec.submodule_search_locations]
