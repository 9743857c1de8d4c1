"""Lazy exports for a package's ``__init__``: names imported from their module when first used,
so that importing a package stays cheap (no GDAL, torch or spaCy until a name needs it)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package``.

    ``exports`` maps each public name to the module that defines it (absolute, or relative to
    ``package`` when it starts with a dot).
    """
    targets = {
        name: module if not module.startswith(".") else package + module
        for name, module in exports.items()
    }

    def __getattr__(name: str) -> Any:
        if name in targets:
            return getattr(importlib.import_module(targets[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        module = importlib.import_module(package)
        return sorted({*vars(module), *targets})

    return sorted(targets), __getattr__, __dir__
