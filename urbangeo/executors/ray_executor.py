"""The ``ray`` executor: the shards of each sharded stage on Ray, then the merge.

Ray is an optional extra (``pip install 'urbangeo[ray]'``), imported when this executor is
made. Each shard (:func:`urbangeo.shard.run_shard`, through the stage's own function) runs
with one CPU, one arithmetic thread and no worker processes (``workers`` auto is 1 there), so N
shards on N cores do not oversubscribe them; the driver merges the shards under the run's lock.
The image stages (:data:`DATA_STAGES`) go through Ray Data: a dataset of their shards mapped by
a pool of actors, one per CPU at most, each of which imports the stage's modules (torch, for
embed) once and then runs shard after shard, streamed as actors free up; the other stages run
a Ray task per shard. A task or actor that dies (a node lost) is retried by Ray; a shard
already done is skipped, one half done resumes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from urbangeo.errors import InputError, UrbangeoError
from urbangeo.io.processes import Failure, failure_error, guarded
from urbangeo.io.runs import StageResult
from urbangeo.progress import message
from urbangeo.settings import STAGE_SETTINGS, StageSettings


def import_ray() -> Any:
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise InputError(
            "--executor ray needs Ray, which is not installed.",
            hint="pip install 'urbangeo[ray]' (or pip install ray), or run with --executor local.",
        ) from exc
    return ray


def _shard_process(stage: str) -> Callable[..., StageResult]:
    """What a process that runs shards of ``stage`` does first (one thread, before torch
    loads; no progress bars); the stage's function."""
    from urbangeo.model.threads import one_thread
    from urbangeo.progress import set_mode
    from urbangeo.stage import stage_function

    one_thread()
    set_mode("none")
    return stage_function(stage)


def run_one_shard(stage: str, gpkg: str, values: dict[str, Any]) -> dict[str, Any]:
    """In a Ray worker: shard ``values["shard"]`` of ``stage`` on the run ``gpkg``; its counts."""
    settings = STAGE_SETTINGS[stage].from_mapping(values)
    result = _shard_process(stage)(gpkg, settings, overwrite=False)
    return {"counts": dict(result.counts), "skipped": result.skipped}


#: Stages whose shards go through Ray Data (an actor pool over a dataset of shards).
DATA_STAGES = ("tiles", "streetview", "embed")


class ShardActor:
    """A Ray Data actor that runs shards of ``stage`` on the run ``gpkg``: set up once (the
    stage's module imported), then called with one shard's settings per row."""

    def __init__(self, stage: str, gpkg: str) -> None:
        self.stage, self.gpkg = stage, gpkg
        _shard_process(stage)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        # Ray Data passes a UDF's exception on as text only: a shard's error comes back as
        # data, for the driver to raise as the stage would.
        out = guarded(run_one_shard, self.stage, self.gpkg, json.loads(row["values"]))
        failure = json.dumps(dataclasses.asdict(out)) if isinstance(out, Failure) else ""
        return {"shard": row["shard"], "failure": failure}


def shard_failure(failure: Failure, shard: str, stage: str) -> UrbangeoError:
    """The error to raise for a shard's ``failure``: the input error it was, or one that
    names the shard and carries its traceback."""
    return failure_error(
        failure,
        f"shard {shard} of stage {stage}",
        hint="The shards that finished are kept: once the cause is fixed, the same command "
        "runs the others; --executor local runs the stage here.",
    )


class RayExecutor:
    """Per-region stages as ``shards`` shards (default: the cluster's CPUs) on the Ray at
    ``address`` (None: this machine's, started if none runs); other stages here."""

    name = "ray"

    def __init__(self, *, address: str | None = None, shards: int | None = None) -> None:
        if shards is not None and shards < 1:
            raise InputError(f"--shards must be at least 1, not {shards}.")
        self.ray = import_ray()
        self.address = address
        self.shards = shards

    def _connect(self) -> None:
        if self.ray.is_initialized():
            return
        from urbangeo.model.threads import one_thread_env

        self.ray.init(
            address=self.address,
            include_dashboard=False,
            ignore_reinit_error=True,
            log_to_driver=False,
            runtime_env={"env_vars": one_thread_env()},
        )

    def count(self) -> int:
        """The number of shards per stage: ``shards``, else the cluster's CPUs."""
        if self.shards is not None:
            return self.shards
        self._connect()
        return self._cpus()

    def _cpus(self) -> int:
        """The connected cluster's CPUs."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def run_stage(
        self, stage: str, gpkg: Path, settings: StageSettings, **extra: Any
    ) -> StageResult:
        """Run ``stage``: as shards on Ray then merged when it shards, else here."""
        from urbangeo.shard import SHARDED_STAGES, merge_shards, shard_refusal

        if stage not in SHARDED_STAGES or shard_refusal(gpkg, settings) is not None:
            from urbangeo.executors import LocalExecutor

            return LocalExecutor().run_stage(stage, gpkg, settings, **extra)
        self._connect()
        n = self.count()
        path = str(Path(gpkg).resolve())
        values = settings.to_dict()
        if values.get("workers") == "auto":  # a task has one CPU: no worker processes
            values["workers"] = 1
        shards = [f"{i}/{n}" for i in range(1, n + 1)]
        if stage in DATA_STAGES:
            self._run_dataset(stage, path, values, shards)
        else:
            self._run_tasks(stage, path, values, shards)
        return merge_shards(gpkg, stage, n)

    def _run_dataset(
        self, stage: str, path: str, values: dict[str, Any], shards: list[str]
    ) -> None:
        """The shards as a Ray Dataset mapped by :class:`ShardActor` s (one CPU each)."""
        rows = [
            {"shard": shard, "values": json.dumps({**values, "shard": shard}, default=str)}
            for shard in shards
        ]
        context = self.ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # urbangeo's own progress reports the stage
        context.print_on_execution_start = False
        dataset = self.ray.data.from_items(rows, override_num_blocks=len(rows)).map(
            ShardActor,
            fn_constructor_args=(stage, path),
            concurrency=min(len(rows), self._cpus()),
            num_cpus=1,
        )
        message(f"Stage {stage}: {len(rows)} shards through Ray Data.")
        done = dataset.take_all()
        for row in sorted(done, key=lambda r: shards.index(r["shard"])):
            if row["failure"]:  # the first failed shard's error, as the stage shows it
                raise shard_failure(Failure(**json.loads(row["failure"])), row["shard"], stage)
        if len(done) != len(shards):
            raise UrbangeoError(f"Stage {stage}: Ray Data returned {len(done)} of the shards.")

    def _run_tasks(self, stage: str, path: str, values: dict[str, Any], shards: list[str]) -> None:
        """The shards as Ray tasks (one CPU each)."""
        task = self.ray.remote(num_cpus=1, max_retries=2)(run_one_shard)
        refs = [task.remote(stage, path, {**values, "shard": shard}) for shard in shards]
        message(f"Stage {stage}: {len(shards)} shards as Ray tasks.")
        try:
            self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as exc:
            for ref in refs:
                self.ray.cancel(ref, force=True)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, UrbangeoError):  # the shard's own error, as a stage shows it
                raise cause from None
            raise
        except BaseException:
            for ref in refs:  # Ctrl-C or a failed shard: stop the others (done ones are kept)
                self.ray.cancel(ref, force=True)
            raise
