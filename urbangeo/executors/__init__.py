"""Executors: how ``urbangeo run`` runs each stage (:func:`make_executor`).

``local`` (the default) runs every stage in this process, as the stage commands do. ``ray``
runs each sharded stage (:data:`urbangeo.shard.SHARDED_STAGES`: the per-region stages, and
``predict``, whose shards split its fits) as N shards of one CPU and one thread each (the
image stages through Ray Data, an actor pool over a dataset of shards; ``caption`` and
``predict`` as Ray tasks), on a laptop's local Ray or a cluster's (``--address``), then
merges them in this process under the run's lock (:func:`urbangeo.shard.merge_shards`); the
other stages run here. The outputs are those of the local run (see :mod:`urbangeo.shard` for
what is exact and what is to float tolerance). On a cluster the run folder must be on storage
every node sees, at the same path.

Training is not sharded: it runs in this process, or on several GPUs and nodes with
``torchrun`` (``urbangeo train``; see the README's "Large areas").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from urbangeo.errors import InputError
from urbangeo.io.runs import StageResult
from urbangeo.model.threads import one_thread_env
from urbangeo.settings import StageSettings

#: The executors ``urbangeo run --executor`` offers.
EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs one stage of a run: ``run_stage(stage, gpkg, settings, overwrite=..., ...)``."""

    name: str

    def run_stage(
        self, stage: str, gpkg: Path, settings: StageSettings, **extra: Any
    ) -> StageResult: ...


class LocalExecutor:
    """Every stage in this process (what the stage commands do)."""

    name = "local"

    def run_stage(
        self, stage: str, gpkg: Path, settings: StageSettings, **extra: Any
    ) -> StageResult:
        """Run ``stage`` on ``gpkg`` with ``settings`` here."""
        from urbangeo.stage import stage_function

        return stage_function(stage)(gpkg, settings, **extra)


def make_executor(
    name: str | None = None, *, address: str | None = None, shards: int | None = None
) -> Executor:
    """The executor ``name`` (``local`` or ``ray``). For ``ray``: ``address`` of a running
    cluster (``auto``, ``ray://host:10001``...; None: a local Ray, started if none runs) and
    the number of ``shards`` per stage (None: the cluster's CPUs)."""
    name = name or "local"
    if name == "local":
        if address is not None or shards is not None:
            raise InputError(
                "--address and --shards are for --executor ray.",
                hint="Add --executor ray, or leave them out.",
            )
        return LocalExecutor()
    if name == "ray":
        from urbangeo.executors.ray_executor import RayExecutor

        return RayExecutor(address=address, shards=shards)
    raise InputError(f"Unknown executor {name!r}.", hint=f"Executors: {', '.join(EXECUTORS)}.")


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "make_executor", "one_thread_env"]
