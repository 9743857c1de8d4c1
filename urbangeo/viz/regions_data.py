"""The regions of the offline map as compact data (issue #16), for the page's canvas code
(:mod:`urbangeo.viz.regions_js`, where the format is described).

The regions are not GeoJSON but each region's outline as integer micro-degrees in a typed array
(base64), each value as float32 (categories as codes). Up to :data:`INLINE_REGIONS` regions the
page holds everything itself. Above, the captions and thumbnails are written beside it, one
``captions_N.js`` per spatial chunk of about :data:`CHUNK_REGIONS` regions, loaded when a
tooltip or popup needs them. Above :data:`AGGREGATE_REGIONS` regions the page holds blocks of
k × k cells (each value's mean, a category's most common value; at most about
:data:`MAX_BLOCKS` blocks) and, once zoomed in so that a cell is at least :data:`DRILL_PX`
pixels wide, the cells of the chunks in view (``cells_N.js``, at most :data:`MAX_VIEW_CHUNKS`
at a time).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from urbangeo import constants as C

__all__ = [
    "AGGREGATE_REGIONS",
    "INLINE_REGIONS",
    "Column",
    "categorical",
    "regions_page",
]

#: Up to this many regions the page holds the captions and thumbnails itself (one file);
#: above, they are written beside it in chunks loaded on demand.
INLINE_REGIONS = 20_000
#: Above this many regions the page shows blocks of k × k cells, and cells when zoomed in.
AGGREGATE_REGIONS = 200_000
#: About how many regions one chunk file holds (regions near each other share a chunk).
CHUNK_REGIONS = 4096
#: About the most blocks of the aggregated view.
MAX_BLOCKS = 50_000
#: The aggregated view shows cells once a cell is this many screen pixels wide...
DRILL_PX = 3.0
#: ...and the view covers at most this many chunks.
MAX_VIEW_CHUNKS = 40
#: The page's own field for the block sizes of the aggregated view.
COUNT = "_count"


def _b64(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


@dataclass
class Column:
    """One field of the regions as the page holds it: float32 values (NaN: none) or category
    codes (0: none, k: ``cats[k - 1]``)."""

    key: str
    label: str
    values: np.ndarray
    cats: list[str] | None = None

    @property
    def schema(self) -> dict:
        out: dict = {"key": self.key, "label": self.label, "type": "c" if self.cats else "f"}
        if self.cats is not None:
            out["type"], out["cats"] = "c", self.cats
        return out

    def encode(self, rows: np.ndarray | slice = slice(None)) -> str:
        values = self.values[rows]
        return _b64(values, "<u2" if self.cats is not None else "<f4")


def categorical(key: str, label: str, series: pd.Series) -> Column:
    """Codes of ``series`` (sorted categories; numbers in numeric order, as text)."""
    present = series.dropna()
    cats = sorted(present.unique().tolist(), key=lambda v: (isinstance(v, str), v))
    codes = (pd.Categorical(series, categories=cats).codes + 1).astype(np.uint16)
    return Column(key, label, codes, [id_text(v) for v in cats])


def id_text(value: object) -> str:
    """An id or category as text (a value read as 3.0 is "3")."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


