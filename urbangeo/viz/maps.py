"""Interactive folium maps of a run's products that work offline.

The page is self-contained: Leaflet's JavaScript and CSS come from the PyPI package
``xstatic-leaflet`` (Leaflet 1.9.3, BSD-2-Clause, licence header kept) and are inlined into the
HTML when the map is written, with the CSS's images as data URIs. folium's default template
also links jQuery, Bootstrap and Awesome Markers from CDNs; this map needs none of them (its
layers, tooltips and legend are plain Leaflet and DOM code), so :class:`OfflineMap` drops
folium's default asset lists instead of inlining more packages. Base tiles are optional: with
``tiles="osm"`` the OpenStreetMap tiles load when online; with ``"none"`` nothing is fetched.

Safety: every value shown (captions, ids, indicator names) reaches the page as JSON data
(escaped by Jinja's ``tojson``) and is put into the DOM with ``textContent``, never as HTML,
so a caption containing ``<script>`` shows as text.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from urbangeo import constants as C
from urbangeo.errors import MissingExtraError
from urbangeo.io.files import write_text_atomic
from urbangeo.viz.colors import DIVERGING, SEQUENTIAL, cluster_color, ramp

TILES = ("none", "osm")
#: Longest caption shown in a tooltip (characters).
CAPTION_CHARS = 400


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


def _offline_map_class():
    import folium

    class OfflineMap(folium.Map):
        """A folium Map that links no CDN asset; Leaflet is inlined by :func:`build_map`."""

        default_js: list = []  # noqa: RUF012 - folium's class attribute
        default_css: list = []  # noqa: RUF012

    return OfflineMap


@dataclass
class LayerSpec:
    """One toggleable layer: which colour property it draws, and its legend."""

    name: str
    color_key: str
    legend: list[tuple[str, str]]
    legend_title: str
    kind: str = "polygon"  # or "point"
    show: bool = False
    tooltip: list[tuple[str, str]] = field(default_factory=list)


_STYLE = """
<style>
.urbangeo-legend { background: rgba(255,255,255,0.92); padding: 6px 8px; border-radius: 4px;
  font: 12px/1.4 sans-serif; box-shadow: 0 1px 4px rgba(0,0,0,0.3); max-width: 260px; }
