"""Fixtures of the imagery tests."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pytest

from tests.imagery.helpers import (
    UTM35,
    X0,
    Y0,
    HeaderServer,
    coded_raster,
    count_tile_calls,
    grid,
    make_run,
)


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
    """:func:`~tests.imagery.helpers.count_tile_calls` for the test."""
    return count_tile_calls(monkeypatch)


@pytest.fixture
def raster_run(tmp_path) -> tuple[Path, Path, gpd.GeoDataFrame]:
    """A run of 3 × 2 regions and a coded GeoTIFF over them: ``(gpkg, tif, regions)``."""
    regions = grid(3, 2)
    gpkg = make_run(tmp_path, regions)
    tif = coded_raster(
        tmp_path / "coded.tif", left=X0, top=Y0 + 2000, pixel=10, width=300, height=200, crs=UTM35
    )
    return gpkg, tif, regions
