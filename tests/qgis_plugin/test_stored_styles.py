"""A run's GeoPackage and project open styled in a real QGIS 3.22, as a user opens them.

The run is built by urbangeo's own Python (the environment of the `urbangeo` command): a grid
and street-view points of Kotka, stand-in clusters and predictions, the styles stored with
``urbangeo.io.styles`` and the map stage, which writes ``run.qgz``.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from qgis.core import (
    QgsLayerTreeGroup,
    QgsProject,
    QgsVectorLayer,
)

BUILD = r"""
import sys
from pathlib import Path

import numpy as np

from urbangeo import constants as C
from urbangeo.viz.stages import map_stage
from urbangeo.geo.stages import grid_stage, sample_stage
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.styles import styles_for, write_styles

gpkg = Path(sys.argv[1])
grid_stage(gpkg, city="kotka", cell_size=500)
sample_stage(gpkg)
regions = read_layer(gpkg, C.LAYER_REGIONS)
n = len(regions)
rng = np.random.default_rng(0)
base = regions[[C.REGION_ID, "geometry"]]
predictions = base.copy()
for t in ("population", "jobs"):
    observed = rng.gamma(2.0, 50.0, n)
    predicted = observed * rng.uniform(0.6, 1.4, n)
    predictions[f"{t}_observed"] = observed
    predictions[f"{t}_predicted"] = predicted
    predictions[f"{t}_residual"] = np.log1p(predicted) - np.log1p(observed)
