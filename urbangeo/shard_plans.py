"""How each per-region stage is sharded (:mod:`urbangeo.shard`): the settings its shards run
with, whether a shard has work, and the merge of the shards' layers and files into the run.

``tiles``: a shard renders its regions' images into its own folder and leaves the edge cells
to the merge, which decides them over all regions and moves the images into place after the
commit (rows first, then files, as the stage's own manifest does). ``embed``: a shard embeds
its regions' images (read where they are in the run); the merge concatenates the vectors in the
unsharded stage's order and sums the counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.settings import StageSettings

if TYPE_CHECKING:
    from urbangeo.shard import ShardSpec

#: Encoders whose vector of an image depends on that image alone (and the model).
PER_IMAGE_ENCODERS = ("trained", "frozen-clip", "resnet18", "image-stats")


@dataclass(frozen=True)
class Shard:
    """One finished shard, as the merge reads it."""

    spec: ShardSpec
    folder: Path
    meta: dict[str, Any]
    record_params: dict
    record_counts: dict

    @property
    def gpkg(self) -> Path:
        return self.folder / C.RUN_GPKG

    @property
    def empty(self) -> bool:
        return bool(self.meta.get("empty"))


@dataclass(frozen=True)
class Plan:
    """How one stage is sharded: the settings its shards run with, its inputs, whether a
    shard has work, and the merge."""

    #: The layers of the run a shard reads, cut to its regions (others are copied whole).
    layers: tuple[str, ...]
    whole: tuple[str, ...]
    settings: Callable[[Path, StageSettings], StageSettings]
    has_work: Callable[[Mapping[str, pd.DataFrame], StageSettings], bool]
    merge: Callable[..., tuple[dict, dict, dict, list[Path], Callable[[], None]]]
    outputs: tuple[str, ...]


# -- tiles


def _tiles_settings(run_gpkg: Path, s: StageSettings) -> StageSettings:
    if (run_gpkg.parent / C.LEGACY_OVERHEAD_DIR).is_dir():
        raise InputError(
            f"{run_gpkg.parent} was started by urbangeo 0.1 (images/satellite/): its tiles "
            "are not sharded.",
            hint="Run `urbangeo tiles` without --shard, or start a new run folder.",
        )
    if getattr(s, "source", None) == "xyz" and getattr(s, "zoom", None) is None:
        raise InputError(
            "Tiles from an XYZ service choose their zoom from all regions' sizes; a shard "
            "would choose it from its own.",
            hint="Give the zoom level (--zoom Z; an unsharded run prints the one it chose).",
        )
    # edge cells are decided by the merge, over all regions: a shard marks none excluded
    return s.replace(include_edges=True)


def _tiles_work(layers: Mapping[str, pd.DataFrame], s: StageSettings) -> bool:
    return len(layers.get(C.LAYER_REGIONS, ())) > 0


def _image_rows(frame: pd.DataFrame) -> list[dict]:
    from urbangeo.imagery.manifest import _row_dict

    return [_row_dict(series) for _, series in frame.iterrows()]


def _same_params(stage: str, shards: Sequence[Shard]) -> dict:
    params = [sh.record_params for sh in shards if not sh.empty]
    for p in params[1:]:
        if p != params[0]:
            raise InputError(
                f"The shards of {stage} recorded different parameters ({params[0]} and {p}).",
                hint=f"Rerun every shard with the same settings (urbangeo {stage} --shard "
                "I/N --overwrite), then merge.",
            )
    return params[0] if params else {}


def _merge_tiles(
    run_gpkg: Path, s: StageSettings, shards: Sequence[Shard], regions: gpd.GeoDataFrame
) -> tuple[dict, dict, dict, list[Path], Callable[[], None]]:
    from urbangeo.imagery.edges import regions_with_edges
    from urbangeo.imagery.manifest import images_frame

    params = _same_params("tiles", shards)
    position = {str(r): i for i, r in enumerate(regions[C.REGION_ID])}
    parts = []
    moves: list[tuple[Path, Path]] = []
    root = run_gpkg.parent
    for sh in shards:
        if sh.empty or C.LAYER_IMAGES not in list_layers(sh.gpkg):
            continue
        images = read_layer(sh.gpkg, C.LAYER_IMAGES)
        images = images[images[C.KIND] == C.KIND_OVERHEAD]
        if images.crs is not None and regions.crs is not None and images.crs != regions.crs:
            images = images.to_crs(regions.crs)
        parts.append(images)
        for row in images[images[C.STATUS] == C.STATUS_OK].itertuples():
            src, dst = sh.folder / row.path, root / row.path
            if not src.is_file() and not dst.is_file():
                raise InputError(
                    f"Image {row.path} of tiles shard {sh.spec} is missing from {sh.folder}.",
                    hint=f"Rerun the shard (urbangeo tiles --gpkg {run_gpkg} --shard "
                    f"{sh.spec} --overwrite), then merge.",
                )
            if src.is_file():
                moves.append((src, dst))
    rows = [r for part in parts for r in _image_rows(part)]
    rows.sort(key=lambda r: position.get(str(r[C.REGION_ID]), len(position)))
    mine = images_frame(rows, regions.crs)
    images = mine
    if C.LAYER_IMAGES in list_layers(run_gpkg):
        existing = read_layer(run_gpkg, C.LAYER_IMAGES)
        if existing.crs is not None and regions.crs is not None and existing.crs != regions.crs:
            existing = existing.to_crs(regions.crs)
        others = existing[existing[C.KIND] != C.KIND_OVERHEAD]
        if not others.empty:
            images = pd.concat(
                [images_frame(_image_rows(others), regions.crs), mine], ignore_index=True
            )
    layers, edge_counts = regions_with_edges(
        regions,
        images,
        min_valid_share=s.min_valid_share,  # type: ignore[attr-defined]
        min_inside_share=s.min_inside_share,  # type: ignore[attr-defined]
        include_edges=s.include_edges,  # type: ignore[attr-defined]
    )
    statuses = list(mine[C.STATUS])
    status = {k: statuses.count(k) for k in (C.STATUS_OK, C.STATUS_MISSING, C.STATUS_FAILED)}
    counts = {**status, "pending": 0, **edge_counts}

    def move() -> None:
        # After the commit, as the stage's own manifest does: rows first, then their files.
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)

    return {C.LAYER_IMAGES: images, **layers}, counts, params, [], move


# -- embed


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


def _embed_work(layers: Mapping[str, pd.DataFrame], s: StageSettings) -> bool:
    images = layers.get(C.LAYER_IMAGES)
    if images is None or images.empty:
        return False
    ok = images[(images[C.STATUS] == C.STATUS_OK) & images[C.REGION_ID].notna()]
    return all((ok[C.KIND] == k).any() for k in _embed_kinds(getattr(s, "kind", "")))


def _merge_embed(
    run_gpkg: Path, s: StageSettings, shards: Sequence[Shard], regions: gpd.GeoDataFrame
) -> tuple[dict, dict, dict, list[Path], Callable[[], None]]:
    from urbangeo.model.embed import (
        N_IMAGES,
        RegionEmbeddings,
        read_parquet,
        region_layer,
        write_parquet,
    )

    params = _same_params("embed", shards)
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


PLANS: dict[str, Plan] = {
    "tiles": Plan(
        layers=(C.LAYER_REGIONS,),
        whole=(C.LAYER_BOUNDARY,),
        settings=_tiles_settings,
        has_work=_tiles_work,
        merge=_merge_tiles,
        outputs=(C.LAYER_IMAGES,),
    ),
    "embed": Plan(
        layers=(C.LAYER_REGIONS, C.LAYER_IMAGES),
        whole=(),
        settings=_embed_settings,
        has_work=_embed_work,
        merge=_merge_embed,
        outputs=(C.LAYER_REGION_EMBEDDINGS,),
    ),
}
#: The stages that run in shards (``--shard I/N``) and are merged (``urbangeo merge``).
SHARDED_STAGES: tuple[str, ...] = tuple(s for s in C.STAGES if s in PLANS)
