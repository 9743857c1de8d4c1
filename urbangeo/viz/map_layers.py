"""The offline map's layers (:mod:`urbangeo.viz.maps`): which layers a run's products give,
each with its field, colour scale, legend and tooltip fields, and the GeoJSON of the roads,
the study area's outline and the street-view points."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from urbangeo import constants as C
from urbangeo.imagery.edges import EDGE, EXCLUDED
from urbangeo.viz.colors import DIVERGING, SEQUENTIAL, cluster_color
from urbangeo.viz.leaflet import BOUNDARY_COLOR, POINT_FILL, ROAD_COLOR, LayerSpec
from urbangeo.viz.regions_data import Column, categorical, id_text

__all__ = [
    "BELOW_MEAN",
    "CAPTION_CHARS",
    "EDGE_COLOR",
    "caption_texts",
    "edge_layer",
    "imagery_layers",
    "line_layers",
    "region_layers",
]

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
_EDGE_FIELD = "_edge"


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _value_scale(
    values: np.ndarray, *, log: bool, shared: np.ndarray | None = None
) -> tuple[dict, list[tuple[str, str]]]:
    """The sequential scale the page applies (on ln(1 + y) when ``log``: from the 2nd to the
    98th percentile) and a legend in the value's units."""
    basis = values if shared is None else shared
    transform = (lambda v: np.log1p(np.clip(v, 0, None))) if log else (lambda v: v)
    with np.errstate(invalid="ignore"):
        t_all = transform(np.asarray(basis, dtype=np.float64))
    finite = t_all[np.isfinite(t_all)]
    if finite.size == 0:
        return {"scheme": "none"}, []
    lo, hi = (float(v) for v in np.percentile(finite, [2, 98]))
    back = (lambda t: np.expm1(t)) if log else (lambda t: t)
    ticks = np.linspace(lo, hi, len(SEQUENTIAL))
    legend = [(c, _fmt(float(back(t)))) for c, t in zip(SEQUENTIAL, ticks, strict=True)]
    legend[0] = (legend[0][0], f"≤ {legend[0][1]}")
    legend[-1] = (legend[-1][0], f"≥ {legend[-1][1]}")
    return {"scheme": "seq", "lo": lo, "hi": hi, "log": log}, legend


def _residual_scale(values: np.ndarray) -> tuple[dict, list[tuple[str, str]]]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"scheme": "none"}, []
    bound = float(np.percentile(np.abs(finite), 98)) or 1.0
    ticks = np.linspace(-bound, bound, len(DIVERGING))
    legend = [(c, f"{t:+.2f}") for c, t in zip(DIVERGING, ticks, strict=True)]
    legend[0] = (legend[0][0], f"{legend[0][1]} (under-predicted)")
    legend[-1] = (legend[-1][0], f"{legend[-1][1]} (over-predicted)")
    return {"scheme": "div", "lo": -bound, "hi": bound, "log": False}, legend


def _targets(columns: list[str]) -> list[str]:
    return [c.removesuffix("_predicted") for c in columns if c.endswith("_predicted")]


