"""The offline map shows edge cells (issue #15): their own layer, grey and dashed, with a legend
entry, and no cluster colour."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.conftest import require
from tests.downstream.helpers import make_run
from tests.viz.test_maps import CHROMIUM, chromium
from urbangeo import constants as C
from urbangeo.downstream.stages import cluster_stage, map_stage
from urbangeo.imagery.edges import EDGE, EXCLUDED
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.viz.maps import EDGE_COLOR, build_map

REASON = "edge cell: 20% of the cell inside the boundary (under 50%)"


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory):
    gpkg, _, _ = make_run(tmp_path_factory.mktemp("edgemap"), cols=6, rows=5)
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    edge = regions[C.ROW] == 0
    regions[EDGE] = edge
    regions[EXCLUDED] = np.where(edge, REASON, None)
    write_layers(gpkg, {C.LAYER_REGIONS: regions}, overwrite=True)
    cluster_stage(gpkg, k=2)
    return gpkg, map_stage(gpkg, tiles="none").files[0]


def _data(page: str, marker: str) -> dict:
    """The GeoJSON the page holds whose features carry ``marker``."""
    for blob in re.findall(r"var urbangeo_data_\w+ = (\{.*?\});\n", page):
        data = json.loads(blob)
        if data["features"] and marker in data["features"][0]["properties"]:
            return data
    raise AssertionError(f"no data with {marker}")


def test_edge_cells_have_their_layer_and_legend(edge_run):
    _, html_path = edge_run
    page = html_path.read_text()
    assert "Edge cells (mostly outside the study area or its image data)" in page
    assert "edge cell, left out of training, clusters and predictions (6 regions)" in page
    edges = _data(page, "_c_edge")
    assert len(edges["features"]) == 6
    assert {f["properties"][EXCLUDED] for f in edges["features"]} == {REASON}
    regions = _data(page, "_c_cluster")
    colours = {
        f["properties"]["region_id"]: f["properties"]["_c_cluster"] for f in regions["features"]
    }
    assert sum(c is None for c in colours.values()) == 6  # no cluster colour


def test_no_edge_layer_without_edge_cells(edge_run):
    gpkg, _ = edge_run
    regions = read_layer(gpkg, C.LAYER_REGIONS).drop(columns=[EDGE, EXCLUDED])
    page = build_map(regions).get_root().render()
    assert "Edge cells" not in page and EDGE_COLOR not in page


def test_edge_legend_in_a_real_browser(edge_run, tmp_path):
    require(CHROMIUM is not None, "Chromium", "apt-get install --no-install-recommends chromium")
    _, html_path = edge_run
    dom = chromium("--dump-dom", html_path.as_uri(), tmp_path=tmp_path).stdout
    assert '<div class="title">Edge cells (mostly outside the study area or its image data)' in dom
    # 30 cluster squares and 6 edge cells are interactive.
    assert dom.count('class="leaflet-interactive"') == 36
    assert 'stroke-dasharray="4 3"' in dom
