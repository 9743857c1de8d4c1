"""The run's GeoPackage opens in a real QGIS 3.22 as it is (Debian's python3-qgis).

QGIS's Python bindings belong to the system Python, so the check runs there, in a subprocess.
"""

import pytest

from tests.io.helpers import require_qgis, system_python_json
from urbangeo.geo.stages import grid_stage, sample_stage

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


@pytest.fixture(scope="module")
def run_gpkg(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.gpkg"
    grid_stage(path, city="kotka")
    sample_stage(path)
    return path


def test_every_layer_opens_in_qgis(run_gpkg):
    require_qgis()
    names = ["boundary", "regions", "roads", "sv_points"]
    result = system_python_json(QGIS_SCRIPT, run_gpkg, *names)
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
