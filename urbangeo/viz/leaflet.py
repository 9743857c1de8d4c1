"""The offline map's page parts: Leaflet inlined from an installed package, panes, layers,
tooltips and the legend, as folium elements (used by :mod:`urbangeo.viz.maps`).

Leaflet's JavaScript and CSS come from the PyPI package ``xstatic-leaflet`` (Leaflet 1.9.3,
BSD-2-Clause, licence header kept) and are inlined when the map is written, with the CSS's
images as data URIs. Every value shown reaches the page as JSON (escaped by Jinja's ``tojson``)
and is put into the DOM with ``textContent``; images only as ``data:image/`` URIs urbangeo
encoded itself.

Draw order (Leaflet panes, bottom to top): the run's imagery, region fills, roads, the study
area's outline, the outlines of the regions similar to a clicked one, street-view points, then
tooltips and popups.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from urbangeo.errors import MissingExtraError
from urbangeo.viz.colors import DIVERGING, SEQUENTIAL
from urbangeo.viz.regions_js import runtime_js

#: Leaflet panes created by the map: (name, z-index). Leaflet's own: tiles 200, overlays 400.
PANES = (
    ("urbangeo-imagery", 250),
    ("urbangeo-roads", 420),
    ("urbangeo-boundary", 430),
    ("urbangeo-points", 450),
)
#: Street-view points: a dark dot with a white ring (distinct from every fill colour).
POINT_FILL = "#111111"
POINT_RING = "#ffffff"
ROAD_COLOR = "#6e6e6e"
BOUNDARY_COLOR = "#1a1a1a"


@cache
def leaflet_assets() -> tuple[str, str]:
    """Leaflet's (JavaScript, CSS) from the installed xstatic-leaflet package."""
    try:
        from xstatic.pkg import leaflet
    except ImportError as exc:
        raise MissingExtraError(
            f"Offline maps need the package 'xstatic-leaflet' ({exc}).",
            hint="Install it with: pip install xstatic-leaflet",
        ) from exc
    base = Path(leaflet.BASE_DIR)
    js = (base / "leaflet.js").read_text(encoding="utf-8")
    css = (base / "leaflet.css").read_text(encoding="utf-8")

    def inline(match: re.Match) -> str:
        image = base / match.group(1)
        if not image.exists():
            return match.group(0)
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        return f"url(data:image/png;base64,{data})"

    css = re.sub(r"url\((images/[\w.-]+\.png)\)", inline, css)
    return js.replace("</script", "<\\/script"), css.replace("</style", "<\\/style")


def offline_map_class():
    """A folium Map class that links no CDN asset (Leaflet is inlined by ``Assets``)."""
    import folium

    class OfflineMap(folium.Map):
        default_js: list = []  # noqa: RUF012 - folium's class attribute
        default_css: list = []  # noqa: RUF012

    return OfflineMap


@dataclass
class LayerSpec:
    """One toggleable layer: what it draws, its colour property and its legend.

    ``kind``: ``polygon`` (regions coloured by ``color_key``), ``point`` (street-view points),
    ``line`` (roads, the boundary: drawn in ``color``, not interactive) or ``imagery`` (the
    regions' images, a base layer). Legend items are (colour, label, shape) with shape
    ``box``, ``line``, ``dot`` or ``image``. ``tooltip``: the fields a tooltip shows (short),
    ``details`` those of the popup a click opens (all); ``own``: the layer's own value fields.
    ``outline`` and ``dash``: the polygons' outline colour and dash pattern (default: thin
    white, solid). ``scale``: how the page colours a polygon layer's ``color_key`` field:
    ``scheme`` ``seq``/``div`` (the ramps of :mod:`urbangeo.viz.colors` from ``lo`` to ``hi``,
    on ln(1 + y) when ``log``), ``cat`` (``colors`` per category), ``const`` (``colors[0]``;
    with ``only``, the regions without a value are not drawn at all) or ``none``.
    """

    name: str
    color_key: str
    legend: list[tuple[str, str, str]]
    legend_title: str
    kind: str = "polygon"
    show: bool = False
    tooltip: list[tuple[str, str]] = field(default_factory=list)
    details: list[tuple[str, str]] = field(default_factory=list)
    own: list[tuple[str, str]] = field(default_factory=list)
    color: str = "#444444"
    pane: str = ""
    weight: float = 1.0
    opacity: float = 0.7
    outline: str = ""
    dash: str = ""
    scale: dict = field(default_factory=dict)


