import bz2

import geopandas as gpd
import numpy as np
import pytest
import shapely

from tests.conftest import json_reply
from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.geo.boundary import boundary_from_bbox, city_boundary, get_city
from urbangeo.geo.roads import EXCLUDED_HIGHWAYS, load_roads

BBOX = (26.930, 60.520, 26.970, 60.540)

# A tiny street map: a two-way residential street crossing the box, a footway, a service road,
# a cycleway and a residential street far outside the box.
NODES = {
    1: (26.935, 60.530),
    2: (26.950, 60.530),
    3: (26.965, 60.530),
    4: (26.950, 60.535),
    5: (26.955, 60.525),
    6: (26.940, 60.525),
    7: (26.980, 60.560),
    8: (26.990, 60.560),
}
WAYS = {
    100: ([1, 2, 3], {"highway": "residential", "name": "Kirkkokatu"}),
    101: ([2, 4], {"highway": "footway"}),
    102: ([2, 5], {"highway": "service"}),
    103: ([1, 6], {"highway": "cycleway"}),
    104: ([7, 8], {"highway": "residential"}),
}


def osm_xml() -> str:
    nodes = "".join(
        f'<node id="{i}" lat="{lat}" lon="{lon}" version="1"/>' for i, (lon, lat) in NODES.items()
    )
    ways = ""
    for wid, (refs, tags) in WAYS.items():
        nds = "".join(f'<nd ref="{r}"/>' for r in refs)
        tg = "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        ways += f'<way id="{wid}" version="1">{nds}{tg}</way>'
    return f'<?xml version="1.0" encoding="UTF-8"?><osm version="0.6">{nodes}{ways}</osm>'


def _length_km(a: int, b: int) -> float:
    line = gpd.GeoSeries([shapely.LineString([NODES[a], NODES[b]])], crs=4326)
    return float(line.to_crs(32635).length.iloc[0]) / 1000


@pytest.fixture
def boundary():
    return boundary_from_bbox(*BBOX)


@pytest.mark.parametrize("suffix", [".osm", ".osm.bz2"])
@pytest.mark.parametrize(
    ("network", "ways"),
    [("drive", {100}), ("walk", {100, 101, 102}), ("all", {100, 101, 102, 103})],
)
def test_osm_xml_by_network_type(tmp_path, boundary, suffix, network, ways):
    path = tmp_path / f"map{suffix}"
    data = osm_xml().encode()
    path.write_bytes(bz2.compress(data) if suffix.endswith("bz2") else data)
    roads = load_roads(path, boundary=boundary, network=network)
    assert set(roads["osm_id"].astype(int)) == ways
    assert roads.crs.to_epsg() == 32635
    # the two-way residential street is there once, not once per direction; 104 is outside
    expected_km = _length_km(1, 2) + _length_km(2, 3)
    residential = roads[roads[C.HIGHWAY] == "residential"]
    assert residential[C.LENGTH_M].sum() / 1000 == pytest.approx(expected_km, rel=1e-6)
    np.testing.assert_allclose(roads[C.LENGTH_M], roads.length)
    assert roads[C.ROAD_ID].is_unique


def test_bundled_pbf_drive_network(boundary):
    city = get_city("kotka")
    area = city_boundary("kotka")
    roads = load_roads(city.osm_path(), boundary=area)
    assert len(roads) > 100
    assert not roads[C.HIGHWAY].isin(EXCLUDED_HIGHWAYS["drive"]).any()
    assert "residential" in set(roads[C.HIGHWAY])
    inside = area.to_crs(roads.crs).union_all().buffer(0.01)
    assert inside.covers(shapely.union_all(roads.geometry.values))
    assert set(roads.geometry.geom_type) == {"LineString"}
    walk = load_roads(city.osm_path(), boundary=area, network="walk")
    assert walk[C.LENGTH_M].sum() > roads[C.LENGTH_M].sum()


