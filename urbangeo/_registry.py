"""Families of interchangeable implementations, registered by name.

A family (tile sources, street-view providers, captioners, encoders...) has one abstract base and
one module per implementation. Its registry maps each name to ``"module:attribute"`` so that the
names (the choices that settings, the CLI and the QGIS plugin offer) are known without importing
any implementation, and so without heavy stacks such as torch; :meth:`Registry.get` imports the
one asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from urbangeo.errors import InputError


class Registry:
    """Names of one family's implementations and where each lives (``"module:attribute"``).

    Iterating gives the names; ``name in registry`` tells whether one is registered.
    """

    def __init__(self, family: str, entries: Mapping[str, str]) -> None:
        self.family = family
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def check(self, name: str) -> str:
        """``name`` if it is registered, else an :class:`InputError` listing the choices."""
        if name not in self._entries:
            raise InputError(
                f"Unknown {self.family} {name!r}.",
                hint=f"Choose one of: {', '.join(self._entries)}.",
            )
        return name

    def get(self, name: str) -> Any:
        """The implementation registered as ``name`` (imported now)."""
        module, _, attribute = self._entries[self.check(name)].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def register(self, name: str, target: str) -> None:
        """Add (or replace) ``name`` → ``"module:attribute"``: a plug-in's own implementation."""
        if ":" not in target:
            raise ValueError(f"{target!r} is not 'module:attribute'.")
        self._entries[name] = target
