"""São Paulo as a bundled city, and areas inside a bundled extract using it offline (#15)."""

import geopandas as gpd
import pyrosm
import pytest
import shapely
from click.testing import CliRunner

from urbangeo import constants as C
from urbangeo.geo import boundary as B
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.osm import run_extract
from urbangeo.io.runs import read_stage_records
from urbangeo_cli.main import cli

KOTKA_INSIDE = (26.935, 60.525, 26.955, 60.535)
SAO_PAULO_INSIDE = (-46.645, -23.555, -46.625, -23.535)


def test_sao_paulo_is_bundled_with_its_extract_and_real_indicators():
    city = B.get_city("sao-paulo")
    assert city.osm_path().is_file() and city.osm_path().name == "spo_osm.pbf"
    assert city.osm_path().parent == city.sample_grid.parent  # inside urbangeo_sample_grids
    assert city.indicators is not None and city.indicators.path.is_file()
    assert city.indicator_label == "real (r5r hexgrid: population, jobs, schools)"
    assert B.get_city("kotka").indicator_label == B.OSM_DERIVED == "OSM-derived"
    hexagons = gpd.read_file(city.indicators.path)
    assert len(hexagons) == 323 and set(city.indicators.columns) <= set(hexagons.columns)
    assert hexagons[["population", "jobs", "schools"]].sum().tolist() == [517570, 625298, 59]


def test_sao_paulo_boundary_is_the_union_of_its_hexagons():
    city = B.get_city("sao-paulo")
    hexagons = gpd.read_file(city.indicators.path)
    boundary = B.city_boundary("sao-paulo").to_crs(hexagons.crs)
    union = shapely.union_all(hexagons.geometry.values)
    assert boundary.geometry.iloc[0].symmetric_difference(union).area < 1.0  # m², of 34 km²
    assert boundary.area.iloc[0] == pytest.approx(34.28e6, rel=1e-3)


def test_sao_paulo_extract_covers_its_boundary():
    edges = pyrosm.OSM(str(B.get_city("sao-paulo").osm_path())).get_network(network_type="all")
    west, south, east, north = edges.total_bounds
    w, s, e, n = B.city_extent("sao-paulo")
    assert west <= w and south <= s and east >= e and north >= n


@pytest.mark.parametrize(
    ("bbox", "city"),
    [
        ((26.93, 60.52, 26.97, 60.54), "kotka"),  # the README's example: all of Kotka
        (KOTKA_INSIDE, "kotka"),
        ((24.94, 60.165, 24.95, 60.175), "helsinki"),
        (SAO_PAULO_INSIDE, "sao-paulo"),
        ((26.93, 60.52, 26.99, 60.54), None),  # past Kotka's extract to the east
        ((10.0, 50.0, 10.01, 50.01), None),
    ],
)
def test_bbox_inside_a_bundled_extract_records_the_city(bbox, city):
    frame = B.boundary_from_bbox(*bbox)
    source = frame[C.SOURCE].iloc[0]
    assert source.startswith(f"bbox:{bbox[0]},")
    assert B.source_city(source) == city
    assert B.city_covering(frame) == (B.get_city(city) if city else None)


def test_boundary_file_inside_a_bundled_extract_records_the_city(tmp_path):
    area = gpd.GeoDataFrame(geometry=[shapely.box(*KOTKA_INSIDE)], crs=C.WGS84).to_crs(3067)
    area.to_file(tmp_path / "district.gpkg")
    source = B.boundary_from_file(tmp_path / "district.gpkg")[C.SOURCE].iloc[0]
    assert source == f"file:{tmp_path / 'district.gpkg'}|city=kotka"


@pytest.mark.parametrize(
    ("source", "city"),
    [
        ("city:kotka", "kotka"),
        ("bbox:1,2,3,4|city=helsinki", "helsinki"),
        ("file:/a/b.gpkg|layer=x|city=sao-paulo", "sao-paulo"),
        ("file:/a/b.gpkg|layer=x", None),
        ("place:Somewhere", None),
    ],
)
def test_source_city(source, city):
    assert B.source_city(source) == city


def _no_downloads(loopback, monkeypatch):
    """An Overpass and Nominatim that record every request and answer none."""
    server = loopback(lambda method, path, body: (503, "text/plain", b"offline"))
    monkeypatch.setenv("URBANGEO_OVERPASS_URL", server.url)
    monkeypatch.setenv("URBANGEO_NOMINATIM_URL", server.url)
    return server


def test_grid_bbox_inside_kotka_then_sample_reads_the_bundled_extract(
    tmp_path, loopback, monkeypatch
):
    server = _no_downloads(loopback, monkeypatch)
    gpkg = tmp_path / "run" / "run.gpkg"
    runner = CliRunner()
    bbox = ",".join(map(str, KOTKA_INSIDE))
    grid = runner.invoke(cli, ["grid", "--bbox", bbox, "--cell-size", "500", "-o", str(gpkg)])
    assert grid.exit_code == 0, grid.output
    assert read_stage_records(gpkg)["grid"].params["source"] == f"bbox:{bbox}|city=kotka"
    kotka = B.get_city("kotka").osm_path()
    assert run_extract(gpkg) == kotka  # what tiles, caption and indicators read
    sample = runner.invoke(cli, ["sample", "--gpkg", str(gpkg), "--interval", "200", "-q"])
    assert sample.exit_code == 0, sample.output
    assert read_stage_records(gpkg)["sample"].params["roads"] == str(kotka)
    roads = read_layer(gpkg, C.LAYER_ROADS)
    assert len(roads) > 10 and len(read_layer(gpkg, C.LAYER_SV_POINTS)) > 10
    area = B.boundary_from_bbox(*KOTKA_INSIDE).to_crs(roads.crs).union_all()
    assert area.buffer(1.0).covers(roads.union_all())  # clipped to the bbox
    assert server.requests == []  # nothing was downloaded


def test_older_run_with_a_bbox_inside_a_city_finds_its_extract(tmp_path):
    # a boundary written before the city was recorded in its source
    frame = B.boundary_from_bbox(*SAO_PAULO_INSIDE).assign(
        **{C.SOURCE: "bbox:" + ",".join(map(str, SAO_PAULO_INSIDE))}
    )
    write_layers(tmp_path / "old.gpkg", {C.LAYER_BOUNDARY: frame})
    assert B.run_city(tmp_path / "old.gpkg") == B.get_city("sao-paulo")
    assert run_extract(tmp_path / "old.gpkg") == B.get_city("sao-paulo").osm_path()


def test_area_outside_every_bundled_extract_stays_online(tmp_path):
    frame = B.boundary_from_bbox(10.0, 50.0, 10.01, 50.01)
    write_layers(tmp_path / "far.gpkg", {C.LAYER_BOUNDARY: frame})
    assert B.run_city(tmp_path / "far.gpkg") is None
    assert run_extract(tmp_path / "far.gpkg") is None
