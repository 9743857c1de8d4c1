"""``urbangeo run``: every stage for a city, resumable."""

from __future__ import annotations

from pathlib import Path

import click

from urbangeo import constants as C
from urbangeo.pipeline import run_city
from urbangeo_cli._common import interval_options, stage_command


@click.command()
@click.option(
    "--city",
    default=C.DEFAULT_CITY,
    show_default=True,
    metavar="NAME",
    help="A bundled city (see `urbangeo cities`).",
)
@click.option(
    "-o",
    "--out",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder. Default: a folder named after the city in the current directory.",
)
@click.option(
    "--cell-size",
    type=float,
    default=C.DEFAULT_CELL_SIZE_M,
    show_default=True,
    metavar="METRES",
    help="Side of the square regions.",
)
@interval_options
@stage_command
def run(city, run_dir, cell_size, network, interval, merge_tolerance) -> None:
    """Run the pipeline for a city, offline, into one run folder.

    \b
    Stages so far: grid (regions) and sample (roads, street-view points).
    Output: RUN_DIR/run.gpkg with layers boundary, regions, roads, sv_points, which QGIS
    opens as it is. A stage already done with the same settings is skipped, so rerunning
    after an interruption continues where it stopped; changing a setting redoes that stage
    and those after it.

    \b
    Example:
      urbangeo run          # the default city, kotka, into ./kotka/
      urbangeo run --city helsinki --cell-size 250 -o runs/helsinki
    """
    run_city(
        run_dir,
        city=city,
        cell_size=cell_size,
        network=network,
        interval=interval,
        merge_tolerance=merge_tolerance,
    )
