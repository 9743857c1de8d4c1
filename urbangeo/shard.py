"""Shards of the per-region stages and of ``predict``, and the merge that assembles them.

A per-region stage (``tiles``, ``streetview``, ``caption``, ``embed``; see
:data:`SHARDED_STAGES`) can run on one shard of the run's regions: ``urbangeo tiles --gpkg
RUN/run.gpkg --shard 2/4``. ``predict`` shards its fits instead (its plan's ``splits`` is
"fits"): every shard reads the run's inputs whole from the run (its own GeoPackage holds only
the stage records) and makes a fixed 1/N of the fits, the merge scores them all
(:mod:`urbangeo.shard_plans.predict`); the folders, done and stale checks, refusals and the
merge below hold for it too.

Each region belongs to exactly one of the N shards, stably (:func:`assign_shards`): by a
hash of its ``region_id`` (``--shard-by id``, the default: even shards) or of its block of
8 x 8 grid cells (``--shard-by block``: neighbours together). Rows of other layers (images,
sample points) follow their region.

A shard is a small run folder of its own, ``RUN/shards/<stage>/<I>-of-<N>/``: a ``run.gpkg``
holding the shard's part of the stage's input layers (or all of them, for a stage that plans
over all: see below) and the run's stage records (so that the stage's fingerprint chains
exactly as in the run), the files the stage writes, and ``shard.json`` (what the shard is for:
its regions, its settings, the fingerprint it works towards; runtime settings such as threads
and worker processes aside, so a shard resumes whatever they are). The stage's own body runs
there unchanged but for which of its planned items are the shard's (the plan's ``kwargs``),
under the shard folder's lock: shards of one stage run at the same time, on one machine or on
many that share the run folder (a Slurm array job, Ray: :mod:`urbangeo.executors`). A
shard that is done (its record has the fingerprint it works towards) is skipped when run again;
one that was killed resumes as the stage itself does (images already saved are kept), alone.

:func:`merge_shards` (``urbangeo merge STAGE --gpkg RUN/run.gpkg --shards N``) takes the run's
lock, checks that every shard is present, done, made for the run's current regions and inputs
and with the same settings, assembles their layers and files in the run's order and commits
them through the stage's one mechanism (:meth:`urbangeo.stage.StageRun.commit`): the run's
record, fingerprint and the invalidation of later stages are those of an unsharded run.

What is not per region is done in the merge, over all regions: the edge cells of ``tiles``
(whether too few interior cells are left to exclude any is a count over the whole study area).
Settings that the stage would decide from all regions are decided from the whole run before the
shards start: ``embed --kind auto`` (street view if the run has any). What a stage plans over
all regions every shard plans whole, then keeps its part: ``streetview``'s shots (a photo goes
to its nearest point of all), ``caption``'s images (``--kind``, ``--limit``) and its
captioner's preparation (the OSM features of the whole run's box); the caption caches start
from the run's records of the shard's images and the merge appends what the shards added
(:mod:`urbangeo.shard_plans.caption`). What cannot be split is refused: ``tiles`` from XYZ
without ``--zoom`` (the zoom comes from all regions' sizes), encoders fitted to the images they
embed (``random`` normalises by their statistics), and region encoders. Per region, the results
are those of the unsharded run: tiles, street-view images and captions exactly; embeddings
exactly for encoders without batch-dependent arithmetic (``image-stats``), to float tolerance
for neural encoders (a batch holds other images, and matrix kernels may block sums
differently). ``predict``'s splits, ridge, k-NN and mean-baseline results are exact, its MLP
heads' to float tolerance (they train as one batched model of the shard's heads:
:mod:`urbangeo.downstream.fits`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.files import write_text_atomic
from urbangeo.io.gpkg import check_can_write, list_layers, read_layer, write_layers
from urbangeo.io.lock import LOCK_FILE, run_lock
from urbangeo.io.runs import (
    STAGES_TABLE,
    StageResult,
    chained_fingerprint,
    downstream_of,
    read_stage_records,
)
from urbangeo.progress import message
from urbangeo.settings import STAGE_SETTINGS, StageSettings
from urbangeo.shard_plans import PLANS, SHARDED_STAGES, Plan, Shard, Share

#: Where the shards of a run live, beside its GeoPackage.
SHARDS_DIR = "shards"
#: What a shard is for, in its folder.
SHARD_JSON = "shard.json"
#: Grid cells per side of a block (``--shard-by block``).
BLOCK_CELLS = 8


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` (1-based) of ``count``, regions split ``by`` "id" or "block"."""

    index: int
    count: int
    by: str = "id"

    @classmethod
    def parse(cls, text: str, *, by: str = "id") -> ShardSpec:
        """``"I/N"`` (e.g. ``"2/4"``) as a spec; a clear error for anything else."""
        head, sep, tail = str(text).strip().partition("/")
        try:
            index, count = int(head), int(tail)
        except ValueError:
            index = count = 0
        if not sep or count < 1 or not 1 <= index <= count:
            raise InputError(
                f"--shard {text!r} is not a shard: give I/N with 1 <= I <= N, e.g. 2/4.",
                hint="In a Slurm array job: --shard $((SLURM_ARRAY_TASK_ID + 1))/"
                "$SLURM_ARRAY_TASK_COUNT.",
            )
        if by not in ("id", "block"):
            raise InputError(f"--shard-by is {by!r}; choose id or block.")
        return cls(index, count, by)

    @property
    def name(self) -> str:
        """The shard's folder name, ``I-of-N``."""
        return f"{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_folder(run_dir: str | os.PathLike, stage: str, spec: ShardSpec) -> Path:
    """Where shard ``spec`` of ``stage`` of the run in ``run_dir`` works."""
    return Path(run_dir) / SHARDS_DIR / stage / spec.name


