"""Real indicators of a bundled city (São Paulo's r5r hexgrid) vs OSM-derived ones (#15)."""

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from tests.downstream.helpers import UTM35, X0, Y0, square_regions
from urbangeo import constants as C
from urbangeo.downstream import indicators as ind
from urbangeo.downstream.stages import indicators_stage
from urbangeo.errors import InputError
from urbangeo.geo.boundary import get_city
from urbangeo.geo.stages import grid_stage
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.runs import read_stage_records
from urbangeo_cli.main import cli

REAL = "real (r5r hexgrid: population, jobs, schools)"
REAL_COLUMNS = ["population", "jobs", "schools"]


def test_min_coverage_leaves_partly_covered_regions_empty():
    regions = square_regions(3, 1, 10.0)  # 0_0, 1_0, 2_0 side by side
    sources = gpd.GeoDataFrame(
        {"pop": [100.0, 50.0]},
        # all of 0_0 and 1_0 (100), and the west 40 % of 2_0 (50)
        geometry=[
            shapely.box(X0, Y0, X0 + 20, Y0 + 10),
            shapely.box(X0 + 20, Y0, X0 + 24, Y0 + 10),
        ],
        crs=UTM35,
    )
    plain = ind.from_polygons(regions, sources, ["pop"])
    assert plain["pop"].tolist() == pytest.approx([50.0, 50.0, 50.0])  # 2_0: an undercount
    strict = ind.from_polygons(regions, sources, ["pop"], min_coverage=0.99)
    assert strict["pop"].tolist()[:2] == pytest.approx([50.0, 50.0])
    assert np.isnan(strict.loc["2_0", "pop"])
    assert ind.from_polygons(regions, sources, ["pop"], min_coverage=0.4)["pop"].notna().all()
    with pytest.raises(InputError, match="between 0 and 1"):
        ind.from_polygons(regions, sources, ["pop"], min_coverage=1.5)


def test_from_city_area_weights_the_hexagons():
    city = get_city("sao-paulo")
    regions = read_layer(city.sample_grid, C.LAYER_REGIONS)  # the bundled 1 km grid
    out = ind.from_city(regions, city)
    assert list(out.columns) == REAL_COLUMNS
    # Without the coverage rule every person lands in some region: totals are kept.
    hexagons = gpd.read_file(city.indicators.path)
    total = ind.from_polygons(regions, hexagons, REAL_COLUMNS).sum()
    assert total.tolist() == pytest.approx([517570, 625298, 59], rel=1e-9)
    # Regions fully inside the hexagons keep their value; edge regions are empty.
    known = out.notna().all(axis=1)
    covered = (
        regions.set_index(C.REGION_ID)
        .geometry.intersection(shapely.union_all(hexagons.to_crs(regions.crs).geometry.values))
        .area
        / regions.set_index(C.REGION_ID).area
    )
    assert (known == (covered >= ind.CITY_MIN_COVERAGE)).all()
    assert 15 <= known.sum() < len(out)
    assert (out.loc[known, "population"] > 0).all()
    with pytest.raises(InputError, match="no real indicators"):
        ind.from_city(regions, get_city("kotka"))


def test_sao_paulo_run_gets_real_indicators_by_default(tmp_path):
    gpkg = tmp_path / "run.gpkg"
    grid_stage(gpkg, city="sao-paulo", cell_size=1000.0)
    indicators_stage(gpkg)  # no source: the city's real indicators, no OSM counts
    table = read_layer(gpkg, C.LAYER_INDICATORS).set_index(C.REGION_ID)
    assert list(table.columns) == REAL_COLUMNS
    record = read_stage_records(gpkg)["indicators"].params
    assert record["sources"] == ["city:sao-paulo"]
    assert record["ground_truth"] == {"city:sao-paulo": REAL}
    assert table["population"].notna().sum() >= 15


def test_osm_counts_are_added_when_asked_for(tmp_path):
    gpkg = tmp_path / "run.gpkg"
    grid_stage(gpkg, city="sao-paulo", cell_size=1000.0)
    indicators_stage(gpkg, osm=True)
    table = read_layer(gpkg, C.LAYER_INDICATORS)
    assert set(REAL_COLUMNS) | set(ind.OSM_COLUMNS) <= set(table.columns)
    truth = read_stage_records(gpkg)["indicators"].params["ground_truth"]
    assert sorted(truth.values()) == ["OSM-derived", REAL]


def test_bbox_inside_sao_paulo_gets_real_indicators(tmp_path):
    gpkg = tmp_path / "run.gpkg"
    grid_stage(gpkg, bbox=(-46.645, -23.555, -46.625, -23.535), cell_size=500.0)
    indicators_stage(gpkg)
    table = read_layer(gpkg, C.LAYER_INDICATORS)
    assert list(table.columns) == [C.REGION_ID, *REAL_COLUMNS]
    assert table["population"].notna().sum() >= 16  # a 2 km box well inside the hexagons


def test_a_file_source_replaces_the_default(tmp_path):
    gpkg = tmp_path / "run.gpkg"
    grid_stage(gpkg, city="sao-paulo", cell_size=1000.0)
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    (tmp_path / "t.csv").write_text(
        "region_id,gdp\n" + "".join(f"{r},1\n" for r in regions[C.REGION_ID])
    )
    indicators_stage(gpkg, table=tmp_path / "t.csv")
    assert list(read_layer(gpkg, C.LAYER_INDICATORS).columns) == [C.REGION_ID, "gdp"]
    truth = read_stage_records(gpkg)["indicators"].params["ground_truth"]
    assert list(truth.values()) == ["given"]


def test_kotka_indicators_are_labelled_osm_derived(tmp_path):
    gpkg = tmp_path / "run.gpkg"
    grid_stage(gpkg, city="kotka", cell_size=1000.0)
    indicators_stage(gpkg)
    truth = read_stage_records(gpkg)["indicators"].params["ground_truth"]
    assert list(truth.values()) == ["OSM-derived"]
    assert list(read_layer(gpkg, C.LAYER_INDICATORS).columns) == [C.REGION_ID, *ind.OSM_COLUMNS]


def test_cities_command_names_the_kind_of_indicators():
    runner = CliRunner()
    text = runner.invoke(cli, ["cities"]).output
    assert "sao-paulo" in text and REAL in text and "OSM-derived" in text
    import json

    rows = {r["name"]: r for r in json.loads(runner.invoke(cli, ["cities", "--json"]).output)}
    assert rows["sao-paulo"]["indicators"] == REAL
    assert rows["kotka"]["indicators"] == rows["helsinki"]["indicators"] == "OSM-derived"


def test_indicators_without_a_boundary_layer_still_need_a_source(tmp_path):
    gpkg = tmp_path / "run.gpkg"
    write_layers(gpkg, {C.LAYER_REGIONS: square_regions(2, 1)})
    with pytest.raises(InputError, match="not built for a bundled city"):
        indicators_stage(gpkg)