STYLE = """
<style>
.leaflet-container { background: #f3f1ec; }
.leaflet-control-layers { font: 12px/1.3 sans-serif; }
.leaflet-control-layers label { margin: 1px 0; }
.urbangeo-legend { background: rgba(255,255,255,0.94); padding: 6px 8px; border-radius: 4px;
  font: 12px/1.4 sans-serif; box-shadow: 0 1px 4px rgba(0,0,0,0.3); max-width: 280px;
  max-height: 60vh; overflow-y: auto; }
.urbangeo-legend .title { font-weight: bold; margin-top: 4px; }
.urbangeo-legend i { display: inline-block; width: 14px; height: 10px; margin-right: 6px;
  vertical-align: middle; box-sizing: border-box; }
.urbangeo-legend i.line { height: 0; border-top: 2px solid; }
.urbangeo-legend i.dot { width: 10px; border-radius: 50%; border: 2px solid #fff;
  box-shadow: 0 0 0 1px #999; margin: 0 8px 0 2px; }
.urbangeo-legend i.image { background: linear-gradient(135deg, #e8e0d8, #b8d8b0 50%, #aad3df);
  border: 1px solid #999; }
.leaflet-tooltip.urbangeo-tip { white-space: normal; width: max-content; max-width: 320px;
  max-height: 240px; overflow: hidden; }
.urbangeo-card { font: 12px sans-serif; }
.urbangeo-card img.thumb { float: left; width: 64px; height: 64px; margin: 0 8px 4px 0;
  border: 1px solid #999; }
.urbangeo-card table { border-collapse: collapse; }
.urbangeo-card th { text-align: left; padding-right: 8px; vertical-align: top; }
.urbangeo-card .caption { clear: both; margin-top: 4px; line-height: 1.35; }
.urbangeo-card.compact .caption { display: -webkit-box; -webkit-line-clamp: 4;
  -webkit-box-orient: vertical; overflow: hidden; }
.urbangeo-card .hint { clear: both; color: #777; font-size: 11px; margin-top: 2px; }
.urbangeo-popup .leaflet-popup-content { max-width: 320px; }
.urbangeo-scores { background: #fff; font: 12px/1.35 sans-serif; }
.urbangeo-scores a.urbangeo-scores-button { width: auto; padding: 0 8px; font-weight: bold; }
.urbangeo-scores-box { padding: 4px 8px 6px; max-width: 340px; max-height: 60vh;
  overflow-y: auto; }
.urbangeo-scores-box .protocol { color: #555; font-size: 11px; }
.urbangeo-scores-box .title { font-weight: bold; margin-top: 6px; }
.urbangeo-scores-box .note { font-weight: normal; color: #777; }
.urbangeo-scores-box td { padding: 0 6px 0 0; }
.urbangeo-scores-box td.r2 { text-align: right; white-space: nowrap;
  font-variant-numeric: tabular-nums; }
.urbangeo-scores-box tr.best { font-weight: bold; }
.urbangeo-scores-box tr.below { color: #999; }
</style>
"""