def _boxes(legend: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    return [(color, label, "box") for color, label in legend]


def region_layers(
    index: pd.Index,
    *,
    clusters: pd.DataFrame | None,
    predictions: pd.DataFrame | None,
    observed: pd.DataFrame | None,
    log: bool,
    below_baseline: Collection[str],
) -> tuple[list[LayerSpec], list[Column]]:
    """The region layers (clusters; per indicator its prediction, ground truth and residual;
    ground truth of other indicators; a plain layer without any) and the fields they show, for
    the regions of ``index`` (:func:`urbangeo.viz.maps.build_map`'s arguments)."""
    n = len(index)
    specs: list[LayerSpec] = []
    columns: list[Column] = []
    tooltip: list[tuple[str, str]] = [(C.REGION_ID, "region")]

    def number(key: str, label: str, values: np.ndarray) -> None:
        columns.append(Column(key, label, np.asarray(values, dtype=np.float32)))

    if clusters is not None and "cluster" in clusters:
        labels = clusters["cluster"].reindex(index)
        column = categorical("cluster", "cluster", labels.astype("Int64").astype(object))
        columns.append(column)
        sizes = labels.value_counts().sort_index()
        legend = [
            (cluster_color(int(c)), f"cluster {int(c)} ({int(k):,} regions)")
            for c, k in sizes.items()
        ]
        tooltip.append(("cluster", "cluster"))
        scale = {"scheme": "cat", "colors": [cluster_color(int(c)) for c in column.cats or []]}
        specs.append(LayerSpec("Clusters", "cluster", _boxes(legend), "Clusters", scale=scale))

    if predictions is None:
        predictions = pd.DataFrame()
    targets = _targets(list(predictions.columns))
    for t in targets:
        pred = predictions[f"{t}_predicted"].reindex(index).to_numpy(np.float64)
        obs = predictions.get(f"{t}_observed")
        obs = obs.reindex(index).to_numpy(np.float64) if obs is not None else np.full(n, np.nan)
        resid = predictions.get(f"{t}_residual")
        resid = (
            resid.reindex(index).to_numpy(np.float64) if resid is not None else np.full(n, np.nan)
        )
        both = np.concatenate([pred, obs])
        scale_p, legend_p = _value_scale(pred, log=log, shared=both)
        scale_o, legend_o = _value_scale(obs, log=log, shared=both)
        scale_r, legend_r = _residual_scale(resid)
        unit = "ln(1+y)" if log else "y"
        fields = [
            (f"{t}_predicted", f"{t} predicted"),
            (f"{t}_observed", f"{t} observed"),
            (f"{t}_residual", f"{t} residual ({unit})"),
        ]
        for (key, label), values in zip(fields, (pred, obs, resid), strict=True):
            number(key, label, values)
        if f"{t}_split" in predictions:  # where the prediction came from (fold, test...)
            split = predictions[f"{t}_split"].reindex(index)
            columns.append(categorical(f"{t}_split", f"{t} from", split))
            fields.append((f"{t}_split", f"{t} from"))
        tooltip += fields
        name = f"Predicted {t}" + (BELOW_MEAN if t in below_baseline else "")
        specs += [
            LayerSpec(name, f"{t}_predicted", _boxes(legend_p), name, own=fields, scale=scale_p),
            LayerSpec(
                f"Observed {t}",
                f"{t}_observed",
                _boxes(legend_o),
                f"Observed {t}",
                own=fields,
                scale=scale_o,
            ),
            LayerSpec(
                f"Residual {t}",
                f"{t}_residual",
                _boxes(legend_r),
                f"Residual {t} (predicted − observed, {unit})",
                own=fields,
                scale=scale_r,
            ),
        ]

    if observed is not None:
        extra = [
            c
            for c in observed.columns
            if c not in targets and pd.api.types.is_numeric_dtype(observed[c])
        ]
        for col in extra:
            values = observed[col].reindex(index).to_numpy(np.float64)
            scale, legend = _value_scale(values, log=log)
            number(str(col), str(col), values)
            specs.append(
                LayerSpec(
                    f"Observed {col}",
                    str(col),
                    _boxes(legend),
                    f"Observed {col}",
                    own=[(str(col), str(col))],
                    scale=scale,
                )
            )
            tooltip.append((str(col), str(col)))

    if not specs:
        specs.append(
            LayerSpec(
                "Regions",
                "",
                [("#9ecae1", "region", "box")],
                "Regions",
                scale={"scheme": "const", "colors": ["#9ecae1"]},
            )
        )
    # Tooltips: the region, its cluster and the layer's own values; a click shows them all.
    head = [f for f in tooltip if f[0] in (C.REGION_ID, "cluster")]
    for spec in specs:
        spec.tooltip, spec.details, spec.opacity = head + spec.own, tooltip, FILL_OPACITY
    specs[0].show = True
    return specs, columns


def edge_layer(
    regions: gpd.GeoDataFrame, index: pd.Index, columns: list[Column]
) -> LayerSpec | None:
    """The layer of the edge cells of ``regions`` (column ``edge``), adding its fields to
    ``columns``; None without any."""
    if EDGE not in regions:
        return None
    edge = regions[EDGE].fillna(False).astype(bool).to_numpy()
    if not edge.any():
        return None
    columns.append(Column(_EDGE_FIELD, "edge cell", edge.astype(np.uint16), ["edge"]))
    reasons = regions.get(EXCLUDED)
    left_out = reasons is not None and bool(reasons[edge].notna().any())
    if reasons is not None:
        kept = pd.Series(np.where(edge, reasons.to_numpy(dtype=object), None), index=index)
        columns.append(categorical(EXCLUDED, "left out", kept))
    what = "left out of training, clusters and predictions" if left_out else "kept"
    fields = [(C.REGION_ID, "region"), (EXCLUDED, "left out")]
    return LayerSpec(
        "Edge cells",
        _EDGE_FIELD,
        [(EDGE_COLOR, f"edge cell, {what} ({int(edge.sum()):,} regions)", "box")],
        "Edge cells (mostly outside the study area or its image data)",
        show=True,
        tooltip=fields,
        details=fields,
        opacity=0.35,
        outline="#444444",
        dash="4 3",
        scale={"scheme": "const", "colors": [EDGE_COLOR], "only": True},
    )


def caption_texts(region_captions: pd.Series | None, index: pd.Index) -> list[str | None] | None:
    """The tooltip caption of each region of ``index``, clamped (None: no captions)."""
    if region_captions is None:
        return None
    texts = region_captions.copy()
    texts.index = texts.index.astype(str)
    texts = texts[~texts.index.duplicated()].reindex(index)
    return [_short(v) for v in texts]


def imagery_layers(image_list: list[str | None] | None) -> list[LayerSpec]:
    """The base layer of the regions' own images (none without images)."""
    base: list[LayerSpec] = []
    if image_list is not None and any(image_list):
        base.append(
            LayerSpec(
                "Run imagery",
                "",
                [("", "each region's overhead image (layer images, column source)", "image")],
                "Base: run imagery",
                kind="imagery",
                show=True,
                pane="urbangeo-imagery",
            )
        )
    return base


def line_layers(
    roads: gpd.GeoDataFrame | None,
    boundary: gpd.GeoDataFrame | None,
    points: gpd.GeoDataFrame | None,
    point_captions: pd.Series | None,
    point_images: Mapping[str, str] | None,
    base: list[LayerSpec],
) -> tuple[dict[str, dict], list[tuple[str, LayerSpec]]]:
    """The GeoJSON of the roads, the study area's outline and the street-view points, by key,
    and their layers (key, spec); the roads are shown when there is no ``base`` imagery."""
    layers_data: dict[str, dict] = {}
    lines: list[tuple[str, LayerSpec]] = []
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
            keys = pts[C.POINT_ID].map(id_text)
            if point_captions is not None:
                point_texts = {id_text(k): v for k, v in point_captions.items()}
                pts["caption"] = keys.map(point_texts).map(_short)
            if point_images:
                pts["_img"] = keys.map(dict(point_images))
        layers_data["points"] = _geojson(pts)
        lines.append(
            (
                "points",
                LayerSpec(
                    "Street-view points",
                    "",
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
    return layers_data, lines


def _geojson(frame: gpd.GeoDataFrame) -> dict:
    """GeoJSON in WGS84 with 1e-6° precision (about 0.1 m), NaN as null (roads, the outline,
    the points: the regions are sent as compact data)."""
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
            elif value is None or value is pd.NA:
                clean[str(key)] = None
            else:
                clean[str(key)] = value if isinstance(value, int | bool) else str(value)
        features.append(
            {"type": "Feature", "geometry": shapely.geometry.mapping(geom), "properties": clean}
        )
    return {"type": "FeatureCollection", "features": features}


def _lines(geoms: gpd.GeoDataFrame | gpd.GeoSeries, *, tolerance: float) -> gpd.GeoDataFrame:
    """Geometries only, simplified by ``tolerance`` (in their CRS's units; metres for urbangeo's
    grids), for drawing."""
    series = geoms.geometry if isinstance(geoms, gpd.GeoDataFrame) else geoms
    series = series[series.notna() & ~series.is_empty]
    if series.crs is not None and series.crs.is_projected:
        series = series.simplify(tolerance)
    return gpd.GeoDataFrame(geometry=series.reset_index(drop=True), crs=series.crs)


def _short(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    return text if len(text) <= CAPTION_CHARS else text[: CAPTION_CHARS - 1] + "…"
