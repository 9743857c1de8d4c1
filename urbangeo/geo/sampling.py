"""Street-view sample points every ``interval`` metres along a road network.

The method, vectorised with shapely 2 (no Python loop per road):

1. Two-way streets count once: lines that are the same up to direction (the two edges of a
   two-way street in a directed graph) are dropped by comparing normalised geometries.
2. Road pieces that meet end to end with no junction are merged into longer lines
   (``shapely.line_merge``), so a street split into many short OSM edges is one line.
3. The merged lines are walked one after another with a single stride of ``interval``
   metres (the leftover of one line carries into the next): every line gets points exactly
   ``interval`` apart, the network gets one point per ``interval`` of its length, and short
   pieces between junctions are not each given a point of their own.
4. Points closer than ``merge_tolerance`` (default 25 m, about a junction's width) are merged
   into the first of them: these are the near-duplicates where lines meet.
5. Each point gets its ``heading``: the geodesic bearing of the road at that point, in
   degrees clockwise from true north, [0, 360) (the camera heading for a street-view request;
   the opposite view is ``heading + 180``), its lon/lat, and the ``region_id`` of the region
   that contains it (the first by row order when it lies on a shared edge).
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Geod, Transformer
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.geo.crs import metric_crs

_GEOD = Geod(ellps="WGS84")
#: Half-length of the road piece whose direction gives a point's heading.
HEADING_STEP_M = 5.0


def unique_undirected(lines: np.ndarray) -> np.ndarray:
    """Drop lines that repeat another line, in the same or the opposite direction."""
    if len(lines) == 0:
        return lines
    keys = shapely.to_wkb(shapely.normalize(lines))
    _, first = np.unique(keys, return_index=True)
    return lines[np.sort(first)]


def merge_lines(lines: np.ndarray) -> np.ndarray:
    """Merge lines that meet end to end (degree-2 nodes) into longer LineStrings."""
    if len(lines) == 0:
        return lines
    merged = shapely.line_merge(shapely.multilinestrings(lines))
    parts = shapely.get_parts(merged)
    return parts[shapely.length(parts) > 0]


def stride_positions(lengths: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions every ``interval`` along lines laid end to end: (line index, distance on it)."""
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    starts = np.concatenate([[0.0], np.cumsum(lengths)])
    total = starts[-1]
    # A tiny epsilon so that a network whose length is an exact multiple keeps its end point.
    n = math.floor(total / interval + 1e-9) + 1
    stations = np.arange(n) * interval
    line = np.searchsorted(starts, stations, side="right") - 1
    line = np.minimum(line, len(lengths) - 1)
    dist = np.minimum(stations - starts[line], lengths[line])
    return line, dist


def merge_close_points(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the points to keep: one (the first) per cluster closer than ``tolerance``."""
    n = len(points)
    if n == 0 or tolerance <= 0:
        return np.arange(n)
    tree = shapely.STRtree(points)
    left, right = tree.query(points, predicate="dwithin", distance=tolerance)
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    return np.sort(first)


def bearings(a: np.ndarray, b: np.ndarray, crs: object) -> np.ndarray:
    """Geodesic bearing from points ``a`` to ``b`` (degrees from true north, [0, 360))."""
    to_wgs = Transformer.from_crs(crs, C.WGS84, always_xy=True)
    lon1, lat1 = to_wgs.transform(shapely.get_x(a), shapely.get_y(a))
    lon2, lat2 = to_wgs.transform(shapely.get_x(b), shapely.get_y(b))
    azimuth, _, _ = _GEOD.inv(lon1, lat1, lon2, lat2)
    return np.mod(np.asarray(azimuth), 360.0)


def assign_regions(points: np.ndarray, regions: gpd.GeoDataFrame) -> np.ndarray:
    """The ``region_id`` of the region containing each point (None outside all regions)."""
    out = np.full(len(points), None, dtype=object)
    if len(points) == 0 or regions.empty:
        return out
    tree = shapely.STRtree(regions.geometry.values)
    pt, reg = tree.query(points, predicate="intersects")
    order = np.lexsort((reg, pt))  # for each point, its lowest-numbered region first
    pt, reg = pt[order], reg[order]
    first = np.concatenate([[True], pt[1:] != pt[:-1]]) if len(pt) else np.zeros(0, bool)
    out[pt[first]] = regions[C.REGION_ID].to_numpy()[reg[first]]
    return out


def sample_points(
    roads: gpd.GeoDataFrame | gpd.GeoSeries,
    *,
    interval: float = C.DEFAULT_INTERVAL_M,
    merge_tolerance: float = C.DEFAULT_MERGE_TOLERANCE_M,
    regions: gpd.GeoDataFrame | None = None,
) -> gpd.GeoDataFrame:
    """Street-view sample points along ``roads`` (see the module docstring for the method).

    ``roads`` in a geographic CRS are reprojected to their UTM zone. Returns a GeoDataFrame in
    the roads' metric CRS with ``point_id``, ``region_id`` (when ``regions`` are given, else
    None), ``heading``, ``lon`` and ``lat``.
    """
    if not (math.isfinite(interval) and interval > 0):
        raise InputError(
            f"The sampling interval must be a positive number of metres, not {interval!r}.",
            hint=f"Try the default, --interval {C.DEFAULT_INTERVAL_M:g}.",
        )
    if not (math.isfinite(merge_tolerance) and merge_tolerance >= 0):
        raise InputError(f"merge_tolerance must be >= 0 metres, not {merge_tolerance!r}.")
    if roads.crs is None:
        raise InputError("The roads have no CRS.", hint="Give the road data a CRS.")
    crs = metric_crs(roads, roads.crs)
    geoms = roads.to_crs(crs).geometry.values
    lines = shapely.get_parts(geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))])
    lines = lines[shapely.get_type_id(lines) == 1]
    lines = merge_lines(unique_undirected(shapely.force_2d(lines)))

    line, dist = stride_positions(shapely.length(lines), float(interval))
    on_line = lines[line]
    points = shapely.line_interpolate_point(on_line, dist)
    keep = merge_close_points(points, float(merge_tolerance))
    on_line, dist, points = on_line[keep], dist[keep], points[keep]

    lengths = shapely.length(on_line)
    step = np.minimum(HEADING_STEP_M, lengths / 2)
    behind = shapely.line_interpolate_point(on_line, np.clip(dist - step, 0, lengths))
    ahead = shapely.line_interpolate_point(on_line, np.clip(dist + step, 0, lengths))
    heading = bearings(behind, ahead, crs)

    to_wgs = Transformer.from_crs(crs, C.WGS84, always_xy=True)
    lon, lat = to_wgs.transform(shapely.get_x(points), shapely.get_y(points))
    region_id = (
        assign_regions(points, regions.to_crs(crs))
        if regions is not None
        else np.full(len(points), None, dtype=object)
    )
    return gpd.GeoDataFrame(
        {
            C.POINT_ID: np.arange(len(points), dtype="int64"),
            C.REGION_ID: region_id,
            C.HEADING: np.round(heading, 3),
            C.LON: np.asarray(lon),
            C.LAT: np.asarray(lat),
        },
        geometry=points,
        crs=crs,
    )
