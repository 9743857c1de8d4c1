"""Styles stored in the GeoPackage (layer_styles) and the QGIS project beside it, without QGIS.

The real QGIS 3.22 reads both in tests/qgis_plugin/test_stored_styles.py.
"""

from __future__ import annotations

import itertools
import sqlite3
import xml.etree.ElementTree as ET
import zipfile

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from tests.downstream.helpers import square_regions
from urbangeo import constants as C
from urbangeo.io.gpkg import list_layers, read_layer, write_layers
from urbangeo.io.styles import (
    OWNER,
    POINT,
    layer_styles,
    read_styles,
    residual_ranges,
    styles_for,
    value_ranges,
    write_styles,
)
from urbangeo.viz.colors import CATEGORICAL
from urbangeo.viz.project import write_project


def run_layers(rows: int = 4, cols: int = 5) -> dict[str, gpd.GeoDataFrame | pd.DataFrame]:
    regions = square_regions(cols, rows)
    rng = np.random.default_rng(0)
    n = len(regions)
    clusters = regions[[C.REGION_ID, "geometry"]].assign(cluster=np.arange(n) % 3)
    predictions = regions[[C.REGION_ID, "geometry"]].copy()
    for t in ("population", "jobs"):
        observed = rng.gamma(2.0, 50.0, n)
        predictions[f"{t}_observed"] = observed
        predictions[f"{t}_predicted"] = observed * rng.uniform(0.7, 1.3, n)
        predictions[f"{t}_residual"] = np.log1p(predictions[f"{t}_predicted"]) - np.log1p(observed)
    points = gpd.GeoDataFrame(
        {C.POINT_ID: [0, 1, 2], C.REGION_ID: ["0_0", "1_0", "2_1"]},
        geometry=[regions.geometry.iloc[i].centroid for i in (0, 1, 7)],
        crs=regions.crs,
    )
    boundary = gpd.GeoDataFrame(
        {"name": ["area"]}, geometry=[regions.union_all().buffer(-100)], crs=regions.crs
    )
    roads = gpd.GeoDataFrame(
        {C.ROAD_ID: [0]},
        geometry=[shapely.LineString(regions.geometry.iloc[[0, n - 1]].centroid)],
        crs=regions.crs,
    )
    return {
        C.LAYER_BOUNDARY: boundary,
        C.LAYER_REGIONS: regions,
        C.LAYER_ROADS: roads,
        C.LAYER_SV_POINTS: points,
        C.LAYER_CLUSTERS: clusters,
        C.LAYER_PREDICTIONS: predictions,
        C.LAYER_INDICATORS: pd.DataFrame({C.REGION_ID: regions[C.REGION_ID], "x": 1.0}),
    }


@pytest.fixture
def styled(tmp_path):
    layers = run_layers()
    gpkg = write_layers(tmp_path / "run.gpkg", layers)
    return gpkg, layers, write_styles(gpkg, styles_for(layers))


def test_styles_for_each_spatial_layer_from_its_data():
    layers = run_layers()
    styles = styles_for(layers)
    assert set(styles) == set(layers) - {C.LAYER_INDICATORS}  # attribute tables: no style
    (clusters,) = styles[C.LAYER_CLUSTERS]
    cats = clusters.renderer.categories
    assert clusters.renderer.kind == "categorizedSymbol" and clusters.renderer.field == "cluster"
    assert [c.value for c in cats] == ["0", "1", "2", ""]  # "": everything else, in grey
    assert [c.symbol.color for c in cats[:3]] == list(CATEGORICAL[:3])
    assert cats[0].label == "cluster 0 (7 regions)"
    names = [s.name for s in styles[C.LAYER_PREDICTIONS]]
    assert names == [
        "population predicted",
        "population observed",
        "population residual",
        "jobs predicted",
        "jobs observed",
        "jobs residual",
    ]
    assert [s.default for s in styles[C.LAYER_PREDICTIONS]] == [True] + [False] * 5
    predicted, observed, _ = styles[C.LAYER_PREDICTIONS][:3]
    assert predicted.renderer.kind == "graduatedSymbol"
    assert predicted.renderer.field == "population_predicted"
    assert predicted.renderer.ranges == observed.renderer.ranges  # classes shared
    regions = styles[C.LAYER_REGIONS][0].renderer
    assert regions.kind == "singleSymbol" and regions.symbol.color is None  # outlines
    assert styles[C.LAYER_SV_POINTS][0].renderer.symbol == POINT
    assert POINT.color not in CATEGORICAL


def test_class_breaks_come_from_the_values():
    values = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, np.nan])
    ranges = value_ranges(values)
    assert len(ranges) == 5
    assert ranges[0].lower == 0 and ranges[-1].upper == 100
    assert all(a.upper == b.lower for a, b in itertools.pairwise(ranges))
    assert len({r.symbol.color for r in ranges}) == 5
    assert value_ranges(np.array([np.nan])) == ()
    (single,) = value_ranges(np.array([3.0, 3.0]))
    assert single.lower == single.upper == 3.0


def test_residual_classes_are_symmetric_around_zero():
    ranges = residual_ranges(np.linspace(-0.5, 2.0, 50))
    inner = [r.upper for r in ranges[:-1]]
    assert inner[0] == pytest.approx(-inner[3]) and inner[1] == pytest.approx(-inner[2])
    assert ranges[0].lower <= -max(abs(x) for x in inner) and ranges[-1].upper == 2.0
    middle = ranges[2]
    assert middle.lower < 0 < middle.upper and middle.symbol.color == "#f7f7f7"
    assert "under-predicted" in ranges[0].label and "over-predicted" in ranges[-1].label


