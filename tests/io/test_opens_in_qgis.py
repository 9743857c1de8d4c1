"""The run's GeoPackage opens in a real QGIS 3.22 as it is (Debian's python3-qgis).

QGIS's Python bindings belong to the system Python, so the check runs there, in a subprocess.
"""

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require
from urbangeo.geo.stages import grid_stage, sample_stage

SYSTEM_PYTHON = "/usr/bin/python3"

QGIS_SCRIPT = r"""
import json, os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from qgis.core import Qgis, QgsApplication, QgsVectorLayer, QgsFeatureSource
app = QgsApplication([], False)
app.initQgis()
out = {"version": Qgis.QGIS_VERSION, "layers": {}}
layers = []
for name in sys.argv[2:]:
    layer = QgsVectorLayer(f"{sys.argv[1]}|layername={name}", name, "ogr")
    layers.append(layer)
    out["layers"][name] = {
        "valid": layer.isValid(),
        "count": layer.featureCount(),
        "crs": layer.crs().authid(),
        "geometry": layer.geometryType(),
        "fields": [f.name() for f in layer.fields()],
        "index": layer.hasSpatialIndex() == QgsFeatureSource.SpatialIndexPresent,
        "extent_ok": not layer.extent().isEmpty(),
    }
del layer, layers
app.exitQgis()
print(json.dumps(out))
"""


def _has_qgis() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def run_gpkg(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.gpkg"
    grid_stage(path, city="kotka")
    sample_stage(path)
    return path


def test_every_layer_opens_in_qgis(run_gpkg):
    require(_has_qgis(), "QGIS (python3-qgis)", "apt-get install python3-qgis qgis-providers")
    names = ["boundary", "regions", "roads", "sv_points"]
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", QGIS_SCRIPT, str(run_gpkg), *names],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["version"].startswith("3.")
    import geopandas as gpd

    for name in names:
        info = result["layers"][name]
        frame = gpd.read_file(run_gpkg, layer=name)
        assert info["valid"], name
        assert info["count"] == len(frame) > 0, name
        assert info["crs"] == "EPSG:32635", name
        assert info["index"] and info["extent_ok"], name
        assert set(frame.columns) - {"geometry"} <= set(info["fields"]), name
    # QgsWkbTypes.GeometryType: 0 point, 1 line, 2 polygon
    assert [result["layers"][n]["geometry"] for n in names] == [2, 2, 1, 0]
