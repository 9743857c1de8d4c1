"""The offline map's "similar regions" (issue #17): a click on a region outlines the 10 regions
whose embeddings are most like its own, computed in the browser from the embeddings the page
holds (up to a documented number of regions), and the legend says so."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import require
from tests.downstream.helpers import make_run
from tests.viz.browser import Browser
from tests.viz.test_maps import CHROMIUM
from urbangeo import constants as C
from urbangeo.downstream.stages import cluster_stage
from urbangeo.downstream.tables import gpkg_embeddings
from urbangeo.io.gpkg import read_layer
from urbangeo.viz import similar_regions
from urbangeo.viz.maps import SIMILAR_TOP, build_map, similar_data
from urbangeo.viz.stages import map_stage


@pytest.fixture(scope="module")
def similar_run(tmp_path_factory):
    gpkg, _, X = make_run(tmp_path_factory.mktemp("similarmap"))
    cluster_stage(gpkg, k=3)
    html_path = map_stage(gpkg, tiles="none").files[0]
    ids = read_layer(gpkg, C.LAYER_REGIONS)[C.REGION_ID].astype(str).tolist()
    return gpkg, html_path, ids, X


def _numpy_top(X: np.ndarray, ids: list[str], rid: str, k: int = SIMILAR_TOP) -> list[str]:
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    i = ids.index(rid)
    sims = unit @ unit[i]
    sims[i] = -np.inf  # the region itself is outlined apart
    return [ids[j] for j in np.argsort(-sims, kind="stable")[:k]]


def _clear_region(X: np.ndarray, ids: list[str]) -> str:
    """A region whose 11 best similarities are at least 0.005 apart (float16 in the page
    cannot swap them)."""
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    for i, rid in enumerate(ids):
        sims = np.sort(np.delete(unit @ unit[i], i))[::-1][: SIMILAR_TOP + 1]
        if np.min(-np.diff(sims)) > 0.005:
            return rid
    raise AssertionError("no region with well separated neighbours")


OUTLINED = """
(function () {
  var found = [], query = [];
  window.urbangeoLayers['Similar regions'].eachLayer(function (l) {
    (l.options.className === 'urbangeo-similar' ? found : query).push(l.urbangeoRegion);
  });
  return [found, query];
})()
"""


def _click(html_path, rid: str, *, off: bool) -> tuple[list, list, str]:
    """Click region ``rid`` (with the similar layer turned off first when ``off``): the
    outlined regions, the region outlined as the query, and the page's HTML."""
    with Browser() as browser:
        browser.open(html_path.as_uri())
        browser.js("urbangeo.ready()")
        if off:  # the layer turned off in the layer list: a click outlines nothing
            browser.js("window.urbangeoLayers['Similar regions'].remove(); 0")
        browser.js(f"urbangeo.click({rid!r}); 0")
        found, query = browser.js(OUTLINED)
        return found, query, browser.js("document.body.innerHTML")


def test_map_holds_unit_embeddings_as_float16(similar_run):
    gpkg, html_path, ids, X = similar_run
    page = html_path.read_text()
    assert "Similar regions: click a region" in page
    data = similar_data(gpkg_embeddings(gpkg), read_layer(gpkg, C.LAYER_REGIONS)[C.REGION_ID])
    assert data is not None and data["ids"] == ids and data["dim"] == X.shape[1]
    import base64

    decoded = np.frombuffer(base64.b64decode(data["vectors"]), "<f2").reshape(len(ids), -1)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(decoded, unit, atol=1e-3)
    assert data["vectors"] in page


def test_no_embeddings_in_the_page_above_the_limit(similar_run, monkeypatch):
    gpkg, _, _, _ = similar_run
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    monkeypatch.setattr(similar_regions, "MAX_SIMILAR_REGIONS", 100)  # the run has 120
    page = build_map(regions, embeddings=gpkg_embeddings(gpkg)).get_root().render()
    assert "Similar regions" not in page and "urbangeoSimilar" not in page
    monkeypatch.setattr(similar_regions, "MAX_SIMILAR_REGIONS", 120)
    page = build_map(regions, embeddings=gpkg_embeddings(gpkg)).get_root().render()
    assert "urbangeoSimilar" in page
    assert "urbangeoSimilar" not in build_map(regions).get_root().render()


def test_clicking_a_region_outlines_its_nearest_regions(similar_run):
    require(CHROMIUM is not None, "Chromium", "apt-get install --no-install-recommends chromium")
    _, html_path, ids, X = similar_run
    rid = _clear_region(X, ids)
    found, query, dom = _click(html_path, rid, off=False)
    assert found == _numpy_top(X, ids, rid)  # the numpy top 10, in order
    assert query == [rid]
    assert dom.count('class="urbangeo-similar"') == SIMILAR_TOP  # outlined, not interactive
    assert dom.count('class="urbangeo-similar-query"') == 1
    assert f"Outlined: the 10 regions most similar to region {rid}" in dom
    assert '<div class="title">Similar regions: click a region</div>' in dom
    assert "its 10 most similar regions (cosine similarity of embeddings)" in dom


def test_no_outlines_while_the_layer_is_off(similar_run):
    require(CHROMIUM is not None, "Chromium", "apt-get install --no-install-recommends chromium")
    _, html_path, ids, _ = similar_run
    found, query, dom = _click(html_path, ids[5], off=True)
    assert found == [] and query == [] and 'class="urbangeo-similar' not in dom
    note = re.search(r'<div[^>]*id="urbangeo-similar-note"[^>]*>(.*?)</div>', dom)
    assert note is not None and note.group(1) == ""
