"""Commands of the model: train (UrbanLN pre-training) and embed (region embeddings).

Their options are the settings of :mod:`urbangeo.settings.model`; only the inputs and outputs
(``--gpkg``, ``--pairs``, ``--resume``, ``--stop-after``, ``--overwrite``) are declared here.
torch and open_clip are imported when a command runs, so that ``urbangeo --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from urbangeo.settings import EmbedSettings, TrainSettings
from urbangeo_cli._common import overwrite_option, stage_command
from urbangeo_cli._options import EXISTING_FILE, FILE, settings_from, settings_options


@click.command()
@click.option("--gpkg", type=FILE, help="The run's GeoPackage (images layer + captions table).")
@click.option(
    "--pairs",
    type=EXISTING_FILE,
    help="Instead of --gpkg: a CSV/parquet of your own pairs (columns path, caption, "
    "optionally region_id; paths relative to the file).",
)
@settings_options(TrainSettings)
@click.option(
    "--stop-after",
    type=click.IntRange(min=1),
    metavar="STEPS",
    help="Stop (with a checkpoint) after this many steps in all; --resume continues.",
)
# the old spelling of --stop-after, deprecated (train_stage says so)
@click.option("--max-steps", type=click.IntRange(min=1), hidden=True)
@click.option("--resume", is_flag=True, help="Continue from checkpoints/NAME/last.pt, exactly.")
@overwrite_option
@stage_command
def train(
    gpkg: Path | None,
    pairs: Path | None,
    stop_after: int | None,
    max_steps: int | None,
    resume: bool,
    overwrite: bool,
    **values: Any,
) -> None:
    """Pre-train CLIP on the run's image–caption pairs (UrbanLN and its ablations).

    \b
    Input: images with status 'ok' joined to their selected caption (--gpkg), or your own
    pairs file (--pairs). A fixed share of regions is held out for validation.
    Output, beside the input file: checkpoints/NAME/last.pt (the full state, every
    --checkpoint-minutes of training, at the end and on Ctrl-C), checkpoints/NAME/model.pt
    (the final weights, for `urbangeo embed`), train_metrics.csv (loss per step; loss and
    held-out image<->text R@1/R@5 per epoch), and the stage record in the GeoPackage.
    Interrupted (Ctrl-C stops at the next batch, with a checkpoint)? Rerun with --resume: it
    continues exactly where the last checkpoint was.

    \b
    How long: --steps (optimizer steps), else --samples (pairs seen), else --epochs (passes
    over the pairs, 10 by default or the profile's); give one of them. The warm-up and the
    cosine decay of the learning rate span the whole run.

    \b
    The default model is the tiny urbangeo-tiny-vit, trained from scratch (minutes on a CPU).
    The paper's setting, pretrained ViT-B/16 at lr 1e-7 on a GPU, is --profile paper.

    \b
    Several GPUs or machines: launch the same command with torchrun, e.g.
      torchrun --nproc_per_node 4 $(which urbangeo) train --gpkg run.gpkg --profile paper

    \b
    Examples:
      urbangeo train --gpkg kotka/run.gpkg --epochs 20
      urbangeo train --gpkg kotka/run.gpkg --steps 2000 --checkpoint-minutes 30
      urbangeo train --gpkg kotka/run.gpkg --profile paper --kind streetview
      urbangeo train --gpkg run.gpkg --model ViT-B-16 --pretrained openai --lr 1e-6
      urbangeo train --gpkg run.gpkg --mode urbanclip        # the UrbanCLIP baseline
      urbangeo train --gpkg run.gpkg --resume
    """
    from urbangeo.model.stages import train_stage
    from urbangeo.model.training.budget import BUDGET_SETTINGS, check_budget_keywords

    ctx = click.get_current_context()
    given = {
        name: values.get(name)
        for name in BUDGET_SETTINGS
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
    }
    check_budget_keywords(given, "the options")  # a profile's epochs give way, yours do not
    settings = settings_from(TrainSettings, values)
    stop: dict[str, Any] = {"stop_after": stop_after, "max_steps": max_steps}
    train_stage(
        gpkg,
        settings,
        pairs=pairs,
        resume=resume,
        overwrite=overwrite,
        **{k: v for k, v in stop.items() if v is not None},
    )


@click.command()
@click.option("--gpkg", required=True, type=FILE, help="The run's GeoPackage.")
@settings_options(EmbedSettings)
@overwrite_option
@stage_command
def embed(gpkg: Path, overwrite: bool, **values: Any) -> None:
    """Turn every region's images into one embedding vector with a frozen image encoder.

    \b
    Input: the images layer of the run (status 'ok', with region_id) and an encoder.
    Output: embeddings.parquet beside the GeoPackage (region_id, e0..e{D-1}, float32) and
    the layer 'region_embeddings' (region polygons, n_images and the same columns), which
    QGIS opens as it is. Images that cannot be decoded are skipped and counted.

    \b
    Examples:
      urbangeo embed --gpkg kotka/run.gpkg
      urbangeo embed --gpkg helsinki/run.gpkg --checkpoint kotka/checkpoints/urbanln/model.pt
      urbangeo embed --gpkg run.gpkg --encoder frozen-clip --model ViT-B-16 --pretrained openai
      urbangeo embed --gpkg run.gpkg --encoder resnet18 --weights resnet18-f37072fd.pth
      urbangeo embed --gpkg run.gpkg --encoder image-stats --kind overhead --overwrite
    """
    from urbangeo.model.stages import embed_stage

    embed_stage(gpkg, settings_from(EmbedSettings, values), overwrite=overwrite)
