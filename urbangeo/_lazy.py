"""Lazy exports for a package's ``__init__``: names imported from their module when first used,
so that importing a package stays cheap (no GDAL, torch or spaCy until a name needs it)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from urbangeo._registry import Registry


def lazy_exports(
    package: str,
    exports: Mapping[str, str],
    *,
    defined: Iterable[str] = (),
    registry: Registry | None = None,
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package``.

    ``exports`` maps each public name to the module that defines it (absolute, or relative to
    ``package`` when it starts with a dot). ``defined``: the public names the package defines
    itself. With ``registry``, each implementation it holds is exported under its own name
    (``"module:Name"`` → ``Name``), imported through the registry when asked for.
    """
    targets = {
        name: module if not module.startswith(".") else package + module
        for name, module in exports.items()
    }

    def registered() -> dict[str, str]:
        if registry is None:
            return {}
        # Where two names hold one implementation, the first registered wins.
        return {registry[key].rpartition(":")[2]: key for key in reversed(registry.names())}

    def __getattr__(name: str) -> Any:
        if name in targets:
            return getattr(importlib.import_module(targets[name]), name)
        key = registered().get(name)
        if key is not None and registry is not None:
            return registry.get(key)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        module = importlib.import_module(package)
        return sorted({*vars(module), *targets, *registered()})

    return sorted({*targets, *defined, *registered()}), __getattr__, __dir__
