"""QGIS styles written without QGIS: renderers as QML (QGIS's style XML) and as SLD 1.1.

A style is described once, as a :class:`Renderer` of :class:`Symbol` s, and written both ways:
:func:`qml` gives the document QGIS stores in a GeoPackage's ``layer_styles.styleQML`` (and
saves as ``.qml``), :func:`sld` the OGC Symbology Encoding QGIS stores beside it, and
:meth:`Renderer.element` the ``<renderer-v2>`` element that a project file's ``<maplayer>``
holds. The XML follows what QGIS 3.22 itself writes (symbol properties as ``<Option>`` maps,
with the older ``<prop>`` pairs that earlier versions read), reduced to what it needs to read.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

#: The QGIS version the documents declare (QGIS upgrades older documents when it reads them).
QGIS_VERSION = "3.22.0-Białowieża"
DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
#: ``QgsWkbTypes.GeometryType`` of each symbol kind, as ``<layerGeometryType>`` writes it.
GEOMETRY_TYPE = {"marker": 0, "line": 1, "fill": 2}
_SE = "http://www.opengis.net/se"
_OGC = "http://www.opengis.net/ogc"
_SLD = "http://www.opengis.net/sld"
_NO_SCALE = "3x:0,0,0,0,0,0"


def rgba(color: str, opacity: float = 1.0) -> str:
    """``"#rrggbb"`` as QGIS writes colours: ``"r,g,b,a"`` (0–255)."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"{r},{g},{b},{round(255 * opacity)}"


@dataclass(frozen=True)
class Symbol:
    """A one-layer QGIS symbol: a fill, a line or a marker (sizes in millimetres).

    ``color`` is the fill (line colour for lines); ``None`` draws no fill. ``outline`` and
    ``width`` are the fill's or marker's outline (the line's width for lines). ``pattern``:
    the fill's brush, ``solid`` or a hatching (QGIS's names, see :data:`HATCHES`).
    """

    kind: str
    color: str | None
    outline: str = "#232323"
    width: float = 0.26
    size: float = 2.0
    opacity: float = 1.0
    shape: str = "circle"
    pattern: str = "solid"

    def props(self) -> dict[str, str]:
        """The symbol layer's properties as QGIS names them."""
        fill = rgba(self.color, self.opacity) if self.color else "0,0,0,0"
        if self.kind == "line":
            return {
                "capstyle": "round",
                "joinstyle": "round",
                "line_color": rgba(self.color or self.outline),
                "line_style": "solid",
                "line_width": f"{self.width:g}",
                "line_width_unit": "MM",
                "offset": "0",
                "offset_unit": "MM",
            }
        if self.kind == "marker":
            return {
                "angle": "0",
                "color": fill,
                "joinstyle": "bevel",
                "name": self.shape,
                "offset": "0,0",
                "offset_unit": "MM",
                "outline_color": rgba(self.outline),
                "outline_style": "solid",
                "outline_width": f"{self.width:g}",
                "outline_width_unit": "MM",
                "scale_method": "diameter",
                "size": f"{self.size:g}",
                "size_unit": "MM",
            }
        return {
            "border_width_map_unit_scale": _NO_SCALE,
            "color": fill,
            "joinstyle": "bevel",
            "offset": "0,0",
            "offset_unit": "MM",
            "outline_color": rgba(self.outline),
            "outline_style": "solid" if self.width > 0 else "no",
            "outline_width": f"{self.width:g}",
            "outline_width_unit": "MM",
            "style": self.pattern if self.color else "no",
        }

    def element(self, name: str) -> ET.Element:
        """The ``<symbol>`` element (named ``name``, as renderers refer to their symbols)."""
        symbol = ET.Element(
            "symbol",
            {
                "type": self.kind,
                "name": name,
                "alpha": "1",
                "clip_to_extent": "1",
                "force_rhr": "0",
            },
        )
        cls = {"fill": "SimpleFill", "line": "SimpleLine", "marker": "SimpleMarker"}[self.kind]
        layer = ET.SubElement(
            symbol, "layer", {"class": cls, "enabled": "1", "locked": "0", "pass": "0"}
        )
        _add_props(layer, self.props())
        return symbol

    def symbolizer(self) -> ET.Element:
        """The SLD symbolizer drawing this symbol."""
        if self.kind == "line":
            element = ET.Element(f"{{{_SE}}}LineSymbolizer")
            _stroke(element, self.color or self.outline, self.width)
            return element
        if self.kind == "marker":
            element = ET.Element(f"{{{_SE}}}PointSymbolizer")
            graphic = ET.SubElement(element, f"{{{_SE}}}Graphic")
            mark = ET.SubElement(graphic, f"{{{_SE}}}Mark")
            ET.SubElement(mark, f"{{{_SE}}}WellKnownName").text = self.shape
            if self.color:
                _fill(mark, self.color, self.opacity)
            _stroke(mark, self.outline, self.width)
            ET.SubElement(graphic, f"{{{_SE}}}Size").text = f"{_pixels(self.size):g}"
            return element
        element = ET.Element(f"{{{_SE}}}PolygonSymbolizer")
        if self.color and self.pattern in HATCHES:
            _hatch(element, self.color, HATCHES[self.pattern])
        elif self.color:
            _fill(element, self.color, self.opacity)
        if self.width > 0:
            _stroke(element, self.outline, self.width)
        return element


