"""The offline OpenStreetMap captioner: features against hand-built layers, and wording."""

from __future__ import annotations

import random

import geopandas as gpd
import pytest
import shapely

from tests.captions.helpers import make_run
from tests.conftest import UTM35
from urbangeo import constants as C
from urbangeo.captions.captioners import ImageItem
from urbangeo.captions.captioners.osm import OSMCaptioner
from urbangeo.captions.osm import (
    MAX_WORDS,
    MIN_WORDS,
    STYLES,
    PlaceFeatures,
    describe,
    place_features,
)
from urbangeo.captions.stages import caption_stage, read_caption_items
from urbangeo.errors import InputError


def frame(rows: list[dict], geoms: list) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(rows, geometry=geoms, crs=UTM35)


def hand_layers() -> dict:
    """A 100 m x 100 m region at (0, 0)-(100, 100) in UTM metres with known features."""
    box = shapely.box
    empty = gpd.GeoDataFrame(geometry=[], crs=UTM35)
    layers = {
        # residential covers the left half; a park the top-right quarter, drawn twice.
        "landuse": frame([{"landuse": "residential"}], [box(-50, 0, 50, 100)]),
        "leisure": frame([{"leisure": "park"}] * 2, [box(50, 50, 100, 100), box(50, 50, 100, 100)]),
        "natural": frame([{"natural": "water"}], [box(90, 0, 120, 10)]),  # 10 m x 10 m inside
        "water": frame(
            [{"waterway": "stream", "water": None}], [shapely.LineString([(0, 5), (100, 5)])]
        ),
        # two 10 x 10 buildings inside, one outside whose centroid is outside.
        "buildings": frame(
            [
                {"building": "apartments", "building:levels": "4", "name": None},
                {"building": "apartments", "building:levels": "2", "name": "Block B"},
                {"building": "industrial", "building:levels": None, "name": None},
            ],
            [box(10, 10, 20, 20), box(30, 10, 40, 20), box(95, 95, 110, 110)],
        ),
        "pois": frame(
            [
                {"amenity": "cafe", "shop": None, "tourism": None, "name": "Cafe Uno"},
                {"amenity": "bench", "shop": None, "tourism": None, "name": None},
                {"amenity": None, "shop": "bakery", "tourism": None, "name": None},
            ],
            [shapely.Point(15, 30), shapely.Point(16, 30), shapely.Point(17, 30)],
        ),
        "roads": frame(
            [
                {"highway": "residential", "name": "Main Street"},
                {"highway": "footway", "name": None},
            ],
            [shapely.LineString([(0, 50), (200, 50)]), shapely.LineString([(50, 0), (50, 40)])],
        ),
        "trees": frame(
            [{}] * 3, [shapely.Point(60, 60), shapely.Point(70, 70), shapely.Point(500, 500)]
        ),
    }
    for value in layers.values():
        value.sindex  # noqa: B018
    del empty
    return layers


def test_region_features_against_hand_computation():
    region = shapely.box(0, 0, 100, 100)
    feats = place_features(hand_layers(), ImageItem("r", C.KIND_OVERHEAD, place=region), radius=75)
    assert feats.area_m2 == pytest.approx(10_000)
    assert feats.landuse["residential housing"] == pytest.approx(0.5)
    assert feats.landuse["parks"] == pytest.approx(0.25)  # the duplicate park counts once
    assert feats.green_share == pytest.approx(0.25)
    assert feats.water_share == pytest.approx(0.01)  # 10 x 10 m of 100 x 100 m
    assert feats.waterways == {"stream": 1}
    assert feats.buildings == 2  # the third building's centroid is outside
    assert feats.building_share == pytest.approx(200 / 10_000)
    assert feats.building_types == {"apartment blocks": 2}
    assert feats.levels == pytest.approx(3.0)
    assert feats.amenities == {"cafes": 1, "bakeries": 1}
    assert feats.minor_amenities == 1 and feats.commerce == 2
    assert feats.names[0] == "Cafe Uno" and "Block B" in feats.names
    assert feats.roads_m["residential streets"] == pytest.approx(100)
    assert feats.roads_m["footpaths"] == pytest.approx(40)
    assert feats.road_density == pytest.approx(0.14 / 0.01)
    assert feats.trees == 2
    assert feats.density == "sparsely built" and feats.function == "residential"