def test_qml_and_sld_are_well_formed():
    layers = run_layers()
    for name, styles in styles_for(layers).items():
        for style in styles:
            root = ET.fromstring(style.qml.split("\n", 1)[1])
            assert root.tag == "qgis" and root.get("version", "").startswith("3.22")
            renderer = root.find("renderer-v2")
            assert renderer is not None and renderer.get("type") == style.renderer.kind
            assert root.findtext("layerGeometryType") in ("0", "1", "2")
            sld = ET.fromstring(style.sld(name).split("\n", 1)[1])
            assert sld.tag.endswith("StyledLayerDescriptor") and sld.get("version") == "1.1.0"
            rules = sld.findall(".//{http://www.opengis.net/se}Rule")
            assert len(rules) == len(style.renderer.rules()) >= 1


def test_write_styles_fills_layer_styles_as_qgis_does(styled):
    gpkg, layers, written = styled
    rows = read_styles(gpkg)
    assert written == len(rows) == 6 + 5  # 5 single/categorised layers, 6 prediction styles
    assert set(rows.columns) >= {
        "f_table_catalog",
        "f_table_schema",
        "f_table_name",
        "f_geometry_column",
        "styleName",
        "styleQML",
        "styleSLD",
        "useAsDefault",
        "description",
        "owner",
        "ui",
        "update_time",
    }
    assert (rows["f_table_schema"] == "").all() and (rows["f_geometry_column"] == "geom").all()
    defaults = rows[rows["useAsDefault"] == 1]
    assert sorted(defaults["f_table_name"]) == sorted(set(layers) - {C.LAYER_INDICATORS})
    # GDAL still reads the file; layer_styles is an attributes table, like QGIS's own
    assert C.LAYER_REGIONS in list_layers(gpkg) and "layer_styles" in list_layers(gpkg)
    assert len(read_layer(gpkg, "layer_styles")) == written
    with sqlite3.connect(gpkg) as con:
        kind = con.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    assert kind == ("attributes",)


def test_write_styles_replaces_its_rows_and_keeps_the_users(styled):
    gpkg, layers, written = styled
    with sqlite3.connect(gpkg) as con:
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, useAsDefault, owner) "
            "VALUES ('', '', 'clusters', 'geom', 'mine', '<qgis/>', 1, '')"
        )
    clusters = layers[C.LAYER_CLUSTERS].assign(cluster=0)
    write_styles(gpkg, styles_for({C.LAYER_CLUSTERS: clusters}))
    rows = read_styles(gpkg)
    assert len(rows) == written + 1
    mine = rows[rows["styleName"] == "mine"].iloc[0]
    assert mine["useAsDefault"] == 0 and mine["owner"] == ""  # kept, no longer the default
    ours = rows[(rows["f_table_name"] == "clusters") & (rows["owner"] == OWNER)]
    assert len(ours) == 1 and ours.iloc[0]["useAsDefault"] == 1
    assert "cluster 0 (20 regions)" in ours.iloc[0]["styleQML"]


def test_write_styles_skips_what_is_not_a_spatial_layer_of_the_file(tmp_path):
    layers = run_layers()
    gpkg = write_layers(tmp_path / "run.gpkg", {C.LAYER_REGIONS: layers[C.LAYER_REGIONS]})
    assert write_styles(gpkg, {}) == 0
    assert "layer_styles" not in list_layers(gpkg)
    assert write_styles(gpkg, styles_for({C.LAYER_CLUSTERS: layers[C.LAYER_CLUSTERS]})) == 0
    assert "layer_styles" not in list_layers(gpkg)
    assert layer_styles("something_else", layers[C.LAYER_REGIONS]) == []


def test_project_groups_the_layers_with_relative_paths(styled):
    gpkg, _, _ = styled
    path = write_project(gpkg.parent)
    assert path == gpkg.parent / "run.qgz"
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["run.qgs"]
        document = archive.read("run.qgs").decode("utf-8")
    root = ET.fromstring(document.split("\n", 1)[1])
    groups = root.findall("layer-tree-group/layer-tree-group")
    assert [g.get("name") for g in groups] == [
        "Sampling",
        "Area",
        "Clusters",
        "Predictions",
        "Residuals",
    ]
    tree = {g.get("name"): [n.get("name") for n in g] for g in groups}
    assert tree["Area"][1:] == ["Study area", "Regions", "Roads"]  # [0]: customproperties
    assert groups[3].get("mutually-exclusive") == "1" and groups[3].get("checked").endswith(
        "Unchecked"
    )
    layers = root.findall("projectlayers/maplayer")
    assert len(layers) == 1 + 3 + 1 + 4 + 2
    sources = {m.findtext("datasource") for m in layers}
    assert all(s.startswith("./run.gpkg|layername=") for s in sources)
    kinds = {m.findtext("layername"): m.find("renderer-v2").get("type") for m in layers}
    assert kinds["Clusters"] == "categorizedSymbol"
    assert kinds["population predicted"] == kinds["jobs residual"] == "graduatedSymbol"
    ids = [m.findtext("id") for m in layers]
    assert len(set(ids)) == len(ids)
    assert root.find("projectCrs/spatialrefsys/authid").text == "EPSG:32635"
    assert root.find("properties/Paths/Absolute").text == "false"


def test_project_of_a_run_with_regions_only(tmp_path):
    regions = square_regions(2, 2)
    gpkg = write_layers(tmp_path / "grid.gpkg", {C.LAYER_REGIONS: regions})
    path = write_project(tmp_path, gpkg_name="grid.gpkg")
    assert path.name == "grid.qgz"
    document = zipfile.ZipFile(path).read("grid.qgs").decode("utf-8")
    assert "./grid.gpkg|layername=regions" in document and "Clusters" not in document
    assert pyogrio.list_layers(gpkg)[:, 0].tolist() == ["regions"]  # the GeoPackage untouched
