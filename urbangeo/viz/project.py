"""A QGIS project (``run.qgz``) beside the run's GeoPackage, written without QGIS.

A ``.qgz`` is a zip holding one ``.qgs`` XML document. This one opens in QGIS 3.22 (and later:
QGIS upgrades older projects as it reads them) with the run's layers grouped, top to bottom:

* **Sampling**: street-view points (on top of everything), image centres (off);
* **Area**: the study area's outline, the region outlines, the roads;
* **Clusters**: regions categorised by cluster;
* **Predictions** (off; one indicator shown at a time): each indicator's predicted and observed
  values, graduated on the same classes;
* **Residuals** (off; one at a time): each indicator's residual, diverging around 0.

Layers point at ``./run.gpkg`` relative to the project, so the run folder can be moved or
shared as a whole. Their styles are the ones :mod:`urbangeo.io.styles` stores in the GeoPackage
(one description of each style, read from the layers' data).
"""

from __future__ import annotations

import hashlib
import io
import os
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd

from urbangeo import constants as C
from urbangeo.io.files import write_bytes_atomic
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.io.styles import LayerStyle, layer_styles, targets
from urbangeo.viz.qml import DOCTYPE, QGIS_VERSION, layer_elements

_GEOMETRY = {"fill": "Polygon", "line": "Line", "marker": "Point"}
_WKB = {"fill": "Polygon", "line": "LineString", "marker": "Point"}


@dataclass
class MapLayer:
    """One layer of the project: a GeoPackage layer drawn with one style."""

    title: str
    table: str
    style: LayerStyle
    checked: bool = True

    @property
    def layer_id(self) -> str:
        digest = hashlib.sha1(f"{self.table}/{self.title}".encode()).hexdigest()[:12]
        return f"{self.table}_{digest}"


@dataclass
class Group:
    """A group of the layer tree; ``exclusive`` shows one of its layers at a time."""

    name: str
    layers: list[MapLayer] = field(default_factory=list)
    checked: bool = True
    exclusive: bool = False


def _checked(value: bool) -> str:
    return "Qt::Checked" if value else "Qt::Unchecked"


