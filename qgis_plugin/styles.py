"""Loading a run's layers into the project, grouped and styled.

urbangeo stores each layer's style in the run's GeoPackage (its ``layer_styles`` table), and
QGIS applies a layer's stored default style by itself whenever it opens the layer, here too.
The styles below are only the fallback for GeoPackages written before styles were stored
(same colours: clusters in tab10, street-view points as dark dots with a white ring).
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsClassificationJenks,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsGraduatedSymbolRenderer,
    QgsLineSymbol,
    QgsMarkerSymbol,
    QgsProject,
    QgsProviderRegistry,
    QgsRendererCategory,
    QgsStyle,
    QgsSymbol,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

#: Draw order, top first; layers not listed go below.
LAYER_ORDER = (
    "sv_points",
    "images",
    "roads",
    "clusters",
    "predictions",
    "regions",
    "boundary",
)
#: matplotlib's tab10, as urbangeo's maps and stored styles colour clusters.
CLUSTER_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def gpkg_layers(gpkg: str | Path) -> list[str]:
    """Names of the spatial layers in a GeoPackage, as QGIS's OGR provider lists them."""
    metadata = QgsProviderRegistry.instance().providerMetadata("ogr")
    layers = []
    for sub in metadata.querySublayers(str(gpkg)):
        if sub.wkbType() not in (0, 100):  # Unknown / NoGeometry: attribute tables
            layers.append(sub.name())
    return layers


def has_stored_style(layer: QgsVectorLayer) -> bool:
    """Whether QGIS found a default style for ``layer`` (in the GeoPackage's layer_styles)
    and applied it, as it does when it opens a layer."""
    _message, loaded = layer.loadDefaultStyle()
    return bool(loaded)


def style_layer(layer: QgsVectorLayer) -> None:
    """Apply urbangeo's fallback style for the layer's name (GeoPackages without styles)."""
    name = layer.name()
    if name == "boundary":
        layer.setRenderer(_fill_renderer("0,0,0,0", "#222222", 0.8))
    elif name == "regions":
        layer.setRenderer(_fill_renderer("0,0,0,0", "#3b6ea8", 0.4))
    elif name == "roads":
        symbol = QgsLineSymbol.createSimple({"line_color": "#7f7f7f", "line_width": "0.4"})
        layer.renderer().setSymbol(symbol)
    elif name in ("sv_points", "images"):
        symbol = QgsMarkerSymbol.createSimple(
            {
                "name": "circle",
                "color": "#111111",
                "size": "2.4",
                "outline_color": "white",
                "outline_width": "0.4",
            }
        )
        layer.renderer().setSymbol(symbol)
    elif name == "clusters" and layer.fields().indexOf("cluster") >= 0:
        layer.setRenderer(_categorised(layer, "cluster"))
    elif name == "predictions":
        field = _first_field(layer, suffix="_predicted") or _first_field(layer, suffix="_residual")
        if field:
            ramp = "RdBu" if field.endswith("_residual") else "Viridis"
            layer.setRenderer(_graduated(layer, field, ramp))
    layer.triggerRepaint()


def load_run_layers(gpkg: str | Path, *, group_name: str | None = None) -> list[QgsVectorLayer]:
    """Add the run's spatial layers to the project in a group (replacing an older group)."""
    project = QgsProject.instance()
    root = project.layerTreeRoot()
    group_name = group_name or f"urbangeo: {Path(gpkg).parent.name or Path(gpkg).stem}"
    old = root.findGroup(group_name)
    if old is not None:
        project.removeMapLayers([layer.layerId() for layer in old.findLayers()])
        root.removeChildNode(old)
    group = root.insertGroup(0, group_name)
    names = gpkg_layers(gpkg)
    ordered = [n for n in LAYER_ORDER if n in names] + [n for n in names if n not in LAYER_ORDER]
    loaded = []
    for name in ordered:
        layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
        if not layer.isValid():
            continue
        if not has_stored_style(layer):
            style_layer(layer)
        project.addMapLayer(layer, False)
        group.addLayer(layer)
        loaded.append(layer)
    return loaded


def _fill_renderer(fill: str, outline: str, width: float):
    from qgis.core import QgsSingleSymbolRenderer

    symbol = QgsFillSymbol.createSimple(
        {"color": fill, "outline_color": outline, "outline_width": str(width)}
    )
    return QgsSingleSymbolRenderer(symbol)


def _first_field(layer: QgsVectorLayer, *, suffix: str) -> str | None:
    for field in layer.fields():
        if field.name().endswith(suffix):
            return field.name()
    return None


def _categorised(layer: QgsVectorLayer, field: str) -> QgsCategorizedSymbolRenderer:
    values = sorted(layer.uniqueValues(layer.fields().indexOf(field)))
    categories = []
    for i, value in enumerate(values):
        symbol = QgsSymbol.defaultSymbol(layer.geometryType())
        try:  # cluster k has colour k, as on urbangeo's maps
            index = int(value)
        except (TypeError, ValueError):
            index = i
        symbol.setColor(QColor(CLUSTER_COLOURS[index % len(CLUSTER_COLOURS)]))
        categories.append(QgsRendererCategory(value, symbol, str(value)))
    return QgsCategorizedSymbolRenderer(field, categories)


def _graduated(layer: QgsVectorLayer, field: str, ramp_name: str) -> QgsGraduatedSymbolRenderer:
    renderer = QgsGraduatedSymbolRenderer(field)
    renderer.setSourceSymbol(QgsSymbol.defaultSymbol(layer.geometryType()))
    ramp = QgsStyle.defaultStyle().colorRamp(ramp_name) or QgsGradientColorRamp(
        QColor("#440154"), QColor("#fde725")
    )
    renderer.setSourceColorRamp(ramp)
    renderer.setClassificationMethod(QgsClassificationJenks())
    renderer.updateClasses(layer, 5)
    return renderer
