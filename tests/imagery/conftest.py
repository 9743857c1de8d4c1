"""Fixtures of the imagery tests."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from tests.imagery.helpers import HeaderServer


@pytest.fixture(autouse=True)
def _quiet_progress(quiet_progress: None) -> None:
    """Every imagery test runs without progress bars."""


@pytest.fixture
def header_server(serve) -> Callable[..., HeaderServer]:
    """``header_server(handler, latency=0.0)``: a :class:`HeaderServer`, shut down after the
    test."""
    return functools.partial(serve, HeaderServer)


@pytest.fixture
def count_tiles(monkeypatch) -> dict:
    """Count (and optionally interrupt) RasterSource.tile calls: ``calls`` so far, a
    KeyboardInterrupt at call ``interrupt_at``."""
    from urbangeo.imagery.sources.raster import RasterSource

    state = {"calls": 0, "interrupt_at": None}
    original = RasterSource.tile

    def tile(self, b, size):
        state["calls"] += 1
        if state["calls"] == state["interrupt_at"]:
            raise KeyboardInterrupt
        return original(self, b, size)

    monkeypatch.setattr(RasterSource, "tile", tile)
    return state
