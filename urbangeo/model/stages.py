"""The model stages of a run: ``train`` (pre-training) and ``embed`` (region embeddings).

Like the other stages they check their outputs can be written before any work, report
progress, and record themselves in the GeoPackage's ``urbangeo_stages`` table in the same
atomic write as their layers.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.gpkg import check_can_write, read_layer, write_layers
from urbangeo.io.runs import STAGES_TABLE, StageRecord, StageResult, stage_table
from urbangeo.progress import message

#: Settings that do not change what a stage produces (left out of its record).
_NOT_RECORDED = ("device", "num_workers", "checkpoint_every", "val_every")


def train_stage(
    gpkg: str | os.PathLike | None = None,
    *,
    pairs: str | os.PathLike | None = None,
    config: Any = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    max_steps: int | None = None,
    **overrides: Any,
) -> StageResult:
    """Pre-train on the pairs of ``gpkg`` (or a ``pairs`` CSV/parquet file); see ``train``.

    With a GeoPackage the finished run is recorded as stage ``train`` (its settings, counts
    and final validation retrieval); checkpoints and ``train_metrics.csv`` go beside it.
    """
    from urbangeo.model.training import TrainConfig, train

    if (gpkg is None) == (pairs is None):
        raise InputError(
            "Give the run's GeoPackage or a pairs file, not both and not neither.",
            hint="--gpkg RUN.gpkg for a run; --pairs FILE.csv for your own image–caption pairs.",
        )
    source = Path(gpkg if gpkg is not None else pairs)
    if gpkg is not None:
        check_can_write(source, [])
    cfg = replace(config or TrainConfig(), **overrides)
    started = time.perf_counter()
    result = train(
        source, cfg, run_dir=run_dir, resume=resume, overwrite=overwrite, max_steps=max_steps
    )
    counts: dict[str, Any] = dict(result.counts)
    counts.update({k: round(v, 4) for k, v in result.validation.items()})
    if result.checkpoint is None:  # not the main process of a torchrun job
        return StageResult("train", source, counts)
    if not result.finished:
        message(
            f"Stopped after step {result.step:,} of {result.total_steps:,}; continue with "
            f"--resume (checkpoint {result.checkpoint})."
        )
        return StageResult("train", source, counts)
    if gpkg is not None:
        params = {k: v for k, v in result.config.to_dict().items() if k not in _NOT_RECORDED}
        params["model_path"] = str(result.model_path)
        record = StageRecord("train", params, counts, time.perf_counter() - started)
        write_layers(
            source,
            {STAGES_TABLE: stage_table(source, record, invalidates=("embed",))},
            overwrite=True,
        )
    val = result.validation
    scores = (
        f"; held-out R@1 image->text {val['i2t_r1']:.3f}, text->image {val['t2i_r1']:.3f} "
        f"(chance {val['chance_r1']:.3f})"
        if val
        else ""
    )
    message(
        f"Trained {result.config.model} ({result.config.mode}) for {result.step:,} steps on "
        f"{counts['pairs_train']:,} pairs{scores}. Model: {result.model_path}"
    )
    return StageResult("train", source, counts)


def embed_stage(
    gpkg: str | os.PathLike,
    *,
    encoder: str = "trained",
    checkpoint: str | os.PathLike | None = None,
    name: str = "urbanln",
    model: str | None = None,
    pretrained: str | None = None,
    weights: str | os.PathLike | None = None,
    kind: str = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | None = None,
    precision: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
) -> StageResult:
    """Write ``embeddings.parquet`` and layer ``region_embeddings`` for the run ``gpkg``.

    ``encoder`` is one of :data:`urbangeo.model.baselines.ENCODERS`; the trained one reads
    ``checkpoint`` (default: ``checkpoints/<name>/model.pt`` beside the GeoPackage; any other
    run's model works too: transfer). See :func:`urbangeo.model.embed.embed_regions`.
    """
    from urbangeo.model.embed import embed_regions, region_layer, write_parquet
    from urbangeo.model.encoders import build_encoder, default_checkpoint

    path = check_can_write(gpkg, [C.LAYER_REGION_EMBEDDINGS], overwrite=overwrite)
    regions = read_layer(path, C.LAYER_REGIONS)
    started = time.perf_counter()
    if encoder == "trained" and checkpoint is None:
        checkpoint = default_checkpoint(path.parent, name)
    enc = build_encoder(
        encoder,
        checkpoint=checkpoint,
        model=model,
        pretrained=pretrained,
        weights=weights,
        seed=seed,
    )
    emb = embed_regions(
        path,
        enc,
        kind=kind,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        precision=precision,
    )
    layer = region_layer(emb, regions)
    parquet = write_parquet(emb, path.parent / C.EMBEDDINGS_PARQUET)
    params = {"kind": emb.kind, **{k: v for k, v in emb.info.items() if v is not None}}
    counts = dict(emb.counts)
    record = StageRecord("embed", params, counts, time.perf_counter() - started)
    write_layers(
        path,
        {
            C.LAYER_REGION_EMBEDDINGS: layer,
            STAGES_TABLE: stage_table(path, record),
        },
        overwrite=True,  # checked before the work began
    )
    failed = (
        f"; {counts['failed_images']} image(s) could not be read" if counts["failed_images"] else ""
    )
    what = "satellite and street-view" if emb.kind == "concat" else emb.kind
    message(
        f"Embedded {counts['images_embedded']:,} {what} images into {len(layer):,} regions "
        f"({emb.dim} values, encoder {enc.name}){failed}. Wrote {parquet} and layer "
        f"{C.LAYER_REGION_EMBEDDINGS} in {path}."
    )
    return StageResult("embed", path, counts)
