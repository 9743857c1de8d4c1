"""One way to run a stage: settings checked, the run's lock, outputs checked, the record.

Every ``*_stage`` function is a body decorated with :func:`stage`. The decorator turns the
caller's keyword arguments (or a settings object) into the stage's settings before any work,
takes the run folder's lock (the same one ``urbangeo run`` holds, re-entrant), checks that the
outputs can be written, times the work, and gives the body a :class:`StageRun` whose
:meth:`StageRun.commit` writes the stage's layers together with its record in the
``urbangeo_stages`` table in one all-or-nothing write, dropping the records of every later
stage (their inputs changed). The record holds the stage's fingerprint
(:func:`~urbangeo.io.runs.stage_fingerprint`: its settings chained through its inputs'
records), the same whether ``urbangeo run`` or a stage command ran it, so the runner skips a
stage done by hand with the run's settings. The body holds only the stage's own work and
returns :meth:`StageRun.commit`'s :class:`~urbangeo.io.runs.StageResult`.

:func:`run_stage` runs any stage by name: ``run_stage("grid", "kotka/run.gpkg", city="kotka")``.
"""

from __future__ import annotations

import functools
import importlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.gpkg import Layer, check_can_write, write_layers
from urbangeo.io.lock import run_lock
from urbangeo.io.runs import (
    STAGES_TABLE,
    StageRecord,
    StageResult,
    chained_fingerprint,
    downstream_of,
    read_stage_records,
    stage_table,
)
from urbangeo.settings import StageSettings

S = TypeVar("S", bound=StageSettings)

#: Where each stage's function lives (imported when the stage runs: most need heavy stacks).
STAGE_FUNCTIONS: dict[str, str] = {
    "grid": "urbangeo.geo.stages:grid_stage",
    "sample": "urbangeo.geo.stages:sample_stage",
    "tiles": "urbangeo.imagery.stages:tiles_stage",
    "streetview": "urbangeo.imagery.stages:streetview_stage",
    "caption": "urbangeo.captions.stages:caption_stage",
    "train": "urbangeo.model.stages:train_stage",
    "embed": "urbangeo.model.stages:embed_stage",
    "indicators": "urbangeo.downstream.stages:indicators_stage",
    "predict": "urbangeo.downstream.stages:predict_stage",
    "cluster": "urbangeo.downstream.stages:cluster_stage",
    "map": "urbangeo.viz.stages:map_stage",
}


class StageRun:
    """One running stage: its settings, GeoPackage and clock; :meth:`commit` finishes it."""

    def __init__(self, stage: str, path: Path | None, settings: StageSettings) -> None:
        self.stage = stage
        self.path = path
        self.settings = settings
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def gpkg(self) -> Path:
        """:attr:`path` of a stage that requires its GeoPackage (``gpkg_required``, the default),
        where it is never None."""
        if self.path is None:
            raise InputError(f"The {self.stage} stage needs the run's GeoPackage (--gpkg).")
        return self.path

    def fingerprint(self) -> str:
        """The fingerprint :meth:`commit` records now: these settings chained through the
        records of the stage's inputs in the GeoPackage ("" without a GeoPackage)."""
        if self.path is None:
            return ""
        records = read_stage_records(self.path)
        return chained_fingerprint(self.stage, self.settings, records)

    def commit(
        self,
        layers: Mapping[str, Layer] | None = None,
        *,
        counts: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        files: Iterable[str | os.PathLike] = (),
        report: object | None = None,
    ) -> StageResult:
        """Write ``layers`` and this stage's record atomically; the stage's result.

        ``params`` default to the stage's settings; the record's fingerprint is
        :meth:`fingerprint`'s; the records of the stages that read this one are dropped.
        Layers get their default styles for QGIS. Without a GeoPackage (a stage run on files
        alone) nothing is recorded.
        """
        counts = dict(counts)
        if self.path is not None:
            record = StageRecord(
                self.stage,
                dict(params) if params is not None else self.settings.to_dict(runtime=False),
                counts,
                self.seconds,
            )
            table = stage_table(
                self.path, record, invalidates=downstream_of(self.stage), settings=self.settings
            )
            write_layers(
                self.path, {**(layers or {}), STAGES_TABLE: table}, overwrite=True, styles=True
            )
        return StageResult(
            self.stage,
            self.path,
            counts,
            files=tuple(Path(f) for f in files),
            report=report,
        )


