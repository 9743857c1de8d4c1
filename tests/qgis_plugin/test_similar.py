"""The panel's "Similar regions" action in a real QGIS: select regions of a run's regions layer,
press the button, and the layer `similar` (from `urbangeo similar`) is loaded, ranked."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import wait_until
from qgis.core import QgsFeatureRequest, QgsProject, QgsVectorLayer


@pytest.fixture
def run_gpkg(executable, tmp_path) -> Path:
    """A Kotka grid of 30 regions and random 8-value embeddings (embeddings.parquet), made by
    the urbangeo command and its own Python (QGIS's Python has no pandas)."""
    gpkg = tmp_path / "kotka" / "run.gpkg"
    gpkg.parent.mkdir()
    grid = [executable, "grid", "--city", "kotka", "--cell-size", "500", "-o", str(gpkg), "-q"]
    subprocess.run(grid, check=True)
    code = textwrap.dedent(
        f"""
        import numpy as np, pandas as pd
        from urbangeo.io.gpkg import read_layer
        ids = read_layer({str(gpkg)!r}, "regions")["region_id"].astype(str)
        values = np.random.default_rng(0).normal(size=(len(ids), 8))
        frame = pd.DataFrame(values, columns=[f"e{{i}}" for i in range(8)])
        frame.insert(0, "region_id", ids.to_numpy())
        frame.to_parquet({str(gpkg.parent / "embeddings.parquet")!r})
        """
    )
    subprocess.run([str(Path(executable).parent / "python"), "-c", code], check=True)
    return gpkg


def _ranked(layer: QgsVectorLayer) -> list:
    request = QgsFeatureRequest().addOrderBy("rank", True, False)
    return list(layer.getFeatures(request))


def test_similar_regions_of_the_selection(dock, run_gpkg):
    project = QgsProject.instance()
    regions = QgsVectorLayer(f"{run_gpkg}|layername=regions", "regions", "ogr")
    assert regions.isValid() and regions.featureCount() == 30
    project.addMapLayer(regions)
    try:
        dock.find_similar()  # nothing selected yet
        assert "Select one or more regions" in dock.log.toPlainText() and dock.task is None
        chosen = sorted(regions.getFeatures(), key=lambda f: f["region_id"])[7]
        regions.selectByIds([chosen.id()])
        dock.find_similar()
        assert dock.task is not None
        wait_until(lambda: dock.task is None and "Done." in dock.log.toPlainText(), 120)
        log = dock.log.toPlainText()
        assert f"similar --gpkg {run_gpkg} --region {chosen['region_id']}" in log
        similar = project.mapLayersByName("similar")
        assert len(similar) == 1 and similar[0].isValid()
        layer = similar[0]
        assert layer.featureCount() == 20  # the default k
        ranked = _ranked(layer)
        first = ranked[0]
        assert first["region_id"] == chosen["region_id"]
        assert first["rank"] == 1 and bool(first["selected"])
        assert first["similarity"] == pytest.approx(1.0)
        assert not any(bool(f["selected"]) for f in ranked[1:])
        sims = [f["similarity"] for f in ranked]
        assert sims == sorted(sims, reverse=True)
        assert layer.renderer().type() == "graduatedSymbol"  # the style stored with it
        assert layer.renderer().classAttribute() == "similarity"

        # two regions: regions like their mean; the old answer is replaced
        second = sorted(regions.getFeatures(), key=lambda f: f["region_id"])[20]
        regions.selectByIds([chosen.id(), second.id()])
        dock.log.clear()
        dock.find_similar()
        wait_until(lambda: dock.task is None and "Done." in dock.log.toPlainText(), 120)
        similar = project.mapLayersByName("similar")
        assert len(similar) == 1
        flagged = {f["region_id"] for f in similar[0].getFeatures() if bool(f["selected"])}
        assert flagged == {chosen["region_id"], second["region_id"]}
    finally:
        project.removeMapLayers([layer.id() for layer in project.mapLayers().values()])
