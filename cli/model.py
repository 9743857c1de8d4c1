"""Commands of the model: train (UrbanLN pre-training) and embed (region embeddings).

torch and open_clip are imported inside the commands, so that ``urbangeo --help`` stays fast;
the choices below are checked against the library's in the tests.
"""

from __future__ import annotations

from pathlib import Path

import click

from urbangeo_cli._common import overwrite_option, stage_command

TRAIN_MODES = ("urbanln", "urbanclip", "no-ipsi", "no-distill")
TRAIN_PARTS = ("both", "image", "text", "last-n")
PAIR_KINDS = ("all", "satellite", "streetview")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENCODERS = ("trained", "frozen-clip", "random", "resnet18", "image-stats")
EMBED_KINDS = ("auto", "streetview", "satellite", "concat")

_FILE = click.Path(dir_okay=False, path_type=Path)
_EXISTING = click.Path(dir_okay=False, exists=True, path_type=Path)


def _device_options(func):
    func = click.option(
        "--device",
        metavar="DEVICE",
        help="torch device (cpu, cuda, cuda:1). Default: this process's GPU if any, else CPU.",
    )(func)
    func = click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default="auto",
        show_default=True,
        help="Mixed precision on CUDA (auto: bf16 where supported, else fp16 with loss "
        "scaling); the CPU always computes in fp32.",
    )(func)
    return click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=2,
        show_default=True,
        help="DataLoader processes that decode and preprocess images (0: in the main process).",
    )(func)


@click.command()
@click.option("--gpkg", type=_FILE, help="The run's GeoPackage (images layer + captions table).")
@click.option(
    "--pairs",
    type=_EXISTING,
    help="Instead of --gpkg: a CSV/parquet of your own pairs (columns path, caption, "
    "optionally region_id; paths relative to the file).",
)
@click.option(
    "--kind",
    type=click.Choice(PAIR_KINDS),
    default="all",
    show_default=True,
    help="Which images to train on.",
)
@click.option(
    "--mode",
    type=click.Choice(TRAIN_MODES),
    default="urbanln",
    show_default=True,
    help="urbanln: 248 tokens (IPSI) + momentum self-distillation; urbanclip: 77 tokens, plain "
    "contrastive; no-ipsi: 77 tokens with distillation; no-distill: 248 tokens, plain "
    "contrastive.",
)
@click.option(
    "--model",
    default="ViT-B-16",
    show_default=True,
    metavar="ARCH",
    help="open_clip architecture (ViT-B-16 in the paper; urbangeo-tiny-vit for CPU trials).",
)
@click.option("--pretrained", metavar="TAG", help="open_clip weights tag, e.g. openai (online).")
@click.option(
    "--checkpoint",
    type=_EXISTING,
    help="Start from these weights (a local state dict, e.g. open_clip_pytorch_model.bin).",
)
@click.option(
    "--context-length",
    type=click.IntRange(min=2),
    metavar="TOKENS",
    help="Text context (default by mode: 248 or 77; IPSI reaches 20 + k*57).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Pairs per batch and process.",
)
@click.option(
    "--accum-steps",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Micro-batches per optimizer step (gradient accumulation).",
)
@click.option(
    "--lr",
    type=float,
    default=1e-6,
    show_default=True,
    help="Peak AdamW learning rate (the paper: 1e-7 on pretrained ViT-B/16; Long-CLIP: 1e-6; "
    "1e-3 suits a randomly initialised tiny model).",
)
@click.option("--weight-decay", type=float, default=0.1, show_default=True)
@click.option(
    "--warmup",
    "warmup_steps",
    type=click.IntRange(min=0),
    metavar="STEPS",
    help="Linear warm-up steps before the cosine decay. Default: 5% of all steps.",
)
@click.option("--grad-clip", type=float, metavar="NORM", help="Clip the gradient norm.")
@click.option(
    "--train",
    "train_part",
    type=click.Choice(TRAIN_PARTS),
    default="both",
    show_default=True,
    help="What is trained: both towers, one of them, or the last N blocks of each (+ "
    "projections, text positions, temperature).",
)
@click.option(
    "--last-n",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Blocks per tower for --train last-n.",
)
@click.option("--queue-size", type=click.IntRange(min=0), help="Queue length K (default 4096).")
@click.option(
    "--momentum",
    type=click.FloatRange(0, 1),
    default=0.995,
    show_default=True,
    help="EMA momentum of the teacher.",
)
@click.option("--mu", type=click.FloatRange(0, 1), help="Distillation weight (default 0.5).")
@click.option("--augment", is_flag=True, help="Random crops (open_clip's training transform).")
@click.option(
    "--image-norm",
    type=click.Choice(["auto", "model", "data"]),
    default="auto",
    show_default=True,
    help="Image normalisation: the architecture's (CLIP's statistics), the training images' "
    "per-channel mean and std (stored with the model), or auto: data for a random init, "
    "model for pretrained weights.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Share of regions held out for retrieval validation (a fixed split).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    metavar="STEPS",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    help="Stop (with a checkpoint) after this many steps in all; --resume continues.",
)
@_device_options
@click.option(
    "--name",
    metavar="NAME",
    help="Name of this model: checkpoints/NAME/ and its rows in train_metrics.csv. "
    "Default: the mode.",
)
@click.option("--resume", is_flag=True, help="Continue from checkpoints/NAME/last.pt, exactly.")
@overwrite_option
@stage_command
def train(
    gpkg, pairs, kind, mode, model, pretrained, checkpoint, context_length, epochs, batch_size,
    accum_steps, lr, weight_decay, warmup_steps, grad_clip, train_part, last_n, queue_size,
    momentum, mu, augment, image_norm, seed, val_fraction, checkpoint_every, max_steps, workers,
    precision, device, name, resume, overwrite,
) -> None:  # fmt: skip
    """Pre-train CLIP on the run's image–caption pairs (UrbanLN and its ablations).

    \b
    Input: images with status 'ok' joined to their selected caption (--gpkg), or your own
    pairs file (--pairs). A fixed share of regions is held out for validation.
    Output, beside the input file: checkpoints/NAME/last.pt (full state, every
    --checkpoint-every steps and at the end), checkpoints/NAME/model.pt (the final weights,
    for `urbangeo embed`), train_metrics.csv (loss per step; loss and held-out image<->text
    R@1/R@5 per epoch), and the stage record in the GeoPackage.
    Interrupted? Rerun with --resume: it continues exactly where the last checkpoint was.

    \b
    Several GPUs or machines: launch the same command with torchrun, e.g.
      torchrun --nproc_per_node 4 $(which urbangeo) train --gpkg run.gpkg ...

    \b
    Examples:
      urbangeo train --gpkg kotka/run.gpkg --pretrained openai --kind streetview
      urbangeo train --gpkg run.gpkg --model urbangeo-tiny-vit --lr 1e-3 --epochs 5
      urbangeo train --gpkg run.gpkg --mode urbanclip        # the UrbanCLIP baseline
      urbangeo train --gpkg run.gpkg --resume
    """
    from urbangeo.model.stages import train_stage
    from urbangeo.model.training.config import TrainConfig

    config = TrainConfig(
        model=model,
        pretrained=pretrained,
        checkpoint=str(checkpoint) if checkpoint else None,
        mode=mode,
        context_length=context_length,
        mu=mu,
        queue_size=queue_size,
        momentum=momentum,
        kind=kind,
        epochs=epochs,
        batch_size=batch_size,
        accum_steps=accum_steps,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        grad_clip=grad_clip,
        train=train_part,
        train_last_n=last_n,
        precision=precision,
        augment=augment,
        image_norm=image_norm,
        seed=seed,
        val_fraction=val_fraction,
        checkpoint_every=checkpoint_every,
        num_workers=workers,
        device=device,
        name=name,
    )
    train_stage(
        gpkg, pairs=pairs, config=config, resume=resume, overwrite=overwrite, max_steps=max_steps
    )