@dataclass
class _Rings:
    """Region outlines in WGS84 as the page draws them: the exterior ring of every polygon
    part (holes are not drawn), closing vertex dropped, as integer micro-degrees."""

    coords: np.ndarray  # (vertices, 2) int32 lon, lat × 1e6
    start: np.ndarray  # ring r: coords[start[r]:start[r + 1]]
    region: np.ndarray  # ring → region index

    @classmethod
    def of(cls, geoms: gpd.GeoSeries) -> _Rings:
        geoms = geoms.to_crs(C.WGS84) if geoms.crs is not None else geoms
        parts, region = shapely.get_parts(geoms.to_numpy(), return_index=True)
        rings = shapely.get_exterior_ring(parts)
        ok = ~shapely.is_empty(rings)
        rings, region = rings[ok], region[ok]
        coords, index = shapely.get_coordinates(rings, return_index=True)
        counts = np.bincount(index, minlength=len(rings))
        closing = np.cumsum(counts) - 1
        keep = np.ones(len(coords), bool)
        keep[closing] = False
        micro = np.round(coords[keep] * 1e6).astype(np.int32)
        start = np.concatenate([[0], np.cumsum(counts - 1)]).astype(np.int64)
        return cls(micro, start, region.astype(np.int64))

    def select(self, regions: np.ndarray) -> tuple[_Rings, np.ndarray]:
        """The rings of ``regions`` (sorted indices), renumbered 0..len(regions)-1."""
        ring_ids = np.flatnonzero(np.isin(self.region, regions))
        counts = self.start[ring_ids + 1] - self.start[ring_ids]
        first = np.repeat(self.start[ring_ids], counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        local = np.searchsorted(regions, self.region[ring_ids])
        rings = _Rings(
            self.coords[first + offset],
            np.concatenate([[0], np.cumsum(counts)]),
            local,
        )
        return rings, ring_ids

    def encode(self, n_regions: int) -> dict:
        counts = np.diff(self.start)
        out: dict = {"coords": _b64(self.coords.ravel(), "<i4")}
        plain = len(counts) == n_regions and np.array_equal(self.region, np.arange(n_regions))
        if not (plain and (counts == 4).all()):
            out["start"] = _b64(self.start, "<u4")
        if not plain:
            out["ring"] = _b64(self.region, "<i4")
        return out

    def bounds(self, n_regions: int) -> np.ndarray:
        """(n_regions, 4) west, south, east, north in degrees (NaN: no ring)."""
        out = np.full((n_regions, 4), np.nan)
        if not len(self.coords):
            return out
        ring_of_vertex = np.repeat(np.arange(len(self.start) - 1), np.diff(self.start))
        region = self.region[ring_of_vertex]
        lon, lat = self.coords[:, 0] / 1e6, self.coords[:, 1] / 1e6
        for col, values, fn in (
            (0, lon, np.fmin),
            (1, lat, np.fmin),
            (2, lon, np.fmax),
            (3, lat, np.fmax),
        ):
            fn.at(out[:, col], region, values)
        return out


def _mercator(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leaflet's Web Mercator, scaled to 0..1 (x east, y south), as the page projects."""
    lat = np.clip(lat, -85.0511287798, 85.0511287798)
    s = np.sin(np.radians(lat))
    return (lon + 180) / 360, 0.5 - np.log((1 + s) / (1 - s)) / (4 * np.pi)


def _bins(xy: np.ndarray, size: float) -> np.ndarray:
    """Square bin (as one integer) of each point, bins of ``size`` from the points' minimum."""
    cells = np.floor((xy - xy.min(axis=0)) / size).astype(np.int64)
    return cells[:, 1] * (int(cells[:, 0].max()) + 1) + cells[:, 0]


@dataclass
class _Page:
    """What :func:`urbangeo.viz.maps.build_map` hands to the page and to
    :func:`urbangeo.viz.maps.write_map`."""

    data: dict
    files: dict[str, str] = field(default_factory=dict)


def regions_page(
    geoms: gpd.GeoSeries,
    ids: list[str],
    columns: list[Column],
    captions: list[str | None] | None,
    images: list[str | None] | None,
    *,
    inline: int,
    aggregate: int,
    lonlat: gpd.GeoSeries | None = None,
) -> _Page:
    """The regions' data for the page, and the chunk files beside it (module docstring);
    ``lonlat``: ``geoms`` already in WGS84, when the caller has them."""
    n = len(ids)
    rings = _Rings.of(geoms if lonlat is None else lonlat)
    bounds = rings.bounds(n)
    has_extra = bool(captions and any(captions)) or bool(images and any(images))
    fields = [c.schema for c in columns]
    data: dict = {"n": n, "fields": fields, "chunks": [], "blocks": None, "cells": None}
    data["extra"] = False
    data["drill_px"], data["max_chunks"] = DRILL_PX, MAX_VIEW_CHUNKS
    # Median cell width in 0..1 Mercator units (to know when cells are big enough to draw).
    mx0, _ = _mercator(bounds[:, 0], bounds[:, 1])
    mx1, _ = _mercator(bounds[:, 2], bounds[:, 3])
    width = mx1 - mx0
    data["cell_size"] = float(np.nanmedian(width)) if np.isfinite(width).any() else 0.0

    chunked = n > inline or n > aggregate
    if not chunked:
        cells: dict = {"ids": ids, "geom": rings.encode(n)}
        cells["cols"] = {c.key: c.encode() for c in columns}
        if captions is not None:
            cells["caption"] = captions
        if images is not None:
            cells["img"] = images
        data["cells"] = cells
        return _Page(data)

    # Spatial chunks: regions binned by their centre in Mercator, about CHUNK_REGIONS each.
    cx, cy = _mercator((bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2)
    centre = np.column_stack([np.nan_to_num(cx), np.nan_to_num(cy)])
    side = max(float(np.ptp(centre[:, 0])), float(np.ptp(centre[:, 1])), 1e-12)
    per_side = max(1, int(np.ceil(np.sqrt(n / CHUNK_REGIONS))))
    _, chunk = np.unique(_bins(centre, side / per_side * (1 + 1e-9)), return_inverse=True)
    order = np.argsort(chunk, kind="stable")  # regions of a chunk in their order
    ends = np.cumsum(np.bincount(chunk))
    starts = ends - np.bincount(chunk)
    files: dict[str, str] = {}
    for c, (a, b) in enumerate(zip(starts, ends, strict=True)):
        members = order[a:b]
        box = bounds[members]
        (x0, x1), (y1, y0) = _mercator(
            np.array([np.nanmin(box[:, 0]), np.nanmax(box[:, 2])]),
            np.array([np.nanmin(box[:, 1]), np.nanmax(box[:, 3])]),
        )
        data["chunks"].append([float(x0), float(y0), float(x1), float(y1), len(members)])
        if has_extra:
            extra: dict = {}
            if captions is not None:
                extra["caption"] = [captions[i] for i in members]
            if images is not None:
                extra["img"] = [images[i] for i in members]
            files[f"captions_{c}.js"] = _chunk_js("captions", c, extra)
        if n > aggregate:
            part, _ = rings.select(members)
            cells = {
                "ids": [ids[i] for i in members],
                "geom": part.encode(len(members)),
                "cols": {col.key: col.encode(members) for col in columns},
            }
            files[f"cells_{c}.js"] = _chunk_js("cells", c, cells)
    data["extra"] = has_extra
    if n <= aggregate:
        data["cells"] = {
            "ids": ids,
            "geom": rings.encode(n),
            "cols": {c.key: c.encode() for c in columns},
            "chunk": _b64(chunk, "<u4"),
        }
    else:
        data["blocks"] = _blocks(geoms, columns)
        data["fields"].append({"key": COUNT, "label": "regions in the block", "type": "f"})
    return _Page(data, files)


def _chunk_js(kind: str, index: int, payload: dict) -> str:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return f"urbangeoChunk({json.dumps(kind)},{index},{body});\n"


def _blocks(geoms: gpd.GeoSeries, columns: list[Column]) -> dict:
    """The aggregated view: squares of k × k median cells (k so that at most about
    :data:`MAX_BLOCKS` hold regions), each with the mean of every value and the most common
    category (an empty one counts) of the regions whose centre falls in it."""
    n = len(geoms)
    centres = shapely.get_coordinates(shapely.centroid(geoms.to_numpy()))
    boxes = shapely.bounds(geoms.to_numpy())
    cell = float(np.nanmedian(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    k = max(1, int(np.ceil(np.sqrt(n / MAX_BLOCKS))))
    origin = np.nanmin(boxes[:, :2], axis=0)
    size = k * cell
    ij = np.floor((centres - origin) / size).astype(np.int64)
    key = ij[:, 1] * (int(ij[:, 0].max()) + 1) + ij[:, 0]
    uniq, inverse = np.unique(key, return_inverse=True)
    first = ij[np.unique(inverse, return_index=True)[1]]
    corner = origin + first * size
    squares = shapely.box(corner[:, 0], corner[:, 1], corner[:, 0] + size, corner[:, 1] + size)
    nb = len(uniq)
    counts = np.bincount(inverse, minlength=nb)
    cols: dict[str, str] = {COUNT: _b64(counts, "<f4")}
    for col in columns:
        if col.cats is None:
            values = col.values.astype(np.float64)
            ok = np.isfinite(values)
            total = np.bincount(inverse[ok], weights=values[ok], minlength=nb)
            seen = np.bincount(inverse[ok], minlength=nb)
            with np.errstate(invalid="ignore", divide="ignore"):
                cols[col.key] = _b64(np.where(seen > 0, total / seen, np.nan), "<f4")
        elif len(col.cats) <= 64:
            width = len(col.cats) + 1
            tally = np.bincount(inverse * width + col.values, minlength=nb * width)
            cols[col.key] = _b64(tally.reshape(nb, width).argmax(axis=1), "<u2")
    rings = _Rings.of(gpd.GeoSeries(squares, crs=geoms.crs))
    return {
        "ids": [f"block {i}" for i in range(nb)],
        "geom": rings.encode(nb),
        "cols": cols,
        "k": k,
    }
