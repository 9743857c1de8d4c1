"""``urbangeo run`` and ``urbangeo status``: the whole pipeline, cached and resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from urbangeo import constants as C
from urbangeo.executors import EXECUTORS, make_executor
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
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default="local",
    show_default=True,
    help="How stages run: here, or the per-region stages (tiles, streetview, caption, embed) "
    "and predict's fits as shards on Ray "
    "(pip install 'urbangeo[ray]'), merged here; the outputs are the same.",
)
@click.option(
    "--address",
    metavar="ADDR",
    help="[--executor ray] The Ray cluster (auto, ray://HOST:10001); default: this machine's "
    "Ray, started if none runs. The run folder must be on storage every node sees.",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    help="[--executor ray] Shards per stage [default: the cluster's CPUs].",
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
    executor: str,
    address: str | None,
    shards: int | None,
    **overrides: Any,
) -> None:
    """Run the whole pipeline for a city into one run folder, offline by default.

    \b
    Stages: grid, sample, tiles, streetview, caption, train, embed, indicators, predict,
    cluster, map. Without arguments: the profile 'offline-demo', the default city (central
    São Paulo, 250 m regions) with rendered OpenStreetMap tiles, the OSM-grounded captioner
    in three styles with CAPTURE consensus, a tiny CLIP pre-trained from scratch with UrbanLN
    (248-token text, momentum distillation), the city's indicators (São Paulo: population,
    jobs and schools; other cities: OSM-derived), prediction heads, clusters and a map. The
    profile 'paper' is the paper's setting (pretrained ViT-B/16, captions from an
    OpenAI-compatible endpoint; online, a GPU). Any stage command takes --profile too.

    \b
    Output (RUN_DIR): run.gpkg (layers boundary, regions, roads, sv_points, images,
    captions, region_embeddings, indicators, predictions, clusters), images/,
    captions.jsonl, checkpoints/, embeddings.parquet, metrics.json, maps/map.html, plots,
    run.toml (the resolved settings) and run.log.jsonl (stages started, failed, interrupted).
    What each stage did is recorded in run.gpkg, with its layers (`urbangeo status`).

    \b
    A stage already done with the same settings is skipped; an interrupted run continues
    where it stopped when run again; a changed setting redoes that stage and those after it.

    \b
    Examples:
      urbangeo run                              # the default city into ./sao-paulo/
      urbangeo run --city helsinki -o runs/helsinki
      urbangeo run --config my-city.toml -o runs/my-city
      urbangeo run -o sao-paulo --from embed    # redo embeddings and what follows
      urbangeo run -o sao-paulo --executor ray  # per-region stages as shards on local Ray
      urbangeo run --bbox 26.90,60.45,26.96,60.48 --roads kotka.osm.pbf -o kotka-centre
    """
    run_pipeline(
        run_dir,
        config=config,
        from_stage=from_stage,
        profile_name=profile_name,
        executor=make_executor(executor, address=address, shards=shards),
        **overrides,
    )


@click.command()
@click.argument("run_dir", type=FOLDER)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for programs).")
@stage_command
def status(run_dir: Path, as_json: bool) -> None:
    """Show each stage of a run folder: state, counts and timing.

    \b
    Example:
      urbangeo status sao-paulo
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
