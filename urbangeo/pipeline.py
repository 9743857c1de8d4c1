"""The pipeline runner: every stage for a city into one run folder, cached and resumable.

A run folder holds ``run.gpkg`` (every layer), the files beside it (``images/``,
``captions.jsonl``, ``checkpoints/``, ``embeddings.parquet``, ``metrics.json``, ``maps/``...),
``run.toml`` (the fully resolved configuration: ``urbangeo run --config RUN_DIR/run.toml``
reproduces the run) and ``stages.json`` (what each stage did: its fingerprint, counts and
timing).

A stage's fingerprint hashes its settings and the fingerprint of the stage before it, so that
changing a setting redoes that stage and every later one, while a rerun with the same settings
skips what is done. A stage that was interrupted is started again and resumes by itself
(images already saved, captions already paid for, training from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from urbangeo import __version__
from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.files import make_folder, new_folders_removed_on_error, write_text_atomic
from urbangeo.io.lock import holder_alive, read_lock, run_lock
from urbangeo.io.runs import StageResult, downstream_of, read_stage_records
from urbangeo.progress import message
from urbangeo.settings import DEFAULT_PROFILE, STAGE_SETTINGS, StageSettings, profile
from urbangeo.settings.model import MODES
from urbangeo.stage import stage_function

#: Version of the run folder's layout; a folder written with another one is refused.
RUN_FORMAT = 1
STATE_JSON = "stages.json"

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
    if fmt != RUN_FORMAT:
        raise InputError(
            f"The configuration is run-folder format {fmt}; this urbangeo ({__version__}) "
            f"reads format {RUN_FORMAT}.",
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


def stage_fingerprint(stage: str, settings: StageSettings, inputs: str) -> str:
    """Hash of a stage's settings (all of them, defaults included, but not how it runs:
    threads, device, checkpoint spacing) and the fingerprint of the stage before it."""
    blob = json.dumps([stage, settings.to_dict(runtime=False), inputs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run folder's ``stages.json`` ({} for a new folder)."""
    path = Path(run_dir) / STATE_JSON
    if not path.exists():
        return {"format": RUN_FORMAT, "stages": {}}
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("format") != RUN_FORMAT:
        raise InputError(
            f"{run_dir} was written by an incompatible urbangeo (run-folder format "
            f"{state.get('format')}, version {state.get('urbangeo', '?')}); this is "
            f"{__version__}, format {RUN_FORMAT}.",
            hint="Start a new run folder (-o), or rerun the old one with its own version.",
        )
    return state


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    state["format"] = RUN_FORMAT
    state["urbangeo"] = __version__
    write_text_atomic(
        run_dir / STATE_JSON, json.dumps(state, indent=2, sort_keys=True, default=str)
    )


# ---- running --------------------------------------------------------------------------------


def _skipped(stage: str, config: dict[str, Any]) -> str | None:
    """Why a stage does not apply to this configuration (None: it runs)."""
    if stage == "streetview" and not (config.get("provider") or config.get("folder")):
        return "no street-view provider configured"
    return None


def run_pipeline(
    run_dir: str | os.PathLike | None = None,
    *,
    config: str | os.PathLike | dict | None = None,
    from_stage: str | None = None,
    profile_name: str | None = None,
    **overrides: Any,
) -> list[StageResult]:
    """Run every stage into ``run_dir`` (default: a folder named after the city).

    ``config`` is a run.toml (or a dict of sections) on top of a profile (``profile_name``, by
    default the offline demo); ``overrides`` are ``stage__key=value`` settings on top. Stages
    already done with the same settings are skipped; ``from_stage`` redoes that stage and
    every later one.
    """
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
        state: dict[str, Any] = {}
        try:
            return _run_stages(run_dir, config_values, settings, from_stage, state)
        except BaseException:
            if new and not any(e.get("status") == "done" for e in state.get("stages", {}).values()):
                # A new run that did nothing leaves no folder behind (as a failed grid).
                for name in (C.RUN_TOML, STATE_JSON):
                    (run_dir / name).unlink(missing_ok=True)
            raise


