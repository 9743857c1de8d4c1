"""Edge cells (issue #15): each image records how much of it has data, nothing is drawn beyond
the source's coverage, and the regions layer says which cells are edge cells and left out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from tests.imagery.helpers import UTM35, X0, Y0, coded_raster, grid, make_run, read_png
from tests.imagery.test_render import colour_mask, layers
from urbangeo import constants as C
from urbangeo.downstream.tables import MIN_REGIONS
from urbangeo.errors import UrbangeoWarning
from urbangeo.geo.boundary import get_city
from urbangeo.imagery.edges import (
    EDGE,
    EXCLUDED,
    MIN_KEPT,
    VALID_SHARE,
    edge_columns,
    excluded_regions,
)
from urbangeo.imagery.png import encode_png, png_valid_share
from urbangeo.imagery.sources.coverage import NODATA_RGB, box_in_crs, pbf_header_bbox
from urbangeo.imagery.sources.render import OsmRenderSource, map_features, render_covered
from urbangeo.imagery.stages import tiles_stage
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.runs import read_stage_records

BLACK = np.array(NODATA_RGB, dtype=np.uint8)


def _black(image: np.ndarray) -> np.ndarray:
    return (image == BLACK).all(axis=-1)


@pytest.mark.parametrize("block", [16, 1])
def test_a_tile_half_outside_the_coverage_has_half_its_data(block):
    regions = grid(3, 1)
    features = map_features(layers(), UTM35)
    bounds = regions.geometry.bounds.to_numpy()
    # The coverage ends in the middle of the first region.
    coverage = shapely.box(X0 - 5000, Y0 - 5000, X0 + 500, Y0 + 5000)
    out = {
        i: (image, share)
        for i, image, share in render_covered(
            features, bounds, size=64, block=block, coverage=coverage
        )
    }
    image, share = out[0]
    assert share == pytest.approx(0.5)
    assert colour_mask(image[:, :32], "building").all()  # drawn where there is data
    assert _black(image[:, 32:]).all()  # nothing beyond it
    assert out[1][1] == out[2][1] == 0.0
    assert _black(out[1][0]).all()
    # Without a coverage everything has data.
    assert {share for _, _, share in render_covered(features, bounds, size=64)} == {1.0}


def test_the_extract_header_bounds_the_rendering(tmp_path):
    """pyrosm's Kotka extract declares its bounding box: a square straddling its east edge is
    drawn on its western part only, and knows it."""
    pbf = get_city("kotka").osm_path()
    west, south, east, north = pbf_header_bbox(pbf)
    assert (west, south, east, north) == pytest.approx((26.93, 60.52, 26.97, 60.54))
    edge = box_in_crs((west, south, east, north), UTM35)
    x = edge.bounds[2]
    y = (edge.bounds[1] + edge.bounds[3]) / 2
    square = np.array([[x - 125, y - 125, x + 125, y + 125]])
    source = OsmRenderSource(pbf, grid_crs=UTM35)
    assert source.params()["coverage"].startswith("pbf header:")
    ((_, tile),) = list(source.tiles(square, 64))
    assert tile.status == C.STATUS_OK
    assert tile.valid_share == pytest.approx(0.5, abs=0.03)
    assert _black(tile.image[:, 40:]).all() and not _black(tile.image[:, :24]).any()


def test_no_header_no_coverage_given_means_the_data_bounds(tmp_path):
    source = OsmRenderSource(get_city("sao-paulo").osm_path(), grid_crs="EPSG:32723")
    assert source.coverage is None and source.params()["coverage"] == "data"


def test_the_valid_share_survives_in_the_png(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8), settings="s", valid_share=0.25))
    assert png_valid_share(path) == 0.25
    path.write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8), settings="s"))
    assert png_valid_share(path) is None


def test_raster_tiles_record_their_share_and_edge_cells_are_marked(tmp_path):
    """A raster ending in the middle of the fifth column of regions: those are half covered,
    the sixth column is beyond the raster (missing, and edge cells), the others whole."""
    regions = grid(6, 3)
    gpkg = make_run(tmp_path, regions)
    tif = coded_raster(
        tmp_path / "half.tif", left=X0, top=Y0 + 3000, pixel=10, width=450, height=300, crs=UTM35
    )
    tiles_stage(gpkg, raster=tif, size=50, resampling="nearest", min_valid=0.4)
    images = read_layer(gpkg, C.LAYER_IMAGES).set_index(C.REGION_ID).loc[regions[C.REGION_ID]]
    column = regions[C.COL] - regions[C.COL].min()
    share = np.select([column < 4, column == 4], [1.0, 0.5], 0.0)
    assert images[VALID_SHARE].to_numpy() == pytest.approx(share)
    assert (images[C.STATUS] == np.where(column < 5, C.STATUS_OK, C.STATUS_MISSING)).all()
    half = images.loc[regions[C.REGION_ID][column == 4].iloc[0], C.PATH]
    assert _black(read_png(tmp_path / half)[:, 25:]).all()
    out = read_layer(gpkg, C.LAYER_REGIONS).set_index(C.REGION_ID).loc[regions[C.REGION_ID]]
    assert out[VALID_SHARE].to_numpy() == pytest.approx(share)
    # 0.5 is not under the default threshold of 0.5: only the regions without data are edges.
    assert (out[EDGE].to_numpy() == (column == 5)).all()
    assert (out[EXCLUDED].notna().to_numpy() == (column == 5)).all()
    assert out[EXCLUDED].dropna().str.contains("image data on 0%").all()
    assert read_stage_records(gpkg)["tiles"].counts["excluded"] == 3


def test_thresholds_and_include_edges_rewrite_the_regions_only(tmp_path):
    regions = grid(12, 1)
    inside = [1.0] * 12
    inside[1] = 0.3  # as the grid writes it
    regions[C.INSIDE_SHARE] = inside
    gpkg = make_run(tmp_path, regions)
    tif = coded_raster(
        tmp_path / "all.tif", left=X0, top=Y0 + 1000, pixel=20, width=600, height=50, crs=UTM35
    )
    first = tiles_stage(gpkg, raster=tif, size=32)
    assert first.counts == {"ok": 12, "missing": 0, "failed": 0}
    written = gpkg.stat().st_mtime_ns
    tiles_stage(gpkg, raster=tif, size=32)  # the same again: nothing to write
    assert gpkg.stat().st_mtime_ns == written
    images_before = read_layer(gpkg, C.LAYER_IMAGES)
    out = read_layer(gpkg, C.LAYER_REGIONS).set_index(C.REGION_ID)
    assert out[EDGE].tolist() == [i == 1 for i in range(12)]
    assert "30% of the cell inside the boundary" in out[EXCLUDED].iloc[1]
    assert excluded_regions(gpkg).index.tolist() == [regions[C.REGION_ID].iloc[1]]
    # Same images, the edge cells kept: only the regions' columns change.
    tiles_stage(gpkg, raster=tif, size=32, include_edges=True)
    out = read_layer(gpkg, C.LAYER_REGIONS).set_index(C.REGION_ID)
    assert out[EDGE].tolist() == [i == 1 for i in range(12)]
    assert out[EXCLUDED].isna().all() and excluded_regions(gpkg).empty
    pd.testing.assert_frame_equal(read_layer(gpkg, C.LAYER_IMAGES), images_before)
    tiles_stage(gpkg, raster=tif, size=32, min_inside_share=0.2)
    assert not read_layer(gpkg, C.LAYER_REGIONS)[EDGE].any()


def test_edge_columns_take_either_share():
    regions = pd.DataFrame({C.REGION_ID: ["a", "b", "c", "d"], C.INSIDE_SHARE: [1, 0.4, 1, 0.9]})
    valid = pd.Series({"a": 1.0, "b": 1.0, "c": 0.2})  # d: no image
    out = edge_columns(regions, valid, min_valid_share=0.5, min_inside_share=0.5, min_kept=1)
    assert out[EDGE].tolist() == [False, True, True, False]
    assert out[EXCLUDED].notna().tolist() == [False, True, True, False]
    assert np.isnan(out[VALID_SHARE].iloc[3])
    kept = edge_columns(
        regions, valid, min_valid_share=0.5, min_inside_share=0.5, include_edges=True
    )
    assert kept[EDGE].tolist() == out[EDGE].tolist() and kept[EXCLUDED].isna().all()


def test_a_study_area_of_edge_cells_keeps_them():
    """Excluding 2 of 4 regions would leave too few to predict: they are kept, with a warning."""
    regions = pd.DataFrame({C.REGION_ID: list("abcd"), C.INSIDE_SHARE: [1, 0.4, 1, 0.2]})
    with pytest.warns(UrbangeoWarning, match="2 of 4 regions are edge cells"):
        out = edge_columns(
            regions, pd.Series(dtype=float), min_valid_share=0.5, min_inside_share=0.5
        )
    assert out[EDGE].tolist() == [False, True, False, True] and out[EXCLUDED].isna().all()
    assert MIN_KEPT == MIN_REGIONS


def test_older_runs_exclude_nothing(tmp_path):
    gpkg = tmp_path / "run.gpkg"
    write_layers(gpkg, {C.LAYER_REGIONS: grid(2, 1)})
    assert excluded_regions(gpkg).empty
    assert excluded_regions(None).empty
