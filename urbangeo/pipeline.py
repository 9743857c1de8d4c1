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

import dataclasses
import hashlib
import inspect
import json
import os
import socket
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from urbangeo import __version__
from urbangeo import constants as C
from urbangeo.errors import InputError, OutputError
from urbangeo.geo.boundary import get_city
from urbangeo.geo.sampling import check_sampling_settings
from urbangeo.geo.stages import grid_stage, sample_stage
from urbangeo.io.files import new_folders_removed_on_error, write_text_atomic
from urbangeo.io.runs import StageResult, read_stage_records
from urbangeo.progress import message

#: Version of the run folder's layout; a folder written with another one is refused.
RUN_FORMAT = 1
STATE_JSON = "stages.json"
LOCK_FILE = ".urbangeo.lock"

#: The settings of each stage for the default city, run fully offline: a 250 m grid (the
#: bundled extracts are about 2 km across), rendered OSM tiles, three styles of the
#: OSM-grounded captioner with CAPTURE consensus, a tiny CLIP pre-trained from scratch,
#: OSM-derived indicators.
DEFAULTS: dict[str, dict[str, Any]] = {
    "grid": {"city": C.DEFAULT_CITY, "cell_size": 250.0},
    "sample": {"network": C.DEFAULT_NETWORK, "interval": C.DEFAULT_INTERVAL_M},
    "tiles": {"render": "osm", "size": 64},
    "streetview": {"provider": None},
    "caption": {"backend": "osm", "models": ["planner", "observer", "analyst"]},
    "train": {
        "model": "urbangeo-tiny-vit",
        "mode": "urbanln",
        "epochs": 40,
        "batch_size": 16,
        "lr": 3e-4,
        "queue_size": 64,
        "kind": "satellite",
        "checkpoint_every": 10,
    },
    "embed": {"encoder": "trained"},
    "indicators": {"osm": True},
    "predict": {"seeds": 3, "split": "random"},
    "cluster": {"k": 3},
    "map": {},
}


# ---- configuration ------------------------------------------------------------------------


def _stage_functions() -> dict[str, Callable[..., Any]]:
    """Each stage's library function (imported lazily: most pull in heavy stacks)."""
    from urbangeo.captions.stages import caption_stage
    from urbangeo.downstream.stages import cluster_stage, indicators_stage, map_stage, predict_stage
    from urbangeo.imagery.stages import streetview_stage, tiles_stage
    from urbangeo.model.stages import embed_stage, train_stage

    return {
        "grid": grid_stage,
        "sample": sample_stage,
        "tiles": tiles_stage,
        "streetview": streetview_stage,
        "caption": caption_stage,
        "train": train_stage,
        "embed": embed_stage,
        "indicators": indicators_stage,
        "predict": predict_stage,
        "cluster": cluster_stage,
        "map": map_stage,
    }


#: A default source that gives way when the user names another: the default city when an
#: area is given, the rendered OSM map when a raster or an XYZ service is.
_GIVES_WAY = {
    "grid": ("city", ("boundary_file", "bbox", "place")),
    "tiles": ("render", ("raster", "xyz")),
}

#: Training modes without the momentum teacher, which take no queue.
_NO_TEACHER_MODES = ("urbanclip", "no-distill")

#: Keyword arguments the runner passes itself, not settable from a configuration.
_RUNNER_ARGS = {"gpkg", "overwrite", "resume", "run_dir", "config", "pairs", "max_steps"}


def _allowed_keys(stage: str, func: Callable[..., Any]) -> set[str]:
    params = inspect.signature(func).parameters
    keys = {
        name
        for name, p in params.items()
        if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and name != "gpkg")
    }
    if stage == "train":
        from urbangeo.model.train import TrainConfig

        keys |= {f.name for f in dataclasses.fields(TrainConfig)}
    if stage == "caption":
        keys |= {"base_url", "api_key_env", "timeout", "max_tokens", "temperature", "osm"}
        keys |= {"city", "seed", "radius", "device"}
    if stage == "streetview":
        keys.add("provider")
    return keys - _RUNNER_ARGS - {"client", "source", "mlp"}


