"""The pipeline runner: every stage for a city into one run folder, cached and resumable.

A run folder holds ``run.gpkg`` (every layer, and in its ``urbangeo_stages`` table the record
of each finished stage), the files beside it (``images/``, ``captions.jsonl``,
``checkpoints/``, ``embeddings.parquet``, ``metrics.json``, ``maps/``...), ``run.toml`` (the
fully resolved configuration: ``urbangeo run --config RUN_DIR/run.toml`` reproduces the run;
it also marks the folder as a run folder) and ``run.log.jsonl`` (the event log: stages
started, failed, interrupted or not run; see :mod:`urbangeo.io.runs`).

A stage is done when its record's fingerprint (:func:`~urbangeo.io.runs.stage_fingerprint`:
its settings chained through the fingerprints of the stages it reads) is the one the run's
settings give: the record is the one store of what is done, whether ``urbangeo run`` or a
stage command wrote it. Changing a setting redoes that stage and every later one, while a
rerun with the same settings skips what is done. A stage that was interrupted is started again
and resumes by itself (images already saved, captions already paid for, training from its
last checkpoint when the log says it was stopped with the same fingerprint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from urbangeo import __version__
from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.executors import Executor, make_executor
from urbangeo.io.files import make_folder, new_folders_removed_on_error, write_text_atomic
from urbangeo.io.gpkg import write_layers
from urbangeo.io.lock import holder_alive, read_lock, run_lock
from urbangeo.io.runs import (
    FAILED,
    INTERRUPTED,
    NOT_RUN,
    RUN_LOG,
    STAGES_TABLE,
    STARTED,
    StageRecord,
    StageResult,
    downstream_of,
    log_event,
    open_events,
    read_events,
    read_stage_records,
    records_table,
    stage_fingerprint,
)
from urbangeo.progress import message
from urbangeo.settings import DEFAULT_PROFILE, STAGE_SETTINGS, StageSettings, profile
from urbangeo.settings.model import MODES

#: Version of the run folder's layout (written in run.toml); a folder of a format this urbangeo
#: does not read is refused. 2: what each stage did is its GeoPackage record (with its
#: fingerprint) and the event log; format 1 also kept a ``stages.json``.
RUN_FORMAT = 2
#: Formats read. A format-1 folder's records have no fingerprint: its stages are redone, and
#: its ``stages.json`` is removed once the new run writes its log.
_READS_FORMATS = (1, RUN_FORMAT)
OLD_STATE_JSON = "stages.json"

#: A default source that gives way when the user names another: the profile's city when an
#: area is given.
_GIVES_WAY = {"grid": ("city", ("boundary_file", "bbox", "place"))}

#: Keys at the top of run.toml besides the stage sections.
_TOP_KEYS = ("format", "urbangeo", "profile")


def _read_config(config: str | os.PathLike | dict | None) -> dict[str, Any]:
    if isinstance(config, dict):
        return json.loads(json.dumps(config, default=str))
    if config is None:
        return {}
    path = Path(config)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"Configuration {path} does not exist.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"Configuration {path} is not valid TOML: {exc}.") from exc


def resolve_config(
    config: str | os.PathLike | dict | None = None,
    *,
    profile_name: str | None = None,
    **overrides: Any,
) -> dict[str, dict[str, Any]]:
    """The settings each stage is given (see :func:`resolve_settings`), as plain values."""
    return resolve_settings(config, profile_name=profile_name, **overrides)[0]


def resolve_settings(
    config: str | os.PathLike | dict | None = None,
    *,
    profile_name: str | None = None,
    **overrides: Any,
) -> tuple[dict[str, dict[str, Any]], dict[str, StageSettings]]:
    """The settings each stage is given: a profile, then ``config`` (a run.toml or a dict),
    then ``overrides``; checked against each stage's declaration before any work.

    The profile is ``profile_name``, else the configuration's ``profile`` key, else
    :data:`~urbangeo.settings.DEFAULT_PROFILE` (``"none"``: the declared defaults alone).
    ``overrides`` are ``stage__key=value`` (e.g. ``grid__city="helsinki"``); ``None`` values
    are ignored. Unknown stages, keys, values of the wrong type or out of range are an error
    that names them. Returns, per stage, the values chosen (the rest are declared defaults)
    and the checked settings objects.
    """
    data = _read_config(config)
    fmt = data.pop("format", RUN_FORMAT)
    data.pop("urbangeo", None)
    chosen_profile = profile_name or data.pop("profile", None) or DEFAULT_PROFILE
    data.pop("profile", None)
    if fmt not in _READS_FORMATS:
        raise InputError(
            f"The configuration is run-folder format {fmt}; this urbangeo ({__version__}) "
            f"reads formats {', '.join(map(str, _READS_FORMATS))}.",
            hint="Start a new run folder, or use the urbangeo version that wrote it.",
        )
    unknown = sorted(set(data) - set(C.STAGES))
    if unknown:
        raise InputError(
            f"Unknown section(s) in the configuration: {', '.join(unknown)}.",
            hint=f"Sections are the stages: {', '.join(C.STAGES)}; above them: "
            f"{', '.join(_TOP_KEYS)}.",
        )
    base = {} if chosen_profile == "none" else profile(chosen_profile)
    resolved = {stage: dict(base.get(stage, {})) for stage in C.STAGES}
    for stage, section in data.items():
        if not isinstance(section, dict):
            raise InputError(f"[{stage}] must be a table of settings, not {section!r}.")
        resolved[stage].update(section)
    given = {stage: set(section) for stage, section in data.items()}  # what the user set
    for key, value in overrides.items():
        if value is None:
            continue
        stage, _, name = key.partition("__")
        if stage not in resolved:
            raise InputError(f"Unknown stage {stage!r} in the override {key}.")
        resolved[stage][name] = value
        given.setdefault(stage, set()).add(name)
    for stage, (default_key, alternatives) in _GIVES_WAY.items():
        mine = given.get(stage, set())
        if default_key not in mine and mine & set(alternatives):
            resolved[stage].pop(default_key, None)
    train = resolved["train"]
    teacher = MODES.get(train.get("mode", "urbanln"), MODES["urbanln"]).distill
    if not teacher and "queue_size" not in given.get("train", set()):
        train.pop("queue_size", None)  # the profile's queue is the teacher's
    if "name" not in resolved["embed"]:
        # embed the model this run trains (checkpoints/<name>/, named after the mode by default)
        resolved["embed"]["name"] = train.get("name") or train.get("mode", "urbanln")
    settings = {
        stage: STAGE_SETTINGS[stage].from_mapping(resolved[stage], where=f"[{stage}]")
        for stage in C.STAGES
    }
    values = {
        stage: {k: v for k, v in chosen.items() if v is not None}
        for stage, chosen in resolved.items()
    }
    for stage, chosen in values.items():  # old spellings of values (kind "satellite") as new
        for f in STAGE_SETTINGS[stage].fields():
            if f.spec.value_aliases and f.name in chosen:
                chosen[f.name] = settings[stage].to_dict()[f.name]
    return values, settings


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, os.PathLike):
        return json.dumps(os.fspath(value))
    raise InputError(f"Cannot write {value!r} to run.toml.")


def dump_config(config: dict[str, dict[str, Any]]) -> str:
    """``config`` as run.toml text (settings that are None are left out)."""
    lines = [
        "# urbangeo run configuration: `urbangeo run --config run.toml` reproduces the run.",
        "# Each stage's other settings keep their declared defaults (`urbangeo COMMAND --help`).",
        f"format = {RUN_FORMAT}",
        f'urbangeo = "{__version__}"',
        'profile = "none"  # the values below already include the profile the run started from',
    ]
    for stage in C.STAGES:
        lines += ["", f"[{stage}]"]
        for key, value in sorted(config[stage].items()):
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


# ---- state --------------------------------------------------------------------------------


def _check_folder(run_dir: Path) -> None:
    """Refuse a run folder written by an urbangeo whose run-folder format this one does not
    read (the ``format`` of its run.toml)."""
    try:
        fmt = tomllib.loads((run_dir / C.RUN_TOML).read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError):
        return  # no run.toml (a new folder) or not ours: this run writes its own
    if fmt is not None and fmt not in _READS_FORMATS:
        raise InputError(
            f"{run_dir} was written by an incompatible urbangeo (run-folder format {fmt}); "
            f"this is {__version__}, format {RUN_FORMAT}.",
            hint="Start a new run folder (-o), or rerun the old one with its own version.",
        )


def _adopt_format1(run_dir: Path, gpkg: Path, settings: dict[str, StageSettings]) -> None:
    """Keep the finished work of a format-1 folder: a stage its ``stages.json`` calls done with
    the fingerprint these settings had under format 1 gets, in its record, the fingerprint
    they have now, so that an unchanged rerun keeps it (images, paid captions, training)
    instead of redoing the whole run."""
    state = run_dir / OLD_STATE_JSON
    if not (state.exists() and gpkg.exists()):
        return
    try:
        entries = json.loads(state.read_text(encoding="utf-8")).get("stages", {})
    except (OSError, ValueError, AttributeError):
        return  # unreadable: its records stay without a fingerprint and are redone
    records = read_stage_records(gpkg)
    old: dict[str, str] = {}
    new: dict[str, str] = {}
    adopted: dict[str, StageRecord] = {}
    for stage in C.STAGES:
        # format 1's fingerprint: the settings and the input stages' fingerprints, joined
        inputs = "".join(old[name] for name in C.STAGE_INPUTS[stage])
        blob = json.dumps([stage, settings[stage].to_dict(runtime=False), inputs], sort_keys=True)
        old[stage] = hashlib.sha256(blob.encode()).hexdigest()[:16]
        record = records.get(stage)
        entry = entries.get(stage) or {}
        if record is not None and record.fingerprint:
            new[stage] = record.fingerprint
        elif (
            record is not None
            and entry.get("status") == "done"
            and entry.get("fingerprint") == old[stage]
        ):
            new[stage] = stage_fingerprint(stage, settings[stage], new)
            adopted[stage] = dataclasses.replace(record, fingerprint=new[stage])
    if adopted:
        table = records_table({**records, **adopted}.values())
        write_layers(gpkg, {STAGES_TABLE: table}, overwrite=True)
        message(
            f"Run folder of an older urbangeo: kept {', '.join(adopted)}, done with these settings."
        )


def _skipped(stage: str, config: dict[str, Any]) -> str | None:
    """Why a stage does not apply to this configuration (None: it runs)."""
    if stage == "streetview" and not (config.get("provider") or config.get("folder")):
        return "no street-view provider configured"
    return None


def _fingerprint(
    stage: str,
    config: dict[str, dict[str, Any]],
    settings: dict[str, StageSettings],
    records: Mapping[str, StageRecord],
    prints: Mapping[str, str],
) -> str:
    """The fingerprint of ``stage``'s record once the runner did it with these settings, given
    the ``prints`` of the stages before it. A stage that does not apply is left as it is: its
    record's fingerprint ("" without one), which is what the stages reading it chain."""
    if _skipped(stage, config[stage]):
        record = records.get(stage)
        return record.fingerprint if record is not None else ""
    return stage_fingerprint(stage, settings[stage], prints)