def _run_stages(
    run_dir: Path,
    config: dict[str, dict[str, Any]],
    settings: dict[str, StageSettings],
    from_stage: str | None,
    state: dict,
) -> list[StageResult]:
    """The stages of :func:`run_pipeline`; ``state`` is filled with the run's state as read."""
    gpkg = run_dir / C.RUN_GPKG
    results: list[StageResult] = []
    with run_lock(run_dir, command="urbangeo run"):
        state.update(read_state(run_dir))
        write_text_atomic(run_dir / C.RUN_TOML, dump_config(config))
        stages = state.setdefault("stages", {})
        prints: dict[str, str] = {}
        forced: set[str] = set()
        records = _record_marks(gpkg)
        for stage in C.STAGES:
            inputs = "".join(prints[name] for name in C.STAGE_INPUTS[stage])
            fp = prints[stage] = stage_fingerprint(stage, settings[stage], inputs)
            if stage == from_stage:
                forced |= {stage, *downstream_of(stage)}
            entry = stages.get(stage, {})
            if stage not in forced and _changed_by_hand(stage, entry, records):
                message(
                    f"Stage {stage}: changed outside `urbangeo run` since this run did it; "
                    "redoing it and the stages that read it."
                )
                forced |= {stage, *downstream_of(stage)}
            done = entry.get("status") == "done" and entry.get("fingerprint") == fp
            if stage not in forced and done:
                results.append(StageResult(stage, gpkg, entry.get("counts", {}), skipped=True))
                message(f"Stage {stage}: already done with these settings, skipped.")
                continue
            reason = _skipped(stage, config[stage])
            if reason:
                stages[stage] = {"status": "not run", "fingerprint": fp, "reason": reason}
                _write_state(run_dir, state)
                results.append(StageResult(stage, gpkg, {}, skipped=True))
                continue
            interrupted = entry.get("status") in ("running", "interrupted", "failed")
            resume = interrupted and entry.get("fingerprint") == fp and stage not in forced
            stages[stage] = {"status": "running", "fingerprint": fp, "started": _now()}
            for later in downstream_of(stage):
                stages.pop(later, None)
            _write_state(run_dir, state)
            started = time.perf_counter()
            extra: dict[str, Any] = {"overwrite": True}
            if stage == "train":
                # the runner owns the outputs: a stage that runs replaces what an older run of
                # it wrote; training resumes instead when it was interrupted, same settings
                extra = {"resume": resume, "overwrite": not resume, "run_dir": run_dir}
            try:
                result = stage_function(stage)(gpkg, settings[stage], **extra)
            except BaseException as exc:
                stages[stage].update(_failure(exc))
                _write_state(run_dir, state)
                raise
            stages[stage] = {
                "status": "done",
                "fingerprint": fp,
                "started": stages[stage]["started"],
                "finished": _now(),
                "seconds": round(time.perf_counter() - started, 3),
                "counts": _plain(result.counts),
            }
            mark = _record_marks(gpkg).get(stage)
            if mark is not None:
                stages[stage]["record"] = mark
            _write_state(run_dir, state)
            results.append(StageResult(stage, gpkg, stages[stage]["counts"]))
    return results


def _failure(exc: BaseException) -> dict[str, Any]:
    """How a stage ended when it raised: interrupted (Ctrl-C) or failed, with the error."""
    if isinstance(exc, KeyboardInterrupt):
        return {"status": "interrupted", "finished": _now()}
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return {"status": "failed", "finished": _now(), "error": text}


def _record_marks(gpkg: Path) -> dict[str, str]:
    """What identifies each stage's latest record in the GeoPackage (finish time, settings)."""
    if not gpkg.exists():
        return {}
    return {
        stage: f"{r.finished} {json.dumps(r.params, sort_keys=True, default=str)}"
        for stage, r in read_stage_records(gpkg).items()
    }


def _changed_by_hand(stage: str, entry: dict[str, Any], records: dict[str, str]) -> bool:
    """Whether a stage this run did was redone or removed since, by a stage command."""
    mark = entry.get("record")
    return entry.get("status") == "done" and mark is not None and records.get(stage) != mark


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _plain(counts: Any) -> dict:
    return json.loads(json.dumps(dict(counts or {}), default=str))


def run_status(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Each stage's state in a run folder: status, counts, seconds, finished time."""
    run_dir = Path(run_dir)
    if not (run_dir / STATE_JSON).exists():
        raise InputError(
            f"{run_dir} is not an urbangeo run folder (no {STATE_JSON}).",
            hint="Give the folder that `urbangeo run -o` wrote.",
        )
    stages = read_state(run_dir).get("stages", {})
    records = _record_marks(run_dir / C.RUN_GPKG)
    holder = read_lock(run_dir)
    live = holder is not None and holder_alive(holder)
    rows = []
    for stage in C.STAGES:
        entry = stages.get(stage, {})
        changed = _changed_by_hand(stage, entry, records)
        status = entry.get("status", "pending")
        if status == "running" and not live:
            status = "interrupted"  # killed (kill -9, a crash): no process holds the run
        rows.append(
            {
                "stage": stage,
                "status": "changed" if changed else status,
                "seconds": entry.get("seconds"),
                "finished": entry.get("finished"),
                "counts": entry.get("counts", {}),
                "reason": "redone or removed by a stage command since; the next run redoes it"
                if changed
                else entry.get("error") or entry.get("reason"),
            }
        )
    return rows