def _bucket(keys: Sequence[str], count: int) -> np.ndarray:
    """A stable number in 0..count-1 per key (the same on every machine and Python)."""
    out = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") % count
    return out


def assign_shards(regions: gpd.GeoDataFrame, count: int, by: str = "id") -> np.ndarray:
    """The shard (0-based) of each region: a hash of its ``region_id`` (``by="id"``) or of
    its block of :data:`BLOCK_CELLS` x :data:`BLOCK_CELLS` grid cells (``by="block"``; from
    the grid's ``col``/``row`` columns, else from the centroids and the cell size)."""
    if by == "id":
        return _bucket([str(r) for r in regions[C.REGION_ID]], count)
    if C.COL in regions and C.ROW in regions:
        cols = regions[C.COL].to_numpy(np.int64)
        rows = regions[C.ROW].to_numpy(np.int64)
    else:
        cell = float(np.sqrt(np.median(regions.geometry.area))) if len(regions) else 1.0
        centres = regions.geometry.centroid
        cols = np.floor(centres.x.to_numpy() / cell).astype(np.int64)
        rows = np.floor(centres.y.to_numpy() / cell).astype(np.int64)
    blocks = [f"{c}_{r}" for c, r in zip(cols // BLOCK_CELLS, rows // BLOCK_CELLS, strict=True)]
    return _bucket(blocks, count)


def _ids_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()[:16]


# ---- a shard's inputs ------------------------------------------------------------------------


def _shard_layers(run_gpkg: Path, plan: Plan, share: Share) -> dict[str, pd.DataFrame]:
    """The shard's input layers: ``plan.whole`` as they are, ``plan.layers`` cut to its rows
    (rows without a region go to shard 1)."""
    available = set(list_layers(run_gpkg))
    out: dict[str, pd.DataFrame] = {}
    for name in plan.whole:
        if name in available:
            out[name] = read_layer(run_gpkg, name)
    for name in plan.layers:
        if name in available:
            frame = read_layer(run_gpkg, name)
            out[name] = frame[share.rows(frame).to_numpy()]
    if C.LAYER_IMAGES in out:  # the image files stay where they are: absolute paths
        images = out[C.LAYER_IMAGES].copy()
        root = run_gpkg.parent.resolve()
        images[C.PATH] = [
            None if p is None or (not isinstance(p, str) and pd.isna(p)) else str(root / p)
            for p in images[C.PATH]
        ]
        out[C.LAYER_IMAGES] = images
    return out


def _records_table(run_gpkg: Path, stage: str) -> pd.DataFrame | None:
    """The run's stage records that the shard's stage reads (not its own, not later ones)."""
    if STAGES_TABLE not in list_layers(run_gpkg):
        return None
    table = pyogrio.read_dataframe(run_gpkg, layer=STAGES_TABLE)
    drop = {stage, *downstream_of(stage)}
    return table[~table["stage"].isin(drop)].reset_index(drop=True)


def shard_refusal(gpkg: str | os.PathLike, settings: StageSettings) -> str | None:
    """Why the stage of ``settings`` cannot run in shards on the run ``gpkg`` (None: it can)."""
    plan = PLANS.get(settings.stage)
    if plan is None:
        return f"stage {settings.stage} does not run in shards"
    try:
        plan.settings(Path(gpkg), settings)
    except InputError as exc:
        return exc.message
    return None


def _plan(stage: str) -> Plan:
    if stage not in PLANS:
        raise InputError(
            f"Stage {stage} does not run in shards.",
            hint=f"Stages that do: {', '.join(SHARDED_STAGES)}.",
        )
    return PLANS[stage]


# ---- one shard ------------------------------------------------------------------------------


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / SHARD_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _clear(folder: Path, kept: Sequence[str] = ()) -> None:
    """Empty a shard's folder but its lock (held by this process) and the ``kept`` files."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE or entry.name in kept:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def shard_regions(run_gpkg: str | os.PathLike, spec: ShardSpec) -> list[str]:
    """The region ids of shard ``spec`` of the run, in the run's order."""
    regions = read_layer(run_gpkg, C.LAYER_REGIONS)
    chosen = assign_shards(regions, spec.count, spec.by) == spec.index - 1
    return [str(r) for r in regions[C.REGION_ID][chosen]]


def run_shard(
    function: Callable[..., StageResult],
    gpkg: str | os.PathLike,
    settings: StageSettings,
    *,
    overwrite: bool = False,
    **extra: Any,
) -> StageResult:
    """Run one shard (``settings.shard``) of a stage ``function`` of the run ``gpkg`` in its
    shard folder; skipped when done with the same settings (runtime ones aside) and inputs.
    ``overwrite`` starts the shard over. The stage's body runs on the shard's GeoPackage,
    given the plan's ``kwargs`` (which of its planned items are the shard's)."""
    stage = settings.stage
    plan = _plan(stage)
    spec = ShardSpec.parse(
        settings.shard,  # type: ignore[attr-defined]
        by=settings.shard_by,  # type: ignore[attr-defined]
    )
    run_gpkg = Path(gpkg)
    if not run_gpkg.exists():
        read_layer(run_gpkg, C.LAYER_REGIONS)  # the error that names the command to run first
    base = settings.replace(shard=None)
    ran_with = plan.settings(run_gpkg, base)
    folder = shard_folder(run_gpkg.parent, stage, spec)
    shard_gpkg = folder / C.RUN_GPKG
    with run_lock(folder, command=f"urbangeo {stage} --shard {spec}"):
        ids = shard_regions(run_gpkg, spec)
        share = Share(frozenset(ids), spec.index == 1, spec.index, spec.count, run_gpkg)
        records = read_stage_records(run_gpkg)
        meta = {
            "stage": stage,
            "index": spec.index,
            "count": spec.count,
            "by": spec.by,
            "regions": len(ids),
            "ids": _ids_digest(ids),
            "target": chained_fingerprint(stage, ran_with, records),
            "inputs": {n: records[n].fingerprint for n in C.STAGE_INPUTS[stage] if n in records},
            # runtime settings (threads, worker processes) aside: they change no output
            "settings": base.to_dict(runtime=False),
            "ran_with": ran_with.to_dict(runtime=False),
        }
        old = _read_meta(folder)
        same = old is not None and all(old.get(k) == v for k, v in meta.items())
        if not same or overwrite:
            _clear(folder, plan.kept)
        elif shard_gpkg.exists():
            done = read_stage_records(shard_gpkg).get(stage)
            if done is not None and done.fingerprint == meta["target"]:
                message(f"{stage} shard {spec}: already done with these settings, skipped.")
                return StageResult(stage, shard_gpkg, done.counts, skipped=True)
        fresh = not shard_gpkg.exists()
        layers = _shard_layers(run_gpkg, plan, share)
        if fresh:
            plan.seed(run_gpkg.parent, folder, share, layers)
            table = _records_table(run_gpkg, stage)
            written = dict(layers) if table is None else {**layers, STAGES_TABLE: table}
            write_layers(shard_gpkg, written, overwrite=True)
        empty = not plan.has_work(layers, ran_with, share)
        write_text_atomic(
            folder / SHARD_JSON, json.dumps({**meta, "empty": empty}, indent=2, default=str)
        )
        what = f"{len(ids):,} regions" if plan.splits == "regions" else "its share of the fits"
        message(f"{stage} shard {spec}: {what}, in {folder}.")
        if empty:
            from urbangeo.stage import StageRun

            return StageRun(stage, shard_gpkg, ran_with).commit(
                counts={"regions": 0}, params={"empty": True}
            )
        return function(
            shard_gpkg, ran_with, overwrite=False, **extra, **plan.kwargs(folder, share)
        )


# ---- the merge ------------------------------------------------------------------------------


def shard_status(
    gpkg: str | os.PathLike, stage: str, count: int, *, by: str | None = None
) -> list[dict[str, Any]]:
    """Each shard of ``stage`` in ``count`` shards: ``{"shard": "I/N", "status": ...}`` with
    status done, running (its lock is held), unfinished, missing or stale (made for other
    regions, inputs or settings than the others)."""
    run_gpkg = Path(gpkg)
    out = []
    for index in range(1, count + 1):
        spec = ShardSpec(index, count, by or "id")
        folder = shard_folder(run_gpkg.parent, stage, spec)
        meta = _read_meta(folder)
        status = "missing"
        if meta is not None:
            record = (
                read_stage_records(folder / C.RUN_GPKG).get(stage)
                if (folder / C.RUN_GPKG).exists()
                else None
            )
            done = record is not None and record.fingerprint == meta.get("target")
            status = "done" if done else "unfinished"
            if (folder / LOCK_FILE).exists():
                status = "running"
        out.append({"shard": str(spec), "status": status, "folder": str(folder)})
    return out


def _collect(run_gpkg: Path, stage: str, count: int) -> list[Shard]:
    """The ``count`` shards of ``stage``, checked: present, done, for the run's regions and
    inputs, with the same settings."""
    shards: list[Shard] = []
    problems: list[str] = []
    first_meta: dict[str, Any] | None = None
    for index in range(1, count + 1):
        folder = shard_folder(run_gpkg.parent, stage, ShardSpec(index, count))
        meta = _read_meta(folder)
        if meta is None:
            problems.append(f"shard {index}/{count} was never run")
            continue
        spec = ShardSpec(index, count, str(meta.get("by", "id")))
        record = (
            read_stage_records(folder / C.RUN_GPKG).get(stage)
            if (folder / C.RUN_GPKG).exists()
            else None
        )
        if record is None or record.fingerprint != meta.get("target"):
            problems.append(f"shard {spec} is not finished")
            continue
        if first_meta is None:
            first_meta = meta
        elif any(meta.get(k) != first_meta.get(k) for k in ("by", "settings", "ran_with")):
            problems.append(f"shard {spec} was made with other settings than shard 1/{count}")
            continue
        shards.append(Shard(spec, folder, meta, record.params, record.counts))
    if not problems and shards:
        regions = read_layer(run_gpkg, C.LAYER_REGIONS)
        cls = STAGE_SETTINGS[stage]
        ran_with = cls.from_mapping(shards[0].meta["ran_with"])
        target = chained_fingerprint(stage, ran_with, read_stage_records(run_gpkg))
        by = shards[0].spec.by
        chosen = assign_shards(regions, count, by)
        ids = regions[C.REGION_ID].astype(str).to_numpy()
        for sh in shards:
            if sh.meta.get("target") != target:
                problems.append(
                    f"shard {sh.spec} was made from other inputs (a stage before {stage} was "
                    "redone since)"
                )
            elif sh.meta.get("ids") != _ids_digest(list(ids[chosen == sh.spec.index - 1])):
                problems.append(f"shard {sh.spec} was made for other regions (a new grid)")
    if problems:
        raise InputError(
            f"Cannot merge {stage} from {count} shards: " + "; ".join(problems) + ".",
            hint=f"Run those shards (urbangeo {stage} --gpkg {run_gpkg} --shard I/{count}; a "
            "shard made for other inputs starts over by itself), then merge again.",
        )
    return shards


def merge_shards(
    gpkg: str | os.PathLike, stage: str, count: int, *, keep: bool = False
) -> StageResult:
    """Assemble the ``count`` shards of ``stage`` into the run ``gpkg``: their layers and files
    in the run's order, committed as the stage's result (its record and fingerprint are an
    unsharded run's). The run's lock is held throughout. The shard folders are removed
    afterwards unless ``keep``."""
    from urbangeo.stage import StageRun

    plan = _plan(stage)
    if count < 1:
        raise InputError(f"--shards must be at least 1, not {count}.")
    run_gpkg = Path(gpkg)
    with run_lock(run_gpkg.parent, command=f"urbangeo merge {stage}"):
        shards = _collect(run_gpkg, stage, count)
        settings = STAGE_SETTINGS[stage].from_mapping(shards[0].meta["settings"])
        path = check_can_write(run_gpkg, list(plan.outputs), overwrite=True)
        run = StageRun(stage, path, settings)
        regions = read_layer(path, C.LAYER_REGIONS)
        layers, counts, params, files, after = plan.merge(path, settings, shards, regions)
        result = run.commit(layers, counts=counts, params=params, files=files)
        after()
        if not keep:
            shutil.rmtree(run_gpkg.parent / SHARDS_DIR / stage, ignore_errors=True)
            with contextlib.suppress(OSError):  # other stages' shards are there
                (run_gpkg.parent / SHARDS_DIR).rmdir()
    message(
        f"Merged {count} shard(s) of {stage} into {path}: "
        + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in counts.items())
        + "."
    )
    return result