_PANES_TEMPLATE = """
{% macro script(this, kwargs) %}
(function () {
  var map = {{ this._parent.get_name() }};
  {{ this.panes|tojson }}.forEach(function (p) {
    var pane = map.createPane(p[0]);
    pane.style.zIndex = p[1];
    if (p[0] === 'urbangeo-imagery' || p[0] === 'urbangeo-roads'
        || p[0] === 'urbangeo-boundary') { pane.style.pointerEvents = 'none'; }
  });
})();
window.urbangeoLayers = window.urbangeoLayers || {};
function urbangeoCard(props, fields, compact) {
  var div = document.createElement('div');
  div.className = compact ? 'urbangeo-card compact' : 'urbangeo-card';
  if (typeof props._img === 'string' && props._img.indexOf('data:image/') === 0) {
    var img = document.createElement('img');
    img.className = 'thumb';
    img.alt = '';
    img.src = props._img;
    div.appendChild(img);
  }
  var table = document.createElement('table');
  fields.forEach(function (field) {
    var value = props[field[0]];
    if (value === null || value === undefined || value === '') { return; }
    var row = table.insertRow();
    var th = document.createElement('th');
    th.textContent = field[1];
    row.appendChild(th);
    var text = typeof value === 'number'
      ? (Number.isInteger(value) ? value.toLocaleString() : value.toPrecision(4))
      : String(value);
    row.insertCell().textContent = text;
  });
  div.appendChild(table);
  if (props.caption) {
    var caption = document.createElement('div');
    caption.className = 'caption';
    caption.textContent = props.caption;
    div.appendChild(caption);
    if (compact) {
      var hint = document.createElement('div');
      hint.className = 'hint';
      hint.textContent = 'click for the whole caption';
      div.appendChild(hint);
    }
  }
  return div;
}
{% endmacro %}
"""

_DATA_TEMPLATE = """
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = {{ this.data|tojson }};
{% endmacro %}
"""

_LAYER_TEMPLATE = """
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = (function () {
  var spec = {{ this.spec_json|tojson }};
  var data = {{ this.data_name }};
  if (spec.kind === 'imagery') { return window.urbangeoImagery(data, spec); }
  if (spec.kind === 'polygon') { return data.layer(spec); }
  if (spec.kind === 'line') {
    return L.geoJSON(data, {pane: spec.pane, interactive: false,
                            renderer: L.canvas({pane: spec.pane}), style: function () {
      return {color: spec.color, weight: spec.weight, opacity: spec.opacity, fill: false};
    }});
  }
  var renderer = L.canvas({pane: spec.pane || 'overlayPane'});
  return L.geoJSON(data, {
    pointToLayer: function (f, latlng) {
      return L.circleMarker(latlng, {pane: spec.pane || 'overlayPane', radius: 3.5,
                                     renderer: renderer,
                                     bubblingMouseEvents: false,
                                     color: spec.ring, weight: 1.5, fillColor: spec.color,
                                     fillOpacity: 1});
    },
    onEachFeature: function (f, layer) {
      layer.bindTooltip(function () { return urbangeoCard(f.properties, spec.tooltip, true); },
                        {sticky: true, className: 'urbangeo-tip'});
      layer.bindPopup(function () { return urbangeoCard(f.properties, spec.details, false); },
                      {maxWidth: 340, maxHeight: 300, className: 'urbangeo-popup'});
    }
  });
})();
window.urbangeoLayers[{{ this.spec.name|tojson }}] = {{ this.get_name() }};
{% endmacro %}
"""

_REGIONS_TEMPLATE = """
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = window.urbangeoRegions({{ this._parent.get_name() }},
  {{ this.data|tojson }}, {{ this.ramps|tojson }});
{% endmacro %}
"""


def control_template(body: str) -> str:
    """A Jinja ``script`` macro that runs ``body`` (JavaScript, in a function of its own) with
    ``map`` (the Leaflet map) and ``data`` (the element's data, :func:`data_element_class`)."""
    return (
        "{% macro script(this, kwargs) %}\n(function () {\n"
        "  var map = {{ this._parent.get_name() }};\n  var data = {{ this.data|tojson }};\n"
        f"{body}}})();\n{{% endmacro %}}\n"
    )


_LEGEND_TEMPLATE = control_template("""  var entries = data;
  var control = L.control({position: 'bottomright'});
  control.onAdd = function () {
    var div = L.DomUtil.create('div', 'urbangeo-legend');
    div.id = 'urbangeo-legend';
    L.DomEvent.disableScrollPropagation(div);
    L.DomEvent.disableClickPropagation(div);
    return div;
  };
  control.addTo(map);
  function draw() {
    var div = document.getElementById('urbangeo-legend');
    div.replaceChildren();
    entries.forEach(function (entry) {
      var layer = window.urbangeoLayers[entry.layer];
      if (entry.layer && (!layer || !map.hasLayer(layer))) { return; }
      var title = document.createElement('div');
      title.className = 'title';
      title.textContent = entry.title;
      div.appendChild(title);
      entry.items.forEach(function (item) {
        var row = document.createElement('div');
        var swatch = document.createElement('i');
        swatch.className = item[2] || 'box';
        if (item[2] === 'line') { swatch.style.borderTopColor = item[0]; }
        else if (item[2] !== 'image') { swatch.style.background = item[0]; }
        row.appendChild(swatch);
        row.appendChild(document.createTextNode(item[1]));
        div.appendChild(row);
      });
    });
    div.style.display = div.childNodes.length ? 'block' : 'none';
  }
  map.on('overlayadd overlayremove baselayerchange', draw);
  draw();
""")


