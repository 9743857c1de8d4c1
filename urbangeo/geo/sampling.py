"""Street-view sample points every ``interval`` metres along a road network.

The method, vectorised with shapely 2 (no Python loop per road):

1. Two-way streets count once: lines that are the same up to direction (the two edges of a
   two-way street in a directed graph) are dropped by comparing normalised geometries.
2. Road pieces that meet end to end with no junction are merged into longer lines
   (``shapely.line_merge``), so a street split into many short OSM edges is one line.
   Steps 1 and 2 are :func:`urbangeo.geo.linemerge.unique_merged_coords`: shapely's results,
   computed on coordinate arrays where that is provably the same.
3. The merged lines are walked one after another with a single stride of ``interval``
   metres (the leftover of one line carries into the next): every line gets points exactly
   ``interval`` apart, the network gets one point per ``interval`` of its length, and short
   pieces between junctions are not each given a point of their own. The points are found on
   the merged lines' coordinate arrays (segment, then fraction of it, as GEOS's
   ``line_interpolate_point`` finds them), without making the merged lines.
4. Points closer than ``merge_tolerance`` (default 25 m, about a junction's width) are merged
   into the first of them: these are the near-duplicates where lines meet.
5. Each point gets its ``heading``: the geodesic bearing of the road at that point, in
   degrees clockwise from true north, [0, 360) (the camera heading for a street-view request;
   the opposite view is ``heading + 180``), its lon/lat, and the ``region_id`` of the region
   that contains it (the first by row order when it lies on a shared edge).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Geod, Transformer
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.geo.crs import metric_crs
from urbangeo.geo.limits import MAX_SV_POINTS, check_point_count
from urbangeo.geo.linemerge import PlainCoords, unique_merged_coords

_GEOD = Geod(ellps="WGS84")
#: Half-length of the road piece whose direction gives a point's heading.
HEADING_STEP_M = 5.0


class _Paths(NamedTuple):
    """Lines as coordinates: ``xy`` (complex, x + yj) of all lines laid end to end, line ``i``
    being ``xy[start[i]:start[i + 1]]``; ``at[k]``, the distance along the lines laid end to
    end of ``xy[k]`` (none between one line's last point and the next's first); ``lengths``,
    each line's length summed from its start, as GEOS sums it."""

    xy: np.ndarray
    start: np.ndarray
    at: np.ndarray
    lengths: np.ndarray

    def locate(self, line: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x, y of the points ``dist`` along lines ``line``, found as GEOS's
        ``line_interpolate_point`` finds them: the segment, then the fraction of it."""
        first, last = self.start[line], self.start[line + 1] - 1
        where = self.at[first] + dist
        seg = np.clip(np.searchsorted(self.at, where, side="right") - 1, first, last - 1)
        a, b = self.xy[seg], self.xy[seg + 1]
        span = self.at[seg + 1] - self.at[seg]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.clip(np.where(span > 0, (where - self.at[seg]) / span, 0.0), 0.0, 1.0)
        return a.real + frac * (b.real - a.real), a.imag + frac * (b.imag - a.imag)


def _paths(xy: np.ndarray, line: np.ndarray) -> _Paths:
    """:class:`_Paths` of the lines whose (complex) coordinates ``xy`` belong to lines
    ``line`` (each line's coordinates together, in order), lines of zero length dropped."""
    if len(xy) == 0:
        return _Paths(xy, np.zeros(1, dtype=np.int64), np.zeros(0), np.zeros(0))
    start = np.flatnonzero(np.concatenate([[True], line[1:] != line[:-1], [True]]))
    step = np.zeros(len(xy))  # step[k]: from xy[k] to xy[k + 1] on the same line
    step[:-1] = np.abs(np.diff(xy))  # hypot
    step[start[1:] - 1] = 0.0
    lengths = np.add.reduceat(step, start[:-1])
    positive = lengths > 0
    if not positive.all():
        owner = np.repeat(np.arange(len(start) - 1), np.diff(start))
        keep = positive[owner]
        return _paths(xy[keep], owner[keep])
    return _Paths(xy, start, np.concatenate([[0.0], np.cumsum(step[:-1])]), lengths)


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
    return _azimuths(lon1, lat1, lon2, lat2)


def _azimuths(lon1, lat1, lon2, lat2) -> np.ndarray:
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


def _road_lines(geoms: np.ndarray) -> tuple[np.ndarray, PlainCoords | None]:
    """The LineString parts of the geometries that are there and not empty, in 2D; and their
    :data:`~urbangeo.geo.linemerge.PlainCoords` where they come out on the way.

    The usual case, 2D LineStrings, takes three passes over the geometries; as each pass over
    a large network is bound by memory latency, they are kept few.
    """
    geoms = geoms[~shapely.is_missing(geoms)]
    if not (
        (shapely.get_type_id(geoms) == 1).all()
        and (shapely.get_coordinate_dimension(geoms) == 2).all()
    ):
        return _lines_2d(geoms[~shapely.is_empty(geoms)]), None
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    n = np.bincount(index, minlength=len(geoms))
    del index
    if not (n > 0).all():  # empty LineStrings, those without coordinates
        geoms, n = geoms[n > 0], n[n > 0]
    if not np.isfinite(coords).all():
        return geoms, None
    return geoms, (np.ascontiguousarray(coords).view(np.complex128).reshape(-1), n)


def _lines_2d(geoms: np.ndarray) -> np.ndarray:
    """The LineString parts of ``geoms``, in 2D (no copies where they already are)."""
    if not (shapely.get_type_id(geoms) == 1).all():
        geoms = shapely.get_parts(geoms)
        geoms = geoms[shapely.get_type_id(geoms) == 1]
    if shapely.has_z(geoms).any() or shapely.has_m(geoms).any():
        geoms = shapely.force_2d(geoms)
    return geoms


def check_sampling_settings(*, interval: float, merge_tolerance: float) -> None:
    """Refuse an interval or merge tolerance :func:`sample_points` cannot use (checked before
    any slow work, such as reading roads, by the stages that sample)."""
    if not (math.isfinite(interval) and interval > 0):
        raise InputError(
            f"The sampling interval must be a positive number of metres, not {interval!r}.",
            hint=f"Try the default, --interval {C.DEFAULT_INTERVAL_M:g}.",
        )
    if not (math.isfinite(merge_tolerance) and merge_tolerance >= 0):
        raise InputError(
            f"The merge tolerance must be 0 or more metres, not {merge_tolerance!r}.",
            hint=f"Try the default, --merge-tolerance {C.DEFAULT_MERGE_TOLERANCE_M:g}.",
        )


def sample_points(
    roads: gpd.GeoDataFrame | gpd.GeoSeries,
    *,
    interval: float = C.DEFAULT_INTERVAL_M,
    merge_tolerance: float = C.DEFAULT_MERGE_TOLERANCE_M,
    regions: gpd.GeoDataFrame | None = None,
    max_points: int = MAX_SV_POINTS,
    force: bool = False,
) -> gpd.GeoDataFrame:
    """Street-view sample points along ``roads`` (see the module docstring for the method).

    ``roads`` in a geographic CRS are reprojected to their UTM zone. Returns a GeoDataFrame in
    the roads' metric CRS with ``point_id``, ``region_id`` (when ``regions`` are given, else
    None), ``heading``, ``lon`` and ``lat``. More than ``max_points`` points (the merged
    roads' length / ``interval``, counted before any point is made) are refused unless
    ``force``: see :func:`urbangeo.geo.limits.check_point_count`.
    """
    check_sampling_settings(interval=interval, merge_tolerance=merge_tolerance)
    if roads.crs is None:
        raise InputError("The roads have no CRS.", hint="Give the road data a CRS.")
    crs = metric_crs(roads, roads.crs)
    lines, plain = _road_lines(np.asarray(roads.to_crs(crs).geometry.values))
    paths = _paths(*unique_merged_coords(lines, plain))
    del lines, plain

    lengths = paths.lengths
    check_point_count(float(lengths.sum()), float(interval), max_points=max_points, force=force)
    line, dist = stride_positions(lengths, float(interval))
    x, y = paths.locate(line, dist)
    points = shapely.points(x, y)
    keep = merge_close_points(points, float(merge_tolerance))
    line, dist, x, y, points = line[keep], dist[keep], x[keep], y[keep], points[keep]

    lengths = lengths[line]
    step = np.minimum(HEADING_STEP_M, lengths / 2)
    x0, y0 = paths.locate(line, np.clip(dist - step, 0, lengths))
    x1, y1 = paths.locate(line, np.clip(dist + step, 0, lengths))
    to_wgs = Transformer.from_crs(crs, C.WGS84, always_xy=True)
    lon, lat = to_wgs.transform(np.concatenate([x, x0, x1]), np.concatenate([y, y0, y1]))
    lon, lon0, lon1 = np.split(np.asarray(lon), 3)
    lat, lat0, lat1 = np.split(np.asarray(lat), 3)
    heading = _azimuths(lon0, lat0, lon1, lat1)
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
