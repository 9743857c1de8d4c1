"""What each stage did to a run's GeoPackage: parameters, counts, timing.

A non-spatial table ``urbangeo_stages`` in the GeoPackage holds one row per stage, written in
the same atomic write as the stage's layers, so a record exists exactly when its layers do.
A rerun compares the record's parameters with its own to decide whether a stage is done.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyogrio

from urbangeo import constants as C
from urbangeo.io.gpkg import list_layers

STAGES_TABLE = "urbangeo_stages"


@dataclass(frozen=True)
class StageResult:
    """What a stage wrote (or found already done): the one result type of every stage."""

    stage: str
    path: Path | None
    counts: dict = field(default_factory=dict)
    skipped: bool = False
    #: Files written beside the GeoPackage (metrics, plots, maps...).
    files: tuple[Path, ...] = ()
    #: The stage's own report object (e.g. prediction metrics), for the caller to show.
    report: object | None = None


def downstream_of(stage: str) -> tuple[str, ...]:
    """The stages that read what ``stage`` writes, directly or through others
    (:data:`urbangeo.constants.STAGE_INPUTS`): redoing ``stage`` makes each of them stale."""
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, inputs in C.STAGE_INPUTS.items():
            if name not in found and (stage in inputs or found & set(inputs)):
                found.add(name)
                changed = True
    return tuple(s for s in C.STAGES if s in found)


@dataclass(frozen=True)
class StageRecord:
    """One finished stage."""

    stage: str
    params: dict
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0
    finished: str = ""
    version: str = ""


def read_stage_records(path: str | os.PathLike) -> dict[str, StageRecord]:
    """The finished stages of a run's GeoPackage, by stage name ({} for a new file)."""
    if STAGES_TABLE not in list_layers(path):
        return {}
    table = pyogrio.read_dataframe(path, layer=STAGES_TABLE)
    return {
        row.stage: StageRecord(
            stage=row.stage,
            params=json.loads(row.params),
            counts=json.loads(row.counts),
            seconds=float(row.seconds),
            finished=row.finished,
            version=row.version,
        )
        for row in table.itertuples()
    }


def stage_table(
    path: str | os.PathLike, record: StageRecord, *, invalidates: tuple[str, ...] = ()
) -> pd.DataFrame:
    """The stages table of ``path`` with ``record`` added (replacing an older one).

    Records of the stages named in ``invalidates`` (those downstream, whose inputs change)
    are dropped.
    """
    from urbangeo import __version__

    records = read_stage_records(path)
    for name in invalidates:
        records.pop(name, None)
    records[record.stage] = StageRecord(
        stage=record.stage,
        params=record.params,
        counts=record.counts,
        seconds=round(record.seconds, 3),
        finished=record.finished or datetime.now(UTC).isoformat(timespec="seconds"),
        version=record.version or __version__,
    )
    return pd.DataFrame(
        [
            {
                "stage": r.stage,
                "params": json.dumps(r.params, sort_keys=True),
                "counts": json.dumps(r.counts, sort_keys=True),
                "seconds": r.seconds,
                "finished": r.finished,
                "version": r.version,
            }
            for r in records.values()
        ]
    )