#: The pane of the similar-region outlines: above the fills and roads, below the points.
SIMILAR_PANE = ("urbangeo-similar", 440)

_SIMILAR_TEMPLATE = """
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = (function () {
  var map = {{ this._parent.get_name() }};
  var info = {{ this.info|tojson }};
  var app = {{ this.data_name }};
  var cells = app.cellsSource;
  var group = L.layerGroup();
  if (!map.getPane(info.pane[0])) {
    var pane = map.createPane(info.pane[0]);
    pane.style.zIndex = info.pane[1];
    pane.style.pointerEvents = 'none';
  }
  var svg = L.svg({pane: info.pane[0]});  // a few outlines, with class names
  var vectors = null, index = {};
  function half(h) {
    var sign = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e === 0) { return sign * Math.pow(2, -14) * (m / 1024); }
    if (e === 31) { return m ? NaN : sign * Infinity; }
    return sign * Math.pow(2, e - 15) * (1 + m / 1024);
  }
  function decode() {
    var text = atob(info.vectors), bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) { bytes[i] = text.charCodeAt(i); }
    var view = new DataView(bytes.buffer);
    vectors = new Float32Array(bytes.length / 2);
    for (var j = 0; j < vectors.length; j++) { vectors[j] = half(view.getUint16(2 * j, true)); }
    info.ids.forEach(function (id, k) { index[id] = k; });
  }
  var note = L.control({position: 'bottomleft'});
  note.onAdd = function () {
    var div = L.DomUtil.create('div', 'urbangeo-legend');
    div.id = 'urbangeo-similar-note';
    div.style.display = 'none';
    return div;
  };
  note.addTo(map);
  function say(text) {
    var div = document.getElementById('urbangeo-similar-note');
    div.textContent = text;
    div.style.display = text ? 'block' : 'none';
  }
  function outline(id, color, cls) {
    var i = cells.index(id);
    if (i < 0) { return; }
    var shape = L.polygon(cells.latlngs(i), {pane: info.pane[0], renderer: svg,
      interactive: false, color: color, weight: 3.5, opacity: 1, fill: false, className: cls});
    shape.urbangeoRegion = id;
    shape.addTo(group);
  }
  function show(id) {
    if (vectors === null) { decode(); }
    group.clearLayers();
    var q = index[id];
    if (q === undefined) {
      say('Region ' + id + ' has no embedding: nothing to compare.');
      return [];
    }
    var d = info.dim, n = info.ids.length, sims = [];
    for (var i = 0; i < n; i++) {
      if (i === q) { continue; }
      var s = 0;
      for (var j = 0; j < d; j++) { s += vectors[q * d + j] * vectors[i * d + j]; }
      sims.push([s, i]);
    }
    sims.sort(function (a, b) { return (b[0] - a[0]) || (a[1] - b[1]); });
    var top = sims.slice(0, info.top).map(function (t) { return info.ids[t[1]]; });
    top.forEach(function (rid) { outline(rid, info.color, 'urbangeo-similar'); });
    outline(id, info.query_color, 'urbangeo-similar-query');
    say('Outlined: the ' + top.length + ' regions most similar to region ' + id
        + ' (cosine similarity of embeddings).');
    return top;
  }
  window.urbangeoSimilar = show;
  map.on('urbangeo:regionclick', function (e) {  // only while the layer is on (layer list)
    if (info.layers.indexOf(e.layer) >= 0 && !e.blocks && map.hasLayer(group)) { show(e.id); }
  });
  map.on('overlayremove', function (e) { if (e.layer === group) { say(''); } });
  return group;
})();
window.urbangeoLayers[{{ this.key|tojson }}] = {{ this.get_name() }};
{% endmacro %}
"""


