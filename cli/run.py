"""``urbangeo run`` and ``urbangeo status``: the whole pipeline, cached and resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from urbangeo import constants as C
from urbangeo.pipeline import run_pipeline, run_status
from urbangeo.settings import (
    DEFAULT_PROFILE,
    PROFILES,
    GridSettings,
    SampleSettings,
    TilesSettings,
    TrainSettings,
)
from urbangeo_cli._common import stage_command
from urbangeo_cli._options import EXISTING_FILE, FOLDER, override_options


@click.command()
@click.option(
    "--profile",
    "profile_name",
    type=click.Choice((*PROFILES, "none")),
    help=f"Named settings to start from [default: {DEFAULT_PROFILE}]; 'none': each stage's "
    "declared defaults. --config and the options below override it.",
)
@click.option(
    "--config",
    type=EXISTING_FILE,
    help="A run.toml: settings per stage (a run folder's run.toml reproduces that run).",
)
@click.option(
    "-o",
    "--out",
    "run_dir",
    type=FOLDER,
    help="Run folder. Default: a folder named after the city in the current directory.",
)
@click.option(
    "--from",
    "from_stage",
    type=click.Choice(C.STAGES),
    help="Redo this stage and every stage that reads it, even if done.",
)
@override_options(GridSettings, ("city", "boundary_file", "bbox", "place", "cell_size"))
@override_options(SampleSettings, ("roads", "interval", "network"))
@override_options(TilesSettings, ("include_edges",))
@override_options(TrainSettings, ("epochs",))
@stage_command
def run(
    profile_name: str | None,
    config: Path | None,
    run_dir: Path | None,
    from_stage: str | None,
    **overrides: Any,
) -> None:
    """Run the whole pipeline for a city into one run folder, offline by default.

    \b
    Stages: grid, sample, tiles, streetview, caption, train, embed, indicators, predict,
    cluster, map. Without arguments: the profile 'offline-demo', the default city (kotka,
    250 m regions) with rendered OpenStreetMap tiles, the OSM-grounded captioner in three
    styles with CAPTURE consensus, a tiny CLIP pre-trained from scratch with UrbanLN
    (248-token text, momentum distillation), OSM-derived indicators, prediction heads,
    clusters and a map. The profile 'paper' is the paper's setting (pretrained ViT-B/16,
    captions from an OpenAI-compatible endpoint; online, a GPU). Any stage command takes
    --profile too.

    \b
    Output (RUN_DIR): run.gpkg (layers boundary, regions, roads, sv_points, images,
    captions, region_embeddings, indicators, predictions, clusters), images/,
    captions.jsonl, checkpoints/, embeddings.parquet, metrics.json, maps/map.html, plots,
    run.toml (the resolved settings) and stages.json (what each stage did).

    \b
    A stage already done with the same settings is skipped; an interrupted run continues
    where it stopped when run again; a changed setting redoes that stage and those after it.

    \b
    Examples:
      urbangeo run                              # the default city into ./kotka/
      urbangeo run --city helsinki -o runs/helsinki
      urbangeo run --config my-city.toml -o runs/my-city
      urbangeo run -o kotka --from embed        # redo embeddings and what follows
      urbangeo run --bbox 26.90,60.45,26.96,60.48 --roads kotka.osm.pbf -o kotka-centre
    """
    run_pipeline(
        run_dir, config=config, from_stage=from_stage, profile_name=profile_name, **overrides
    )


@click.command()
@click.argument("run_dir", type=FOLDER)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for programs).")
@stage_command
def status(run_dir: Path, as_json: bool) -> None:
    """Show each stage of a run folder: state, counts and timing.

    \b
    Example:
      urbangeo status kotka
    """
    rows = run_status(run_dir)
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'stage':<11} {'status':<8} {'seconds':>8}  counts")
    for row in rows:
        seconds = f"{row['seconds']:.1f}" if row["seconds"] is not None else "-"
        counts = ", ".join(f"{k} {v}" for k, v in row["counts"].items())
        if row["status"] == "changed" or not counts:
            counts = row["reason"] or ""
        click.echo(f"{row['stage']:<11} {row['status']:<8} {seconds:>8}  {counts}")