def test_point_features_use_the_radius_and_nearest_street():
    point = shapely.Point(15, 45)
    item = ImageItem("p", C.KIND_STREETVIEW, place=point, heading=90.0)
    feats = place_features(hand_layers(), item, radius=20)
    assert feats.area_m2 == pytest.approx(3.14 * 400, rel=0.01)
    assert feats.street == "Main Street" and feats.street_class == "residential streets"
    assert feats.amenities == {"cafes": 1, "bakeries": 1}  # 15 m away
    assert feats.buildings == 0  # the nearest centroid (15, 15) is 30 m away
    text = describe(feats, style="planner")
    assert "looks east along Main Street" in text


@pytest.mark.parametrize("style", STYLES)
def test_paragraph_length_and_style(style):
    sparse = PlaceFeatures(kind=C.KIND_OVERHEAD, area_m2=1e6)
    rich = place_features(
        hand_layers(),
        ImageItem("r", C.KIND_OVERHEAD, place=shapely.box(0, 0, 100, 100)),
        radius=75,
    )
    for feats in (sparse, rich):
        for seed in range(3):
            text = describe(feats, style=style, rng=random.Random(seed))
            assert MIN_WORDS <= len(text.split()) <= MAX_WORDS, text
            assert text.endswith(".") and "  " not in text


def test_small_places_are_measured_in_metres():
    # a 20 m x 20 m cell (the 1M-region grids): 0.0004 km², roads of 20 m
    small = place_features(
        hand_layers(), ImageItem("r", C.KIND_OVERHEAD, place=shapely.box(0, 40, 20, 60)), radius=75
    )
    assert small.area_m2 == pytest.approx(400)
    texts = [describe(small, style=s, rng=random.Random(seed)) for s in STYLES for seed in range(4)]
    joined = " ".join(texts)
    assert "0.00 square kilometre" not in joined and "(0.0 km)" not in joined
    assert "400 square metre" in joined  # the area, wherever a style gives it
    assert "(20 m)" in joined  # Main Street's 20 m inside the cell
    large = describe(PlaceFeatures(kind=C.KIND_OVERHEAD, area_m2=62_500), style=STYLES[0])
    assert "0.06 square kilometre" in large or "square" not in large


def test_styles_and_seeds_vary_the_wording(tmp_path):
    gpkg = make_run(tmp_path, n_regions=2, n_points=1)
    items, _ = read_caption_items(gpkg)
    captioner = OSMCaptioner(osm_path=_kotka())
    captioner.prepare(items)
    texts = {s: captioner.caption(None, "", s, items[0]) for s in STYLES}
    assert len(set(texts.values())) == 3
    assert "buildings" in texts["planner"] and "Roads:" in texts["analyst"]
    other_seed = OSMCaptioner(osm_path=_kotka(), seed=7)
    other_seed.prepare(items)
    variants = {other_seed.caption(None, "", "planner", i) for i in items}
    assert variants != {captioner.caption(None, "", "planner", i) for i in items}
    # Deterministic for a seed.
    assert captioner.caption(None, "", "planner", items[0]) == texts["planner"]
    sv = next(i for i in items if i.kind == C.KIND_STREETVIEW)
    assert "street-view" in captioner.caption(None, "", "planner", sv)


def test_places_not_pixels_identify_osm_calls(tmp_path):
    gpkg = make_run(tmp_path, n_regions=2, n_points=0)
    items, _ = read_caption_items(gpkg)
    captioner = OSMCaptioner(osm_path=_kotka())
    same_pixels = b"identical tile"
    assert captioner.input_sha256(items[0], same_pixels) != captioner.input_sha256(
        items[1], same_pixels
    )


def test_osm_stage_end_to_end(tmp_path):
    gpkg = make_run(tmp_path, n_regions=2, n_points=1, missing=("sv_p0",))
    result = caption_stage(gpkg, select="first")  # the city's extract from the boundary
    # osm describes places, but a caption without its image makes no training pair: the
    # street-view image whose download failed is skipped, as with the other captioners.
    assert result.counts == {
        "images": 3,
        "captioned": 2,
        "captions": 6,
        "cached": 0,
        "failed": 0,
        "skipped": 1,
        "truncated": 0,
    }
    table = gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)
    assert set(table[C.BACKEND]) == {"osm"} and set(table[C.MODEL]) == set(STYLES)
    assert "sv_p0" not in set(table[C.IMAGE_ID])
    again = caption_stage(gpkg, select="first", overwrite=True)
    assert again.counts["cached"] == 6


def test_unknown_style_and_missing_extract(tmp_path):
    with pytest.raises(InputError, match="style"):
        OSMCaptioner(["poet"])
    gpkg = make_run(tmp_path, n_regions=1, n_points=0)
    with pytest.raises(InputError, match="extract"):
        caption_stage(gpkg, osm=tmp_path / "none.osm.pbf")


def _kotka():
    from urbangeo.geo.boundary import get_city

    return get_city("kotka").osm_path()