def similar_layer_class():
    """The folium layer of the similar-region outlines (``data_name``: the page's regions,
    :func:`elements`' ``Regions``): a click on a region of the layers ``info["layers"]``
    outlines the ``info["top"]`` regions whose embeddings (``info["ids"]``,
    ``info["vectors"]``: unit rows as little-endian float16, base64, ``info["dim"]`` each) have
    the highest cosine similarity to its own, computed in the browser, and the region itself
    (``info["query_color"]``)."""
    from folium.map import Layer
    from folium.template import Template

    class SimilarLayer(Layer):
        _template = Template(_SIMILAR_TEMPLATE)

        def __init__(self, data_name: str, name: str, info: dict) -> None:
            super().__init__(name=html.escape(name), overlay=True, show=True)
            self._name = "urbangeo_similar"
            self.key = name
            self.data_name = data_name
            self.info = {**info, "pane": list(SIMILAR_PANE)}

    return SimilarLayer


def data_element_class(template: str, name: str):
    """A folium element class that renders ``template`` (a Jinja ``script`` macro reading
    ``this.data``) with the data it is made with; ``name`` prefixes its JavaScript name."""
    from branca.element import MacroElement
    from folium.template import Template

    class DataElement(MacroElement):
        _template = Template(template)

        def __init__(self, data: dict) -> None:
            super().__init__()
            self._name = name
            self.data = data

    return DataElement


def elements():
    """The folium element classes of the page: (Assets, Panes, Data, Regions, GeoLayer,
    Legend)."""
    from branca.element import Element, MacroElement
    from folium.map import Layer
    from folium.template import Template

    class Assets(Element):
        """Leaflet inlined in the page's head, as it is (not a template: no Jinja parsing)."""

        def render(self, **kwargs) -> str:
            js, css = leaflet_assets()
            runtime = runtime_js().replace("</script", "<\\/script")
            head = f"<style>{css}</style>\n<script>{js}</script>\n{STYLE}"
            return f"{head}\n<script>\n{runtime}</script>"

    class Panes(MacroElement):
        """The map's panes and the shared tooltip code (added before any layer)."""

        _template = Template(_PANES_TEMPLATE)

        def __init__(self) -> None:
            super().__init__()
            self.panes = [list(p) for p in PANES]

    Data = data_element_class(_DATA_TEMPLATE, "urbangeo_data")

    class Regions(MacroElement):
        """The regions' data and their canvas (``urbangeoRegions``); ``data["folder"]`` is set
        by :func:`urbangeo.viz.maps.write_map` (the chunk files' folder)."""

        _template = Template(_REGIONS_TEMPLATE)

        def __init__(self, data: dict) -> None:
            super().__init__()
            self._name = "urbangeo_regions"
            self.data = data
            self.ramps = {"seq": list(SEQUENTIAL), "div": list(DIVERGING)}

    class GeoLayer(Layer):
        _template = Template(_LAYER_TEMPLATE)

        def __init__(self, data_name: str, spec: LayerSpec) -> None:
            # Leaflet's layer control writes names as HTML: escape them here.
            super().__init__(
                name=html.escape(spec.name), overlay=spec.kind != "imagery", show=spec.show
            )
            self._name = "urbangeo_layer"
            self.data_name = data_name
            self.spec = spec
            self.spec_json = {
                "kind": spec.kind,
                "color_key": spec.color_key,
                "tooltip": spec.tooltip,
                "details": spec.details or spec.tooltip,
                "color": spec.color,
                "pane": spec.pane,
                "weight": spec.weight,
                "opacity": spec.opacity,
                "outline": spec.outline,
                "dash": spec.dash,
                "ring": POINT_RING,
                "name": spec.name,
                "scale": spec.scale,
            }

    Legend = data_element_class(_LEGEND_TEMPLATE, "urbangeo_legend")
    return Assets, Panes, Data, Regions, GeoLayer, Legend
