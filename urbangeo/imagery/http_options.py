"""How the tile sources and street-view providers that download talk to their servers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from urbangeo.io.http import HttpClient
from urbangeo.settings.imagery import (  # the one declaration of the defaults
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_LIMIT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    HttpSettings,
)


@dataclass
class HttpOptions:
    """The HTTP settings of a source or provider (those of
    :class:`~urbangeo.settings.imagery.HttpSettings`), or a ``client`` to use instead."""

    concurrency: int = DEFAULT_CONCURRENCY
    rate_limit: float = DEFAULT_RATE_LIMIT
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT_S
    user_agent: str | None = None
    client: HttpClient | None = None

    def new_client(self, *, secrets: Iterable[str], service: str, key_hint: str) -> HttpClient:
        """A client with these settings; ``secrets`` never show in its errors or logs."""
        return HttpClient(**_settings(self), secrets=secrets, service=service, key_hint=key_hint)


def _settings(source: HttpOptions | HttpSettings) -> dict[str, Any]:
    """The HTTP settings of ``source``: its values of :class:`HttpOptions`'s fields (but the
    client), which are also :class:`HttpSettings`'s and :class:`HttpClient`'s parameters."""
    return {f.name: getattr(source, f.name) for f in fields(HttpOptions) if f.name != "client"}


def http_options(s: HttpSettings, client: HttpClient | None) -> dict[str, Any]:
    """The :class:`HttpOptions` of a stage's settings ``s``, with the caller's ``client``."""
    return {**_settings(s), "client": client}
