"""Choosing a metric CRS for work in metres."""

from __future__ import annotations

import warnings

import geopandas as gpd
from pyproj import CRS

from urbangeo.errors import UrbangeoWarning


def metric_crs(frame: gpd.GeoDataFrame | gpd.GeoSeries, crs: object | None = None) -> CRS:
    """The CRS to measure ``frame`` in: ``crs`` if it is projected, else the local UTM zone.

    A geographic CRS (degrees) where metres are needed is replaced by the UTM zone with a
    warning, never used as if its units were metres.
    """
    if crs is not None:
        chosen = CRS.from_user_input(crs)
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
