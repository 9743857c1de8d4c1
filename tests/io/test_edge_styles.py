"""Edge cells (issue #15) are hatched grey in the GeoPackage's styles: in ``regions`` and, when
excluded, in ``clusters``."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from tests.downstream.helpers import square_regions
from urbangeo import constants as C
from urbangeo.imagery.edges import EDGE, EXCLUDED
from urbangeo.io.gpkg import write_layers
from urbangeo.io.styles import EDGE_FILL, layer_styles, read_styles, styles_for

SE = "{http://www.opengis.net/se}"


def _regions(excluded: bool = True):
    regions = square_regions(4, 3)
    edge = regions[C.ROW] == 0
    regions[EDGE] = edge
    regions[EXCLUDED] = np.where(edge & excluded, "edge cell: 10% inside", None)
    return regions


def _fill_styles(qml: str) -> list[str]:
    root = ET.fromstring(qml.split("\n", 1)[1])
    return [
        opt.get("value")
        for opt in root.iter("Option")
        if opt.get("name") == "style" and opt.get("type") == "QString"
    ]


def test_regions_style_hatches_the_edge_cells():
    (style,) = layer_styles(C.LAYER_REGIONS, _regions())
    renderer = style.renderer
    assert renderer.kind == "categorizedSymbol" and '"edge"' in renderer.field
    labels = {c.value: c.label for c in renderer.categories}
    assert labels == {"region": "region (8)", "edge": "edge cell, left out of the analysis (4)"}
    assert "b_diagonal" in _fill_styles(style.qml)  # QGIS's hatched brush
    sld = ET.fromstring(style.sld(C.LAYER_REGIONS).split("\n", 1)[1])
    assert sld.find(f".//{SE}GraphicFill//{SE}WellKnownName").text == "shape://slash"
    assert [e.text for e in sld.iter("{http://www.opengis.net/ogc}PropertyName")] == [EDGE] * 2
    kept = layer_styles(C.LAYER_REGIONS, _regions(excluded=False))[0].renderer
    assert kept.categories[1].label == "edge cell (4)"


def test_regions_without_edge_cells_keep_their_outlines():
    regions = square_regions(2, 2)
    assert layer_styles(C.LAYER_REGIONS, regions)[0].renderer.kind == "singleSymbol"
    regions[EDGE] = False
    assert layer_styles(C.LAYER_REGIONS, regions)[0].renderer.kind == "singleSymbol"


def test_clusters_style_hatches_the_excluded_regions(tmp_path):
    regions = _regions()
    clusters = regions[[C.REGION_ID, "geometry", EDGE, EXCLUDED]].copy()
    clusters["cluster"] = np.where(regions[EDGE], np.nan, np.arange(12) % 2)
    clusters["cluster"] = clusters["cluster"].astype("Int64")
    (style,) = layer_styles(C.LAYER_CLUSTERS, clusters)
    last = style.renderer.categories[-1]
    assert last.value == "" and last.symbol == EDGE_FILL
    assert last.label == "edge cell, excluded (4 regions)"
    gpkg = write_layers(
        tmp_path / "run.gpkg",
        {C.LAYER_REGIONS: regions, C.LAYER_CLUSTERS: clusters},
        styles=True,
    )
    stored = read_styles(gpkg).set_index("f_table_name")
    assert "b_diagonal" in _fill_styles(stored.loc[C.LAYER_CLUSTERS, "styleQML"])
    assert "b_diagonal" in _fill_styles(stored.loc[C.LAYER_REGIONS, "styleQML"])
    assert set(styles_for({C.LAYER_CLUSTERS: clusters})) == {C.LAYER_CLUSTERS}
