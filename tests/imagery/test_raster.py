"""GeoTIFF tiles: each image covers exactly its region, in the raster's CRS or another one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from tests.helpers import write_geotiff
from tests.imagery.helpers import (
    UTM35,
    X0,
    Y0,
    coded_raster,
    decode_cols_rows,
    grid,
    make_run,
    read_png,
)
from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.sources import raster as raster_source
from urbangeo.imagery.stages import tiles_stage
from urbangeo.io.files import sha256_file
from urbangeo.io.gpkg import read_layer


def _images(gpkg):
    return read_layer(gpkg, C.LAYER_IMAGES).set_index(C.IMAGE_ID)


def test_same_crs_tiles_are_exact_windows(tmp_path):
    regions = grid(3, 2)
    gpkg = make_run(tmp_path, regions)
    # 5 m pixels from 500 m west / north of the grid: region (c, r) starts at a known pixel.
    left, top = X0 - 500, Y0 + 2000 + 500
    tif = coded_raster(
        tmp_path / "coded.tif", left=left, top=top, pixel=5, width=800, height=600, crs=UTM35
    )
    result = tiles_stage(gpkg, raster=tif, size=200, resampling="nearest")
    assert result.counts == {"ok": 6, "missing": 0, "failed": 0}
    images = _images(gpkg)
    assert len(images) == 6
    for region in regions.itertuples():
        row = images.loc[f"overhead_{region.region_id}"]
        assert row[C.KIND] == C.KIND_OVERHEAD and row[C.STATUS] == C.STATUS_OK
        assert row[C.PATH] == f"images/overhead/overhead_{region.region_id}.png"
        assert (row[C.WIDTH], row[C.HEIGHT]) == (200, 200)
        assert row[C.SHA256] == sha256_file(tmp_path / row[C.PATH])
        assert row.geometry.equals(region.geometry.centroid)
        minx, _, _, maxy = region.geometry.bounds
        cols, rows = decode_cols_rows(read_png(tmp_path / row[C.PATH]))
        want_cols = (minx - left) / 5 + np.arange(200)[None, :]
        want_rows = (top - maxy) / 5 + np.arange(200)[:, None]
        np.testing.assert_array_equal(cols, np.broadcast_to(want_cols, cols.shape))
        np.testing.assert_array_equal(rows, np.broadcast_to(want_rows, rows.shape))


@pytest.mark.parametrize("size, warped_grid", [(100, False), (200, True)])
def test_raster_in_web_mercator_for_a_utm_grid(tmp_path, monkeypatch, size, warped_grid):
    """Per square (raster much finer than the images) or through one warped grid."""
    calls = []
    original = raster_source.RasterSource._vrt_tile
    monkeypatch.setattr(
        raster_source.RasterSource,
        "_vrt_tile",
        lambda self, b, n: calls.append(1) or original(self, b, n),
    )
    regions = grid(2, 2)
    gpkg = make_run(tmp_path, regions)
    to_merc = Transformer.from_crs(UTM35, "EPSG:3857", always_xy=True)
    xs, ys = to_merc.transform([X0 - 300, X0 + 2300], [Y0 - 300, Y0 + 2300])
    pixel = 8.0  # metres of web mercator, about 4 m on the ground at 60.5 N
    left, top = min(xs), max(ys)
    width = int((max(xs) - left) / pixel) + 1
    height = int((top - min(ys)) / pixel) + 1
    tif = coded_raster(
        tmp_path / "merc.tif",
        left=left,
        top=top,
        pixel=pixel,
        width=width,
        height=height,
        crs="EPSG:3857",
    )
    tiles_stage(gpkg, raster=tif, size=size, resampling="nearest")
    assert len(calls) == (4 if warped_grid else 0)
    images = _images(gpkg)
    for region in regions.itertuples():
        image = read_png(tmp_path / images.loc[f"overhead_{region.region_id}", C.PATH])
        cols, rows = decode_cols_rows(image)
        minx, miny, maxx, maxy = region.geometry.bounds
        step = (maxx - minx) / size
        cx = minx + (np.arange(size) + 0.5) * step
        cy = maxy - (np.arange(size) + 0.5) * step
        gx, gy = np.meshgrid(cx, cy)
        mx, my = to_merc.transform(gx, gy)
        want_cols = np.floor((mx - left) / pixel)
        want_rows = np.floor((top - my) / pixel)
        # GDAL's warper approximates the transform to 1/8 pixel: allow one pixel at edges.
        assert np.abs(cols - want_cols).max() <= 1
        assert np.abs(rows - want_rows).max() <= 1
        assert np.mean((cols == want_cols) & (rows == want_rows)) > 0.95
        # The corner pixels hold the raster pixels at the region's corners (their centres
        # lie half an output pixel inside the corners).
        for (r, c), (x, y) in {(0, 0): (minx, maxy), (size - 1, size - 1): (maxx, miny)}.items():
            mx0, my0 = to_merc.transform(x, y)
            half = np.hypot(mx[r, c] - mx0, my[r, c] - my0) / pixel
            assert abs(cols[r, c] - (mx0 - left) / pixel) <= half + 1
            assert abs(rows[r, c] - (top - my0) / pixel) <= half + 1


def test_bilinear_keeps_a_linear_ramp(tmp_path):
    """Default resampling on a smooth raster: the centre pixel has the centre's value."""
    regions = grid(2, 1)
    gpkg = make_run(tmp_path, regions)
    left, top, pixel = X0 - 1000, Y0 + 2000, 10.0
    cols = np.arange(400)
    ramp = np.broadcast_to(np.clip(cols * 0.6, 0, 255).astype(np.float32), (300, 400))
    path = tmp_path / "ramp.tif"
    data = np.round(ramp).astype(np.uint8)
    write_geotiff(path, data, left=left, top=top, pixel=pixel, crs=UTM35)
    tiles_stage(gpkg, raster=path, size=64)
    images = _images(gpkg)
    for region in regions.itertuples():
        image = read_png(tmp_path / images.loc[f"overhead_{region.region_id}", C.PATH])
        assert image.ndim == 2  # one band: grey
        minx, _, maxx, _ = region.geometry.bounds
        step = (maxx - minx) / 64
        x = minx + (np.arange(64) + 0.5) * step
        expected = np.clip(((x - left) / pixel - 0.5) * 0.6, 0, 255)
        np.testing.assert_allclose(image[32], expected, atol=1.01)


