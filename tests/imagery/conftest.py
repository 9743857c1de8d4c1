"""Fixtures of the imagery tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.imagery.helpers import HeaderServer
from urbangeo.progress import set_mode


@pytest.fixture(autouse=True)
def _quiet_progress():
    set_mode("none")
    yield
    set_mode("bar")


@pytest.fixture
def header_server() -> Iterator[Callable[..., HeaderServer]]:
    servers: list[HeaderServer] = []

    def start(handler, latency: float = 0.0) -> HeaderServer:
        server = HeaderServer(handler, latency)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
