import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pyrosm
import pytest
import shapely

from tests.downstream.helpers import UTM35, X0, Y0, square_regions
from tests.helpers import write_geotiff
from urbangeo import constants as C
from urbangeo.downstream.indicators import (
    from_points,
    from_polygons,
    from_raster,
    from_region_table,
)
from urbangeo.downstream.stages import indicators_stage
from urbangeo.errors import InputError, OutputError
from urbangeo.geo.stages import grid_stage
from urbangeo.io.gpkg import list_layers, read_layer, write_layers
from urbangeo.io.runs import read_stage_records
from urbangeo_cli.downstream import indicators


def two_regions(size=10.0):
    """Region 0_0 = [X0, X0+size] × [Y0, Y0+size], region 1_0 to its east."""
    return square_regions(2, 1, size)


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def test_area_weighted_interpolation_by_hand():
    sources = gpd.GeoDataFrame(
        {"pop": [100.0, 40.0, 30.0], "density": [2.0, 4.0, 6.0]},
        geometry=[box(5, 0, 15, 10), box(0, 0, 5, 5), box(15, 5, 25, 10)],
        crs=UTM35,
    )
    out = from_polygons(two_regions(), sources, ["pop"])
    # A: 100 split 50/50; B: 40 wholly in 0_0; C: half of its area in 1_0 (the rest outside).
    assert out.loc["0_0", "pop"] == pytest.approx(50 + 40)
    assert out.loc["1_0", "pop"] == pytest.approx(50 + 15)
    dens = from_polygons(two_regions(), sources, ["density"], kind="intensive")
    assert dens.loc["0_0", "density"] == pytest.approx((50 * 2 + 25 * 4) / 75)
    assert dens.loc["1_0", "density"] == pytest.approx((50 * 2 + 25 * 6) / 75)


def test_area_weighting_works_across_crs():
    sources = gpd.GeoDataFrame({"pop": [100.0]}, geometry=[box(5, 0, 15, 10)], crs=UTM35)
    out = from_polygons(two_regions(1000), sources.to_crs(C.WGS84), ["pop"])
    assert out["pop"].sum() == pytest.approx(100, rel=1e-6)


def write_raster(path, values, crs="EPSG:3067", nodata=-9999.0, pixel=250.0):
    """A GeoTIFF whose top-left corner is (X0, Y0 + rows * pixel)."""
    top = Y0 + values.shape[0] * pixel
    data = values.astype("float32")
    write_geotiff(path, data, left=X0, top=top, pixel=pixel, crs=crs, nodata=nodata)


def test_zonal_sums_and_means_by_hand(tmp_path):
    values = np.arange(32, dtype=float).reshape(4, 8)  # v[row, col] = 8 row + col
    values[1, 1] = -9999.0  # nodata (the value 9)
    write_raster(tmp_path / "r.tif", values)
    regions = pd.concat(
        [
            two_regions(1000),
            square_regions(1, 1, 1000).assign(
                region_id="far", geometry=[shapely.box(X0 + 9000, Y0, X0 + 10000, Y0 + 1000)]
            ),
        ]
    )
    regions = gpd.GeoDataFrame(regions, crs=UTM35)
    sums = from_raster(regions, tmp_path / "r.tif", name="pop")
    # Region 0_0 covers columns 0-3 of every row: sum_r (32 r + 6) = 216, less the 9 of nodata.
    assert sums.loc["0_0", "pop"] == pytest.approx(216 - 9)
    assert sums.loc["1_0", "pop"] == pytest.approx(280)  # sum_r (32 r + 22)
    assert np.isnan(sums.loc["far", "pop"])
    means = from_raster(regions, tmp_path / "r.tif", stat="mean", name="pop")
    assert means.loc["0_0", "pop"] == pytest.approx(207 / 15)
    assert means.loc["1_0", "pop"] == pytest.approx(280 / 16)


def test_raster_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        from_raster(two_regions(), tmp_path / "none.tif")
    write_raster(tmp_path / "r.tif", np.ones((2, 2)))
    with pytest.raises(InputError, match="band 2"):
        from_raster(two_regions(), tmp_path / "r.tif", band=2)