def test_partly_covered_and_outside_regions_are_missing(tmp_path):
    regions = grid(4, 1)
    gpkg = make_run(tmp_path, regions)
    # Covers region 0 and 1 fully and 30 % of region 2; region 3 not at all.
    tif = coded_raster(
        tmp_path / "part.tif", left=X0, top=Y0 + 1000, pixel=10, width=230, height=100, crs=UTM35
    )
    result = tiles_stage(gpkg, raster=tif, size=64)
    assert result.counts == {"ok": 2, "missing": 2, "failed": 0}
    images = _images(gpkg)
    ids = list(regions[C.REGION_ID])
    assert images.loc[f"overhead_{ids[2]}", C.STATUS] == C.STATUS_MISSING
    assert "only 30%" in images.loc[f"overhead_{ids[2]}", C.REASON]
    assert images.loc[f"overhead_{ids[3]}", C.REASON] == "outside the raster"
    assert pd.isna(images.loc[f"overhead_{ids[3]}", C.PATH])
    assert not (tmp_path / "images/overhead" / f"overhead_{ids[3]}.png").exists()
    # With a lower threshold the 30 % region is drawn, black where there is no data.
    result = tiles_stage(gpkg, raster=tif, size=100, min_valid=0.2, overwrite=True)
    assert result.counts["ok"] == 3
    image = read_png(tmp_path / f"images/overhead/overhead_{ids[2]}.png")
    assert (image[:, 35:] == 0).all() and (image[:, :25].sum(axis=-1) > 0).mean() > 0.9