def resolve_config(
    config: str | os.PathLike | dict | None = None, **overrides: Any
) -> dict[str, dict[str, Any]]:
    """The full configuration: defaults, then ``config`` (a run.toml or a dict), then overrides.

    ``overrides`` are ``stage__key=value`` (e.g. ``grid__city="helsinki"``); ``None`` values
    are ignored. Unknown stages or keys are an error that names them.
    """
    data: dict[str, Any] = {}
    if isinstance(config, dict):
        data = json.loads(json.dumps(config))
    elif config is not None:
        path = Path(config)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(f"Configuration {path} does not exist.") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"Configuration {path} is not valid TOML: {exc}.") from exc
    fmt = data.pop("format", RUN_FORMAT)
    data.pop("urbangeo", None)
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
            hint=f"Sections are the stages: {', '.join(C.STAGES)}.",
        )
    resolved = {stage: dict(DEFAULTS[stage]) for stage in C.STAGES}
    for stage, section in data.items():
        if not isinstance(section, dict):
            raise InputError(f"[{stage}] must be a table of settings, not {section!r}.")
        resolved[stage].update(section)
    given = {stage: set(section) for stage, section in data.items()}  # what the user set
    for key, value in overrides.items():
        if value is None:
            continue
        stage, _, name = key.partition("__")
        resolved[stage][name] = value
        given.setdefault(stage, set()).add(name)
    for stage, (default_key, alternatives) in _GIVES_WAY.items():
        mine = given.get(stage, set())
        if default_key not in mine and mine & set(alternatives):
            resolved[stage].pop(default_key, None)
    no_teacher = resolved["train"].get("mode") in _NO_TEACHER_MODES
    if no_teacher and "queue_size" not in given.get("train", set()):
        resolved["train"].pop("queue_size", None)  # the default queue is the teacher's
    if "name" not in resolved["embed"]:
        # embed the model this run trains (checkpoints/<name>/, named after the mode by default)
        train = resolved["train"]
        resolved["embed"]["name"] = train.get("name") or train.get("mode", "urbanln")
    functions = _stage_functions()
    for stage in C.STAGES:
        bad = sorted(set(resolved[stage]) - _allowed_keys(stage, functions[stage]))
        if bad:
            allowed = ", ".join(sorted(_allowed_keys(stage, functions[stage])))
            raise InputError(
                f"Unknown setting(s) in [{stage}]: {', '.join(bad)}.",
                hint=f"[{stage}] takes: {allowed}.",
            )
    if resolved["grid"].get("city"):
        get_city(resolved["grid"]["city"])  # an unknown city fails here, listing the options
    sample = resolved["sample"]
    try:
        interval = float(sample.get("interval", C.DEFAULT_INTERVAL_M))
        tolerance = float(sample.get("merge_tolerance", C.DEFAULT_MERGE_TOLERANCE_M))
    except (TypeError, ValueError) as exc:
        raise InputError(f"[sample] interval and merge_tolerance are metres: {exc}.") from exc
    check_sampling_settings(interval=interval, merge_tolerance=tolerance)  # before any work
    return resolved


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
        "# urbangeo run configuration, fully resolved: `urbangeo run --config run.toml`",
        f"format = {RUN_FORMAT}",
        f'urbangeo = "{__version__}"',
    ]
    for stage in C.STAGES:
        lines += ["", f"[{stage}]"]
        for key, value in sorted(config[stage].items()):
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


# ---- state --------------------------------------------------------------------------------


