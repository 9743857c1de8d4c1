"""Road lines from a local OSM extract (.osm.pbf, .osm, .osm.bz2), a vector file, or online.

All sources end as the same table: one LineString per road piece in a metric CRS, clipped to
the boundary, with ``road_id``, ``osm_id``, ``highway``, ``name`` and ``length_m``. Which roads
count is decided by the ``network`` type on the ``highway`` tag, the same way for every source
(it follows osmnx's network types):

- ``drive``: public streets that cars drive, the roads street-view cars cover (no service
  roads, tracks, paths, footways or cycleways);
- ``walk``: everything walkable (no motorways or trunk roads);
- ``all``: every way with a ``highway`` tag that is not abandoned, planned or an area.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.geo.crs import metric_crs
from urbangeo.geo.linemerge import first_undirected
from urbangeo.io.osm import OSM_ID, open_extract

_NOT_ROADS = frozenset(
    [
        "abandoned",
        "bus_guideway",
        "construction",
        "elevator",
        "escalator",
        "no",
        "planned",
        "platform",
        "proposed",
        "raceway",
        "razed",
        "rest_area",
        "services",
    ]
)
EXCLUDED_HIGHWAYS: dict[str, frozenset[str]] = {
    "drive": _NOT_ROADS
    | frozenset(
        [
            "bridleway",
            "corridor",
            "cycleway",
            "footway",
            "path",
            "pedestrian",
            "service",
            "steps",
            "track",
        ]
    ),
    "walk": _NOT_ROADS
    | frozenset(["cycleway", "motorway", "motorway_link", "trunk", "trunk_link"]),
    "all": _NOT_ROADS,
}
_PYROSM_NETWORK = {"drive": "driving", "walk": "walking", "all": "all"}
XML_SUFFIXES = (".osm", ".osm.bz2", ".xml")
ROAD_FILE_HINT = (
    "Give an OSM extract (.osm.pbf, .osm, .osm.bz2) or a line vector file "
    "(GeoPackage, GeoJSON, Shapefile)."
)

ROAD_COLUMNS = [C.ROAD_ID, "osm_id", C.HIGHWAY, C.NAME, C.LENGTH_M]


def load_roads(
    source: str | os.PathLike | None,
    *,
    boundary: gpd.GeoDataFrame,
    network: str = C.DEFAULT_NETWORK,
    crs: object | None = None,
) -> gpd.GeoDataFrame:
    """Roads inside ``boundary`` from ``source``, in ``crs`` (default: local UTM).

    ``source`` is a ``.osm.pbf`` file (read with pyrosm), an OSM XML file (``.osm``,
    ``.osm.bz2``; read with osmnx), any line vector file GDAL reads (an osmnx edges GeoPackage,
    a Shapefile...), or ``None`` to download the network with osmnx (needs the internet).
    No road inside the boundary gives a warning and an empty table, not an error.
    """
    if network not in C.NETWORK_TYPES:
        raise InputError(
            f"Unknown network type {network!r}.",
            hint=f"Choose one of: {', '.join(C.NETWORK_TYPES)} (default {C.DEFAULT_NETWORK}).",
        )
    target = metric_crs(boundary, crs)
    area = boundary.to_crs(C.WGS84).union_all()
    if source is None:
        raw = _read_online(area, network)
        label = "OpenStreetMap (online)"
    else:
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise InputError(f"Road file {path} does not exist.")
        name = path.name.lower()
        try:
            if name.endswith(".pbf"):
                raw = _read_pbf(path, area, network)
            elif name.endswith(XML_SUFFIXES):
                raw = _read_xml(path)
            else:
                raw = gpd.read_file(path, engine="pyogrio")
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"Cannot read road file {path}: {type(exc).__name__}: {exc}", hint=ROAD_FILE_HINT
            ) from exc
        if raw.crs is None:
            raise InputError(f"Road file {path} has no CRS.", hint="Give the file a CRS.")
    return _clean(raw, boundary=boundary.to_crs(target), network=network, crs=target, label=label)


def _read_pbf(path: Path, area: shapely.Geometry, network: str) -> gpd.GeoDataFrame:
    extract = open_extract(path, bbox=area.envelope, label="road file", hint=ROAD_FILE_HINT)
    edges = extract.roads(network=_PYROSM_NETWORK[network])
    return edges.rename(columns={OSM_ID: "osm_id"})


def _read_xml(path: Path) -> gpd.GeoDataFrame:
    from urbangeo.geo.online import configured_osmnx

    ox = configured_osmnx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = ox.graph_from_xml(path, simplify=False, retain_all=True)
    if graph.number_of_edges() == 0:
        return gpd.GeoDataFrame({"osmid": [], C.HIGHWAY: []}, geometry=[], crs=C.WGS84)
    return ox.graph_to_gdfs(graph, nodes=False).reset_index(drop=True)


def _read_online(area: shapely.Geometry, network: str) -> gpd.GeoDataFrame:
    from urbangeo.geo.online import configured_osmnx

    ox = configured_osmnx()
    try:
        graph = ox.graph_from_polygon(
            area, network_type=network, simplify=False, retain_all=True, truncate_by_edge=True
        )
    except Exception as exc:
        raise InputError(
            f"Could not download the road network ({type(exc).__name__}: {exc}).",
            hint="Downloading needs the internet. Offline, pass --roads FILE "
            "(.osm.pbf, .osm, .osm.bz2 or a line vector file) or use a bundled --city "
            "(Python: load_roads(FILE, ...), e.g. get_city('kotka').osm_path()).",
        ) from exc
    return ox.graph_to_gdfs(graph, nodes=False).reset_index(drop=True)


def _first(value: object) -> object:
    """osmnx merges tags of simplified edges into lists; keep the first value."""
    if isinstance(value, list | tuple | np.ndarray):
        return value[0] if len(value) else None
    return value


def _first_undirected(geoms: np.ndarray) -> np.ndarray:
    """Mask of the geometries that do not repeat an earlier one in either direction."""
    mask = np.zeros(len(geoms), dtype=bool)
    valid = np.flatnonzero(~shapely.is_missing(geoms))
    mask[valid[first_undirected(geoms[valid])]] = True
    return mask


def _text(values: np.ndarray) -> np.ndarray:
    """Strings with None for missing values (GeoPackage NULL)."""
    return np.array([None if pd.isna(v) else str(v) for v in values], dtype=object)


def _clean(
    raw: gpd.GeoDataFrame,
    *,
    boundary: gpd.GeoDataFrame,
    network: str,
    crs: object,
    label: str,
) -> gpd.GeoDataFrame:
    frame = raw.to_crs(crs)
    highway = (
        frame[C.HIGHWAY].map(_first).astype("string")
        if C.HIGHWAY in frame
        else pd.Series(pd.NA, index=frame.index, dtype="string")
    )
    keep = ~highway.isin(EXCLUDED_HIGHWAYS[network]).fillna(False).to_numpy(bool)
    osm_col = next((c for c in ("osm_id", "osmid", "id") if c in frame), None)
    osm_id = frame[osm_col].map(_first) if osm_col else pd.Series(pd.NA, index=frame.index)
    name = frame[C.NAME].map(_first) if C.NAME in frame else pd.Series(pd.NA, index=frame.index)

    # osmnx graphs hold a two-way street once per direction; the layer holds it once.
    keep &= _first_undirected(frame.geometry.values)
    geoms = frame.geometry.values[keep]
    clipped = shapely.intersection(geoms, boundary.union_all())
    parts, index = shapely.get_parts(clipped, return_index=True)
    is_line = shapely.get_type_id(parts) == 1  # LineString
    parts, index = parts[is_line], index[is_line]
    lengths = shapely.length(parts)
    nonzero = lengths > 0
    parts, index, lengths = parts[nonzero], index[nonzero], lengths[nonzero]

    rows = np.flatnonzero(keep)[index]
    roads = gpd.GeoDataFrame(
        {
            C.ROAD_ID: np.arange(len(parts), dtype="int64"),
            "osm_id": _text(osm_id.to_numpy()[rows]),
            C.HIGHWAY: _text(highway.to_numpy()[rows]),
            C.NAME: _text(name.to_numpy()[rows]),
            C.LENGTH_M: lengths,
        },
        geometry=parts,
        crs=crs,
    )
    if roads.empty:
        warnings.warn(
            f"No {network} roads from {label} lie inside the boundary; the roads layer is empty.",
            UrbangeoWarning,
            stacklevel=3,
        )
    return roads
