import json

import geopandas as gpd
import pytest
import shapely

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.geo import boundary as B
from urbangeo.geo.grid import make_grid
from urbangeo.io.gpkg import read_layer


def test_bundled_cities_have_their_extracts():
    names = [c.name for c in B.list_cities()]
    assert {"kotka", "helsinki", "sao-paulo"} <= set(names)
    for city in B.list_cities():
        assert city.osm_path().is_file() and city.osm_path().suffix == ".pbf"
        assert city.sample_grid.is_file()


@pytest.mark.parametrize("name", ["kotka", "helsinki", "sao-paulo", "Kotka "])
def test_bundled_grid_is_what_make_grid_computes(name):
    city = B.get_city(name)
    boundary = B.city_boundary(name)
    assert boundary[C.SOURCE].iloc[0] == f"city:{city.name}"
    stored = read_layer(city.sample_grid, C.LAYER_REGIONS)
    fresh = make_grid(boundary)
    assert list(stored[C.REGION_ID]) == list(fresh[C.REGION_ID])
    assert shapely.equals_exact(stored.geometry.values, fresh.geometry.values, 1e-6).all()
    assert stored.crs == fresh.crs


def test_city_boundary_covers_its_roads():
    import pyrosm

    city = B.get_city("kotka")
    edges = pyrosm.OSM(str(city.osm_path())).get_network(network_type="all")
    area = B.city_boundary("kotka").to_crs(4326).union_all()
    assert area.buffer(1e-9).covers(shapely.union_all(edges.geometry.values))


def test_unknown_city_lists_the_offline_options():
    with pytest.raises(InputError, match="not a bundled city") as info:
        B.get_city("atlantis")
    for needle in ("kotka", "helsinki", "--boundary", "--bbox", '--place "atlantis"'):
        assert needle in info.value.hint


def test_boundary_file_in_any_crs(tmp_path):
    poly = shapely.Point(500_000, 6_700_000).buffer(2000)
    src = gpd.GeoDataFrame(geometry=[poly], crs="EPSG:32635").to_crs(3857)
    src.to_file(tmp_path / "b.geojson")
    loaded = B.boundary_from_file(tmp_path / "b.geojson")
    assert loaded.crs == src.crs
    assert loaded.to_crs(32635).area.iloc[0] == pytest.approx(poly.area, rel=1e-6)
    assert loaded[C.SOURCE].iloc[0].startswith("file:")


def test_several_polygons_are_dissolved(tmp_path):
    polys = [shapely.box(0, 0, 1000, 1000), shapely.box(1000, 0, 2000, 1000)]
    gpd.GeoDataFrame(geometry=polys, crs=32635).to_file(tmp_path / "two.gpkg")
    loaded = B.boundary_from_file(tmp_path / "two.gpkg")
    assert len(loaded) == 1
    assert loaded.area.iloc[0] == pytest.approx(2e6)


def test_invalid_boundary_is_repaired_and_named(tmp_path):
    bowtie = shapely.Polygon([(0, 0), (1000, 1000), (1000, 0), (0, 1000), (0, 0)])
    assert not bowtie.is_valid
    gpd.GeoDataFrame(geometry=[bowtie], crs=32635).to_file(tmp_path / "bowtie.gpkg")
    with pytest.warns(UrbangeoWarning, match="Repaired 1 invalid boundary geometry"):
        loaded = B.boundary_from_file(tmp_path / "bowtie.gpkg")
    assert loaded.is_valid.all()
    assert loaded.area.iloc[0] == pytest.approx(500_000)


def test_boundary_without_area_is_refused(tmp_path):
    gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=4326).to_file(tmp_path / "pt.gpkg")
    with pytest.raises(InputError, match="no polygon area"):
        B.boundary_from_file(tmp_path / "pt.gpkg")
    gpd.GeoDataFrame(geometry=[], crs=4326).to_file(tmp_path / "empty.gpkg")
    with pytest.raises(InputError, match="no polygon area"):
        B.boundary_from_file(tmp_path / "empty.gpkg")


