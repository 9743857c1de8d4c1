"""``urbangeo merge``: assemble the shards of a stage (tiles, streetview, caption, embed,
predict) into the run."""

from __future__ import annotations

from pathlib import Path

import click

from urbangeo.shard import SHARDED_STAGES, merge_shards
from urbangeo_cli._common import stage_command
from urbangeo_cli._options import FILE


@click.command()
@click.argument("stage", type=click.Choice(SHARDED_STAGES))
@click.option("--gpkg", "gpkg", required=True, type=FILE, help="The run's GeoPackage.")
@click.option(
    "--shards",
    "count",
    required=True,
    type=click.IntRange(min=1),
    help="How many shards the stage ran in (the N of --shard I/N).",
)
@click.option("--keep", is_flag=True, help="Keep the shard folders (RUN/shards/STAGE/) after.")
@stage_command
def merge(stage: str, gpkg: Path, count: int, keep: bool) -> None:
    """Assemble the N shards of STAGE (run with --shard I/N) into the run's GeoPackage.

    \b
    Every shard must be done, made for the run's current regions and inputs and with the
    same settings; the result is the stage's record, layers and files as an unsharded run
    writes them. Shards not finished are named, with the command that finishes them.

    \b
    Example (a Slurm array job of 4 tasks, then one merge):
      urbangeo tiles --gpkg kotka/run.gpkg --shard $((SLURM_ARRAY_TASK_ID + 1))/4
      urbangeo merge tiles --gpkg kotka/run.gpkg --shards 4
    """
    merge_shards(gpkg, stage, count, keep=keep)