#: QGIS's hatched brushes and the SLD marks that draw them (as QGIS exports them).
HATCHES = {
    "b_diagonal": "shape://slash",
    "f_diagonal": "shape://backslash",
    "diagonal_x": "shape://times",
    "cross": "shape://plus",
    "horizontal": "shape://horline",
    "vertical": "shape://vertline",
}


def _hatch(parent: ET.Element, color: str, mark_name: str) -> None:
    """A fill of repeated line marks (SLD's way of drawing a hatched brush)."""
    fill = ET.SubElement(parent, f"{{{_SE}}}Fill")
    graphic = ET.SubElement(ET.SubElement(fill, f"{{{_SE}}}GraphicFill"), f"{{{_SE}}}Graphic")
    mark = ET.SubElement(graphic, f"{{{_SE}}}Mark")
    ET.SubElement(mark, f"{{{_SE}}}WellKnownName").text = mark_name
    _stroke(mark, color, 0.26)
    ET.SubElement(graphic, f"{{{_SE}}}Size").text = "8"


def _pixels(mm: float) -> float:
    """Millimetres as SLD's pixels (0.28 mm each), as QGIS converts them."""
    return round(mm / 0.28, 1)


def _fill(parent: ET.Element, color: str, opacity: float) -> None:
    fill = ET.SubElement(parent, f"{{{_SE}}}Fill")
    ET.SubElement(fill, f"{{{_SE}}}SvgParameter", {"name": "fill"}).text = color
    if opacity < 1:
        param = ET.SubElement(fill, f"{{{_SE}}}SvgParameter", {"name": "fill-opacity"})
        param.text = f"{opacity:g}"


def _stroke(parent: ET.Element, color: str, width: float) -> None:
    stroke = ET.SubElement(parent, f"{{{_SE}}}Stroke")
    ET.SubElement(stroke, f"{{{_SE}}}SvgParameter", {"name": "stroke"}).text = color
    param = ET.SubElement(stroke, f"{{{_SE}}}SvgParameter", {"name": "stroke-width"})
    param.text = f"{_pixels(width):g}"


@dataclass(frozen=True)
class Category:
    """One class of a categorised renderer: features whose field equals ``value``
    (``sld_value``: the value the SLD filter compares, when the renderer's ``sld_field``
    differs from its field)."""

    value: str
    label: str
    symbol: Symbol
    sld_value: str | None = None


@dataclass(frozen=True)
class Range:
    """One class of a graduated renderer: ``lower`` < value ≤ ``upper`` (the first class
    includes its lower bound)."""

    lower: float
    upper: float
    label: str
    symbol: Symbol


