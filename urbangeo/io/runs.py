"""What each stage did in a run: its record in the GeoPackage, and the run's event log.

A non-spatial table ``urbangeo_stages`` in the GeoPackage holds one row per finished stage
(its parameters, counts, timing and **fingerprint**), written in the same atomic write as the
stage's layers, so a record exists exactly when its layers do. It is the one store of what is
done: a stage is done with given settings exactly when its record's fingerprint is the one
:func:`stage_fingerprint` gives for them, whoever ran it (``urbangeo run`` or a stage command).

What is not a record (a stage started and not finished: running, failed with its error,
interrupted, or not run and why) goes to the append-only event log ``run.log.jsonl`` beside the
GeoPackage, one JSON line per event (:func:`log_event`). The log never says a stage is done;
an event counts only while it is newer than the records of the stage and of the stages it
reads (:func:`open_events`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyogrio

from urbangeo import constants as C
from urbangeo.io.gpkg import list_layers

if TYPE_CHECKING:
    from urbangeo.settings import StageSettings

STAGES_TABLE = "urbangeo_stages"
#: The run's event log, beside its GeoPackage.
RUN_LOG = "run.log.jsonl"
#: Events of the log: a stage began, raised an error, was stopped (Ctrl-C), or does not apply.
STARTED, FAILED, INTERRUPTED, NOT_RUN = "started", "failed", "interrupted", "not run"


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


def stage_fingerprint(stage: str, settings: StageSettings, inputs: Mapping[str, str]) -> str:
    """What identifies a stage's work: a hash of its settings (all of them, defaults included,
    but not how it runs: threads, device, checkpoint spacing) and of the fingerprints of the
    stages it reads (:data:`~urbangeo.constants.STAGE_INPUTS`; one missing from ``inputs``
    counts as ""). Changing a setting changes it, and that of every stage that reads it."""
    chained = [inputs.get(name, "") for name in C.STAGE_INPUTS[stage]]
    blob = json.dumps([stage, settings.to_dict(runtime=False), chained], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def chained_fingerprint(
    stage: str, settings: StageSettings, records: Mapping[str, StageRecord]
) -> str:
    """:func:`stage_fingerprint` chained through the fingerprints of a run's ``records``."""
    return stage_fingerprint(stage, settings, {name: r.fingerprint for name, r in records.items()})


@dataclass(frozen=True)
class StageRecord:
    """One finished stage. ``fingerprint`` is "" in a record that is not proof of done work
    (written by an older urbangeo, or the progress a stage saved before it finished)."""

    stage: str
    params: dict
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0
    finished: str = ""
    version: str = ""
    fingerprint: str = ""


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
            fingerprint=str(getattr(row, "fingerprint", None) or ""),  # none in format 1
        )
        for row in table.itertuples()
    }


def stage_table(
    path: str | os.PathLike,
    record: StageRecord,
    *,
    invalidates: tuple[str, ...] = (),
    settings: StageSettings | None = None,
) -> pd.DataFrame:
    """The stages table of ``path`` with ``record`` added (replacing an older one).

    Records of the stages named in ``invalidates`` (those downstream, whose inputs change)
    are dropped. With ``settings`` (those the stage ran with) the record gets its
    :func:`stage_fingerprint`, chained through the records of its inputs in ``path``; without,
    it keeps ``record.fingerprint`` (by default "": progress, not done work).
    """
    from urbangeo import __version__

    records = read_stage_records(path)
    for name in invalidates:
        records.pop(name, None)
    fingerprint = record.fingerprint
    if settings is not None:
        fingerprint = chained_fingerprint(record.stage, settings, records)
    records[record.stage] = StageRecord(
        stage=record.stage,
        params=record.params,
        counts=record.counts,
        seconds=round(record.seconds, 3),
        finished=record.finished or now(),
        version=record.version or __version__,
        fingerprint=fingerprint,
    )
    return records_table(records.values())


def records_table(records: Iterable[StageRecord]) -> pd.DataFrame:
    """``records`` as the rows of the stages table."""
    return pd.DataFrame(
        [
            {
                "stage": r.stage,
                "params": json.dumps(r.params, sort_keys=True),
                "counts": json.dumps(r.counts, sort_keys=True),
                "seconds": r.seconds,
                "finished": r.finished,
                "version": r.version,
                "fingerprint": r.fingerprint,
            }
            for r in records
        ]
    )


def now() -> str:
    """The time now as ISO 8601 text in UTC, to the microsecond: record and event times are
    compared to tell which came last."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---- the event log ------------------------------------------------------------------------


def log_event(
    folder: str | os.PathLike,
    stage: str,
    event: str,
    *,
    fingerprint: str = "",
    error: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Append one event to the run's log (``folder/run.log.jsonl``), flushed to disk before
    returning (a kill right after loses nothing). Returns the event."""
    entry: dict[str, Any] = {
        "time": now(),
        "stage": stage,
        "event": event,
        "fingerprint": fingerprint,
    }
    if error is not None:
        entry["error"] = error
    if reason is not None:
        entry["reason"] = reason
    with open(Path(folder) / RUN_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        with contextlib.suppress(OSError):  # some file systems refuse fsync; flushed is enough
            os.fsync(f.fileno())
    return entry


def read_events(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The run's events, oldest first ([] without a log). A line cut short (a kill during the
    write) is left out."""
    path = Path(folder) / RUN_LOG
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "stage" in event and "event" in event:
            events.append(event)
    return events


def open_events(
    records: Mapping[str, StageRecord], events: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per stage, its last event when that is newer than the records of the stage and of every
    stage it reads, directly or through others: what happened to it since it was last done with
    these inputs (started again, failed, stopped, not run). An event older than one of those
    records is history: the stage was done since, or its inputs were, which dropped its
    record and makes it pending."""
    last: dict[str, dict[str, Any]] = {}
    for event in events:
        last[event["stage"]] = event
    found = {}
    for stage, event in last.items():
        ancestors = [s for s in C.STAGES if s == stage or stage in downstream_of(s)]
        newest = max((_time(records[s].finished) for s in ancestors if s in records), default=None)
        if newest is None or _time(event.get("time", "")) > newest:
            found[stage] = event
    return found
