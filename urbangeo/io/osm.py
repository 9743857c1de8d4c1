"""Reading OpenStreetMap extracts (``.osm.pbf``) with pyrosm, the same way for every caller.

:func:`open_extract` opens an extract for a bounding box in lon/lat and checks that the file is
a readable PBF; the :class:`OsmExtract` it returns reads one kind of feature per call, as a
GeoDataFrame in WGS84 (pyrosm's CRS) with pyrosm's columns. An empty selection gives an empty
GeoDataFrame (an ``id`` column, the kind's tag columns, the CRS), never ``None``. A file pyrosm
cannot read raises :class:`~urbangeo.errors.InputError` with the caller's hint.

Reads are not cached here: pyrosm's default engine already keeps each read's result on disk,
keyed by the file (path, mtime, size) and the read's parameters, bounding box included.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import shapely

from urbangeo import constants as C
from urbangeo.errors import InputError

#: How error messages name the file, unless the caller names it otherwise.
EXTRACT_LABEL = "the OSM extract"
EXTRACT_HINT = "Give an .osm.pbf file (e.g. from download.geofabrik.de or BBBike)."
PBF_SUFFIX = ".pbf"

#: pyrosm's network type (``get_network``) of every way with a ``highway`` tag.
NETWORK_ALL = "all"

#: The column every pyrosm feature table has: the OSM element id.
OSM_ID = "id"
#: The tag columns of an empty POI table (pyrosm adds more when there are features).
POI_TAGS = ("amenity", "shop", "tourism")


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # pyrosm's pandas/shapely deprecation chatter, and its "Could not find any ..."
        # warning on an empty selection, which callers handle as an empty table
        warnings.simplefilter("ignore")
        yield


def _empty(columns: Sequence[str]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({c: [] for c in (OSM_ID, *columns)}, geometry=[], crs=C.WGS84)


class OsmExtract:
    """An ``.osm.pbf`` extract opened for a bounding box (see :func:`open_extract`)."""

    def __init__(self, osm: Any, *, path: Path, label: str, hint: str) -> None:
        self._osm = osm
        self.path = path
        self._label = label
        self._hint = hint

    def _read(
        self, read: Callable[..., gpd.GeoDataFrame | None], columns: Sequence[str], **kwargs: Any
    ) -> gpd.GeoDataFrame:
        try:
            with _quiet():
                frame = read(**kwargs)
        except Exception as exc:
            raise InputError(
                f"Cannot read {self._label} {self.path}: {type(exc).__name__}: {exc}",
                hint=self._hint,
            ) from exc
        return _empty(columns) if frame is None else frame

    def buildings(self) -> gpd.GeoDataFrame:
        """Buildings (``building=*``): polygons."""
        return self._read(self._osm.get_buildings, ["building"])

    def landuse(self) -> gpd.GeoDataFrame:
        """Land-use areas (``landuse=*``)."""
        return self._read(self._osm.get_landuse, ["landuse"])

    def natural(self) -> gpd.GeoDataFrame:
        """Natural features (``natural=*``): woods, water, beaches, trees..."""
        return self._read(self._osm.get_natural, ["natural"])

    def pois(self) -> gpd.GeoDataFrame:
        """Points of interest: amenities, shops and tourism features (nodes and areas)."""
        return self._read(self._osm.get_pois, POI_TAGS)

    def roads(self, *, network: str = NETWORK_ALL) -> gpd.GeoDataFrame:
        """The ways of a pyrosm ``network`` type (``"driving"``, ``"walking"``, ``"all"``...)."""
        return self._read(self._osm.get_network, [C.HIGHWAY], network_type=network)

    def tagged(
        self,
        tags: Mapping[str, bool | list[str]],
        *,
        nodes: bool = True,
        ways: bool = True,
        relations: bool = True,
    ) -> gpd.GeoDataFrame:
        """Elements with any of ``tags`` (``{key: True}`` for any value, or a list of values),
        of the element kinds asked for."""
        return self._read(
            self._osm.get_data_by_custom_criteria,
            list(tags),
            custom_filter=dict(tags),
            keep_nodes=nodes,
            keep_ways=ways,
            keep_relations=relations,
        )


def open_extract(
    path: str | os.PathLike,
    *,
    bbox: Sequence[float] | shapely.Geometry | None = None,
    label: str = EXTRACT_LABEL,
    hint: str = EXTRACT_HINT,
) -> OsmExtract:
    """Open the ``.osm.pbf`` file ``path`` for the features within ``bbox``.

    ``bbox`` is ``(west, south, east, north)`` or a polygon, in lon/lat (WGS84); ``None``
    reads the whole file. pyrosm cuts ways at the box. ``label`` names the file in error
    messages and ``hint`` tells the user what to do when it is missing or unreadable.
    """
    import pyrosm  # a heavy import, needed only by the stages that read OSM

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{label[0].upper()}{label[1:]} {path} does not exist.", hint=hint)
    if not path.name.lower().endswith(PBF_SUFFIX):
        raise InputError(f"{path} is not an .osm.pbf file.", hint=hint)
    box = bbox if bbox is None or isinstance(bbox, shapely.Geometry) else list(bbox)
    try:
        with _quiet():
            osm = pyrosm.OSM(str(path), bounding_box=box)
    except Exception as exc:
        raise InputError(
            f"Cannot read {label} {path}: {type(exc).__name__}: {exc}", hint=hint
        ) from exc
    return OsmExtract(osm, path=path, label=label, hint=hint)


def run_extract(
    gpkg: str | os.PathLike, *, roads: str | os.PathLike | None = None, city: str | None = None
) -> Path | None:
    """A run's OSM data: ``roads`` (a file), a bundled city's extract, or None (online).

    Every stage that reads OSM (sample, tiles, captions, indicators) finds it here. Without
    ``roads`` or ``city``: the extract the run's ``sample`` stage read (``urbangeo sample
    --roads FILE.osm.pbf``), else the bundled city the grid was built for or lies inside (a
    ``--bbox``, ``--boundary`` or ``--place`` within a bundled extract: see
    :func:`urbangeo.geo.boundary.run_city`), so that such a run never needs the internet.
    """
    from urbangeo.geo.boundary import get_city, run_city
    from urbangeo.io.runs import read_stage_records

    if roads is not None:
        return Path(roads)
    if city is None:
        sampled = read_stage_records(gpkg).get("sample")
        used = str(sampled.params.get("roads", "")) if sampled is not None else ""
        if used.lower().endswith(PBF_SUFFIX) and Path(used).is_file():
            return Path(used)
        bundled = run_city(gpkg)
        city = bundled.name if bundled is not None else None
    return get_city(city).osm_path() if city else None