def _text(parent: ET.Element, tag: str, text: object = "", **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = str(text)
    return element


def _crs(parent: ET.Element, crs) -> None:
    """A ``<spatialrefsys>`` QGIS reads (from the WKT; the authority id names it)."""
    from pyproj import CRS

    crs = CRS.from_user_input(crs)
    auth = crs.to_authority() or ("", "0")
    srs = ET.SubElement(parent, "spatialrefsys")
    _text(srs, "wkt", crs.to_wkt())
    _text(srs, "proj4", "")  # QGIS reads the WKT
    _text(srs, "srsid", 0)
    _text(srs, "srid", auth[1])
    _text(srs, "authid", f"{auth[0]}:{auth[1]}" if auth[0] else "")
    _text(srs, "description", crs.name)
    _text(srs, "projectionacronym", "")
    _text(srs, "ellipsoidacronym", "")
    _text(srs, "geographicflag", "true" if crs.is_geographic else "false")


def _extent(parent: ET.Element, tag: str, bounds) -> ET.Element:
    element = ET.SubElement(parent, tag)
    for name, value in zip(("xmin", "ymin", "xmax", "ymax"), bounds, strict=True):
        _text(element, name, repr(float(value)))
    return element


def groups_for(frames: dict[str, gpd.GeoDataFrame]) -> list[Group]:
    """The project's layer tree (top first) for the run's spatial layers ``frames``."""

    def one(table: str, title: str, *, checked: bool = True) -> list[MapLayer]:
        if table not in frames:
            return []
        styles = layer_styles(table, frames[table])
        return [MapLayer(title, table, styles[0], checked)] if styles else []

    groups = [
        Group(
            "Sampling",
            one(C.LAYER_SV_POINTS, "Street-view points")
            + one(C.LAYER_IMAGES, "Image centres", checked=False),
        ),
        Group(
            "Area",
            one(C.LAYER_BOUNDARY, "Study area")
            + one(C.LAYER_REGIONS, "Regions")
            + one(C.LAYER_ROADS, "Roads"),
        ),
        Group("Clusters", one(C.LAYER_CLUSTERS, "Clusters")),
    ]
    if C.LAYER_PREDICTIONS in frames:
        styles = {s.name: s for s in layer_styles(C.LAYER_PREDICTIONS, frames[C.LAYER_PREDICTIONS])}
        values, residuals = Group("Predictions", exclusive=True), Group("Residuals", exclusive=True)
        for t in targets(list(frames[C.LAYER_PREDICTIONS].columns)):
            for what, group in (
                ("predicted", values),
                ("observed", values),
                ("residual", residuals),
            ):
                style = styles.get(f"{t} {what}")
                if style is not None:
                    layer = MapLayer(f"{t} {what}", C.LAYER_PREDICTIONS, style)
                    layer.checked = not group.layers
                    group.layers.append(layer)
        has_clusters = bool(groups[-1].layers)
        values.checked = not has_clusters
        residuals.checked = False
        groups += [values, residuals]
    return [g for g in groups if g.layers]


def project_xml(
    frames: dict[str, gpd.GeoDataFrame], *, gpkg_name: str = C.RUN_GPKG, title: str = ""
) -> str:
    """The ``.qgs`` document of a project showing ``frames`` (layers of ``./gpkg_name``)."""
    regions = frames.get(C.LAYER_REGIONS)
    anchor = regions if regions is not None else next(iter(frames.values()))
    crs = anchor.crs
    root = ET.Element(
        "qgis", {"projectname": title, "version": QGIS_VERSION, "saveUser": "urbangeo"}
    )
    ET.SubElement(root, "homePath", {"path": ""})
    _text(root, "title", title)
    _crs(ET.SubElement(root, "projectCrs"), crs)
    groups = groups_for(frames)
    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    for group in groups:
        node = ET.SubElement(
            tree,
            "layer-tree-group",
            {
                "name": group.name,
                "checked": _checked(group.checked),
                "expanded": "1",
                "mutually-exclusive": "1" if group.exclusive else "0",
                "mutually-exclusive-child": "0" if group.exclusive else "-1",
            },
        )
        ET.SubElement(node, "customproperties")
        for layer in group.layers:
            item = ET.SubElement(
                node,
                "layer-tree-layer",
                {
                    "id": layer.layer_id,
                    "name": layer.title,
                    "source": f"./{gpkg_name}|layername={layer.table}",
                    "providerKey": "ogr",
                    "checked": _checked(layer.checked),
                    "expanded": "1",
                },
            )
            ET.SubElement(item, "customproperties")
    layers = [layer for group in groups for layer in group.layers]
    project_layers = ET.SubElement(root, "projectlayers")
    for layer in layers:
        project_layers.append(_maplayer(layer, frames[layer.table], gpkg_name))
    order = ET.SubElement(root, "layerorder")
    for layer in layers:
        ET.SubElement(order, "layer", {"id": layer.layer_id})
    bounds = _padded(anchor.total_bounds)
    properties = ET.SubElement(root, "properties")
    paths = ET.SubElement(properties, "Paths")
    _text(paths, "Absolute", "false", type="bool")
    srs = ET.SubElement(properties, "SpatialRefSys")
    _text(srs, "ProjectionsEnabled", 1, type="int")  # QGIS reads projectCrs only then
    canvas = ET.SubElement(root, "mapcanvas", {"name": "theMapCanvas", "annotationsVisible": "1"})
    _text(canvas, "units", "meters" if not crs.is_geographic else "degrees")
    _extent(canvas, "extent", bounds)
    _text(canvas, "rotation", 0)
    _crs(ET.SubElement(canvas, "destinationsrs"), crs)
    view = ET.SubElement(root, "ProjectViewSettings", {"UseProjectScales": "0"})
    default = ET.SubElement(
        view,
        "DefaultViewExtent",
        dict(zip(("xmin", "ymin", "xmax", "ymax"), map(repr, map(float, bounds)), strict=True)),
    )
    _crs(default, crs)
    ET.indent(root)
    return f"{DOCTYPE}\n{ET.tostring(root, encoding='unicode')}\n"


def _padded(bounds) -> list[float]:
    minx, miny, maxx, maxy = (float(b) for b in bounds)
    pad = 0.05 * max(maxx - minx, maxy - miny, 1e-9)
    return [minx - pad, miny - pad, maxx + pad, maxy + pad]


def _maplayer(layer: MapLayer, frame: gpd.GeoDataFrame, gpkg_name: str) -> ET.Element:
    kind = layer.style.renderer.geometry_kind
    element = ET.Element(
        "maplayer",
        {
            "type": "vector",
            "geometry": _GEOMETRY[kind],
            "wkbType": _WKB[kind],
            "styleCategories": "AllStyleCategories",
            "hasScaleBasedVisibilityFlag": "0",
            "labelsEnabled": "0",
            "readOnly": "0",
        },
    )
    if len(frame) and frame.geometry.notna().any():
        _extent(element, "extent", frame.total_bounds)
    _text(element, "id", layer.layer_id)
    _text(element, "datasource", f"./{gpkg_name}|layername={layer.table}")
    _text(element, "layername", layer.title)
    _crs(ET.SubElement(element, "srs"), frame.crs)
    _text(element, "provider", "ogr", encoding="UTF-8")
    manager = ET.SubElement(element, "map-layer-style-manager", {"current": "default"})
    ET.SubElement(manager, "map-layer-style", {"name": "default"})
    element.extend(layer_elements(layer.style.renderer))
    return element


def read_frames(gpkg: str | os.PathLike) -> dict[str, gpd.GeoDataFrame]:
    """The run's layers the project shows (predictions: only the columns styled)."""
    names = set(list_layers(gpkg))
    shown = (
        C.LAYER_SV_POINTS,
        C.LAYER_IMAGES,
        C.LAYER_BOUNDARY,
        C.LAYER_REGIONS,
        C.LAYER_ROADS,
        C.LAYER_CLUSTERS,
        C.LAYER_PREDICTIONS,
    )
    frames = {}
    for name in shown:
        if name in names:
            frame = read_layer(gpkg, name)
            if isinstance(frame, gpd.GeoDataFrame) and frame.crs is not None:
                frames[name] = frame
    return frames


def write_project(run_dir: str | os.PathLike, *, gpkg_name: str = C.RUN_GPKG) -> Path:
    """Write the QGIS project of ``run_dir/gpkg_name`` beside it (``run.qgz`` for ``run.gpkg``;
    module docstring), atomically; returns its path."""
    folder = Path(run_dir)
    frames = read_frames(folder / gpkg_name)
    document = project_xml(frames, gpkg_name=gpkg_name, title=f"urbangeo: {folder.name}")
    stem = Path(gpkg_name).stem
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{stem}.qgs", document)
    return write_bytes_atomic(folder / f"{stem}.qgz", buffer.getvalue())