@dataclass(frozen=True)
class Renderer:
    """A QGIS feature renderer: one symbol, categories of a field, or ranges of a field.

    ``kind`` is QGIS's renderer type (``singleSymbol``, ``categorizedSymbol``,
    ``graduatedSymbol``). ``ramp`` (graduated) is the colour ramp QGIS offers when the user
    reclassifies; ``method`` the classification it records (``Quantile``, ``EqualInterval``)
    and ``symmetric`` whether classes are symmetric around 0. ``field`` may be a QGIS
    expression; the SLD then compares ``sld_field`` with each category's ``sld_value``.
    """

    kind: str
    symbol: Symbol
    field: str = ""
    categories: tuple[Category, ...] = ()
    ranges: tuple[Range, ...] = ()
    ramp: tuple[str, ...] = ()
    method: str = "Quantile"
    symmetric: bool = False
    sld_field: str = ""

    @property
    def geometry_kind(self) -> str:
        """The symbol kind: ``fill``, ``line`` or ``marker``."""
        return self.symbol.kind

    def element(self) -> ET.Element:
        """The ``<renderer-v2>`` element (in a QML document or a project's ``<maplayer>``)."""
        attrs = {"type": self.kind, "symbollevels": "0", "forceraster": "0", "enableorderby": "0"}
        if self.field:
            attrs["attr"] = self.field
        if self.kind == "graduatedSymbol":
            attrs["graduatedMethod"] = "GraduatedColor"
        renderer = ET.Element("renderer-v2", attrs)
        symbols = ET.Element("symbols")
        group, classes = self._classes()
        if group:
            parent = ET.SubElement(renderer, group)
            for i, (tag, attrib, symbol) in enumerate(classes):
                ET.SubElement(parent, tag, {**attrib, "symbol": str(i), "render": "true"})
                symbols.append(symbol.element(str(i)))
        else:
            symbols.append(self.symbol.element("0"))
        renderer.append(symbols)
        if self.kind != "singleSymbol":
            source = ET.SubElement(renderer, "source-symbol")
            source.append(self.symbol.element("0"))
        if self.kind == "graduatedSymbol":
            renderer.append(_ramp_element(self.ramp))
            method = ET.SubElement(renderer, "classificationMethod", {"id": self.method})
            ET.SubElement(
                method,
                "symmetricMode",
                {
                    "enabled": "1" if self.symmetric else "0",
                    "symmetrypoint": "0",
                    "astride": "1" if self.symmetric else "0",
                },
            )
            ET.SubElement(
                method,
                "labelFormat",
                {"format": "%1 – %2", "labelprecision": "3", "trimtrailingzeroes": "1"},
            )
        ET.SubElement(renderer, "rotation")
        ET.SubElement(renderer, "sizescale")
        return renderer

    def _classes(self) -> tuple[str, list[tuple[str, dict[str, str], Symbol]]]:
        """The element holding the classes ("" for a single symbol), and each class's tag,
        attributes and symbol."""
        if self.kind == "categorizedSymbol":
            return "categories", [
                ("category", {"value": c.value, "label": c.label}, c.symbol)
                for c in self.categories
            ]
        if self.kind == "graduatedSymbol":
            bounds = [(repr(float(r.lower)), repr(float(r.upper))) for r in self.ranges]
            return "ranges", [
                ("range", {"lower": low, "upper": high, "label": r.label}, r.symbol)
                for (low, high), r in zip(bounds, self.ranges, strict=True)
            ]
        return "", []

    def rules(self) -> list[tuple[str, ET.Element | None, Symbol]]:
        """SLD rules: (name, ogc:Filter or None, symbol)."""
        if self.kind == "categorizedSymbol":
            out = []
            for cat in self.categories:
                filt = None
                value = cat.value if cat.sld_value is None else cat.sld_value
                if value != "":
                    filt = ET.Element(f"{{{_OGC}}}Filter")
                    equal = ET.SubElement(filt, f"{{{_OGC}}}PropertyIsEqualTo")
                    name = self.sld_field or self.field
                    ET.SubElement(equal, f"{{{_OGC}}}PropertyName").text = name
                    ET.SubElement(equal, f"{{{_OGC}}}Literal").text = value
                out.append((cat.label, filt, cat.symbol))
            return out
        if self.kind == "graduatedSymbol":
            out = []
            for i, rng in enumerate(self.ranges):
                filt = ET.Element(f"{{{_OGC}}}Filter")
                both = ET.SubElement(filt, f"{{{_OGC}}}And")
                low = "PropertyIsGreaterThanOrEqualTo" if i == 0 else "PropertyIsGreaterThan"
                for op, bound in ((low, rng.lower), ("PropertyIsLessThanOrEqualTo", rng.upper)):
                    cmp = ET.SubElement(both, f"{{{_OGC}}}{op}")
                    ET.SubElement(cmp, f"{{{_OGC}}}PropertyName").text = self.field
                    ET.SubElement(cmp, f"{{{_OGC}}}Literal").text = repr(float(bound))
                out.append((rng.label, filt, rng.symbol))
            return out
        return [("Single symbol", None, self.symbol)]

    def legend(self) -> list[tuple[str, str]]:
        """(colour, label) of each class, for legends outside QGIS."""
        if self.kind == "categorizedSymbol":
            return [(c.symbol.color or c.symbol.outline, c.label) for c in self.categories]
        if self.kind == "graduatedSymbol":
            return [(r.symbol.color or r.symbol.outline, r.label) for r in self.ranges]
        return [(self.symbol.color or self.symbol.outline, "")]


