"""The offline map at scale (issue #16): compact data drawn on a canvas, captions beside the
page loaded on demand, and an aggregated view with drill-down, checked in headless Chromium.
Timings are not asserted here (benchmarks/bench_map_scale.py measures them)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from tests.viz.browser import Browser, opened_map, require_chromium
from urbangeo.viz import regions_data
from urbangeo.viz.maps import build_map, map_files_dir, write_map

MB = 1024 * 1024


def synthetic(cols: int, rows: int, *, size: float = 250.0, seed: int = 0):
    """A cols × rows grid of square cells in UTM 35N (row-major ids "{col}_{row}"), a value
    per cell, five clusters and a caption per cell."""
    c, r = np.meshgrid(np.arange(cols), np.arange(rows))
    c, r = c.ravel(), r.ravel()
    x, y = 500_000.0 + c * size, 6_700_000.0 + r * size
    ids = pd.Index([f"{a}_{b}" for a, b in zip(c, r, strict=True)])
    regions = gpd.GeoDataFrame(
        {"region_id": ids}, geometry=shapely.box(x, y, x + size, y + size), crs="EPSG:32635"
    )
    rng = np.random.default_rng(seed)
    observed = pd.DataFrame({"population": rng.gamma(2.0, 50.0, len(ids))}, index=ids)
    clusters = pd.DataFrame({"cluster": rng.integers(0, 5, len(ids))}, index=ids)
    captions = pd.Series([f"Caption of {i}: streets and blocks." for i in ids], index=ids)
    return regions, observed, clusters, captions


def _popup_caption(browser: Browser, rid: str) -> str:
    browser.js(f"urbangeo.click({rid!r}); 0")
    return browser.js(
        "new Promise(function (ok) { (function look(n) {"
        " var c = document.querySelector('.leaflet-popup-content .caption');"
        " if (c || n > 200) { ok(c ? c.textContent : ''); } else { setTimeout(look, 20, n + 1); }"
        "})(0); })"
    )


def _wait_for_cells(browser: Browser, timeout: float) -> None:
    """Until the map draws cells (a drill-down from blocks loads them first)."""
    browser.js(
        "new Promise(function (ok) { (function look() {"
        " if (urbangeo.mode() === 'cells') { ok(); } else { setTimeout(look, 20); } })(); })",
        timeout=timeout,
    )


def _cell_centre(regions: gpd.GeoDataFrame, rid: str) -> tuple[float, float]:
    point = regions.set_index("region_id").to_crs("EPSG:4326").geometry[rid].centroid
    return point.y, point.x


def test_captions_beside_the_page_load_on_demand(tmp_path):
    require_chromium()
    regions, observed, clusters, captions = synthetic(12, 10)
    fmap = build_map(
        regions, observed=observed, clusters=clusters, region_captions=captions, inline_regions=50
    )
    page = write_map(fmap, tmp_path / "map.html")
    folder = map_files_dir(page)
    assert folder == tmp_path / "map_files" and sorted(folder.glob("captions_*.js"))
    assert "Caption of 3_4" not in page.read_text()  # not inlined
    with opened_map(page) as browser:
        assert browser.js("urbangeo.drawn()") == 120
        assert _popup_caption(browser, "3_4") == captions["3_4"]
        assert browser.js("urbangeo.caption('11_9')") == captions["11_9"]
        assert browser.errors() == []
    # Without the folder beside it the page still opens and says where the caption is.
    moved = tmp_path / "alone"
    moved.mkdir()
    (moved / "map.html").write_text(page.read_text())
    with opened_map(moved / "map.html") as browser:
        browser.js("urbangeo.click('3_4'); 0")
        text = browser.js(
            "new Promise(r => setTimeout(() => r(document.querySelector("
            "'.leaflet-popup-content').textContent), 500))"
        )
        assert "map_files/, not found beside the page" in text
    # A small map written over it removes the folder (it was the map's own).
    write_map(build_map(regions, observed=observed), page)
    assert not folder.exists()


def test_aggregated_view_shows_block_means_and_drills_down(tmp_path, monkeypatch):
    require_chromium()
    monkeypatch.setattr(regions_data, "MAX_BLOCKS", 30)  # 120 cells: blocks of 2 × 2
    regions, observed, clusters, captions = synthetic(12, 10)
    fmap = build_map(
        regions,
        observed=observed,
        clusters=clusters,
        region_captions=captions,
        inline_regions=50,
        aggregate_regions=100,
    )
    page = write_map(fmap, tmp_path / "map.html")
    assert sorted(map_files_dir(page).glob("cells_*.js"))
    # Independent: the 2 × 2 means of the value grid (rows are the grid's rows).
    grid = observed["population"].to_numpy().reshape(10, 12)
    means = grid.reshape(5, 2, 6, 2).mean(axis=(1, 3))
    with opened_map(page) as browser:
        # Zoomed out (a cell under a pixel wide): the blocks.
        browser.js("urbangeo.view(null, null, 9)")
        assert browser.js("urbangeo.mode()") == "blocks"
        assert browser.js("urbangeo.drawn()") == 30
        for col, row in ((0, 0), (5, 3), (11, 9)):
            lat, lon = _cell_centre(regions, f"{col}_{row}")
            _, value = browser.js(f"urbangeo.valueAt({lat}, {lon}, 'population')")
            assert value == pytest.approx(means[row // 2, col // 2], rel=1e-5)
        # Zoomed in, the cells of the chunks in view are loaded and drawn, with captions.
        lat, lon = _cell_centre(regions, "5_3")
        browser.js(f"urbangeo.view({lat}, {lon}, 16)")
        _wait_for_cells(browser, timeout=60)
        rid, value = browser.js(f"urbangeo.valueAt({lat}, {lon}, 'population')")
        assert rid == "5_3" and value == pytest.approx(grid[3, 5], rel=1e-6)
        assert _popup_caption(browser, "5_3") == captions["5_3"]
        assert browser.errors() == []


def test_a_100000_region_map_opens_draws_switches_and_shows_captions(tmp_path):
    require_chromium()
    regions, observed, clusters, captions = synthetic(400, 250)
    page = write_map(
        build_map(regions, observed=observed, clusters=clusters, region_captions=captions),
        tmp_path / "map.html",
    )
    assert page.stat().st_size < 30 * MB  # what the browser loads to open it
    assert sorted(map_files_dir(page).glob("captions_*.js"))  # captions beside it
    with opened_map(page, timeout=300) as browser:
        assert browser.js("urbangeo.mode()") == "cells"
        assert browser.js("urbangeo.drawn()") == 100_000  # the whole grid is in view
        before = browser.js("urbangeo.colorOf('Clusters', '200_100')")
        browser.js("urbangeo.show('Observed population')", timeout=300)
        assert browser.js("urbangeo.drawn()") == 100_000
        assert browser.js("urbangeo.app.map.hasLayer(urbangeo.layers['Clusters'])") is False
        assert browser.js("urbangeo.colorOf('Observed population', '200_100')") not in (
            None,
            before,
        )
        assert _popup_caption(browser, "200_100") == captions["200_100"]
        assert browser.errors() == []


@pytest.mark.slow
def test_a_million_region_map_opens_aggregated(tmp_path):
    require_chromium()
    regions, observed, _, _ = synthetic(1000, 1000)
    page = write_map(build_map(regions, observed=observed), tmp_path / "map.html")
    assert page.stat().st_size < 30 * MB
    grid = observed["population"].to_numpy().reshape(1000, 1000)
    k = int(np.ceil(np.sqrt(1_000_000 / regions_data.MAX_BLOCKS)))
    assert k == 5
    with opened_map(page, timeout=300) as browser:
        assert browser.js("urbangeo.mode()") == "blocks"
        assert browser.js("urbangeo.drawn()") == (1000 // k) ** 2
        lat, lon = _cell_centre(regions, "512_377")
        _, value = browser.js(f"urbangeo.valueAt({lat}, {lon}, 'population')")
        block = grid[375:380, 510:515].mean()
        assert value == pytest.approx(block, rel=1e-5)
        browser.js(f"urbangeo.view({lat}, {lon}, 15)")
        _wait_for_cells(browser, timeout=300)
        rid, value = browser.js(f"urbangeo.valueAt({lat}, {lon}, 'population')")
        assert rid == "512_377" and value == pytest.approx(grid[377, 512], rel=1e-6)
        assert browser.errors() == []
