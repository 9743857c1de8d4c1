"""The OpenStreetMap layers an OSM caption is made from, read once for every place."""

from __future__ import annotations

import os
from typing import Any


def load_osm_layers(
    path: str | os.PathLike, bbox: tuple[float, float, float, float], crs: Any
) -> dict[str, Any]:
    """Buildings, land use, POIs, roads, water and trees of an extract within ``bbox``."""
    from urbangeo.io.osm import NETWORK_ALL, open_extract

    extract = open_extract(path, bbox=bbox)
    layers = {
        "buildings": extract.buildings(),
        "landuse": extract.landuse(),
        "natural": extract.natural(),
        "leisure": extract.tagged({"leisure": True}, nodes=False),
        "water": extract.tagged({"water": True, "waterway": True}, nodes=False),
        "trees": extract.tagged({"natural": ["tree"]}, ways=False, relations=False),
        "pois": extract.pois(),
        "roads": extract.roads(network=NETWORK_ALL),
    }
    layers = {name: _in_crs(frame, crs) for name, frame in layers.items()}
    for frame in layers.values():
        frame.sindex  # noqa: B018 - build the spatial index once, before the threads
    return layers


def _in_crs(frame: Any, crs: Any) -> Any:
    """``frame``'s non-empty geometries in ``crs``, made valid."""
    import geopandas as gpd

    if len(frame) == 0:
        return gpd.GeoDataFrame(geometry=[], crs=crs)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty].to_crs(crs)
    # OSM polygons are often invalid (self-touching rings); GEOS needs them valid.
    invalid = ~frame.geometry.is_valid
    if invalid.any():
        frame.loc[invalid, frame.geometry.name] = frame.geometry[invalid].make_valid()
    return frame