def fingerprint(stage: str, settings: dict[str, Any], previous: str) -> str:
    """Hash of a stage's settings and the fingerprint of the stage before it."""
    blob = json.dumps([stage, settings, previous], sort_keys=True, default=str)
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


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process; a second run writing it refuses clearly."""
    path = run_dir / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                other = {}
            if other.get("host") == me["host"] and not _alive(int(other.get("pid", -1))):
                path.unlink(missing_ok=True)  # left by a run that was killed
                continue
            raise OutputError(
                f"Another urbangeo run (pid {other.get('pid', '?')} on "
                f"{other.get('host', '?')}) is writing {run_dir}.",
                hint="Wait for it to finish, or write this run to another folder (-o). If "
                f"no run is going on, delete {path}.",
            ) from None
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- running --------------------------------------------------------------------------------


def _stage_kwargs(
    func: Callable[..., Any], stage: str, settings: dict[str, Any], run_dir: Path, resume: bool
) -> dict:
    """A stage's settings as keyword arguments. The runner owns the run folder's outputs, so
    a stage that runs replaces what an older run of it wrote; training resumes instead when it
    was interrupted with the same settings."""
    kwargs = {k: v for k, v in settings.items() if v is not None}
    if stage == "train":
        kwargs.update(resume=resume, overwrite=not resume, run_dir=run_dir)
    elif "overwrite" in inspect.signature(func).parameters:
        kwargs["overwrite"] = True
    return kwargs


def _skipped(stage: str, settings: dict[str, Any]) -> str | None:
    """Why a stage does not apply to this configuration (None: it runs)."""
    if stage == "streetview" and not settings.get("provider"):
        return "no street-view provider configured"
    return None


def run_pipeline(
    run_dir: str | os.PathLike | None = None,
    *,
    config: str | os.PathLike | dict | None = None,
    from_stage: str | None = None,
    **overrides: Any,
) -> list[StageResult]:
    """Run every stage into ``run_dir`` (default: a folder named after the city).

    ``config`` is a run.toml (or a dict of sections); ``overrides`` are ``stage__key=value``
    settings on top. Stages already done with the same settings are skipped;
    ``from_stage`` redoes that stage and every later one.
    """
    if from_stage is not None and from_stage not in C.STAGES:
        raise InputError(f"Unknown stage '{from_stage}'.", hint=f"Stages: {', '.join(C.STAGES)}.")
    settings = resolve_config(config, **overrides)
    city = settings["grid"].get("city")
    run_dir = Path(run_dir if run_dir is not None else (city or "urbangeo-run"))
    new = not run_dir.exists()
    with new_folders_removed_on_error(run_dir / C.RUN_GPKG):
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"Cannot create the run folder {run_dir}: {exc.strerror}.",
                hint="Choose a folder you can write to (-o).",
            ) from exc
        state: dict[str, Any] = {}
        try:
            return _run_stages(run_dir, settings, from_stage, state)
        except BaseException:
            if new and not any(e.get("status") == "done" for e in state.get("stages", {}).values()):
                # A new run that did nothing leaves no folder behind (as a failed grid).
                for name in (C.RUN_TOML, STATE_JSON):
                    (run_dir / name).unlink(missing_ok=True)
            raise


def _run_stages(
    run_dir: Path, settings: dict[str, dict[str, Any]], from_stage: str | None, state: dict
) -> list[StageResult]:
    """The stages of :func:`run_pipeline`; ``state`` is filled with the run's state as read."""
    gpkg = run_dir / C.RUN_GPKG
    functions = _stage_functions()
    results: list[StageResult] = []
    with run_lock(run_dir):
        state.update(read_state(run_dir))
        write_text_atomic(run_dir / C.RUN_TOML, dump_config(settings))
        stages = state.setdefault("stages", {})
        previous = ""
        forced = False
        records = _record_marks(gpkg)
        for stage in C.STAGES:
            fp = fingerprint(stage, settings[stage], previous)
            previous = fp
            forced = forced or stage == from_stage
            entry = stages.get(stage, {})
            if not forced and _changed_by_hand(stage, entry, records):
                message(
                    f"Stage {stage}: changed outside `urbangeo run` since this run did it; "
                    "redoing it and every later stage."
                )
                forced = True
            if not forced and entry.get("status") == "done" and entry.get("fingerprint") == fp:
                results.append(StageResult(stage, gpkg, entry.get("counts", {}), skipped=True))
                message(f"Stage {stage}: already done with these settings, skipped.")
                continue
            reason = _skipped(stage, settings[stage])
            if reason:
                stages[stage] = {"status": "not run", "fingerprint": fp, "reason": reason}
                _write_state(run_dir, state)
                results.append(StageResult(stage, gpkg, {}, skipped=True))
                continue
            resume = entry.get("status") == "running" and entry.get("fingerprint") == fp
            resume = resume and not forced
            stages[stage] = {"status": "running", "fingerprint": fp, "started": _now()}
            for later in C.STAGES[C.STAGES.index(stage) + 1 :]:
                stages.pop(later, None)
            _write_state(run_dir, state)
            started = time.perf_counter()
            result = functions[stage](
                gpkg, **_stage_kwargs(functions[stage], stage, settings[stage], run_dir, resume)
            )
            stages[stage] = {
                "status": "done",
                "fingerprint": fp,
                "started": stages[stage]["started"],
                "finished": _now(),
                "seconds": round(time.perf_counter() - started, 3),
                "counts": _plain(getattr(result, "counts", {})),
            }
            mark = _record_marks(gpkg).get(stage)
            if mark is not None:
                stages[stage]["record"] = mark
            _write_state(run_dir, state)
            results.append(StageResult(stage, gpkg, stages[stage]["counts"]))
    return results


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
    rows = []
    for stage in C.STAGES:
        entry = stages.get(stage, {})
        changed = _changed_by_hand(stage, entry, records)
        rows.append(
            {
                "stage": stage,
                "status": "changed" if changed else entry.get("status", "pending"),
                "seconds": entry.get("seconds"),
                "finished": entry.get("finished"),
                "counts": entry.get("counts", {}),
                "reason": "redone or removed by a stage command since; the next run redoes it"
                if changed
                else entry.get("reason"),
            }
        )
    return rows