layers = {
    C.LAYER_CLUSTERS: base.assign(cluster=np.arange(n) % 4),
    C.LAYER_PREDICTIONS: predictions,
}
write_layers(gpkg, layers)
names = (C.LAYER_BOUNDARY, C.LAYER_REGIONS, C.LAYER_ROADS, C.LAYER_SV_POINTS)
write_styles(gpkg, styles_for({**{k: read_layer(gpkg, k) for k in names}, **layers}))
map_stage(gpkg, tiles="none")
"""

TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


@pytest.fixture(scope="module")
def run_gpkg(executable, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("styled") / "kotka"
    folder.mkdir()
    python = Path(executable).parent / "python"
    assert python.exists(), f"no Python beside {executable}"
    gpkg = folder / "run.gpkg"
    subprocess.run([str(python), "-c", BUILD, str(gpkg)], check=True, timeout=600)
    return gpkg


def open_layer(gpkg: Path, name: str) -> QgsVectorLayer:
    """As drag and drop, the browser or Layer ▸ Add Vector Layer open it."""
    layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
    assert layer.isValid(), name
    return layer


def test_layers_open_styled(run_gpkg):
    clusters = open_layer(run_gpkg, "clusters")
    renderer = clusters.renderer()
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "cluster"
    categories = renderer.categories()
    assert [c.value() for c in categories] == ["0", "1", "2", "3", ""]
    assert [c.symbol().color().name() for c in categories[:4]] == TAB10
    assert categories[0].label().startswith("cluster 0 (")

    predictions = open_layer(run_gpkg, "predictions")
    renderer = predictions.renderer()
    assert renderer.type() == "graduatedSymbol"
    assert renderer.classAttribute() == "population_predicted"
    ranges = renderer.ranges()
    assert len(ranges) == 5 and ranges[0].lowerValue() < ranges[-1].upperValue()
    assert ranges[0].symbol().color().name() == "#440154"  # viridis, low to high
    assert ranges[-1].symbol().color().name() == "#fde725"

    regions = open_layer(run_gpkg, "regions")  # kept: a renderer dies with its layer
    assert regions.renderer().type() == "singleSymbol"
    fill = regions.renderer().symbol().symbolLayer(0).properties()
    assert fill["style"] == "no"  # outlines only
    points = open_layer(run_gpkg, "sv_points")
    assert points.renderer().type() == "singleSymbol"
    colour = points.renderer().symbol().color().name()
    assert colour == "#111111" and colour not in TAB10
    for name in ("boundary", "roads"):
        assert open_layer(run_gpkg, name).loadDefaultStyle()[1], name  # a stored default


def test_each_indicators_styles_are_stored_beside_the_default(run_gpkg):
    layer = open_layer(run_gpkg, "predictions")
    count, ids, names, _descriptions, _error = layer.listStylesInDatabase()
    related = dict(zip(names[:count], ids[:count], strict=True))
    assert set(related) == {
        f"{t} {what}"
        for t in ("population", "jobs")
        for what in ("predicted", "observed", "residual")
    }
    qml, _error = layer.getStyleFromDatabase(related["jobs residual"])
    from qgis.PyQt.QtXml import QDomDocument

    document = QDomDocument()
    assert document.setContent(qml)[0]
    assert layer.importNamedStyle(document)[0]
    renderer = layer.renderer()
    assert renderer.type() == "graduatedSymbol" and renderer.classAttribute() == "jobs_residual"
    bounds = [r.upperValue() for r in renderer.ranges()[:-1]]
    assert bounds[0] == pytest.approx(-bounds[3]) and bounds[1] == pytest.approx(-bounds[2])
    assert renderer.ranges()[2].symbol().color().name() == "#f7f7f7"  # white around 0


def test_stored_sld_loads(run_gpkg, tmp_path):
    with sqlite3.connect(run_gpkg) as con:
        rows = con.execute(
            "SELECT f_table_name, styleSLD FROM layer_styles WHERE useAsDefault = 1"
        ).fetchall()
    assert {name for name, _ in rows} >= {"clusters", "predictions", "regions", "sv_points"}
    for name, sld in rows:
        path = tmp_path / f"{name}.sld"
        path.write_text(sld, encoding="utf-8")
        layer = open_layer(run_gpkg, name)
        message, ok = layer.loadSldStyle(str(path))
        assert ok, (name, message)


def _tree(group: QgsLayerTreeGroup) -> dict[str, list[str]]:
    return {
        child.name(): [node.name() for node in child.children()]
        for child in group.children()
        if isinstance(child, QgsLayerTreeGroup)
    }


def test_project_opens_with_its_groups_anywhere(run_gpkg, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(run_gpkg.parent, moved)  # relative paths: the folder travels whole
    project = QgsProject()
    assert project.read(str(moved / "run.qgz")), project.error()
    assert project.crs().authid() == "EPSG:32635"
    tree = _tree(project.layerTreeRoot())
    assert list(tree) == ["Sampling", "Area", "Clusters", "Predictions", "Residuals"]
    assert tree["Sampling"][0] == "Street-view points"  # on top of everything
    assert tree["Area"] == ["Study area", "Regions", "Roads"]
    assert tree["Residuals"] == ["population residual", "jobs residual"]
    layers = project.mapLayers().values()
    assert len(layers) == 1 + 3 + 1 + 4 + 2  # no images layer: no tiles stage here
    for layer in layers:
        assert layer.isValid(), layer.name()
        assert layer.source().startswith(str(moved / "run.gpkg")), layer.source()
        assert layer.featureCount() > 0, layer.name()
    by_name = {layer.name(): layer for layer in layers}
    assert by_name["Clusters"].renderer().type() == "categorizedSymbol"
    assert by_name["population predicted"].renderer().type() == "graduatedSymbol"
    assert by_name["jobs residual"].renderer().classAttribute() == "jobs_residual"
    root = project.layerTreeRoot()
    predictions = root.findGroup("Predictions")
    assert predictions.isMutuallyExclusive() and not predictions.itemVisibilityChecked()
    assert root.findGroup("Clusters").itemVisibilityChecked()


def test_plugin_keeps_the_stored_styles(plugin, run_gpkg):
    from urbangeo_qgis.styles import has_stored_style, load_run_layers

    loaded = {layer.name(): layer for layer in load_run_layers(run_gpkg, group_name="stored")}
    assert {"clusters", "predictions", "regions", "sv_points"} <= set(loaded)
    assert all(has_stored_style(layer) for layer in loaded.values())
    assert loaded["sv_points"].renderer().symbol().color().name() == "#111111"
    categories = loaded["clusters"].renderer().categories()
    assert [c.symbol().color().name() for c in categories[:4]] == TAB10
    assert loaded["predictions"].renderer().classAttribute() == "population_predicted"
    root = QgsProject.instance().layerTreeRoot()
    root.removeChildNode(root.findGroup("stored"))
    QgsProject.instance().removeMapLayers([layer.id() for layer in loaded.values()])