def lonlat(x, y):
    pt = gpd.GeoSeries([shapely.Point(X0 + x, Y0 + y)], crs=UTM35).to_crs(C.WGS84)
    return float(pt.x.iloc[0]), float(pt.y.iloc[0])


def test_points_joined_to_the_containing_region():
    rows = [(100, 100, 5.0), (900, 500, 7.0), (1500, 500, 1.0), (5000, 5000, 100.0)]
    table = pd.DataFrame(
        [dict(zip(("lon", "lat"), lonlat(x, y), strict=True), shops=v) for x, y, v in rows]
    )
    regions = two_regions(1000)
    with pytest.warns(UserWarning, match="1 of 4 point"):
        sums = from_points(regions, table)
    assert sums["shops"].to_dict() == {"0_0": 12.0, "1_0": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        means = from_points(regions, table, agg="mean")
        counts = from_points(regions, table[["lon", "lat"]])
    assert means["shops"].to_dict() == {"0_0": 6.0, "1_0": 1.0}
    assert counts["point_count"].to_dict() == {"0_0": 2.0, "1_0": 1.0}


def test_region_table_join():
    table = pd.DataFrame({C.REGION_ID: ["1_0", "zz"], "gdp": [3.0, 4.0]})
    with pytest.warns(UserWarning, match="1 row"):
        out = from_region_table(two_regions(), table)
    assert out["gdp"].isna().tolist() == [True, False] and out.loc["1_0", "gdp"] == 3.0
    with pytest.raises(InputError, match="No row"):
        from_region_table(two_regions(), table.assign(region_id=["a", "b"]))


def test_osm_counts_for_the_bundled_city(tmp_path):
    gpkg = tmp_path / "run.gpkg"
    grid_stage(gpkg, city="kotka")
    result = indicators_stage(gpkg)  # no source: OSM counts from the city's extract
    table = read_layer(gpkg, "indicators").set_index(C.REGION_ID)
    assert list(table.columns) == [
        "osm_buildings",
        "osm_building_area_m2",
        "osm_pois",
        "osm_road_length_m",
    ]
    assert result.counts["regions"] == 9
    # Independent count: buildings whose representative point lies in a region.
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        osm = pyrosm.OSM(pyrosm.get_data("test_pbf"))
        buildings = osm.get_buildings().to_crs(regions.crs)
        roads = osm.get_network("all").to_crs(regions.crs)
    union = regions.union_all()
    inside = shapely.contains(union, buildings.representative_point().to_numpy())
    assert table["osm_buildings"].sum() == inside.sum() > 100
    road_m = shapely.length(shapely.intersection(roads.geometry.to_numpy(), union)).sum()
    assert table["osm_road_length_m"].sum() == pytest.approx(road_m, rel=1e-6)
    assert read_stage_records(gpkg)["indicators"].params["sources"][0].startswith("osm:")


def test_stage_adds_columns_and_protects_existing_ones(tmp_path):
    gpkg = tmp_path / "run.gpkg"
    write_layers(gpkg, {C.LAYER_REGIONS: two_regions(1000)})
    (tmp_path / "a.csv").write_text("region_id,gdp\n0_0,1.5\n1_0,2.5\n")
    lon, lat = lonlat(500, 500)
    (tmp_path / "p.csv").write_text(f"lon,lat,jobs\n{lon},{lat},4\n{lon},{lat},6\n")
    indicators_stage(gpkg, table=tmp_path / "a.csv")
    indicators_stage(gpkg, points=tmp_path / "p.csv")
    table = read_layer(gpkg, "indicators").set_index(C.REGION_ID)
    assert table.to_dict() == {"gdp": {"0_0": 1.5, "1_0": 2.5}, "jobs": {"0_0": 10.0, "1_0": 0.0}}
    with pytest.raises(OutputError, match="already has column"):
        indicators_stage(gpkg, table=tmp_path / "a.csv")
    indicators_stage(gpkg, table=tmp_path / "a.csv", overwrite=True)
    with pytest.raises(InputError, match="not built for a bundled city"):
        indicators_stage(gpkg, osm=True)


def test_cli_indicators(tmp_path):
    from click.testing import CliRunner

    gpkg = tmp_path / "run.gpkg"
    write_layers(gpkg, {C.LAYER_REGIONS: two_regions(1000)})
    src = gpd.GeoDataFrame({"pop": [100.0]}, geometry=[box(500, 0, 1500, 1000)], crs=UTM35)
    src.to_file(tmp_path / "pop.gpkg", layer="pop")
    result = CliRunner().invoke(
        indicators, ["--gpkg", str(gpkg), "--polygons", str(tmp_path / "pop.gpkg"), "-q"]
    )
    assert result.exit_code == 0, result.output
    table = read_layer(gpkg, "indicators").set_index(C.REGION_ID)
    assert table["pop"].to_dict() == pytest.approx({"0_0": 50.0, "1_0": 50.0})
    help_text = CliRunner().invoke(indicators, ["--help"]).output
    for word in ("Example", "area", "--raster", "region_id", "default"):
        assert word in help_text


def test_header_only_tables_are_refused_clearly(tmp_path):
    """Issue #14: a CSV with a header and no rows is an InputError, not an IndexError."""
    from click.testing import CliRunner

    gpkg = tmp_path / "run.gpkg"
    write_layers(gpkg, {C.LAYER_REGIONS: two_regions(1000)})
    (tmp_path / "t.csv").write_text("region_id,gdp\n")
    (tmp_path / "p.csv").write_text("lon,lat,jobs\n")
    with pytest.raises(InputError, match="no rows"):
        indicators_stage(gpkg, table=tmp_path / "t.csv")
    with pytest.raises(InputError, match="no rows"):
        indicators_stage(gpkg, points=tmp_path / "p.csv")
    result = CliRunner().invoke(
        indicators, ["--gpkg", str(gpkg), "--table", str(tmp_path / "t.csv")]
    )
    assert result.exit_code == 1 and "no rows" in result.output
    assert "Traceback" not in result.output and "IndexError" not in result.output
    assert C.LAYER_INDICATORS not in list_layers(gpkg)


def test_a_dropped_non_numeric_column_is_named(tmp_path):
    """Issue #14: a column left out because it is not numeric is said, by name."""
    from urbangeo.errors import UrbangeoWarning

    gpkg = tmp_path / "run.gpkg"
    write_layers(gpkg, {C.LAYER_REGIONS: two_regions(1000)})
    (tmp_path / "a.csv").write_text("region_id,gdp,district\n0_0,1.5,north\n1_0,2.5,south\n")
    with pytest.warns(UrbangeoWarning, match="district") as caught:
        indicators_stage(gpkg, table=tmp_path / "a.csv")
    assert "gdp" not in str(caught[0].message)
    assert list(read_layer(gpkg, C.LAYER_INDICATORS).columns) == [C.REGION_ID, "gdp"]
    lon, lat = lonlat(500, 500)
    (tmp_path / "p.csv").write_text(f"lon,lat,jobs,kind\n{lon},{lat},4,shop\n")
    with pytest.warns(UrbangeoWarning, match="kind"):
        indicators_stage(gpkg, points=tmp_path / "p.csv")


def test_cli_osm_file_and_the_old_osm_file_spelling(tmp_path):
    from click.testing import CliRunner

    pbf = pyrosm.get_data("test_pbf")
    gpkg = tmp_path / "run.gpkg"
    grid_stage(gpkg, city="kotka")
    args = ["--gpkg", str(gpkg)]
    result = CliRunner().invoke(indicators, [*args, "--osm-file", pbf])
    assert result.exit_code == 0, result.output
    assert "deprecated" not in result.output
    first = read_layer(gpkg, C.LAYER_INDICATORS)
    result = CliRunner().invoke(indicators, [*args, "--osm", pbf, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "--osm FILE is deprecated; use --osm-file" in result.output
    assert read_layer(gpkg, C.LAYER_INDICATORS).equals(first)
    assert read_stage_records(gpkg)["indicators"].params["sources"] == [f"osm:{pbf}"]
