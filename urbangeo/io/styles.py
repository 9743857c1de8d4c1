"""Layer styles stored in the run's GeoPackage, so that QGIS opens every layer styled.

QGIS keeps a GeoPackage's styles in its ``layer_styles`` table (one row per style: the QML, an
SLD, whether it is the layer's default) and applies a layer's default style whenever it opens
the layer (drag and drop, the browser, ``QgsVectorLayer(path|layername=...)``). This module
builds urbangeo's styles from the layers' own data and writes them into that table:

* ``regions``: outlines, edge cells (:mod:`urbangeo.imagery.edges`) hatched grey;
  ``boundary``: a dark outline; ``roads``: grey lines;
* ``clusters``: categorised, one colour per cluster (the palette of the maps and plots),
  excluded edge cells hatched grey;
* ``predictions``: graduated on the first indicator's prediction (quantile classes of the
  predicted and observed values together, viridis), with each indicator's predicted, observed
  and residual (diverging, symmetric around 0) styles stored beside it, non-default, to pick
  in QGIS's Layer Properties → Style → Load Style (from the database);
* ``sv_points`` and ``images``: small markers that stand out on any fill (dark fill, white
  ring).

Use: ``write_styles(gpkg_path, styles_for(layers))``; rows urbangeo wrote earlier for the same
layers are replaced, styles a user saved are kept (no longer the default).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.imagery.edges import EDGE, EXCLUDED
from urbangeo.viz.colors import CATEGORICAL, DIVERGING, SEQUENTIAL, ramp
from urbangeo.viz.qml import Category, Range, Renderer, Symbol, fmt, qml, sld

TABLE = "layer_styles"
#: The ``owner`` of the rows urbangeo writes (rows of other owners are the user's).
OWNER = "urbangeo"
#: Number of classes of the graduated styles.
CLASSES = 5

#: Street-view points and image centres: a dark dot with a white ring, distinct from every
#: cluster colour and ramp colour underneath.
POINT = Symbol("marker", "#111111", outline="#ffffff", width=0.4, size=2.4)
REGION_OUTLINE = Symbol("fill", None, outline="#3b6ea8", width=0.3)
BOUNDARY_OUTLINE = Symbol("fill", None, outline="#222222", width=0.8)
ROAD = Symbol("line", "#8c8c8c", width=0.3)
#: Regions with no class (no cluster, no value).
MISSING = "#bdbdbd"
#: Edge cells (mostly outside the study area or without image data): grey hatching.
EDGE_FILL = Symbol("fill", "#7f7f7f", outline="#7f7f7f", width=0.3, pattern="b_diagonal")
#: QGIS expression classifying regions as edge cells or not (``edge`` read as bool or 0/1).
EDGE_EXPRESSION = f"if(\"{EDGE}\", 'edge', 'region')"
FILL_OPACITY = 0.8
_CELL_EDGE = "#ffffff"

#: ``layer_styles`` as QGIS 3.22 creates it (through GDAL).
_CREATE = f"""CREATE TABLE "{TABLE}" ( "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
"f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" TEXT(256),
"f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, "styleSLD" TEXT,
"useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" TEXT(30),
"update_time" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"


@dataclass(frozen=True)
class LayerStyle:
    """One named style of a layer; ``default`` marks the one QGIS applies on opening."""

    name: str
    renderer: Renderer
    description: str = ""
    default: bool = True

    @property
    def qml(self) -> str:
        """The style as QML (``layer_styles.styleQML``)."""
        return qml(self.renderer)

    def sld(self, layer: str) -> str:
        """The style as SLD 1.1 (``layer_styles.styleSLD``)."""
        return sld(layer, self.renderer, title=self.name)


def _fill(color: str) -> Symbol:
    return Symbol("fill", color, outline=_CELL_EDGE, width=0.1, opacity=FILL_OPACITY)


def _colors(n: int, stops: tuple[str, ...]) -> list[str]:
    """``n`` colours evenly spaced along ``stops``."""
    if n == 1:
        return [stops[len(stops) // 2]]
    return [c or MISSING for c in ramp(np.linspace(0, 1, n), 0, 1, stops)]


def value_ranges(values: np.ndarray, *, classes: int = CLASSES) -> tuple[Range, ...]:
    """Quantile classes of ``values`` (NaN ignored), coloured along viridis."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return ()
    breaks = np.unique(np.quantile(finite, np.linspace(0, 1, classes + 1)))
    if breaks.size == 1:
        breaks = np.repeat(breaks, 2)
    colors = _colors(breaks.size - 1, SEQUENTIAL)
    return tuple(
        Range(float(lo), float(hi), f"{fmt(lo)} – {fmt(hi)}", _fill(color))
        for lo, hi, color in zip(breaks[:-1], breaks[1:], colors, strict=True)
    )


def residual_ranges(values: np.ndarray) -> tuple[Range, ...]:
    """Five classes symmetric around 0 (bound: the 98th percentile of |residual|), diverging
    from under-predicted (blue) to over-predicted (red)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return ()
    bound = float(np.percentile(np.abs(finite), 98)) or float(np.abs(finite).max()) or 1.0
    inner = [-0.6 * bound, -0.2 * bound, 0.2 * bound, 0.6 * bound]
    edges = [min(float(finite.min()), -bound), *inner, max(float(finite.max()), bound)]
    labels = [
        f"< {inner[0]:+.2f} (under-predicted)",
        f"{inner[0]:+.2f} – {inner[1]:+.2f}",
        f"{inner[1]:+.2f} – {inner[2]:+.2f} (about right)",
        f"{inner[2]:+.2f} – {inner[3]:+.2f}",
        f"> {inner[3]:+.2f} (over-predicted)",
    ]
    return tuple(
        Range(lo, hi, label, _fill(color))
        for lo, hi, label, color in zip(edges[:-1], edges[1:], labels, DIVERGING, strict=True)
    )


def region_renderer(frame: pd.DataFrame) -> Renderer:
    """Region outlines; edge cells hatched grey, when the layer marks any."""
    edge = frame[EDGE].fillna(False).astype(bool) if EDGE in frame else pd.Series(dtype=bool)
    if not edge.any():
        return Renderer("singleSymbol", REGION_OUTLINE)
    excluded = EXCLUDED in frame and bool(frame[EXCLUDED].notna().any())
    what = "edge cell, left out of the analysis" if excluded else "edge cell"
    categories = (
        Category("region", f"region ({int((~edge).sum())})", REGION_OUTLINE, sld_value="false"),
        Category("edge", f"{what} ({int(edge.sum())})", EDGE_FILL, sld_value="true"),
    )
    return Renderer(
        "categorizedSymbol", REGION_OUTLINE, EDGE_EXPRESSION, categories, sld_field=EDGE
    )


def cluster_renderer(labels: pd.Series, *, excluded: int = 0) -> Renderer:
    """One category per cluster label (tab10, as the maps), regions without one in grey;
    ``excluded`` edge cells (no cluster) hatched."""
    counts = pd.to_numeric(labels, errors="coerce").dropna().astype(int).value_counts()
    categories = [
        Category(
            str(label),
            f"{'not clustered' if label < 0 else f'cluster {label}'} ({counts[label]} regions)",
            _fill(MISSING if label < 0 else CATEGORICAL[label % len(CATEGORICAL)]),
        )
        for label in sorted(counts.index)
    ]
    if excluded:
        categories.append(Category("", f"edge cell, excluded ({excluded} regions)", EDGE_FILL))
    else:
        categories.append(Category("", "no cluster", _fill(MISSING)))
    return Renderer("categorizedSymbol", _fill(MISSING), "cluster", tuple(categories))


def targets(columns: Sequence[str]) -> list[str]:
    """Indicators with predictions (``{t}_predicted`` columns), in column order."""
    return [c.removesuffix("_predicted") for c in columns if c.endswith("_predicted")]


def prediction_styles(frame: pd.DataFrame) -> list[LayerStyle]:
    """Per indicator: predicted and observed (shared classes) and residual styles; the first
    indicator's prediction is the default."""
    out: list[LayerStyle] = []
    for t in targets(list(frame.columns)):
        pred = pd.to_numeric(frame[f"{t}_predicted"], errors="coerce").to_numpy(np.float64)
        obs_col = frame.get(f"{t}_observed")
        obs = (
            pd.to_numeric(obs_col, errors="coerce").to_numpy(np.float64)
            if obs_col is not None
            else np.array([])
        )
        shared = value_ranges(np.concatenate([pred, obs]))
        pairs = [("predicted", f"{t}_predicted")]
        if obs_col is not None:
            pairs.append(("observed", f"{t}_observed"))
        for what, column in pairs:
            out.append(
                LayerStyle(
                    f"{t} {what}",
                    Renderer(
                        "graduatedSymbol",
                        _fill(SEQUENTIAL[0]),
                        column,
                        ranges=shared,
                        ramp=SEQUENTIAL,
                    ),
                    f"urbangeo: {what} {t} (quantile classes of predicted and observed)",
                    default=not out,
                )
            )
        if f"{t}_residual" in frame:
            resid = pd.to_numeric(frame[f"{t}_residual"], errors="coerce").to_numpy(np.float64)
            out.append(
                LayerStyle(
                    f"{t} residual",
                    Renderer(
                        "graduatedSymbol",
                        _fill(DIVERGING[2]),
                        f"{t}_residual",
                        ranges=residual_ranges(resid),
                        ramp=DIVERGING,
                        method="EqualInterval",
                        symmetric=True,
                    ),
                    f"urbangeo: residual of {t} (predicted − observed, in model units: "
                    "ln(1 + y) unless predicted with log off)",
                    default=False,
                )
            )
    return out


def layer_styles(name: str, frame: pd.DataFrame) -> list[LayerStyle]:
    """urbangeo's styles of layer ``name`` built from its data ([] for layers it does not
    style); the first is the default."""
    if name == C.LAYER_REGIONS:
        text = "urbangeo: region outlines, edge cells hatched"
        return [LayerStyle("urbangeo", region_renderer(frame), text)]
    single = {
        C.LAYER_BOUNDARY: (BOUNDARY_OUTLINE, "urbangeo: study area outline"),
        C.LAYER_ROADS: (ROAD, "urbangeo: roads"),
        C.LAYER_SV_POINTS: (POINT, "urbangeo: street-view sample points"),
        C.LAYER_IMAGES: (
            Symbol("marker", "#7f7f7f", outline="#ffffff", width=0.3, size=1.6, shape="square"),
            "urbangeo: image centres",
        ),
        C.LAYER_REGION_EMBEDDINGS: (
            Symbol("fill", None, outline="#969696", width=0.2),
            "urbangeo: regions with embeddings",
        ),
    }
    if name in single:
        symbol, text = single[name]
        return [LayerStyle("urbangeo", Renderer("singleSymbol", symbol), text)]
    if name == C.LAYER_CLUSTERS and "cluster" in frame:
        excluded = int(frame[EXCLUDED].notna().sum()) if EXCLUDED in frame else 0
        renderer = cluster_renderer(frame["cluster"], excluded=excluded)
        return [LayerStyle("urbangeo", renderer, "urbangeo: clusters (categorised)")]
    if name == C.LAYER_PREDICTIONS:
        return prediction_styles(frame)
    return []


def styles_for(layers: Mapping[str, object]) -> dict[str, list[LayerStyle]]:
    """urbangeo's styles of the spatial ``layers`` it knows, by layer name (first: default)."""
    out: dict[str, list[LayerStyle]] = {}
    for name, frame in layers.items():
        if not _is_spatial(frame):
            continue  # attribute tables have no style
        styles = layer_styles(name, frame)
        if styles:
            out[name] = styles
    return out


def _is_spatial(frame: object) -> bool:
    if not isinstance(frame, gpd.GeoDataFrame):
        return False
    try:
        return frame.geometry.name in frame
    except AttributeError:  # no active geometry column
        return False


def write_styles(gpkg_path: str | os.PathLike, styles: Mapping[str, Sequence[LayerStyle]]) -> int:
    """Add ``styles`` to the GeoPackage's ``layer_styles`` table (created as QGIS does).

    For each layer, rows urbangeo wrote before are replaced and other rows (a user's) stop
    being the default. Layers not in the file, or without geometry, are skipped. Call it on
    the file being written (inside the atomic write). Returns the number of rows written.
    """
    if not any(styles.values()):
        return 0
    con = sqlite3.connect(Path(gpkg_path))
    try:
        with con:
            return add_styles(con, styles)
    finally:
        con.close()


def add_styles(con: sqlite3.Connection, styles: Mapping[str, Sequence[LayerStyle]]) -> int:
    """:func:`write_styles` on an open connection, inside the caller's transaction (it neither
    begins nor commits one): the styles land in the same commit as the caller's layers."""
    geometry = dict(con.execute("SELECT table_name, column_name FROM main.gpkg_geometry_columns"))
    wanted = {k: v for k, v in styles.items() if v and k in geometry}
    if not wanted:
        return 0
    _ensure_table(con)
    rows = 0
    for layer, chosen in wanted.items():
        con.execute(
            f'DELETE FROM main."{TABLE}" WHERE f_table_name = ? AND owner = ?', (layer, OWNER)
        )
        if any(s.default for s in chosen):
            con.execute(
                f'UPDATE main."{TABLE}" SET useAsDefault = 0 WHERE f_table_name = ?', (layer,)
            )
        for style in chosen:
            con.execute(
                f'INSERT INTO main."{TABLE}" (f_table_catalog, f_table_schema, f_table_name, '
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, "
                f"description, owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, ?, ?, "
                f"?, ?, NULL, {_NOW})",
                (
                    layer,
                    geometry[layer],
                    style.name,
                    style.qml,
                    style.sld(layer),
                    int(style.default),
                    style.description,
                    OWNER,
                ),
            )
            rows += 1
    con.execute(
        f"UPDATE main.gpkg_contents SET last_change = {_NOW} WHERE table_name = ?", (TABLE,)
    )
    return rows


def _ensure_table(con: sqlite3.Connection) -> None:
    """Create ``layer_styles`` and list it in ``gpkg_contents`` (an attributes table)."""
    exists = con.execute(
        "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
    ).fetchone()
    if exists:
        return
    con.execute(_CREATE)
    con.execute(
        "INSERT INTO main.gpkg_contents (table_name, data_type, identifier, description, "
        f"last_change) VALUES (?, 'attributes', ?, '', {_NOW})",
        (TABLE, TABLE),
    )


def read_styles(gpkg_path: str | os.PathLike) -> pd.DataFrame:
    """The ``layer_styles`` rows of a GeoPackage (empty if it has none)."""
    con = sqlite3.connect(Path(gpkg_path))
    try:
        if not con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
        ).fetchone():
            return pd.DataFrame()
        return pd.read_sql_query(f'SELECT * FROM "{TABLE}" ORDER BY id', con)
    finally:
        con.close()
