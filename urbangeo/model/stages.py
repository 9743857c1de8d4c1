"""The model stages of a run: ``train`` (pre-training) and ``embed`` (region embeddings).

Each is a body run by :func:`urbangeo.stage.stage` (settings checked before any work, the run
folder's lock, outputs checked, one atomic write of its layers and its record in the
``urbangeo_stages`` table); their settings are :class:`~urbangeo.settings.TrainSettings` and
:class:`~urbangeo.settings.EmbedSettings`. ``train`` also runs on a pairs file alone (no
GeoPackage: nothing is recorded). torch is imported when a stage runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.gpkg import read_layer
from urbangeo.io.runs import StageResult
from urbangeo.progress import message
from urbangeo.settings import EmbedSettings, TrainSettings
from urbangeo.stage import StageRun, settings_of, stage


def _torchrun_rank() -> int:
    """This process's rank in a torchrun job (0 without one)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def train_stage(
    gpkg: str | os.PathLike | None = None,
    settings: TrainSettings | Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    pairs: str | os.PathLike | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    max_steps: int | None = None,
    run_dir: str | os.PathLike | None = None,
    **values: Any,
) -> StageResult:
    """Pre-train on the pairs of ``gpkg`` (or a ``pairs`` CSV/parquet file); see ``train``.

    With a GeoPackage the finished run is recorded as stage ``train`` (its settings, counts
    and final validation retrieval); checkpoints and ``train_metrics.csv`` go to ``run_dir``
    (default: beside the input). ``resume`` continues from the last checkpoint; ``stop_after``
    stops after that many steps in all (with a checkpoint, to resume; ``max_steps`` is its old
    name, deprecated). Under torchrun the main process holds the run's lock and writes the
    record; the others only train.

    Settings: the fields of :class:`urbangeo.settings.TrainSettings`, as keyword arguments or
    as ``settings``; ``overwrite`` starts over where a checkpoint exists. The run's length is
    ``steps``, else ``samples``, else ``epochs`` (epochs beside either of them among the keyword
    arguments is refused; see :mod:`urbangeo.model.training.budget`).
    """
    from urbangeo.model.training.budget import check_budget_keywords, stop_after_keyword

    stop_after = stop_after_keyword(stop_after, max_steps)
    values = {k: v for k, v in values.items() if v is not None}
    check_budget_keywords(values, "the keyword arguments")
    chosen = settings_of(TrainSettings, settings, {})
    if values:  # unknown names and bad values refused by name
        chosen = TrainSettings.from_mapping({**chosen.to_dict(), **values})
    if (gpkg is None) == (pairs is None):
        raise InputError(
            "Give the run's GeoPackage or a pairs file, not both and not neither.",
            hint="--gpkg RUN.gpkg for a run; --pairs FILE.csv for your own image–caption pairs.",
        )
    source = Path(gpkg if gpkg is not None else pairs)  # type: ignore[arg-type]
    io = {"source": source, "resume": resume, "stop_after": stop_after, "run_dir": run_dir}
    if gpkg is None or _torchrun_rank() > 0:
        return _train(None, chosen, overwrite=overwrite, **io)
    return _train(gpkg, chosen, overwrite=overwrite, **io)


train_stage.settings_class = TrainSettings  # type: ignore[attr-defined]


@stage(TrainSettings, gpkg_required=False)
def _train(
    run: StageRun,
    s: TrainSettings,
    *,
    overwrite: bool,
    source: Path,
    resume: bool,
    stop_after: int | None,
    run_dir: str | os.PathLike | None,
) -> StageResult:
    from urbangeo.model.training import train

    result = train(
        source, s, run_dir=run_dir, resume=resume, overwrite=overwrite, stop_after=stop_after
    )
    counts: dict[str, Any] = dict(result.counts)
    counts.update({k: round(v, 4) for k, v in result.validation.items()})
    if result.checkpoint is None:  # not the main process of a torchrun job
        return StageResult("train", run.path, counts)
    if not result.finished:
        message(
            f"Stopped after step {result.step:,} of {result.total_steps:,}; continue with "
            f"--resume (checkpoint {result.checkpoint})."
        )
        return StageResult("train", run.path, counts)
    params = {**result.config.to_dict(runtime=False), "model_path": str(result.model_path)}
    out = run.commit(counts=counts, params=params, files=[result.model_path])
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
    return out


