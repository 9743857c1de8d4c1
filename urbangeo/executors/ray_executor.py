"""The ``ray`` executor: the shards of each sharded stage as Ray tasks, then the merge.

Ray is an optional extra (``pip install 'urbangeo[ray]'``), imported when this executor is
made. Each task runs one shard (:func:`urbangeo.shard.run_shard`, through the stage's own
function) with one CPU, one arithmetic thread and no worker processes (``workers`` auto is 1
there), so N tasks on N cores do not oversubscribe them; the driver merges the shards under
the run's lock. A task that dies (a node lost) is retried by Ray; a shard already done is
skipped, one half done resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from urbangeo.errors import InputError, UrbangeoError
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


def run_one_shard(stage: str, gpkg: str, values: dict[str, Any]) -> dict[str, Any]:
    """In a Ray worker: shard ``values["shard"]`` of ``stage`` on the run ``gpkg``; its counts."""
    from urbangeo.model.threads import one_thread
    from urbangeo.progress import set_mode
    from urbangeo.stage import stage_function

    one_thread()  # before torch loads (the embed shards): one thread per task
    set_mode("none")
    settings = STAGE_SETTINGS[stage].from_mapping(values)
    result = stage_function(stage)(gpkg, settings, overwrite=False)
    return {"counts": dict(result.counts), "skipped": result.skipped}


class RayExecutor:
    """Per-region stages as ``shards`` Ray tasks (default: the cluster's CPUs) on the Ray at
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
        task = self.ray.remote(num_cpus=1, max_retries=2)(run_one_shard)
        path = str(Path(gpkg).resolve())
        values = settings.to_dict()
        if values.get("workers") == "auto":  # a task has one CPU: no worker processes
            values["workers"] = 1
        refs = [task.remote(stage, path, {**values, "shard": f"{i}/{n}"}) for i in range(1, n + 1)]
        message(f"Stage {stage}: {n} shards as Ray tasks.")
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
        return merge_shards(gpkg, stage, n)