def test_mostly_nodata_is_missing(tmp_path):
    regions = grid(1, 1)
    gpkg = make_run(tmp_path, regions)
    path = tmp_path / "nodata.tif"
    data = np.full((100, 100), 7, dtype=np.uint8)
    data[:, :70] = 0  # 70 % nodata
    write_geotiff(path, data, left=X0, top=Y0 + 1000, pixel=10, crs=UTM35, nodata=0)
    tiles_stage(gpkg, raster=path, size=50)
    row = _images(gpkg).iloc[0]
    assert row[C.STATUS] == C.STATUS_MISSING and "only 30%" in row[C.REASON]


def test_bands_choose_channels_and_16_bit_is_stretched(tmp_path):
    regions = grid(1, 1)
    gpkg = make_run(tmp_path, regions)
    path = tmp_path / "u16.tif"
    ramp = np.tile(np.linspace(1000, 3000, 100), (100, 1)).astype(np.uint16)
    data = np.stack([ramp, np.full_like(ramp, 2000), 4000 - ramp])
    write_geotiff(path, data, left=X0, top=Y0 + 1000, pixel=10, crs=UTM35)
    tiles_stage(gpkg, raster=path, size=100, bands=(3, 2, 1), resampling="nearest")
    image = read_png(tmp_path / "images/overhead" / f"overhead_{regions[C.REGION_ID][0]}.png")
    assert image.shape == (100, 100, 3)
    # Channel R is band 3 (falling), B is band 1 (rising), stretched 2..98 % to 0..255.
    assert (np.diff(image[50, :, 0].astype(int)) <= 0).all()
    assert (np.diff(image[50, :, 2].astype(int)) >= 0).all()
    assert image[50, 0, 2] == 0 and image[50, -1, 2] == 255
    with pytest.raises(InputError, match="Bands 1,4"):
        tiles_stage(gpkg, raster=path, bands=(1, 4), overwrite=True)


def test_raster_without_crs_is_refused(tmp_path):
    gpkg = make_run(tmp_path, grid(1, 1))
    tif = coded_raster(
        tmp_path / "nocrs.tif", left=X0, top=Y0 + 1000, pixel=10, width=100, height=100, crs=None
    )
    with pytest.raises(InputError, match="has no CRS") as err:
        tiles_stage(gpkg, raster=tif)
    assert "gdal_edit" in err.value.hint


def test_raster_that_misses_the_grid_is_refused(tmp_path):
    gpkg = make_run(tmp_path, grid(2, 2))
    tif = coded_raster(
        tmp_path / "far.tif",
        left=X0 + 50_000,
        top=Y0,
        pixel=10,
        width=100,
        height=100,
        crs=UTM35,
    )
    with pytest.raises(InputError, match="does not overlap the grid") as err:
        tiles_stage(gpkg, raster=tif)
    assert "lon/lat" in err.value.hint
    assert not (tmp_path / "images").exists()


def test_same_crs_at_sub_pixel_offsets(tmp_path):
    """The direct (resampled read) path places squares to a fraction of a raster pixel."""
    regions = grid(2, 1, origin=(X0 + 101.5, Y0 + 203.5))
    gpkg = make_run(tmp_path, regions)
    left, top = X0, Y0 + 2000
    tif = coded_raster(
        tmp_path / "coded.tif", left=left, top=top, pixel=5, width=600, height=400, crs=UTM35
    )
    tiles_stage(gpkg, raster=tif, size=400, resampling="nearest")
    images = _images(gpkg)
    for region in regions.itertuples():
        minx, _, _, maxy = region.geometry.bounds
        cols, rows = decode_cols_rows(
            read_png(tmp_path / images.loc[f"overhead_{region.region_id}", C.PATH])
        )
        centres = (np.arange(400) + 0.5) * 2.5
        np.testing.assert_array_equal(cols[0], np.floor((minx + centres - left) / 5))
        np.testing.assert_array_equal(rows[:, 0], np.floor((top - maxy + centres) / 5))
