"""The plugin in a real QGIS: loading, the panel, Processing, tasks, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, wait_until
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProject,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
)

STAGE_NAMES = ["grid", "sample", "tiles", "caption", "train", "embed", "predict", "cluster"]


def test_plugin_loads_through_qgis_plugin_loader(plugin):
    assert type(plugin).__name__ == "UrbangeoPlugin"
    assert plugin.action is not None and plugin.action.text() == "urbangeo panel"


def test_plugin_import_pulls_in_neither_torch_nor_urbangeo(installed_plugin):
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(installed_plugin)!r})
        import urbangeo_qgis, urbangeo_qgis.plugin, urbangeo_qgis.provider, urbangeo_qgis.dock
        print([m for m in ("torch", "open_clip", "urbangeo", "geopandas") if m in sys.modules])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_processing_provider_registers_every_stage(plugin):
    provider = QgsApplication.processingRegistry().providerById("urbangeo")
    assert provider is not None
    assert sorted(a.name() for a in provider.algorithms()) == sorted(STAGE_NAMES)
    alg = QgsApplication.processingRegistry().algorithmById("urbangeo:grid")
    assert {p.name() for p in alg.parameterDefinitions()} >= {"CITY", "CELL_SIZE", "GPKG"}


def test_processing_run_grid_on_a_bundled_city(plugin, tmp_path):
    import processing

    out = tmp_path / "kotka.gpkg"
    result = processing.run("urbangeo:grid", {"CITY": "kotka", "GPKG": str(out)})
    layer = QgsVectorLayer(result["REGIONS"], "regions", "ogr")
    assert layer.isValid()
    assert layer.featureCount() == 9
    assert layer.crs().authid() == "EPSG:32635"
    assert {f.name() for f in layer.fields()} >= {"region_id", "col", "row", "inside_share"}
    ids = sorted(f["region_id"] for f in layer.getFeatures())
    assert ids[0] == "496_6709"
    # then the sample and tiles stages on the same GeoPackage
    result = processing.run("urbangeo:sample", {"GPKG": str(out), "INTERVAL": 250})
    points = QgsVectorLayer(result["SV_POINTS"], "sv_points", "ogr")
    assert points.isValid() and points.featureCount() > 150
    result = processing.run("urbangeo:tiles", {"GPKG": str(out), "SIZE": 32})
    images = QgsVectorLayer(result["IMAGES"], "images", "ogr")
    assert images.isValid() and images.featureCount() == 9
    assert sorted(f["status"] for f in images.getFeatures()) == ["ok"] * 9


def test_processing_reports_the_commands_own_error(plugin, tmp_path):
    import processing

    too_small = r"cell_size \(--cell-size\) must be more than 0"
    with pytest.raises(QgsProcessingException, match=too_small):
        processing.run(
            "urbangeo:grid", {"CITY": "kotka", "CELL_SIZE": 0, "GPKG": str(tmp_path / "a.gpkg")}
        )


def test_processing_grid_from_a_geographic_polygon_layer(plugin, tmp_path):
    import processing

    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "area", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(26.93, 60.52, 26.95, 60.53)))
    layer.dataProvider().addFeatures([feature])
    out = tmp_path / "area.gpkg"
    result = processing.run("urbangeo:grid", {"BOUNDARY_FILE": layer, "GPKG": str(out)})
    regions = QgsVectorLayer(result["REGIONS"], "regions", "ogr")
    assert regions.isValid() and regions.crs().authid() == "EPSG:32635"  # metres, not degrees
    assert regions.featureCount() == 4


def test_dock_opens_and_its_screenshot_is_not_blank(dock, tmp_path):
    from qgis.PyQt.QtGui import QImage

    dock.resize(420, 900)
    assert dock.isVisible() or dock.isHidden() is False
    wait_until(lambda: dock.cities_from_command, 60)  # asked `urbangeo cities --json`
    cities = [dock.city.itemText(i) for i in range(dock.city.count())]
    assert cities == ["kotka", "helsinki", "sao-paulo"]
    assert dock.city.currentText() == "sao-paulo"  # the default city
    shot = tmp_path / "panel.png"
    assert dock.grab().save(str(shot))
    image = QImage(str(shot))
    assert image.width() >= 300 and image.height() >= 600
    colours = {
        image.pixel(x, y) for x in range(0, image.width(), 3) for y in range(0, image.height(), 3)
    }
    assert len(colours) > 20  # widgets and text, not a flat fill
    if os.environ.get("URBANGEO_UPDATE_DOCS"):  # refresh the README's picture on request only
        (ROOT / "docs" / "qgis-panel.png").write_bytes(shot.read_bytes())


def test_pipeline_from_the_panel_loads_styled_layers(dock):
    dock.source.setCurrentIndex(0)
    dock.city.setCurrentText("kotka")
    dock.cell_size.setValue(500)
    dock.run_pipeline()
    assert dock.task is not None
    wait_until(lambda: dock.task is None and "Done." in dock.log.toPlainText(), 600)
    root = QgsProject.instance().layerTreeRoot()
    group = root.findGroup("urbangeo: kotka")
    assert group is not None
    layers = {node.layer().name(): node.layer() for node in group.findLayers()}
    assert {"boundary", "regions", "roads", "sv_points", "clusters", "predictions"} <= set(layers)
    assert layers["regions"].featureCount() == 30
    assert layers["clusters"].renderer().type() == "categorizedSymbol"
    assert layers["predictions"].renderer().type() == "graduatedSymbol"
    regions = layers["regions"].renderer()  # outlines, edge cells hatched
    assert regions.type() == "categorizedSymbol"
    interior = next(c for c in regions.categories() if c.value() == "region")
    assert interior.symbol().color().alpha() == 0  # outlines only
    assert layers["sv_points"].renderer().symbol().color().name() == "#111111"  # on any fill
    assert dock.progress.value() == 100


def test_cancel_stops_the_subprocess(dock, tmp_path):
    # A stand-in for a long urbangeo stage: a script that reports progress and then waits,
    # the only way to have a command that is reliably still running when we cancel.
    script = tmp_path / "slow-urbangeo"
    marker = tmp_path / "pid"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, os, sys, time
            open({str(marker)!r}, "w").write(str(os.getpid()))
            event = {{"event": "progress", "task": "slow", "done": 1, "total": 10}}
            print(json.dumps(event), flush=True)
            time.sleep(120)
            """
        )
    )
    script.chmod(0o755)
    dock.executable.setFilePath(str(script))
    dock.run_stage("grid")
    wait_until(lambda: marker.exists() and dock.progress.value() == 10, 30)
    pid = int(marker.read_text())
    dock.cancel()
    wait_until(lambda: dock.task is None, 30)
    assert "Canceled" in dock.log.toPlainText()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_failing_command_shows_its_message(dock, monkeypatch):
    monkeypatch.setenv("URBANGEO_NOMINATIM_URL", "http://127.0.0.1:9")  # nothing listens there
    dock.source.setCurrentIndex(3)
    dock.place.setText("Nowhere at all")
    dock.run_stage("grid")
    wait_until(lambda: dock.task is None and "Error:" in dock.log.toPlainText(), 120)
    text = dock.log.toPlainText()
    assert "Could not geocode 'Nowhere at all'" in text
    assert "--city NAME (bundled: kotka, helsinki, sao-paulo)" in text