def _why_redone(record: StageRecord) -> str:
    if not record.fingerprint:
        return (
            "its record has no fingerprint (written by an older urbangeo, or progress of a "
            "stage that did not finish)"
        )
    return "done before with other settings"


# ---- running --------------------------------------------------------------------------------


def run_pipeline(
    run_dir: str | os.PathLike | None = None,
    *,
    config: str | os.PathLike | dict | None = None,
    from_stage: str | None = None,
    profile_name: str | None = None,
    executor: Executor | str | None = None,
    **overrides: Any,
) -> list[StageResult]:
    """Run every stage into ``run_dir`` (default: a folder named after the city).

    ``config`` is a run.toml (or a dict of sections) on top of a profile (``profile_name``, by
    default the offline demo); ``overrides`` are ``stage__key=value`` settings on top. Stages
    already done with the same settings are skipped; ``from_stage`` redoes that stage and
    every later one. ``executor`` runs each stage (:mod:`urbangeo.executors`: ``"local"``,
    the default, or ``"ray"``; or an executor object, e.g. Ray with an address).
    """
    if not isinstance(executor, str | None):
        runner: Executor = executor
    else:
        runner = make_executor(executor)
    if from_stage is not None and from_stage not in C.STAGES:
        raise InputError(f"Unknown stage '{from_stage}'.", hint=f"Stages: {', '.join(C.STAGES)}.")
    config_values, settings = resolve_settings(config, profile_name=profile_name, **overrides)
    city = config_values["grid"].get("city")
    run_dir = Path(run_dir if run_dir is not None else (city or "urbangeo-run"))
    new = not run_dir.exists()
    with new_folders_removed_on_error(run_dir / C.RUN_GPKG):
        make_folder(
            run_dir,
            name=f"the run folder {run_dir}",
            hint="Choose a folder you can write to (-o).",
        )
        try:
            return _run_stages(run_dir, config_values, settings, from_stage, runner)
        except BaseException:
            if new and _did_nothing(run_dir / C.RUN_GPKG):
                # A new run that did nothing leaves no folder behind (as a failed grid).
                for name in (C.RUN_TOML, RUN_LOG):
                    (run_dir / name).unlink(missing_ok=True)
            raise


