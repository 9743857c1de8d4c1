"""Settings shared by several stages, declared once (each stage's class inherits them)."""

from __future__ import annotations

from dataclasses import dataclass

from urbangeo.errors import InputError
from urbangeo.settings._base import StageSettings, setting

#: How the regions are split into shards (see :mod:`urbangeo.shard`).
SHARD_BY = ("id", "block")


@dataclass(frozen=True)
class ShardSettings(StageSettings):
    """``shard`` and ``shard_by``: run one shard of a per-region stage (tiles, streetview,
    caption, embed: a share of the regions) or of predict (a share of its fits). Both are
    runtime settings: a sharded stage, once merged, is the same stage as an unsharded one
    (same record, same fingerprint)."""

    shard: str | None = setting(
        None,
        "Run only shard I of N (e.g. 2/4) into RUN/shards/STAGE/I-of-N/: tiles, streetview, "
        "caption, embed: 1/N of the regions; predict: 1/N of the fits (every shard reads all "
        "regions). Once all N are done, `urbangeo merge STAGE --gpkg RUN/run.gpkg --shards N` "
        "assembles the run. Shards of one stage run at the same time (a Slurm or cloud array "
        "job).",
        unit="I/N",
        runtime=True,
    )
    shard_by: str = setting(
        "id",
        "How regions are split into shards: id (a stable hash of region_id: even shards) or "
        "block (blocks of 8 x 8 grid cells: neighbours stay together, e.g. for raster reads). "
        "predict splits its fits, not the regions: there it changes nothing.",
        choices=SHARD_BY,
        runtime=True,
    )


@dataclass(frozen=True)
class ChunkSettings(StageSettings):
    """``chunk_size``: how many images a streaming stage (caption, embed) holds at a time. A
    runtime setting: the outputs are the same with any size."""

    chunk_size: int = setting(
        8192,
        "Images handled at a time, their results written before the next ones are read: "
        "memory holds this many images' work (caption: their calls, parses and choices; embed: "
        "their vectors), whatever the size of the run.",
        unit="N",
        min=1,
        max=10_000_000,
        runtime=True,
    )


@dataclass(frozen=True)
class WorkersSettings(StageSettings):
    """``workers``: the processes a stage's CPU-bound Python work is spread over (captions from
    OSM, caption parsing, map tiles drawn from OSM). A runtime setting: the outputs are the same
    with any number."""

    workers: int | str = setting(
        "auto",
        "Worker processes for CPU-bound work: caption: OSM captions and parsing; tiles: "
        "drawing --render maps (when there is over a second of drawing), threads that read "
        "--raster files (--xyz downloads follow --concurrency). auto: one per core this process "
        "may use; 1: all in this process. Each runs one BLAS/torch thread; the outputs are the "
        "same.",
        unit="N|auto",
        runtime=True,
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "workers", workers_value(self.workers, self.stage))
        super().__post_init__()


def workers_value(value: object, stage: str = "") -> int | str:
    """``value`` as a ``workers`` setting: a whole number of processes (1 or more) or
    ``"auto"``; an :class:`~urbangeo.errors.InputError` otherwise."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    where = f"[{stage}] workers (--workers)" if stage else "workers (--workers)"
    raise InputError(
        f"{where} must be a number of processes (1 or more) or 'auto', not {value!r}.",
        hint="--workers auto uses every core this process may run on; --workers 1 does the "
        "work in this process.",
    )
