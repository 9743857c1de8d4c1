import sqlite3

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import shapely

from urbangeo import constants as C
from urbangeo.errors import MissingLayerError, OutputError
from urbangeo.io import gpkg


def _points(n=3, crs="EPSG:32635"):
    return gpd.GeoDataFrame(
        {"point_id": range(n)},
        geometry=[shapely.Point(500_000 + i, 6_700_000) for i in range(n)],
        crs=crs,
    )


def test_layers_are_added_and_kept(tmp_path):
    path = tmp_path / "run.gpkg"
    gpkg.write_layers(path, {"a": _points(2)})
    gpkg.write_layers(path, {"b": _points(3)})
    assert sorted(gpkg.list_layers(path)) == ["a", "b"]
    assert len(gpkg.read_layer(path, "a")) == 2
    assert gpkg.read_layer(path, "b").crs == "EPSG:32635"


def test_geopackage_1_3_with_spatial_index_and_crs(tmp_path):
    path = tmp_path / "run.gpkg"
    gpkg.write_layers(path, {C.LAYER_SV_POINTS: _points()})
    assert gpkg.gpkg_version(path) == "1.3"
    with sqlite3.connect(path) as con:
        (app_id,) = con.execute("PRAGMA application_id").fetchone()
        assert app_id == 0x47504B47  # "GPKG"
        tables = {r[0] for r in con.execute("select name from sqlite_master")}
        assert f"rtree_{C.LAYER_SV_POINTS}_geom" in tables
        (srs,) = con.execute(
            "select srs_id from gpkg_geometry_columns where table_name = ?",
            (C.LAYER_SV_POINTS,),
        ).fetchone()
        assert srs == 32635


def test_empty_layer_keeps_its_geometry_type(tmp_path):
    path = tmp_path / "run.gpkg"
    gpkg.write_layers(path, {C.LAYER_SV_POINTS: _points(0), C.LAYER_REGIONS: _points(0)})
    assert pyogrio.read_info(path, layer=C.LAYER_SV_POINTS)["geometry_type"] == "Point"
    assert pyogrio.read_info(path, layer=C.LAYER_REGIONS)["geometry_type"] == "Polygon"


def test_attribute_table(tmp_path):
    path = tmp_path / "run.gpkg"
    gpkg.write_layers(path, {"table": pd.DataFrame({"k": ["x"], "v": [1.5]})})
    assert pyogrio.read_dataframe(path, layer="table")["v"].tolist() == [1.5]


def test_existing_layers_need_overwrite(tmp_path):
    path = tmp_path / "run.gpkg"
    gpkg.write_layers(path, {"a": _points(2)})
    with pytest.raises(OutputError, match="already exist") as info:
        gpkg.write_layers(path, {"a": _points(5)})
    assert "--overwrite" in info.value.hint
    assert len(gpkg.read_layer(path, "a")) == 2
    gpkg.write_layers(path, {"a": _points(5)}, overwrite=True)
    assert len(gpkg.read_layer(path, "a")) == 5


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "run.gpkg"
    gpkg.write_layers(path, {"a": _points(2)})
    before = path.read_bytes()
    no_crs = gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)])
    with pytest.raises(OutputError, match="no CRS"):
        gpkg.write_layers(path, {"b": _points(3), "c": no_crs})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.gpkg"]


def test_ctrl_c_during_a_write_loses_nothing(tmp_path, monkeypatch):
    # Simulated interruption: the second layer's write raises KeyboardInterrupt, as Ctrl-C
    # would in the middle of GDAL's work.
    path = tmp_path / "run.gpkg"
    gpkg.write_layers(path, {"a": _points(2)})
    before = path.read_bytes()
    real = gpkg._write_one
    calls = []

    def interrupted(target, layer, frame):
        calls.append(layer)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(target, layer, frame)

    monkeypatch.setattr(gpkg, "_write_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gpkg.write_layers(path, {"b": _points(3), "c": _points(4)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.gpkg"]


def test_unwritable_outputs_are_refused_before_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="Cannot create the folder"):
        gpkg.ensure_writable(tmp_path / "afile" / "run.gpkg")
    with pytest.raises(OutputError, match="is a folder"):
        gpkg.ensure_writable(tmp_path)
    with pytest.raises(OutputError, match=r"does not end in \.gpkg"):
        gpkg.ensure_writable(tmp_path / "run.shp")


def test_missing_file_or_layer_names_the_command(tmp_path):
    with pytest.raises(MissingLayerError, match="does not exist") as info:
        gpkg.read_layer(tmp_path / "none.gpkg", C.LAYER_REGIONS)
    assert "urbangeo grid" in info.value.hint
    gpkg.write_layers(tmp_path / "run.gpkg", {"a": _points()})
    with pytest.raises(MissingLayerError, match="'sv_points' is not in") as info:
        gpkg.read_layer(tmp_path / "run.gpkg", C.LAYER_SV_POINTS)
    assert "urbangeo sample" in info.value.hint