.urbangeo-legend .title { font-weight: bold; margin-top: 4px; }
.urbangeo-legend i { display: inline-block; width: 14px; height: 10px; margin-right: 6px; }
.urbangeo-tip { max-width: 360px; white-space: normal; }
.urbangeo-tip table { border-collapse: collapse; font: 12px sans-serif; }
.urbangeo-tip th { text-align: left; padding-right: 8px; vertical-align: top; }
</style>
"""

_DATA_TEMPLATE = """
{% macro script(this, kwargs) %}
window.urbangeoLayers = window.urbangeoLayers || {};
function urbangeoTable(props, fields) {
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
  var div = document.createElement('div');
  div.appendChild(table);
  return div;
}
var {{ this.get_name() }} = {{ this.data|tojson }};
{% endmacro %}
"""

_LAYER_TEMPLATE = """
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = L.geoJSON({{ this.data_name }}, {
  style: function (f) {
    var c = f.properties[{{ this.spec.color_key|tojson }}];
    return {color: '#444', weight: 0.6, opacity: 0.7, fillColor: c || '#000000',
            fillOpacity: c ? 0.7 : 0.0};
  },
  pointToLayer: function (f, latlng) {
    var c = f.properties[{{ this.spec.color_key|tojson }}] || '#e6550d';
    return L.circleMarker(latlng, {radius: 4, color: '#222', weight: 1, fillColor: c,
                                   fillOpacity: 0.9});
  },
  onEachFeature: function (f, layer) {
    layer.bindTooltip(function () {
      return urbangeoTable(f.properties, {{ this.spec.tooltip|tojson }});
    }, {sticky: true, className: 'urbangeo-tip'});
  }
});
window.urbangeoLayers[{{ this.spec.name|tojson }}] = {{ this.get_name() }};
{% endmacro %}
"""

_LEGEND_TEMPLATE = """
{% macro script(this, kwargs) %}
(function () {
  var map = {{ this._parent.get_name() }};
  var entries = {{ this.entries|tojson }};
  var control = L.control({position: 'bottomright'});
  control.onAdd = function () {
    var div = L.DomUtil.create('div', 'urbangeo-legend');
    div.id = 'urbangeo-legend';
    return div;
  };
  control.addTo(map);
  function draw() {
    var div = document.getElementById('urbangeo-legend');
    div.replaceChildren();
    entries.forEach(function (entry) {
      var layer = window.urbangeoLayers[entry.layer];
      if (!layer || !map.hasLayer(layer)) { return; }
      var title = document.createElement('div');
      title.className = 'title';
      title.textContent = entry.title;
      div.appendChild(title);
      entry.items.forEach(function (item) {
        var row = document.createElement('div');
        var swatch = document.createElement('i');
        swatch.style.background = item[0];
        row.appendChild(swatch);
        row.appendChild(document.createTextNode(item[1]));
        div.appendChild(row);
      });
    });
    div.style.display = div.childNodes.length ? 'block' : 'none';
  }
  map.on('overlayadd overlayremove', draw);
  draw();
})();
{% endmacro %}
"""


def _elements():
    from branca.element import Element, MacroElement
    from folium.map import Layer
    from folium.template import Template

    class Assets(Element):
        """Leaflet inlined in the page's head, as it is (not a template: no Jinja parsing)."""

        def render(self, **kwargs) -> str:
            js, css = leaflet_assets()
            return f"<style>{css}</style>\n<script>{js}</script>\n{_STYLE}"

    class Data(MacroElement):
        _template = Template(_DATA_TEMPLATE)

        def __init__(self, data: dict) -> None:
            super().__init__()
            self._name = "urbangeo_data"
            self.data = data

    class GeoLayer(Layer):
        _template = Template(_LAYER_TEMPLATE)

        def __init__(self, data_name: str, spec: LayerSpec) -> None:
            # Leaflet's layer control writes names as HTML: escape them here.
            super().__init__(name=html.escape(spec.name), overlay=True, show=spec.show)
            self._name = "urbangeo_layer"
            self.data_name = data_name
            self.spec = spec

    class Legend(MacroElement):
        _template = Template(_LEGEND_TEMPLATE)

        def __init__(self, entries: list[dict]) -> None:
            super().__init__()
            self.entries = entries

    return Assets, Data, GeoLayer, Legend


def _geojson(frame: gpd.GeoDataFrame) -> dict:
    """GeoJSON in WGS84 with 1e-6° precision (about 0.1 m), NaN as null."""
    frame = frame.to_crs(C.WGS84)
    geoms = shapely.set_precision(frame.geometry.to_numpy(), 1e-6)
    props = frame.drop(columns=frame.geometry.name)
    features = []
    for geom, (_, row) in zip(geoms, props.iterrows(), strict=True):
        clean: dict[str, bool | int | float | str | None] = {}
        for key, value in row.items():
            if isinstance(value, float | np.floating):
                clean[str(key)] = None if not np.isfinite(value) else float(value)
            elif isinstance(value, np.integer):
                clean[str(key)] = int(value)
            elif value is None or (isinstance(value, float) and np.isnan(value)):
                clean[str(key)] = None
            else:
                clean[str(key)] = value if isinstance(value, int | bool) else str(value)
        features.append(
            {"type": "Feature", "geometry": shapely.geometry.mapping(geom), "properties": clean}
        )
    return {"type": "FeatureCollection", "features": features}


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _value_colors(
    values: np.ndarray, *, log: bool, shared: np.ndarray | None = None
) -> tuple[list, list[tuple[str, str]]]:
    """Sequential colours (on ln(1 + y) when ``log``) and a legend in the value's units."""
    basis = values if shared is None else shared
    transform = (lambda v: np.log1p(np.clip(v, 0, None))) if log else (lambda v: v)
    with np.errstate(invalid="ignore"):
        t_all = transform(np.asarray(basis, dtype=np.float64))
    finite = t_all[np.isfinite(t_all)]
    if finite.size == 0:
        return [None] * len(values), []
    lo, hi = np.percentile(finite, [2, 98])
    colors = ramp(transform(np.asarray(values, dtype=np.float64)), lo, hi, SEQUENTIAL)
    back = (lambda t: np.expm1(t)) if log else (lambda t: t)
    ticks = np.linspace(lo, hi, len(SEQUENTIAL))
    legend = [(c, _fmt(float(back(t)))) for c, t in zip(SEQUENTIAL, ticks, strict=True)]
    legend[0] = (legend[0][0], f"≤ {legend[0][1]}")
    legend[-1] = (legend[-1][0], f"≥ {legend[-1][1]}")
    return colors, legend


