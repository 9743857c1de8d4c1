"""Choosing a metric CRS for work in metres."""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS, Proj
from pyproj.exceptions import CRSError

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.geo.limits import UTM_MAX_SCALE_ERROR, UTM_NORTH, UTM_SOUTH

PROJECTED_HINT = (
    "Give a projected CRS in metres, e.g. --crs EPSG:3067 (Finland) or the local UTM zone "
    "(EPSG:326NN north, EPSG:327NN south of the equator); leave --crs out to use the local UTM "
    "zone."
)
#: Degrees between the points where a boundary's distortion is measured.
_STEP_DEG = 0.5


def user_crs(crs: object) -> CRS:
    """``crs`` as a pyproj CRS; an unknown one is an :class:`InputError`."""
    try:
        return CRS.from_user_input(crs)
    except CRSError as exc:
        detail = str(exc).split("(Internal Proj Error:")[0].strip().rstrip(":")
        raise InputError(f"Unknown CRS {crs!r} ({detail}).", hint=PROJECTED_HINT) from exc


def grid_crs(crs: object) -> CRS:
    """``crs`` checked for a metric grid: known to PROJ, projected, with axes in metres."""
    chosen = user_crs(crs)
    if not chosen.is_projected:
        raise InputError(
            f"{crs} ({chosen.name}) is not a projected CRS: its coordinates are "
            f"{'degrees' if chosen.is_geographic else 'not on a plane'}, and the grid's cells "
            "are squares of --cell-size metres.",
            hint=PROJECTED_HINT,
        )
    axis = chosen.axis_info[0] if chosen.axis_info else None
    if axis is None or abs(axis.unit_conversion_factor - 1.0) > 1e-9:
        unit = axis.unit_name if axis is not None else "unknown units"
        raise InputError(
            f"{crs} ({chosen.name}) measures in {unit}, not metres; the grid's --cell-size and "
            "every later distance are in metres.",
            hint=PROJECTED_HINT,
        )
    return chosen


def utm_crs(frame: gpd.GeoDataFrame | gpd.GeoSeries) -> CRS:
    """The local UTM zone of ``frame``, refused where one zone cannot hold the area.

    Refused (an :class:`InputError` whose hint says to give a projected CRS or split the area)
    where UTM is not defined (south of 80°S, north of 84°N) or where the zone's scale error
    passes :data:`~urbangeo.geo.limits.UTM_MAX_SCALE_ERROR` somewhere in the area (measured at
    points every half degree around the area's convex hull, where it is largest).
    """
    area = shapely.union_all(frame.to_crs(C.WGS84).geometry.values)
    west, south, east, north = area.bounds
    where = f"The area ({west:.2f},{south:.2f},{east:.2f},{north:.2f} in degrees W,S,E,N)"
    split = "split the area into parts that each fit one zone"
    if south < UTM_SOUTH or north > UTM_NORTH:
        raise InputError(
            f"{where} reaches beyond UTM's latitudes ({UTM_SOUTH:g}° to {UTM_NORTH:g}°), where "
            "no UTM zone can hold it.",
            hint="Give a projected --crs, e.g. EPSG:3413 (Arctic) or EPSG:3031 (Antarctic) "
            f"polar stereographic, or {split}.",
        )
    try:
        utm = frame.estimate_utm_crs()
    except RuntimeError as exc:  # no zone found for the area's centre
        raise InputError(f"{where} has no UTM zone ({exc}).", hint=PROJECTED_HINT) from exc
    worst = _scale_error(utm, area)
    if not worst <= UTM_MAX_SCALE_ERROR:
        amount = (
            f"off by up to {worst:.1%}"
            if np.isfinite(worst)
            else "unbounded: part of the area lies beyond where the zone's projection works"
        )
        raise InputError(
            f"{where} is too wide for one UTM zone: in {utm.name} its lengths would be "
            f"{amount} (the limit is {UTM_MAX_SCALE_ERROR:.0%} off, about 8° of longitude either "
            "side of the zone's centre at the equator, more towards the poles).",
            hint=f"Give a projected --crs made for the whole area (e.g. an equal-area or national "
            f"CRS in metres), or {split}.",
        )
    return utm


def _scale_error(crs: CRS, area: shapely.Geometry) -> float:
    """The largest |k - 1| of ``crs``'s point scale along ``area``'s convex hull (lon/lat)."""
    hull = shapely.segmentize(shapely.boundary(shapely.convex_hull(area)), _STEP_DEG)
    xy = shapely.get_coordinates(hull)
    if len(xy) == 0:
        xy = shapely.get_coordinates(area)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        factors = Proj(crs).get_factors(xy[:, 0], xy[:, 1], errcheck=False)
    k = np.maximum(
        np.abs(np.asarray(factors.meridional_scale) - 1),
        np.abs(np.asarray(factors.parallel_scale) - 1),
    )
    return float(np.inf) if not np.isfinite(k).all() else float(k.max())


def metric_crs(frame: gpd.GeoDataFrame | gpd.GeoSeries, crs: object | None = None) -> CRS:
    """The CRS to measure ``frame`` in: ``crs`` if it is projected, else the local UTM zone.

    A geographic CRS (degrees) where metres are needed is replaced by the UTM zone with a
    warning, never used as if its units were metres.
    """
    if crs is not None:
        chosen = user_crs(crs)
        if chosen.is_projected:
            return chosen
        warnings.warn(
            f"{chosen.name} is a geographic CRS (degrees); using the local UTM zone so that "
            "distances and cell sizes are in metres.",
            UrbangeoWarning,
            stacklevel=3,
        )
    utm = frame.estimate_utm_crs()
    if utm is None:  # pragma: no cover - estimate_utm_crs returns a CRS for any valid extent
        raise ValueError("Could not estimate a UTM zone for the data's extent.")
    return utm
