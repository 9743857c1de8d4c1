"""Rebuild the bundled city GeoPackages (``boundary`` and 1 km ``regions`` layers).

The boundary of a bundled city is where its data exist and nowhere else: for a city with real
indicators (São Paulo), the union of their polygons (the r5r hexgrid, inside the extract);
otherwise the rectangle its OSM extract covers (the bounds of every highway in it, rounded
outwards to 1e-4 degrees).
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import geopandas as gpd
import shapely

from urbangeo import constants as C
from urbangeo.geo.boundary import CITIES, CITY_PREFIX, City
from urbangeo.geo.grid import make_grid
from urbangeo.io.gpkg import write_layers


def extract_bbox(city: City) -> tuple[float, float, float, float]:
    """The rounded-out WGS84 bounds of the city's OSM extract."""
    import pyrosm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edges = pyrosm.OSM(str(city.osm_path())).get_network(network_type="all")
    west, south, east, north = edges.total_bounds
    q = 1e4
    return (
        math.floor(west * q) / q,
        math.floor(south * q) / q,
        math.ceil(east * q) / q,
        math.ceil(north * q) / q,
    )


def city_area(city: City) -> gpd.GeoDataFrame:
    """The city's boundary as one row (``name``, ``source``), in its data's CRS."""
    if city.indicators is not None:
        polygons = gpd.read_file(city.indicators.path, engine="pyogrio")
        area, crs = shapely.union_all(polygons.geometry.values), polygons.crs
    else:
        area, crs = shapely.box(*extract_bbox(city)), C.WGS84
    if area.geom_type == "Polygon":
        area = shapely.MultiPolygon([area])
    return gpd.GeoDataFrame(
        {C.NAME: [city.name], C.SOURCE: [f"{CITY_PREFIX}{city.name}"]}, geometry=[area], crs=crs
    )


def build_city(city: City, out_dir: Path) -> Path:
    """Write ``out_dir/{city}.gpkg`` with layers ``boundary`` and ``regions``."""
    boundary = city_area(city)
    regions = make_grid(boundary, cell_size=C.DEFAULT_CELL_SIZE_M)
    return write_layers(
        out_dir / f"{city.name}.gpkg",
        {C.LAYER_BOUNDARY: boundary.to_crs(regions.crs), C.LAYER_REGIONS: regions},
        overwrite=True,
    )


def main() -> None:
    """Rebuild every bundled city (or those named)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cities", nargs="*", help="Names of the cities (default: all).")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    for name in args.cities or list(CITIES):
        print(build_city(CITIES[name], args.out))


if __name__ == "__main__":
    main()