def settings_of(
    cls: type[S], settings: S | Mapping[str, Any] | None, values: Mapping[str, Any]
) -> S:
    """``settings`` (an object or a mapping) with ``values`` on top, checked."""
    if settings is None:
        return cls.from_mapping(values)
    if isinstance(settings, Mapping):
        return cls.from_mapping({**settings, **values})
    if not isinstance(settings, cls):
        raise InputError(f"Expected {cls.__name__}, got {type(settings).__name__}.")
    return settings.replace(**values) if values else settings


def check_inputs(settings: StageSettings) -> None:
    """Refuse, before any work, input files that the settings name and that do not exist."""
    for f in settings.fields():
        value = getattr(settings, f.name)
        if f.spec.exists and value is not None and not Path(value).exists():
            what = f.spec.help.split(". ")[0].rstrip(".")
            raise InputError(
                f"{value} does not exist ({f.flag}: {what}).",
                hint="Check the path; relative paths are read from the current folder.",
            )


def stage(
    cls: type[S], *, outputs: Iterable[str] = (), gpkg_required: bool = True
) -> Callable[[Callable[..., StageResult]], Callable[..., StageResult]]:
    """Make a stage function from ``body(run, settings, **io)``.

    The stage function is ``f(gpkg, settings=None, *, overwrite=False, <io>..., **values)``:
    ``values`` are settings of ``cls`` by name (checked before any work), ``io`` the body's own
    keyword arguments (input files, injected clients...).
    """
    name = cls.stage
    layers = tuple(outputs)

    def decorate(body: Callable[..., StageResult]) -> Callable[..., StageResult]:
        @functools.wraps(body)
        def run(
            gpkg: str | os.PathLike | None = None,
            settings: S | Mapping[str, Any] | None = None,
            *,
            overwrite: bool = False,
            **kwargs: Any,
        ) -> StageResult:
            known = set(cls.names())
            values = {k: v for k, v in kwargs.items() if k in known and v is not None}
            extra = {k: v for k, v in kwargs.items() if k not in known}
            chosen = settings_of(cls, settings, values)
            check_inputs(chosen)
            if gpkg is None:
                if gpkg_required:
                    raise InputError(f"The {name} stage needs the run's GeoPackage (--gpkg).")
                return body(StageRun(name, None, chosen), chosen, overwrite=overwrite, **extra)
            if getattr(chosen, "shard", None) is not None:
                # one shard of the regions, in its own folder (urbangeo.shard); `merge` commits
                from urbangeo.shard import run_shard

                return run_shard(run, gpkg, chosen, overwrite=overwrite, **extra)
            folder = Path(gpkg).parent
            with run_lock(folder, command=f"urbangeo {name}"):
                path = check_can_write(gpkg, list(layers), overwrite=overwrite)
                return body(StageRun(name, path, chosen), chosen, overwrite=overwrite, **extra)

        run.settings_class = cls  # type: ignore[attr-defined]
        run.__doc__ = (body.__doc__ or "") + (
            f"\n\nSettings: the fields of :class:`urbangeo.settings.{cls.__name__}`, as keyword "
            "arguments or as ``settings``; ``overwrite`` replaces outputs that exist."
        )
        return run

    return decorate


def stage_function(name: str) -> Callable[..., StageResult]:
    """The function of stage ``name``."""
    if name not in STAGE_FUNCTIONS:
        raise InputError(f"Unknown stage {name!r}.", hint=f"Stages: {', '.join(C.STAGES)}.")
    module, _, attribute = STAGE_FUNCTIONS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def run_stage(name: str, gpkg: str | os.PathLike | None, **kwargs: Any) -> StageResult:
    """Run stage ``name`` on ``gpkg`` with settings given as keyword arguments."""
    return stage_function(name)(gpkg, **kwargs)
