"""Rendered OSM map tiles: the right colour where each feature is."""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pyrosm
import shapely

from tests.imagery.helpers import UTM35, X0, Y0, grid, make_run, read_png
from urbangeo import constants as C
from urbangeo.geo.boundary import get_city
from urbangeo.imagery.sources.render import (
    COLOURS,
    map_features,
    render_regions,
)
from urbangeo.imagery.stages import tiles_stage
from urbangeo.io.files import sha256_file
from urbangeo.io.gpkg import read_layer, write_layers

SIZE = 256


def wgs(geoms, **columns):
    """A WGS84 GeoDataFrame from UTM35 geometries (as pyrosm returns lon/lat)."""
    frame = gpd.GeoDataFrame(columns, geometry=list(geoms), crs=UTM35)
    return frame.to_crs(C.WGS84)


def layers():
    """Region (0,0) is all building; region (1,0) has water on its west half and a road."""
    road_y = Y0 + 500
    return {
        "buildings": wgs([shapely.box(X0 - 10, Y0 - 10, X0 + 1000, Y0 + 1010)], building=["yes"]),
        "natural": wgs([shapely.box(X0 + 1000, Y0 - 50, X0 + 1500, Y0 + 1050)], natural=["water"]),
        "landuse": wgs(
            [shapely.box(X0 + 1500, Y0 - 50, X0 + 2000, Y0 + 1050)], landuse=["residential"]
        ),
        "roads": wgs(
            [shapely.LineString([(X0 + 1000, road_y), (X0 + 3000, road_y)])],
            highway=["residential"],
        ),
    }


def colour_mask(image, name):
    return (image == np.array(COLOURS[name], dtype=np.uint8)).all(axis=-1)


def test_colours_are_where_the_features_are():
    regions = grid(3, 1)
    features = map_features(layers(), UTM35)
    bounds = regions.geometry.bounds.to_numpy()
    images = dict(render_regions(features, bounds, size=SIZE))
    assert set(images) == {0, 1, 2}
    assert colour_mask(images[0], "building").all()
    middle = images[1]
    px = 1000 / SIZE
    # Road: 8 m wide around y = Y0 + 500, i.e. rows whose centres are within 4 m of it.
    centres = Y0 + 1000 - (np.arange(SIZE) + 0.5) * px
    road_rows = np.abs(centres - (Y0 + 500)) < 4
    assert road_rows.sum() == 2
    assert colour_mask(middle[road_rows], "minor_road").all()
    rest = middle[~road_rows]
    # Water on the west half (columns whose centres are west of X0 + 1500), land use east.
    west = (np.arange(SIZE) + 0.5) * px < 500
    assert colour_mask(rest[:, west], "water").all()
    assert colour_mask(rest[:, ~west], "residential").all()
    # The third region has nothing but the road on a background.
    third = images[2]
    assert colour_mask(third[~road_rows], "background").all()
    assert colour_mask(third[road_rows], "minor_road").all()


def test_blocks_and_single_regions_render_the_same():
    regions = grid(3, 2)
    features = map_features(layers(), UTM35)
    bounds = regions.geometry.bounds.to_numpy()
    blocked = dict(render_regions(features, bounds, size=64, block=16))
    single = dict(render_regions(features, bounds, size=64, block=1))
    assert blocked.keys() == single.keys() == set(range(6))
    for i in blocked:
        np.testing.assert_array_equal(blocked[i], single[i])
    # Off-lattice squares take the one-by-one path and agree with the lattice rendering.
    shifted = bounds.copy()
    shifted[0] = [X0 + 250, Y0, X0 + 1250, Y0 + 1000]
    odd = dict(render_regions(features, shifted, size=64))
    np.testing.assert_array_equal(odd[1], blocked[1])
    assert colour_mask(odd[0][:, :40], "building").all()


def test_render_stage_on_the_bundled_city(tmp_path):
    city = get_city("kotka")
    boundary = read_layer(city.sample_grid, C.LAYER_BOUNDARY)
    regions = read_layer(city.sample_grid, C.LAYER_REGIONS)
    gpkg = tmp_path / "run.gpkg"
    write_layers(gpkg, {C.LAYER_BOUNDARY: boundary, C.LAYER_REGIONS: regions})
    result = tiles_stage(gpkg, render="osm")  # the run's own city extract
    assert result.counts == {"ok": len(regions), "missing": 0, "failed": 0}
    images = read_layer(gpkg, C.LAYER_IMAGES).set_index(C.REGION_ID)
    assert (images[C.SOURCE] == f"osm:{city.osm_path().resolve()}").all()
    # Independent check: deep inside big buildings, the tile has the building colour.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buildings = pyrosm.OSM(str(city.osm_path())).get_buildings().to_crs(regions.crs)
    inner = buildings.geometry.buffer(-6)
    inner = inner[~inner.is_empty]
    assert len(inner) > 50
    checked = 0
    for point in inner.representative_point():
        hit = regions[regions.contains(point)]
        if hit.empty:
            continue
        region = hit.iloc[0]
        row = images.loc[region[C.REGION_ID]]
        image = read_png(tmp_path / row[C.PATH])
        minx, _, _, maxy = region.geometry.bounds
        col = int((point.x - minx) / (1000 / SIZE))
        r = int((maxy - point.y) / (1000 / SIZE))
        assert tuple(image[r, col]) == COLOURS["building"]
        checked += 1
    assert checked > 50
    for row in images.itertuples():
        assert row.sha256 == sha256_file(tmp_path / row.path)


def test_stage_finds_the_extract_of_the_sample_stage(tmp_path):
    """Without a bundled-city boundary, --render uses the .osm.pbf `urbangeo sample` read."""
    from urbangeo.io.runs import StageRecord, stage_table

    regions = grid(1, 1)
    gpkg = make_run(tmp_path, regions)
    boundary = gpd.GeoDataFrame(
        {C.NAME: ["box"], C.SOURCE: ["bbox:1,2,3,4"]}, geometry=[regions.union_all()], crs=UTM35
    )
    record = StageRecord("sample", {"roads": str(get_city("kotka").osm_path())})
    write_layers(
        gpkg,
        {C.LAYER_BOUNDARY: boundary, "urbangeo_stages": stage_table(gpkg, record)},
        overwrite=True,
    )
    result = tiles_stage(gpkg, render="osm", size=32)
    assert result.counts["ok"] == 1