def _residual_colors(values: np.ndarray) -> tuple[list, list[tuple[str, str]]]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [None] * len(values), []
    bound = float(np.percentile(np.abs(finite), 98)) or 1.0
    colors = ramp(values, -bound, bound, DIVERGING)
    ticks = np.linspace(-bound, bound, len(DIVERGING))
    legend = [(c, f"{t:+.2f}") for c, t in zip(DIVERGING, ticks, strict=True)]
    legend[0] = (legend[0][0], f"{legend[0][1]} (under-predicted)")
    legend[-1] = (legend[-1][0], f"{legend[-1][1]} (over-predicted)")
    return colors, legend


def _targets(columns: list[str]) -> list[str]:
    return [c.removesuffix("_predicted") for c in columns if c.endswith("_predicted")]


def build_map(
    regions: gpd.GeoDataFrame,
    *,
    clusters: pd.DataFrame | None = None,
    predictions: pd.DataFrame | None = None,
    observed: pd.DataFrame | None = None,
    points: gpd.GeoDataFrame | None = None,
    region_captions: pd.Series | None = None,
    point_captions: pd.Series | None = None,
    tiles: str = "none",
    log: bool = True,
    title: str = "urbangeo",
):
    """A folium map with one toggleable layer per product (module docstring).

    ``regions``: polygons with ``region_id``. ``clusters``: region_id-indexed ``cluster``.
    ``predictions``: region_id-indexed ``{t}_observed``, ``{t}_predicted``, ``{t}_residual``
    (as written by ``urbangeo predict``). ``observed``: region_id-indexed ground truth (used
    for indicators that have no predictions). ``points``: street-view points. Captions:
    region_id- or point_id-indexed text for the tooltips.
    """
    import folium

    if tiles not in TILES:
        raise ValueError(f"tiles must be one of {TILES}")
    Assets, Data, GeoLayer, Legend = _elements()
    frame = regions[[C.REGION_ID, regions.geometry.name]].copy()
    frame[C.REGION_ID] = frame[C.REGION_ID].astype(str)
    frame = frame.set_index(C.REGION_ID, drop=False)
    specs: list[LayerSpec] = []
    tooltip: list[tuple[str, str]] = [(C.REGION_ID, "region")]
    n = len(frame)

    if clusters is not None and "cluster" in clusters:
        labels = clusters["cluster"].reindex(frame.index)
        frame["cluster"] = labels.astype("Int64")
        frame["_c_cluster"] = [None if pd.isna(v) else cluster_color(int(v)) for v in labels]
        sizes = labels.value_counts().sort_index()
        legend = [
            (cluster_color(int(c)), f"cluster {int(c)} ({int(k)} regions)")
            for c, k in sizes.items()
        ]
        specs.append(LayerSpec("Clusters", "_c_cluster", legend, "Clusters"))
        tooltip.append(("cluster", "cluster"))

    if predictions is None:
        predictions = pd.DataFrame()
    targets = _targets(list(predictions.columns))
    for i, t in enumerate(targets):
        pred = predictions[f"{t}_predicted"].reindex(frame.index).to_numpy(np.float64)
        obs = predictions.get(f"{t}_observed")
        obs = obs.reindex(frame.index) if obs is not None else pd.Series(np.nan, frame.index)
        obs = obs.to_numpy(np.float64)
        resid = predictions.get(f"{t}_residual")
        resid = (
            resid.reindex(frame.index).to_numpy(np.float64)
            if resid is not None
            else np.full(n, np.nan)
        )
        both = np.concatenate([pred, obs])
        frame[f"{t}_predicted"], frame[f"{t}_observed"], frame[f"{t}_residual"] = pred, obs, resid
        cp, legend_p = _value_colors(pred, log=log, shared=both)
        co, legend_o = _value_colors(obs, log=log, shared=both)
        cr, legend_r = _residual_colors(resid)
        frame[f"_c_p{i}"], frame[f"_c_o{i}"], frame[f"_c_r{i}"] = cp, co, cr
        unit = "ln(1+y)" if log else "y"
        specs += [
            LayerSpec(f"Predicted {t}", f"_c_p{i}", legend_p, f"Predicted {t}"),
            LayerSpec(f"Observed {t}", f"_c_o{i}", legend_o, f"Observed {t}"),
            LayerSpec(
                f"Residual {t}",
                f"_c_r{i}",
                legend_r,
                f"Residual {t} (predicted − observed, {unit})",
            ),
        ]
        tooltip += [
            (f"{t}_predicted", f"{t} predicted"),
            (f"{t}_observed", f"{t} observed"),
            (f"{t}_residual", f"{t} residual ({unit})"),
        ]

    if observed is not None:
        extra = [
            c
            for c in observed.columns
            if c not in targets and pd.api.types.is_numeric_dtype(observed[c])
        ]
        for j, col in enumerate(extra):
            values = observed[col].reindex(frame.index).to_numpy(np.float64)
            colors, legend = _value_colors(values, log=log)
            frame[col], frame[f"_c_g{j}"] = values, colors
            specs.append(LayerSpec(f"Observed {col}", f"_c_g{j}", legend, f"Observed {col}"))
            tooltip.append((col, col))

    if region_captions is not None:
        frame["caption"] = region_captions.reindex(frame.index).map(_short)
        tooltip.append(("caption", "caption"))
    if not specs:
        frame["_c_region"] = "#9ecae1"
        specs.append(LayerSpec("Regions", "_c_region", [("#9ecae1", "region")], "Regions"))
    for spec in specs:
        spec.tooltip = tooltip
    specs[0].show = True

    layers_data = {
        "regions": _geojson(
            gpd.GeoDataFrame(
                frame.reset_index(drop=True), geometry=regions.geometry.name, crs=regions.crs
            )
        )
    }
    if points is not None and len(points):
        pts = points.copy()
        cols = [c for c in (C.POINT_ID, C.REGION_ID, C.HEADING) if c in pts.columns]
        pts = gpd.GeoDataFrame(pts[cols], geometry=pts.geometry, crs=points.crs)
        ptip = [(c, c.replace("_", " ")) for c in cols]
        if point_captions is not None and C.POINT_ID in pts:
            pts["caption"] = pts[C.POINT_ID].map(point_captions).map(_short)
            ptip.append(("caption", "caption"))
        pts["_c_point"] = "#e6550d"
        layers_data["points"] = _geojson(pts)
        specs.append(
            LayerSpec(
                "Street-view points",
                "_c_point",
                [("#e6550d", "sample point")],
                "Street-view points",
                kind="point",
                show=True,
                tooltip=ptip,
            )
        )

    OfflineMap = _offline_map_class()
    west, south, east, north = regions.to_crs(C.WGS84).total_bounds
    fmap = OfflineMap(
        location=[(south + north) / 2, (west + east) / 2],
        zoom_start=13,
        tiles=None,
        control_scale=True,
    )
    fmap.get_root().header.add_child(Assets(), name="urbangeo_assets")
    fmap.get_root().title = title
    if tiles == "osm":
        folium.TileLayer("OpenStreetMap", name="OpenStreetMap").add_to(fmap)
    data_elements = {key: Data(value) for key, value in layers_data.items()}
    for element in data_elements.values():
        fmap.add_child(element)
    for spec in specs:
        source = data_elements["points" if spec.kind == "point" else "regions"]
        fmap.add_child(GeoLayer(source.get_name(), spec))
    folium.LayerControl(collapsed=False).add_to(fmap)
    entries = [
        {"layer": s.name, "title": s.legend_title, "items": s.legend} for s in specs if s.legend
    ]
    fmap.add_child(Legend(entries))
    fmap.fit_bounds([[south, west], [north, east]])
    return fmap


def _short(text: object) -> object:
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    return text if len(text) <= CAPTION_CHARS else text[: CAPTION_CHARS - 1] + "…"


def write_map(fmap, path: str | os.PathLike) -> Path:
    """Render ``fmap`` to ``path`` atomically (a temporary file replaced in one step)."""
    return write_text_atomic(path, fmap.get_root().render())