def test_urbangeo_not_found_says_how_to_set_the_path(dock, tmp_path, monkeypatch):
    monkeypatch.delenv("URBANGEO_EXECUTABLE", raising=False)
    dock.executable.setFilePath(str(tmp_path / "no-such-urbangeo"))
    dock.run_stage("grid")
    text = dock.log.toPlainText()
    assert "does not exist or is not executable" in text
    assert "urbangeo qgis-plugin install" in text
    assert dock.task is None


def test_unwritable_run_folder(dock, tmp_path):
    (tmp_path / "file").write_text("")
    dock.out_dir.setFilePath(str(tmp_path / "file" / "runs"))
    dock.run_stage("grid")
    assert "Cannot create the run folder" in dock.log.toPlainText()
    assert dock.task is None


def test_empty_selection(dock, tmp_path):
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "area", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(26.93, 60.52, 26.95, 60.53)))
    layer.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(layer)
    try:
        dock.source.setCurrentIndex(1)
        dock.layer.setLayer(layer)
        dock.selected_only.setChecked(True)
        with pytest.raises(QgsProcessingException, match="No features are selected"):
            dock.boundary_values()
    finally:
        dock.selected_only.setChecked(False)
        QgsProject.instance().removeMapLayer(layer.id())


def test_unload_removes_the_provider(plugin, qgis_iface, monkeypatch):
    # pytest-qgis's stand-in iface lacks removePluginMenu, which real QGIS has
    monkeypatch.setattr(qgis_iface, "removePluginMenu", lambda *a: None, raising=False)
    plugin.unload()
    assert QgsApplication.processingRegistry().providerById("urbangeo") is None
    plugin.initGui()  # leave it loaded for any later test
    assert QgsApplication.processingRegistry().providerById("urbangeo") is not None


def test_settings_key_is_remembered(dock, tmp_path):
    dock.executable.setFilePath(str(tmp_path / "x"))
    assert QgsSettings().value("urbangeo/executable") == str(tmp_path / "x")