def _did_nothing(gpkg: Path) -> bool:
    try:
        return not read_stage_records(gpkg)
    except Exception:  # an unreadable file: keep it, and do not hide the first error
        return False


def _run_stages(
    run_dir: Path,
    config: dict[str, dict[str, Any]],
    settings: dict[str, StageSettings],
    from_stage: str | None,
    executor: Executor,
) -> list[StageResult]:
    """The stages of :func:`run_pipeline`, in order, under the run folder's lock."""
    gpkg = run_dir / C.RUN_GPKG
    results: list[StageResult] = []
    with run_lock(run_dir, command="urbangeo run"):
        _check_folder(run_dir)
        _adopt_format1(run_dir, gpkg, settings)
        write_text_atomic(run_dir / C.RUN_TOML, dump_config(config))
        events = read_events(run_dir)

        def log(stage: str, event: str, **fields: Any) -> None:
            events.append(log_event(run_dir, stage, event, **fields))
            (run_dir / OLD_STATE_JSON).unlink(missing_ok=True)  # format 1: the log replaces it

        prints: dict[str, str] = {}
        forced: set[str] = set()
        for stage in C.STAGES:
            records = read_stage_records(gpkg)  # read again: a stage drops later ones
            record = records.get(stage)
            fp = prints[stage] = _fingerprint(stage, config, settings, records, prints)
            if stage == from_stage:
                forced |= {stage, *downstream_of(stage)}
            last = open_events(records, events).get(stage)
            reason = _skipped(stage, config[stage])
            if reason:
                if last is None or (last["event"], last.get("reason")) != (NOT_RUN, reason):
                    log(stage, NOT_RUN, fingerprint=fp, reason=reason)
                results.append(StageResult(stage, gpkg, {}, skipped=True))
                continue
            if record is not None and stage not in forced:
                if record.fingerprint == fp:
                    results.append(StageResult(stage, gpkg, record.counts, skipped=True))
                    message(f"Stage {stage}: already done with these settings, skipped.")
                    continue
                message(f"Stage {stage}: {_why_redone(record)}; redoing it and what reads it.")
            stopped = last is not None and last["event"] in (STARTED, INTERRUPTED, FAILED)
            resume = stopped and last is not None and last.get("fingerprint") == fp
            resume = resume and stage not in forced
            extra: dict[str, Any] = {"overwrite": True}
            if stage == "train":
                # the runner owns the outputs: a stage that runs replaces what an older run of
                # it wrote; training resumes instead when it was stopped with the same settings
                extra = {"resume": resume, "overwrite": not resume, "run_dir": run_dir}
            log(stage, STARTED, fingerprint=fp)
            try:
                result = executor.run_stage(stage, gpkg, settings[stage], **extra)
            except BaseException as exc:
                event, fields = _failure(exc)
                with contextlib.suppress(OSError):  # a full disk must not hide the error
                    log(stage, event, fingerprint=fp, **fields)
                raise
            results.append(StageResult(stage, gpkg, _plain(result.counts)))
    return results


