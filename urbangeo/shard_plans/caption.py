"""``caption`` in shards: every shard reads all the run's images and places, chooses the images
to caption as the unsharded stage does (``--kind``, ``--limit``) and captions those of its
regions; its captioner is prepared for all of them (the ``osm`` captioner reads the OSM
features of the whole run's box: pyrosm cuts ways at the box, so a shard's own box could word
a caption differently). A caption's consensus is over its own image's candidates, so a shard
chooses as the unsharded stage does.

The caches: a new shard starts with the run's records of its images (``captions.jsonl``) and
the parses of their captions (``caption_parses.jsonl``), so that what the run has paid for is
not asked for again, and appends to its own copies only; the merge appends what the shards
added to the run's files after the commit, so that a later unsharded run finds it too."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError, MissingLayerError
from urbangeo.io.files import write_bytes_atomic, write_text_atomic
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.settings import StageSettings
from urbangeo.shard_plans.common import Merged, Plan, Shard, Share, same_params, sum_counts

#: How many bytes of each cache the shard was started with (the rest is its own).
SEED_JSON = "seed.json"


def _caption_settings(run_gpkg: Path, s: StageSettings) -> StageSettings:
    if C.LAYER_IMAGES not in list_layers(run_gpkg):
        raise MissingLayerError(
            f"Layer '{C.LAYER_IMAGES}' is not in {run_gpkg}.",
            hint="Fetch images first: `urbangeo tiles` and/or `urbangeo streetview` on this "
            "GeoPackage (they write layer 'images').",
        )
    return s


def _chosen(images: pd.DataFrame, s: StageSettings) -> pd.DataFrame:
    """The images the stage captions, as it chooses them from the whole run."""
    kinds = getattr(s, "kinds", None)
    if kinds:
        images = images[images[C.KIND].isin(kinds)]
    limit = getattr(s, "limit", None)
    return images if limit is None else images.head(limit)


def _caption_work(layers: Mapping[str, pd.DataFrame], s: StageSettings, share: Share) -> bool:
    images = layers.get(C.LAYER_IMAGES)
    return images is not None and bool(share.rows(_chosen(images, s)).any())


def _caption_kwargs(folder: Path, share: Share) -> dict[str, Any]:
    def keep(items: list[Any]) -> list[Any]:
        return [item for item in items if share.keeps(item.region_id)]

    return {"keep": keep}


def _records(path: Path) -> Iterable[tuple[bytes, dict]]:
    """The whole lines of a JSONL file with their records (torn or foreign lines skipped)."""
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    yield line, record


def _caches() -> tuple[str, str]:
    """The run's caches a shard starts from, and the merge appends to: calls, then parses."""
    from urbangeo.captions.stages import PARSES_JSONL

    return C.CAPTIONS_JSONL, PARSES_JSONL


def _seeded(folder: Path) -> dict[str, int]:
    """How many bytes of each cache of the shard came from the run (the rest are its own)."""
    try:
        sizes = json.loads((folder / SEED_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return sizes if isinstance(sizes, dict) else {}


def _own(path: Path, start: int) -> bytes:
    """The whole lines of ``path`` after byte ``start``: what the shard added to its cache."""
    if not path.is_file():
        return b""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    return data[: data.rfind(b"\n") + 1]


def _seed(run_dir: Path, folder: Path, share: Share, layers: Mapping[str, pd.DataFrame]) -> None:
    calls, parsed = _caches()
    images = layers.get(C.LAYER_IMAGES)
    ids = set() if images is None else set(images[C.IMAGE_ID][share.rows(images)].astype(str))
    captions = [(line, r) for line, r in _records(run_dir / calls) if r.get("image_id") in ids]
    texts = {r.get("caption") for _, r in captions}
    parses = [line for line, r in _records(run_dir / parsed) if r.get("text") in texts]
    before = _seeded(folder)  # a shard started over keeps the calls it paid for, after the seed
    sizes = {}
    for name, lines in ((calls, [line for line, _ in captions]), (parsed, parses)):
        data = b"".join(lines)
        own = _own(folder / name, before.get(name, 0)) if before else b""
        if data or own:
            write_bytes_atomic(folder / name, data + own)
        sizes[name] = len(data)
    write_text_atomic(folder / SEED_JSON, json.dumps(sizes))


def _append_new(shards: Sequence[Shard], run_dir: Path) -> Callable[[], None]:
    """What appends the records the shards added to their caches to the run's."""

    def append() -> None:
        for sh in shards:
            seeded = _seeded(sh.folder)
            for name in _caches():
                source = sh.folder / name
                if not source.is_file() or source.stat().st_size <= seeded.get(name, 0):
                    continue
                target = run_dir / name
                with open(source, "rb") as src, open(target, "ab") as dst:
                    if dst.tell() and _last_byte(target) != b"\n":
                        dst.write(b"\n")  # a torn last line stays torn, alone
                    src.seek(seeded.get(name, 0))
                    shutil.copyfileobj(src, dst)
                    if _last_byte(source) != b"\n":
                        dst.write(b"\n")
                # appended: a second merge (--keep, or one run again after a crash) appends
                # only what the shard adds after this
                seeded[name] = source.stat().st_size
                write_text_atomic(sh.folder / SEED_JSON, json.dumps(seeded))

    return append


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1)


def _merge_caption(
    run_gpkg: Path, s: StageSettings, shards: Sequence[Shard], regions: gpd.GeoDataFrame
) -> Merged:
    from urbangeo.captions.stages import CAPTION_COLUMNS, TRUNCATED

    params = same_params("caption", shards)
    done = [sh for sh in shards if not sh.empty]
    if not done:
        raise InputError(
            "No shard of caption had images to caption.",
            hint="Fetch the images first (`urbangeo tiles`, `urbangeo streetview`), or choose "
            "other --kind values.",
        )
    # the unsharded stage's order: the images layer's, each image's models in their order
    images = read_layer(run_gpkg, C.LAYER_IMAGES)
    position = {str(i): k for k, i in enumerate(images[C.IMAGE_ID])}
    tables = [read_layer(sh.gpkg, C.LAYER_CAPTIONS) for sh in done]
    tables = [pd.DataFrame(t)[CAPTION_COLUMNS] for t in tables if len(t)]
    table = (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=CAPTION_COLUMNS)
    )
    where = table[C.IMAGE_ID].astype(str).map(position).fillna(len(position))
    table = table.iloc[where.argsort(kind="stable")].reset_index(drop=True)
    table = table.astype({C.SCORE: float, C.SELECTED: bool, TRUNCATED: bool})
    counts = sum_counts(done)
    return {C.LAYER_CAPTIONS: table}, counts, params, [], _append_new(done, run_gpkg.parent)


PLAN = Plan(
    layers=(),
    whole=(C.LAYER_BOUNDARY, C.LAYER_REGIONS, C.LAYER_SV_POINTS, C.LAYER_IMAGES),
    settings=_caption_settings,
    has_work=_caption_work,
    merge=_merge_caption,
    outputs=(C.LAYER_CAPTIONS,),
    kwargs=_caption_kwargs,
    seed=_seed,
    kept=(*_caches(), SEED_JSON),
)
