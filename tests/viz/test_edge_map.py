"""The offline map shows edge cells (issue #15): their own layer, grey and dashed, with a legend
entry, and no cluster colour."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require
from tests.downstream.helpers import make_run
from tests.viz.browser import Browser
from tests.viz.test_maps import CHROMIUM
from urbangeo import constants as C
from urbangeo.downstream.stages import cluster_stage
from urbangeo.imagery.edges import EDGE, EXCLUDED
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.viz.maps import EDGE_COLOR, build_map
from urbangeo.viz.stages import map_stage

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


def test_edge_cells_have_their_layer_and_legend(edge_run):
    _, html_path = edge_run
    page = html_path.read_text()
    assert "Edge cells (mostly outside the study area or its image data)" in page
    assert "edge cell, left out of training, clusters and predictions (6 regions)" in page
    assert '"dash": "4 3"' in page  # dashed outline


def test_edge_cells_in_a_real_browser(edge_run):
    """Six grey edge cells drawn (their own layer, their reason in the tooltip) and no cluster
    colour under them: 24 cluster squares filled."""
    require(CHROMIUM is not None, "Chromium", "apt-get install --no-install-recommends chromium")
    _, html_path = edge_run
    with Browser() as browser:
        browser.open(html_path.as_uri())
        browser.js("urbangeo.ready()")
        assert browser.js("urbangeo.drawn()") == 24 + 6  # filled: cluster squares, edge cells
        assert browser.js("urbangeo.colorOf('Edge cells', '0_0')") == EDGE_COLOR
        assert browser.js("urbangeo.colorOf('Edge cells', '0_1')") is None
        assert browser.js("urbangeo.colorOf('Clusters', '0_0')") is None  # no cluster colour
        assert browser.js("urbangeo.colorOf('Clusters', '0_1')") is not None
        browser.js("urbangeo.hover('2_0'); 0")
        tip = browser.js(
            "new Promise(r => setTimeout(() => "
            "r((document.querySelector('.leaflet-tooltip') || {}).textContent || ''), 100))"
        )
        assert REASON in tip and "2_0" in tip
        dom = browser.js("document.body.innerHTML")
        assert (
            '<div class="title">Edge cells (mostly outside the study area or its image data)' in dom
        )


def test_no_edge_layer_without_edge_cells(edge_run):
    gpkg, _ = edge_run
    regions = read_layer(gpkg, C.LAYER_REGIONS).drop(columns=[EDGE, EXCLUDED])
    page = build_map(regions).get_root().render()
    assert "Edge cells" not in page and EDGE_COLOR not in page