@click.command()
@click.option("--gpkg", required=True, type=_FILE, help="The run's GeoPackage.")
@click.option(
    "--encoder",
    type=click.Choice(ENCODERS),
    default="trained",
    show_default=True,
    help="trained: the model from `urbangeo train`; frozen-clip: CLIP without pre-training on "
    "captions; random: a random CLIP; resnet18: ResNet-18 features; image-stats: colour "
    "statistics.",
)
@click.option(
    "--checkpoint",
    type=_EXISTING,
    help="Trained model to use (default checkpoints/NAME/model.pt of this run); a model "
    "trained on another city works too.",
)
@click.option(
    "--name",
    default="urbanln",
    show_default=True,
    metavar="NAME",
    help="Which of this run's trained models (checkpoints/NAME/).",
)
@click.option(
    "--model", metavar="ARCH", help="Architecture for frozen-clip/random (default ViT-B-16)."
)
@click.option("--pretrained", metavar="TAG", help="open_clip weights tag for frozen-clip.")
@click.option(
    "--weights",
    type=_EXISTING,
    help="Local weights file: open_clip state dict (frozen-clip) or torchvision "
    "resnet18-*.pth (resnet18).",
)
@click.option(
    "--kind",
    type=click.Choice(EMBED_KINDS),
    default="auto",
    show_default=True,
    help="Images per region: street-view (mean of a region's images), satellite, or concat "
    "(both vectors side by side); auto: street-view if the run has any.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@_device_options
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of random weights (random, and resnet18 without --weights).",
)
@overwrite_option
@stage_command
def embed(
    gpkg, encoder, checkpoint, name, model, pretrained, weights, kind, batch_size, workers,
    precision, device, seed, overwrite,
) -> None:  # fmt: skip
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
      urbangeo embed --gpkg run.gpkg --encoder resnet18 --weights resnet18-f37072fd.pth
      urbangeo embed --gpkg run.gpkg --encoder image-stats --kind satellite --overwrite
    """
    from urbangeo.model.stages import embed_stage

    embed_stage(
        gpkg,
        encoder=encoder,
        checkpoint=checkpoint,
        name=name,
        model=model,
        pretrained=pretrained,
        weights=weights,
        kind=kind,
        batch_size=batch_size,
        num_workers=workers,
        device=device,
        precision=precision,
        seed=seed,
        overwrite=overwrite,
    )
