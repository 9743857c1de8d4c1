"""``embed`` in shards: a shard embeds its regions' images (read where they are in the run);
the merge concatenates the vectors in the unsharded stage's order and sums the counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.gpkg import read_layer
from urbangeo.settings import StageSettings
from urbangeo.shard_plans.common import Merged, Plan, Shard, Share, same_params

#: Encoders whose vector of an image depends on that image alone (and the model).
PER_IMAGE_ENCODERS = ("trained", "frozen-clip", "resnet18", "image-stats")


def _embed_kinds(kind: str) -> tuple[str, ...]:
    return (C.KIND_OVERHEAD, C.KIND_STREETVIEW) if kind == "concat" else (kind,)


def _embed_settings(run_gpkg: Path, s: StageSettings) -> StageSettings:
    from urbangeo.imagery.kinds import canonical_kind

    encoder = getattr(s, "encoder", "")
    if encoder not in PER_IMAGE_ENCODERS:
        raise InputError(
            f"Encoder {encoder!r} is not sharded: its vectors depend on more than one image "
            "or region (statistics of all the images, or a region encoder).",
            hint=f"Run `urbangeo embed` without --shard, or use one of "
            f"{', '.join(PER_IMAGE_ENCODERS)}.",
        )
    changes: dict[str, Any] = {}
    kind = canonical_kind(getattr(s, "kind", "auto"))
    if kind == "auto":  # decided from the whole run, as the unsharded stage decides it
        images = read_layer(run_gpkg, C.LAYER_IMAGES)
        ok = images[(images[C.STATUS] == C.STATUS_OK) & images[C.REGION_ID].notna()]
        kind = C.KIND_STREETVIEW if (ok[C.KIND] == C.KIND_STREETVIEW).any() else C.KIND_OVERHEAD
        changes["kind"] = kind
    if encoder == "trained" and getattr(s, "checkpoint", None) is None:
        from urbangeo.model.encoders import default_checkpoint

        changes["checkpoint"] = default_checkpoint(run_gpkg.parent, s.name)  # type: ignore[attr-defined]
    return s.replace(**changes) if changes else s


def _embed_work(layers: Mapping[str, pd.DataFrame], s: StageSettings, share: Share) -> bool:
    images = layers.get(C.LAYER_IMAGES)
    if images is None or images.empty:
        return False
    ok = images[(images[C.STATUS] == C.STATUS_OK) & images[C.REGION_ID].notna()]
    return all((ok[C.KIND] == k).any() for k in _embed_kinds(getattr(s, "kind", "")))


def _merge_embed(
    run_gpkg: Path, s: StageSettings, shards: Sequence[Shard], regions: gpd.GeoDataFrame
) -> Merged:
    from urbangeo.model.embed import (
        N_IMAGES,
        RegionEmbeddings,
        read_parquet,
        region_layer,
        write_parquet,
    )

    params = same_params("embed", shards)
    frames: list[pd.DataFrame] = []
    metas: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for sh in shards:
        if sh.empty:
            continue
        vectors, meta = read_parquet(sh.folder / C.EMBEDDINGS_PARQUET)
        layer = read_layer(sh.gpkg, C.LAYER_REGION_EMBEDDINGS)
        n = dict(zip(layer[C.REGION_ID].astype(str), layer[N_IMAGES], strict=True))
        vectors.insert(1, N_IMAGES, [int(n[r]) for r in vectors[C.REGION_ID]])
        frames.append(vectors)
        metas.append(meta)
        for key, value in sh.record_counts.items():
            counts[key] = counts.get(key, 0) + value
    if not frames:
        raise InputError(
            "No shard of embed had images to embed.",
            hint="Fetch the images first (`urbangeo tiles`, `urbangeo streetview`), or choose "
            "another --kind.",
        )
    dim, kind = int(metas[0]["dim"]), str(metas[0]["kind"])
    counts["dim"] = dim
    frame = pd.concat(frames, ignore_index=True)
    # the unsharded stage's order: region ids sorted as text (numpy.unique)
    frame = frame.sort_values(C.REGION_ID, kind="stable").reset_index(drop=True)
    info = {k: v for k, v in metas[0].items() if k not in {"kind", "dim", *counts}}
    # the counts in the order the stage writes them (the parquet's metadata keeps it)
    ordered = {k: int(counts[k]) for k in metas[0] if k in counts}
    emb = RegionEmbeddings(frame, dim, kind, info, {**ordered, **counts})
    layer = region_layer(emb, regions)
    parquet = write_parquet(emb, run_gpkg.parent / C.EMBEDDINGS_PARQUET)
    return {C.LAYER_REGION_EMBEDDINGS: layer}, emb.counts, params, [parquet], lambda: None


PLAN = Plan(
    layers=(C.LAYER_REGIONS, C.LAYER_IMAGES),
    whole=(),
    settings=_embed_settings,
    has_work=_embed_work,
    merge=_merge_embed,
    outputs=(C.LAYER_REGION_EMBEDDINGS,),
)