def test_boundary_file_problems(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        B.boundary_from_file(tmp_path / "missing.gpkg")
    (tmp_path / "junk.gpkg").write_bytes(b"not a geopackage")
    with pytest.raises(InputError, match="Cannot read boundary file"):
        B.boundary_from_file(tmp_path / "junk.gpkg")
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.shp")
    with pytest.raises(InputError, match="has no CRS") as info:
        B.boundary_from_file(tmp_path / "nocrs.shp")
    assert "ogr2ogr -a_srs" in info.value.hint


def test_bbox():
    frame = B.load_boundary(bbox="26.93,60.52,26.97,60.54")
    assert frame.crs == C.WGS84
    assert frame.total_bounds.tolist() == pytest.approx([26.93, 60.52, 26.97, 60.54])
    with pytest.raises(InputError, match="Cannot parse bbox"):
        B.parse_bbox("1,2,3")
    with pytest.raises(InputError, match="Invalid bbox"):
        B.boundary_from_bbox(27, 60, 26, 61)


def test_exactly_one_source():
    with pytest.raises(InputError, match="exactly one boundary source"):
        B.load_boundary()
    with pytest.raises(InputError, match=r"got city, bbox"):
        B.load_boundary(city="kotka", bbox="1,2,3,4")


def _nominatim_result(polygon: shapely.Polygon) -> dict:
    w, s, e, n = polygon.bounds
    return {
        "place_id": 1,
        "osm_type": "relation",
        "osm_id": 42,
        "boundingbox": [str(s), str(n), str(w), str(e)],
        "lat": str(polygon.centroid.y),
        "lon": str(polygon.centroid.x),
        "display_name": "Testville, Finland",
        "class": "boundary",
        "type": "administrative",
        "importance": 0.7,
        "geojson": shapely.geometry.mapping(polygon),
    }


def test_place_is_geocoded_with_nominatim_over_http(loopback, monkeypatch):
    from tests.conftest import json_reply

    polygon = shapely.box(26.93, 60.52, 26.97, 60.54)
    server = loopback(lambda method, path, body: json_reply([_nominatim_result(polygon)]))
    monkeypatch.setenv("URBANGEO_NOMINATIM_URL", server.url)
    frame = B.load_boundary(place="Testville")
    # the polygon is Kotka's extent: the run will read the bundled extract
    assert frame[C.SOURCE].iloc[0] == "place:Testville|city=kotka"
    assert shapely.equals(frame.geometry.iloc[0], shapely.MultiPolygon([polygon]))
    method, path, _ = server.requests[0]
    assert method == "GET" and path.startswith("/search?") and "Testville" in path


def test_place_offline_fails_with_the_offline_options(loopback, monkeypatch):
    server = loopback(lambda method, path, body: (503, "text/plain", b"down"))
    monkeypatch.setenv("URBANGEO_NOMINATIM_URL", server.url)
    with pytest.raises(InputError, match="Could not geocode 'Nowhere'") as info:
        B.load_boundary(place="Nowhere")
    assert "--city NAME (bundled: kotka, helsinki, sao-paulo)" in info.value.hint


@pytest.mark.parametrize(
    ("bbox", "reading"),
    [
        (
            (-33.9, 151.2, -33.8, 151.3),
            "Did you mean --bbox 151.2,-33.9,151.3,-33.8 (the numbers read as S,W,N,E",
        ),
        ((24.96, 60.18, 24.93, 60.16), "Did you mean --bbox 24.93,60.16,24.96,60.18"),
        ((26.97, 60.54, 26.93, 60.52), "Did you mean --bbox 26.93,60.52,26.97,60.54"),
    ],
)
def test_a_bbox_with_swapped_numbers_offers_the_reading_they_suggest(bbox, reading):
    with pytest.raises(InputError, match="Invalid bbox") as info:
        B.boundary_from_bbox(*bbox)
    assert reading in info.value.hint


def test_a_bbox_across_the_antimeridian_is_explained_not_reordered():
    with pytest.raises(InputError, match="west is not less than east") as info:
        B.boundary_from_bbox(179, -20, -179, -15)
    assert "antimeridian" in info.value.hint and "Did you mean" not in info.value.hint


def _projected_geojson(path):
    """A GeoJSON in UTM metres that names no CRS (as many tools write it)."""
    ring = [[500_000, 6_700_000], [502_000, 6_700_000], [502_000, 6_702_000], [500_000, 6_700_000]]
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def test_a_projected_geojson_without_a_crs_is_refused_with_how_to_set_one(tmp_path):
    path = _projected_geojson(tmp_path / "district.geojson")
    with pytest.raises(InputError, match="not degrees of WGS 84") as info:
        B.boundary_from_file(path)  # was geopandas' RuntimeError: Unable to determine UTM CRS
    assert "RFC 7946" in info.value.message
    assert "--boundary-crs" in info.value.hint and "ogr2ogr -a_srs" in info.value.hint
    loaded = B.boundary_from_file(path, crs="EPSG:32635")
    assert loaded.crs.to_epsg() == 32635 and loaded.area.iloc[0] == pytest.approx(2e6)


def _two_layers(path, second_geom):
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1000, 1000)], crs=32635).to_file(
        path, layer="districts"
    )
    gpd.GeoDataFrame(geometry=[second_geom], crs=32635).to_file(path, layer="other")
    return path


def test_a_file_of_several_polygon_layers_needs_a_layer(tmp_path):
    path = _two_layers(tmp_path / "city.gpkg", shapely.box(0, 0, 5000, 5000))
    with pytest.raises(InputError, match="has 2 layers") as info:
        B.boundary_from_file(path)  # was: the first layer, silently
    assert "--layer" in info.value.hint
    assert "districts (Polygon)" in info.value.hint and "other (Polygon)" in info.value.hint
    loaded = B.boundary_from_file(path, layer="other")
    assert loaded.area.iloc[0] == pytest.approx(25e6)
    assert loaded[C.SOURCE].iloc[0] == f"file:{path}|layer=other"
    with pytest.raises(InputError, match="no layer 'parks'") as info:
        B.check_boundary_file(path, layer="parks")
    assert "districts" in info.value.hint


def test_the_only_polygon_layer_of_a_file_is_the_boundary(tmp_path):
    path = _two_layers(tmp_path / "city.gpkg", shapely.Point(10, 10))
    assert B.boundary_layer(path) == "districts"
    assert B.boundary_from_file(path).area.iloc[0] == pytest.approx(1e6)