@stage(EmbedSettings, outputs=(C.LAYER_REGION_EMBEDDINGS,))
def embed_stage(run: StageRun, s: EmbedSettings, *, overwrite: bool) -> StageResult:
    """Write ``embeddings.parquet`` and layer ``region_embeddings`` for the run ``gpkg``.

    ``encoder`` is one of :data:`urbangeo.model.encoders.ENCODERS`; the trained one reads
    ``checkpoint`` (default: ``checkpoints/<name>/model.pt`` beside the GeoPackage; any other
    run's model works too: transfer). Vectors that are not finite (a diverged model) are
    refused before anything is written. See :func:`urbangeo.model.embed.embed_regions`
    (streamed: :func:`~urbangeo.model.embed.embed_regions_to_parquet`, ``chunk_size`` images
    in memory; above ``layer_vectors`` regions the layer holds polygons and ``n_images``
    only, the vectors being in the parquet).
    The region encoders (``raster``, ``patches``) read no images: see
    :func:`urbangeo.model.encoders.region_encoder.run_region_encoder`.
    """
    from urbangeo.model.encoders import ENCODERS, build_encoder, default_checkpoint

    path = run.path
    assert path is not None  # the decorator requires the GeoPackage
    implementation = ENCODERS.get(s.encoder)
    if getattr(implementation, "encodes_regions", False):  # raster, patches: no images, no torch
        from urbangeo.model.encoders.region_encoder import run_region_encoder

        return run_region_encoder(run, s, read_layer(path, C.LAYER_REGIONS), implementation)
    from urbangeo.model.embed import (
        embed_regions_to_parquet,
        region_layer,
        region_polygons,
        vectors_elsewhere_note,
    )
    from urbangeo.model.threads import use_threads

    checkpoint = s.checkpoint
    if s.encoder == "trained" and checkpoint is None:
        checkpoint = default_checkpoint(path.parent, s.name)
    enc = build_encoder(
        s.encoder, checkpoint=checkpoint, **s.pick("model", "pretrained", "weights", "seed")
    )
    use_threads(enc.module)  # one thread for small encoders: faster, and fair to a busy machine
    regions = region_polygons(path)
    # streamed: chunk_size images in memory; the vectors kept for the layer of a small run only
    parquet = path.parent / C.EMBEDDINGS_PARQUET
    options = s.pick("kind", "chunk_size", "batch_size", "num_workers", "device", "precision")
    emb = embed_regions_to_parquet(path, enc, parquet, keep_vectors=s.layer_vectors, **options)
    layer = region_layer(emb, regions)
    del regions
    params = {"kind": emb.kind, **{k: v for k, v in emb.info.items() if v is not None}}
    counts = dict(emb.counts)
    result = run.commit(
        {C.LAYER_REGION_EMBEDDINGS: layer}, counts=counts, params=params, files=[parquet]
    )
    if not emb.has_vectors:  # say where the vectors are, in QGIS's layer properties
        from urbangeo.model.encoders.region_encoder import qgis_metadata_xml, write_layer_metadata

        note = vectors_elsewhere_note(emb, s.layer_vectors)
        write_layer_metadata(
            path,
            C.LAYER_REGION_EMBEDDINGS,
            description=note,
            qgis_xml=qgis_metadata_xml(
                C.LAYER_REGION_EMBEDDINGS,
                title="Region embeddings (vectors in embeddings.parquet)",
                abstract=note,
                licence=None,
                rights=None,
                history=f"urbangeo embed --encoder {enc.name}",
                crs=layer.crs,
            ),
        )
    failed = (
        f"; {counts['failed_images']} image(s) could not be read" if counts["failed_images"] else ""
    )
    what = "overhead and street-view" if emb.kind == "concat" else emb.kind
    message(
        f"Embedded {counts['images_embedded']:,} {what} images into {len(layer):,} regions "
        f"({emb.dim} values, encoder {enc.name}){failed}. Wrote {parquet} and layer "
        f"{C.LAYER_REGION_EMBEDDINGS} in {path}."
    )
    return result
