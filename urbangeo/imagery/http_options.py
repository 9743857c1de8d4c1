"""How the tile sources and street-view providers that download talk to their servers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from urbangeo.io.http import HttpClient
from urbangeo.settings.imagery import HttpSettings  # the one declaration of these settings


@dataclass
class HttpOptions:
    """The HTTP settings of a source or provider (a stage's
    :class:`~urbangeo.settings.imagery.HttpSettings`; their defaults without one), or a
    ``client`` to use instead."""

    http: HttpSettings = field(default_factory=HttpSettings)
    client: HttpClient | None = None

    @property
    def concurrency(self) -> int:
        """Requests in flight at once."""
        return self.http.concurrency

    def new_client(self, *, secrets: Iterable[str], service: str, key_hint: str) -> HttpClient:
        """A client with these settings; ``secrets`` never show in its errors or logs."""
        settings = self.http.pick(*HttpSettings.names())  # HttpClient's parameters
        return HttpClient(**settings, secrets=secrets, service=service, key_hint=key_hint)


def http_options(s: HttpSettings, client: HttpClient | None) -> dict[str, Any]:
    """The :class:`HttpOptions` of a stage's settings ``s``, with the caller's ``client``."""
    return {"http": s, "client": client}