def test_roads_are_clipped_to_the_boundary():
    city = get_city("kotka")
    half = boundary_from_bbox(26.930, 60.520, 26.950, 60.540)
    whole = load_roads(city.osm_path(), boundary=city_boundary("kotka"))
    part = load_roads(city.osm_path(), boundary=half)
    clip = half.to_crs(whole.crs).union_all()
    expected = shapely.length(shapely.intersection(whole.geometry.values, clip)).sum()
    assert part[C.LENGTH_M].sum() == pytest.approx(expected, rel=1e-6)
    assert 0 < part[C.LENGTH_M].sum() < whole[C.LENGTH_M].sum()


def test_line_vector_file(tmp_path, boundary):
    lines = gpd.GeoDataFrame(
        {"highway": ["primary", "footway"]},
        geometry=[
            shapely.LineString([NODES[1], NODES[3]]),
            shapely.LineString([NODES[2], NODES[4]]),
        ],
        crs=4326,
    ).to_crs(3857)
    lines.to_file(tmp_path / "lines.gpkg")
    roads = load_roads(tmp_path / "lines.gpkg", boundary=boundary)
    assert list(roads[C.HIGHWAY]) == ["primary"]
    assert roads[C.LENGTH_M].iloc[0] / 1000 == pytest.approx(_length_km(1, 3), rel=1e-6)


def test_no_roads_inside_gives_a_warning_and_an_empty_layer(tmp_path):
    (tmp_path / "map.osm").write_text(osm_xml())
    far = boundary_from_bbox(27.5, 61.0, 27.6, 61.1)
    with pytest.warns(UrbangeoWarning, match="No drive roads"):
        roads = load_roads(tmp_path / "map.osm", boundary=far)
    assert roads.empty and list(roads.columns[:5]) == [
        C.ROAD_ID,
        "osm_id",
        C.HIGHWAY,
        C.NAME,
        C.LENGTH_M,
    ]


@pytest.mark.parametrize("name", ["broken.osm.pbf", "broken.osm", "broken.gpkg"])
def test_unreadable_road_file(tmp_path, boundary, name):
    (tmp_path / name).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="Cannot read road file") as info:
        load_roads(tmp_path / name, boundary=boundary)
    assert ".osm.pbf" in info.value.hint


def test_missing_file_and_unknown_network(tmp_path, boundary):
    with pytest.raises(InputError, match="does not exist"):
        load_roads(tmp_path / "nope.osm.pbf", boundary=boundary)
    with pytest.raises(InputError, match="Unknown network type 'bike'"):
        load_roads(tmp_path / "nope.osm.pbf", boundary=boundary, network="bike")


def _overpass_reply(method, path, body):
    elements = [
        {"type": "node", "id": i, "lat": lat, "lon": lon} for i, (lon, lat) in NODES.items()
    ]
    for wid, (refs, tags) in WAYS.items():
        if tags["highway"] == "residential":
            elements.append({"type": "way", "id": wid, "nodes": refs, "tags": tags})
    return json_reply({"version": 0.6, "elements": elements})


def test_online_download_through_overpass_over_http(loopback, monkeypatch, boundary):
    server = loopback(_overpass_reply)
    monkeypatch.setenv("URBANGEO_OVERPASS_URL", server.url)
    roads = load_roads(None, boundary=boundary)
    assert set(roads["osm_id"].astype(int)) == {100}
    assert roads[C.LENGTH_M].sum() / 1000 == pytest.approx(
        _length_km(1, 2) + _length_km(2, 3), rel=1e-6
    )
    method, path, body = server.requests[0]
    assert method == "POST" and path == "/interpreter"
    assert b"highway" in body


def test_online_download_failure_says_what_to_do(loopback, monkeypatch, boundary):
    server = loopback(lambda m, p, b: (400, "text/plain", b"bad request"))
    monkeypatch.setenv("URBANGEO_OVERPASS_URL", server.url)
    with pytest.raises(InputError, match="Could not download the road network") as info:
        load_roads(None, boundary=boundary)
    assert "--roads FILE" in info.value.hint