def _failure(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """How a stage ended when it raised: interrupted (Ctrl-C) or failed, with the error."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, {}
    return FAILED, {"error": getattr(exc, "message", None) or str(exc) or type(exc).__name__}


def _plain(counts: Any) -> dict:
    return json.loads(json.dumps(dict(counts or {}), default=str))


def run_status(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Each stage's state in a run folder: status, counts, seconds, finished time, reason.

    A stage is ``done`` when it has a record (its counts and seconds come from it), or
    ``changed`` when that record's settings are not run.toml's (a stage command, an older
    urbangeo: the next run redoes it); an event newer than the record says what happened
    since: ``running`` (``interrupted`` when no process holds the run), ``interrupted``,
    ``failed`` with its error, ``not run`` with its reason; else the stage is ``pending``.
    """
    run_dir = Path(run_dir)
    if not ((run_dir / C.RUN_TOML).exists() or (run_dir / RUN_LOG).exists()):
        raise InputError(
            f"{run_dir} is not an urbangeo run folder (no {C.RUN_TOML}).",
            hint="Give the folder that `urbangeo run -o` wrote.",
        )
    records = read_stage_records(run_dir / C.RUN_GPKG)
    events = open_events(records, read_events(run_dir))
    expected = _expected_prints(run_dir, records)
    holder = read_lock(run_dir)
    live = holder is not None and holder_alive(holder)
    rows = []
    for stage in C.STAGES:
        row: dict[str, Any] = {
            "stage": stage,
            "status": "pending",
            "seconds": None,
            "finished": None,
            "counts": {},
            "reason": None,
        }
        record, event = records.get(stage), events.get(stage)
        if event is not None:
            status = event["event"]
            if status == STARTED:
                # killed (kill -9, a crash) when no process holds the run
                status = "running" if live else "interrupted"
            else:
                row["finished"] = event.get("time")
            row.update(status=status, reason=event.get("error") or event.get("reason"))
        elif record is not None:
            row.update(
                status="done",
                seconds=record.seconds,
                finished=record.finished,
                counts=record.counts,
            )
            if stage in expected and record.fingerprint != expected[stage]:
                why = f"{_why_redone(record)}; the next run redoes it"
                row.update(status="changed", reason=why)
        rows.append(row)
    return rows


def _expected_prints(run_dir: Path, records: Mapping[str, StageRecord]) -> dict[str, str]:
    """Each stage's fingerprint under the folder's run.toml ({} when it cannot be read)."""
    try:
        config, settings = resolve_settings(run_dir / C.RUN_TOML)
    except InputError:
        return {}
    prints: dict[str, str] = {}
    for stage in C.STAGES:
        prints[stage] = _fingerprint(stage, config, settings, records, prints)
    return prints
