"""Interactive folium maps of a run's products that work offline.

The page is self-contained (:mod:`urbangeo.viz.leaflet`: Leaflet inlined from an installed
package; folium's CDN assets dropped, the map needs none of them). What it shows:

* **Base layer, offline**: the run's own images (``images/satellite/``: the rendering of the
  OSM extract, or the raster or tiles the run used) placed on their regions, as small inlined
  images (:mod:`urbangeo.viz.thumbs`). It is the one base that always matches the run and
  needs no network; a run without images gets its roads drawn instead, on a light ground.
  With ``tiles="osm"`` OpenStreetMap tiles are offered as a second base (online only).
* **Overlays**: clusters, per indicator its prediction, ground truth and residual, ground
  truth of other indicators, the edge cells (grey, dashed: regions mostly outside the study
  area or its image data, left out of the analysis: :mod:`urbangeo.imagery.edges`), the
  roads, the study area's outline and the street-view points (dark dots with a white ring,
  distinct from every fill colour; always on top).
* **A legend** for every layer shown, and **tooltips** of bounded size with the region's
  image, its values and its selected caption (clamped; a click opens the whole caption in a
  scrolling popup).
* **Similar regions**: a click on a region outlines the :data:`SIMILAR_TOP` regions whose
  embeddings are most like its own (cosine similarity, computed in the browser), when the
  map has at most :data:`MAX_SIMILAR_REGIONS` embedded regions: the page then holds every
  region's unit-length embedding as float16 (2 bytes a value, about 2.7 in base64: 20,000
  regions of 512 values add 27 MB).

Safety: every value shown (captions, ids, indicator names) reaches the page as JSON data
(escaped by Jinja's ``tojson``) and is put into the DOM with ``textContent``, never as HTML,
so a caption containing ``<script>`` shows as text.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from urbangeo import constants as C
from urbangeo.imagery.edges import EDGE, EXCLUDED
from urbangeo.io.files import write_text_atomic
from urbangeo.progress import message
from urbangeo.viz.colors import DIVERGING, SEQUENTIAL, cluster_color, ramp
from urbangeo.viz.leaflet import (
    BOUNDARY_COLOR,
    POINT_FILL,
    ROAD_COLOR,
    LayerSpec,
    elements,
    leaflet_assets,
    offline_map_class,
    similar_layer_class,
)

__all__ = ["CAPTION_CHARS", "TILES", "build_map", "leaflet_assets", "write_map"]

TILES = ("none", "osm")
#: Appended to a predicted layer whose model scores below the mean baseline (metrics.json).
BELOW_MEAN = " (below the mean baseline)"
#: Above this many street-view points their layer starts hidden (the legend lists it to turn on).
MAX_POINTS_SHOWN = 400
#: Longest caption shown in a tooltip (characters).
CAPTION_CHARS = 400
#: Fill opacity of the region layers (the base layer shows through).
FILL_OPACITY = 0.6
#: Edge cells: a grey fill with a dashed outline.
EDGE_COLOR = "#7f7f7f"
#: The most embedded regions for which the map holds the embeddings (click-to-highlight).
MAX_SIMILAR_REGIONS = 20_000
#: How many similar regions a click outlines.
SIMILAR_TOP = 10
#: Outline of the similar regions (magenta: no fill colour of the map is near it), and of the
#: region clicked.
SIMILAR_COLOR = "#ff00ff"
QUERY_COLOR = "#000000"
#: The similar-regions layer's name (layer list, legend).
SIMILAR_LAYER = "Similar regions"


def _geojson(frame: gpd.GeoDataFrame) -> dict:
    """GeoJSON in WGS84 with 1e-6° precision (about 0.1 m), NaN as null."""
    frame = frame.to_crs(C.WGS84)
    geoms = shapely.set_precision(frame.geometry.to_numpy(), 1e-6)
    props = frame.drop(columns=frame.geometry.name)
    features = []
    for geom, (_, row) in zip(geoms, props.iterrows(), strict=True):
        clean: dict[str, bool | int | float | str | list[float] | None] = {}
        for key, value in row.items():
            if isinstance(value, float | np.floating):
                clean[str(key)] = None if not np.isfinite(value) else float(value)
            elif isinstance(value, np.integer):
                clean[str(key)] = int(value)
            elif value is None or value is pd.NA:
                clean[str(key)] = None
            elif isinstance(value, list):
                clean[str(key)] = [float(v) for v in value]  # image bounds
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


def _boxes(legend: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    return [(color, label, "box") for color, label in legend]


def build_map(
    regions: gpd.GeoDataFrame,
    *,
    clusters: pd.DataFrame | None = None,
    predictions: pd.DataFrame | None = None,
    observed: pd.DataFrame | None = None,
    points: gpd.GeoDataFrame | None = None,
    region_captions: pd.Series | None = None,
    point_captions: pd.Series | None = None,
    boundary: gpd.GeoDataFrame | None = None,
    roads: gpd.GeoDataFrame | None = None,
    region_images: Mapping[str, str] | None = None,
    point_images: Mapping[str, str] | None = None,
    tiles: str = "none",
    log: bool = True,
    title: str = "urbangeo",
    embeddings: pd.DataFrame | None = None,
    below_baseline: Collection[str] = (),
):
    """A folium map with one toggleable layer per product (module docstring).

    ``regions``: polygons with ``region_id``. ``clusters``: region_id-indexed ``cluster``.
    ``predictions``: region_id-indexed ``{t}_observed``, ``{t}_predicted``, ``{t}_residual``
    (as written by ``urbangeo predict``). ``observed``: region_id-indexed ground truth (used
    for indicators that have no predictions). ``points``: street-view points. Captions:
    region_id- or point_id-indexed text for the tooltips. ``boundary`` and ``roads``: the
    run's layers of those names. ``region_images`` / ``point_images``: region_id / point_id →
    ``data:image/`` URI (:func:`urbangeo.viz.thumbs.image_uris`); region images are the base
    layer and the tooltips' thumbnails. ``embeddings``: region_id-indexed vectors; a click on
    a region then outlines its :data:`SIMILAR_TOP` most similar regions (left out above
    :data:`MAX_SIMILAR_REGIONS` regions).
    """
    import folium

    if tiles not in TILES:
        raise ValueError(f"tiles must be one of {TILES}")
    Assets, Panes, Data, GeoLayer, Legend = elements()
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
        tooltip.append(("cluster", "cluster"))
        specs.append(LayerSpec("Clusters", "_c_cluster", _boxes(legend), "Clusters"))

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
        fields = [
            (f"{t}_predicted", f"{t} predicted"),
            (f"{t}_observed", f"{t} observed"),
            (f"{t}_residual", f"{t} residual ({unit})"),
        ]
        if f"{t}_split" in predictions:  # where the prediction came from (fold, test...)
            frame[f"{t}_split"] = predictions[f"{t}_split"].reindex(frame.index)
            fields.append((f"{t}_split", f"{t} from"))
        tooltip += fields
        specs += [
            LayerSpec(
                name := f"Predicted {t}" + (BELOW_MEAN if t in below_baseline else ""),
                f"_c_p{i}",
                _boxes(legend_p),
                name,
                own=fields,
            ),
            LayerSpec(f"Observed {t}", f"_c_o{i}", _boxes(legend_o), f"Observed {t}", own=fields),
            LayerSpec(
                f"Residual {t}",
                f"_c_r{i}",
                _boxes(legend_r),
                f"Residual {t} (predicted − observed, {unit})",
                own=fields,
            ),
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
            specs.append(
                LayerSpec(
                    f"Observed {col}",
                    f"_c_g{j}",
                    _boxes(legend),
                    f"Observed {col}",
                    own=[(col, col)],
                )
            )
            tooltip.append((col, col))

    if region_captions is not None:
        frame["caption"] = region_captions.reindex(frame.index).map(_short)
    if not specs:
        frame["_c_region"] = "#9ecae1"
        specs.append(LayerSpec("Regions", "_c_region", [("#9ecae1", "region", "box")], "Regions"))
    # Tooltips: the region, its cluster and the layer's own values; a click shows them all.
    head = [f for f in tooltip if f[0] in (C.REGION_ID, "cluster")]
    for spec in specs:
        spec.tooltip, spec.details, spec.opacity = head + spec.own, tooltip, FILL_OPACITY
    specs[0].show = True

    images = dict(region_images or {})
    if images:
        frame["_img"] = frame.index.map(lambda rid: images.get(rid))
        boxes = frame.geometry.envelope.to_crs(C.WGS84).bounds  # the image covers the square
        frame["_b"] = [
            [round(s, 7), round(w, 7), round(nn, 7), round(e, 7)]
            for w, s, e, nn in boxes.itertuples(index=False)
        ]
    layers_data = {
        "regions": _geojson(
            gpd.GeoDataFrame(
                frame.reset_index(drop=True), geometry=regions.geometry.name, crs=regions.crs
            )
        )
    }
    base: list[LayerSpec] = []
    if frame.get("_img") is not None and frame["_img"].notna().any():
        base.append(
            LayerSpec(
                "Run imagery",
                "",
                [("", f"each region's image ({C.SATELLITE_DIR}/)", "image")],
                "Base: run imagery",
                kind="imagery",
                show=True,
                pane="urbangeo-imagery",
            )
        )
    lines: list[tuple[str, LayerSpec]] = []
    edges = _edge_layer(regions)
    if edges is not None:
        layers_data["edges"] = _geojson(edges[0])
        lines.append(("edges", edges[1]))
    if roads is not None and len(roads):
        layers_data["roads"] = _geojson(_lines(roads, tolerance=2.0))
        lines.append(
            (
                "roads",
                LayerSpec(
                    "Roads",
                    "",
                    [(ROAD_COLOR, "road", "line")],
                    "Roads",
                    kind="line",
                    show=not base,
                    color=ROAD_COLOR,
                    pane="urbangeo-roads",
                    weight=1.2,
                    opacity=0.8,
                ),
            )
        )
    if boundary is not None and len(boundary):
        layers_data["boundary"] = _geojson(_lines(boundary.boundary, tolerance=1.0))
        lines.append(
            (
                "boundary",
                LayerSpec(
                    "Study area",
                    "",
                    [(BOUNDARY_COLOR, "boundary", "line")],
                    "Study area",
                    kind="line",
                    show=True,
                    color=BOUNDARY_COLOR,
                    pane="urbangeo-boundary",
                    weight=2.5,
                    opacity=0.9,
                ),
            )
        )
    if points is not None and len(points):
        pts = points.copy()
        cols = [c for c in (C.POINT_ID, C.REGION_ID, C.HEADING) if c in pts.columns]
        pts = gpd.GeoDataFrame(pts[cols], geometry=pts.geometry, crs=points.crs)
        ptip = [(c, c.replace("_", " ")) for c in cols]
        if C.POINT_ID in pts:
            keys = pts[C.POINT_ID].map(_key)
            if point_captions is not None:
                captions = {_key(k): v for k, v in point_captions.items()}
                pts["caption"] = keys.map(captions).map(_short)
            if point_images:
                pts["_img"] = keys.map(dict(point_images))
        pts["_c_point"] = POINT_FILL
        layers_data["points"] = _geojson(pts)
        lines.append(
            (
                "points",
                LayerSpec(
                    "Street-view points",
                    "_c_point",
                    [(POINT_FILL, "sample point", "dot")],
                    "Street-view points",
                    kind="point",
                    show=len(pts) <= MAX_POINTS_SHOWN,  # a dense cloud hides the regions
                    tooltip=ptip,
                    color=POINT_FILL,
                    pane="urbangeo-points",
                ),
            )
        )

    OfflineMap = offline_map_class()
    west, south, east, north = regions.to_crs(C.WGS84).total_bounds
    fmap = OfflineMap(
        location=[(south + north) / 2, (west + east) / 2],
        zoom_start=13,
        tiles=None,
        control_scale=True,
    )
    fmap.get_root().header.add_child(Assets(), name="urbangeo_assets")
    fmap.get_root().title = title
    fmap.add_child(Panes())
    data_elements = {key: Data(value) for key, value in layers_data.items()}
    for element in data_elements.values():
        fmap.add_child(element)
    for spec in base:
        fmap.add_child(GeoLayer(data_elements["regions"].get_name(), spec))
    if tiles == "osm":
        folium.TileLayer("OpenStreetMap", name="OpenStreetMap (online)", show=not base).add_to(fmap)
    for spec in specs:
        fmap.add_child(GeoLayer(data_elements["regions"].get_name(), spec))
    for key, spec in lines:
        fmap.add_child(GeoLayer(data_elements[key].get_name(), spec))
    similar = similar_data(embeddings, frame.index)
    if similar is not None:
        similar["layers"] = [s.name for s in specs] + [s.name for k, s in lines if k == "edges"]
        layer = similar_layer_class()(data_elements["regions"].get_name(), SIMILAR_LAYER, similar)
        fmap.add_child(layer)
    folium.LayerControl(collapsed=False).add_to(fmap)
    shown = [*base, *specs, *(spec for _, spec in lines)]
    entries = [
        {"layer": s.name, "title": s.legend_title, "items": s.legend} for s in shown if s.legend
    ]
    if similar is not None:
        entries.append(similar_legend())
    fmap.add_child(Legend(entries))
    # Keep the regions clear of the layer list and the legend on the right.
    fmap.fit_bounds([[south, west], [north, east]], padding_bottom_right=(270, 10))
    return fmap


def similar_data(embeddings: pd.DataFrame | None, region_ids: pd.Index) -> dict | None:
    """What the page needs to outline similar regions: the ids of the regions on the map with
    a non-zero embedding, their unit-length vectors as little-endian float16 in base64, the
    dimension, the number to outline and the colours (None: no embeddings, fewer than two, or
    more than :data:`MAX_SIMILAR_REGIONS`)."""
    if embeddings is None:
        return None
    frame = embeddings[embeddings.index.astype(str).isin(region_ids)]
    values = frame.to_numpy(dtype=np.float64)
    norms = np.linalg.norm(values, axis=1)
    frame, values, norms = frame[norms > 0], values[norms > 0], norms[norms > 0]
    if len(frame) < 2:
        return None
    if len(frame) > MAX_SIMILAR_REGIONS:
        message(
            f"The map leaves out the similar-region highlighting: {len(frame):,} embedded "
            f"regions, more than {MAX_SIMILAR_REGIONS:,} (use `urbangeo similar`)."
        )
        return None
    unit = (values / norms[:, None]).astype("<f2")
    return {
        "ids": [str(i) for i in frame.index],
        "dim": int(unit.shape[1]),
        "vectors": base64.b64encode(unit.tobytes()).decode("ascii"),
        "top": SIMILAR_TOP,
        "color": SIMILAR_COLOR,
        "query_color": QUERY_COLOR,
    }


def similar_legend() -> dict:
    """The legend entry of the similar-regions layer (it says what a click does)."""
    return {
        "layer": SIMILAR_LAYER,
        "title": "Similar regions: click a region",
        "items": [
            (QUERY_COLOR, "the region clicked", "line"),
            (
                SIMILAR_COLOR,
                f"its {SIMILAR_TOP} most similar regions (cosine similarity of embeddings)",
                "line",
            ),
        ],
    }


def _edge_layer(regions: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, LayerSpec] | None:
    """The edge cells of ``regions`` (column ``edge``) and their layer; None without any."""
    if EDGE not in regions:
        return None
    edge = regions[EDGE].fillna(False).astype(bool).to_numpy()
    if not edge.any():
        return None
    cells = regions.loc[edge, [C.REGION_ID, regions.geometry.name]].copy()
    cells[C.REGION_ID] = cells[C.REGION_ID].astype(str)
    reasons = regions.loc[edge, EXCLUDED] if EXCLUDED in regions else None
    left_out = reasons is not None and bool(reasons.notna().any())
    cells[EXCLUDED] = reasons.to_numpy() if reasons is not None else None
    cells["_c_edge"] = EDGE_COLOR
    what = "left out of training, clusters and predictions" if left_out else "kept"
    fields = [(C.REGION_ID, "region"), (EXCLUDED, "left out")]
    spec = LayerSpec(
        "Edge cells",
        "_c_edge",
        [(EDGE_COLOR, f"edge cell, {what} ({int(edge.sum())} regions)", "box")],
        "Edge cells (mostly outside the study area or its image data)",
        show=True,
        tooltip=fields,
        details=fields,
        opacity=0.35,
        outline="#444444",
        dash="4 3",
    )
    return cells, spec


def _key(value: object) -> str:
    """An id as text (a point id read as 3.0 is "3")."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _lines(geoms: gpd.GeoDataFrame | gpd.GeoSeries, *, tolerance: float) -> gpd.GeoDataFrame:
    """Geometries only, simplified by ``tolerance`` (in their CRS's units; metres for urbangeo's
    grids), for drawing."""
    series = geoms.geometry if isinstance(geoms, gpd.GeoDataFrame) else geoms
    series = series[series.notna() & ~series.is_empty]
    if series.crs is not None and series.crs.is_projected:
        series = series.simplify(tolerance)
    return gpd.GeoDataFrame(geometry=series.reset_index(drop=True), crs=series.crs)


def _short(text: object) -> object:
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    return text if len(text) <= CAPTION_CHARS else text[: CAPTION_CHARS - 1] + "…"


def write_map(fmap, path: str | os.PathLike) -> Path:
    """Render ``fmap`` to ``path`` atomically (a temporary file replaced in one step)."""
    return write_text_atomic(path, fmap.get_root().render())