def _ramp_element(colors: tuple[str, ...]) -> ET.Element:
    """A QGIS gradient colour ramp through ``colors``, evenly spaced."""
    colors = colors or ("#440154", "#fde725")
    n = len(colors)
    stops = ":".join(f"{i / (n - 1):g};{rgba(c)}" for i, c in enumerate(colors[1:-1], start=1))
    props = {
        "color1": rgba(colors[0]),
        "color2": rgba(colors[-1]),
        "discrete": "0",
        "rampType": "gradient",
        "stops": stops,
    }
    ramp = ET.Element("colorramp", {"type": "gradient", "name": "[source]"})
    _add_props(ramp, props)
    return ramp


def _add_props(element: ET.Element, props: dict[str, str]) -> None:
    """``props`` under ``element`` as QGIS writes them: an ``<Option>`` map, and again as the
    older ``<prop>`` elements."""
    options = ET.SubElement(element, "Option", {"type": "Map"})
    for key, value in props.items():
        ET.SubElement(options, "Option", {"type": "QString", "name": key, "value": value})
    for key, value in props.items():
        ET.SubElement(element, "prop", {"k": key, "v": value})


def layer_elements(renderer: Renderer, *, opacity: float = 1.0) -> list[ET.Element]:
    """The elements a styled vector layer holds (in a QML ``<qgis>`` or a ``<maplayer>``)."""
    legend = ET.Element("legend", {"type": "default-vector", "showLabelLegend": "0"})
    blend = ET.Element("blendMode")
    blend.text = "0"
    feature_blend = ET.Element("featureBlendMode")
    feature_blend.text = "0"
    layer_opacity = ET.Element("layerOpacity")
    layer_opacity.text = f"{opacity:g}"
    geometry = ET.Element("layerGeometryType")
    geometry.text = str(GEOMETRY_TYPE[renderer.geometry_kind])
    return [renderer.element(), blend, feature_blend, layer_opacity, legend, geometry]


def qml(renderer: Renderer, *, opacity: float = 1.0) -> str:
    """A QML document (symbology) for a layer drawn by ``renderer``."""
    attrs = {"version": QGIS_VERSION, "styleCategories": "Symbology"}
    root = ET.Element("qgis", attrs)
    root.extend(layer_elements(renderer, opacity=opacity))
    ET.indent(root)
    return f"{DOCTYPE}\n{ET.tostring(root, encoding='unicode')}\n"


def sld(layer: str, renderer: Renderer, *, title: str = "") -> str:
    """A minimal SLD 1.1 document (as QGIS exports it) for ``layer`` drawn by ``renderer``."""
    ET.register_namespace("se", _SE)
    ET.register_namespace("ogc", _OGC)
    ET.register_namespace("", _SLD)
    root = ET.Element(f"{{{_SLD}}}StyledLayerDescriptor", {"version": "1.1.0"})
    named = ET.SubElement(root, f"{{{_SLD}}}NamedLayer")
    ET.SubElement(named, f"{{{_SE}}}Name").text = layer
    user = ET.SubElement(named, f"{{{_SLD}}}UserStyle")
    ET.SubElement(user, f"{{{_SE}}}Name").text = title or layer
    fts = ET.SubElement(user, f"{{{_SE}}}FeatureTypeStyle")
    for name, filt, symbol in renderer.rules():
        rule = ET.SubElement(fts, f"{{{_SE}}}Rule")
        ET.SubElement(rule, f"{{{_SE}}}Name").text = name
        if filt is not None:
            rule.append(filt)
        rule.append(symbol.symbolizer())
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def fmt(value: float) -> str:
    """A class bound as a legend shows it (3 significant digits, thousands separated)."""
    if not math.isfinite(value):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    text = f"{value:.3g}"
    return "0" if text in ("-0", "0") else text
