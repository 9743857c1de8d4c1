"""``predict`` in shards: a shard makes its share of the fits, the merge assembles the report.

``predict``'s work is many independent fits: for each feature set (the embeddings, each
baseline), target and seed (repeat), the heads on that seed's split (on each fold of that
repeat), plus the coordinates k-NN and the training mean. Every shard reads the run's inputs
whole, as the unsharded stage does (the embeddings, the indicators, the edge cells, the image
baselines, embedded once and cached in ``baselines/`` beside the run: a shard that finds them
there reuses them, one that does not embeds them, the same vectors), and plans every fit the
same way (:class:`~urbangeo.downstream.fits.FitPlan`: the splits and folds come from the seeds).
Shard I of N then makes jobs I, I + N, ... of the plan's list (:func:`~urbangeo.downstream.fits.
share_of`) and saves their predictions and choices in its folder (``fits.npz``); its record
says which plan it worked on (a digest of the jobs), the MLP head's configuration and what it
did with the baselines. The regions are not split: ``--shard-by`` changes nothing here.

The merge reads the run's inputs and plans again, checks that every shard worked on that plan
with the same head, puts the fits together and writes what the unsharded stage writes
(``metrics.json``, the ``predictions`` layer, the record with its fingerprint), through the
same functions (:func:`urbangeo.downstream.stages.predict_outputs`). Ridge, k-NN and mean
baseline results are exact; the MLP heads' to float rounding (see :mod:`urbangeo.downstream.
fits`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.settings import StageSettings
from urbangeo.shard_plans.common import Merged, Plan, Shard, Share

if TYPE_CHECKING:
    from urbangeo.downstream.fits import FitPlan
    from urbangeo.downstream.heads import MLPConfig
    from urbangeo.io.runs import StageResult
    from urbangeo.stage import StageRun

#: A shard's fits, in its folder.
FITS_NPZ = "fits.npz"


@dataclass(frozen=True)
class FitShare:
    """Which fits a ``predict`` shard makes: share ``index`` of ``count`` of the fits of the run
    whose inputs are in ``run_gpkg``."""

    run_gpkg: Path
    index: int
    count: int


def fit_shard(
    run: StageRun,
    share: FitShare,
    plan: FitPlan,
    mlp: MLPConfig,
    baselines: Mapping[str, Any],
) -> StageResult:
    """Make the shard's share of ``plan``'s fits, save them beside the shard's GeoPackage and
    record the shard as done (no layer: the merge writes them)."""
    from urbangeo.downstream.fits import fit_jobs, save_fits, share_of

    jobs = plan.jobs()
    mine = share_of(jobs, share.index, share.count)
    fits = fit_jobs(plan, mlp, mine)
    folder = run.gpkg.parent
    saved = save_fits(folder / FITS_NPZ, fits)
    params = {
        "jobs": plan.jobs_digest(),
        "mlp": asdict(mlp),
        "baselines": dict(baselines),
    }
    counts = {"jobs": len(mine), "of": len(jobs), "fits": sum(len(f) for f in fits.values())}
    return run.commit(None, counts=counts, params=params, files=[saved])


def _predict_settings(run_gpkg: Path, s: StageSettings) -> StageSettings:
    return s  # every shard reads the run's inputs whole and plans every fit itself


def _predict_work(layers: Mapping[str, pd.DataFrame], s: StageSettings, share: Share) -> bool:
    return True  # a shard beyond the number of jobs saves no fit, and merges as done


def _predict_kwargs(folder: Path, share: Share) -> dict[str, Any]:
    assert share.run_gpkg is not None
    return {"fit_share": FitShare(share.run_gpkg, share.index, share.count)}


def _same(shards: Sequence[Shard], key: str, what: str) -> Any:
    values = [sh.record_params.get(key) for sh in shards]
    for sh, value in zip(shards, values, strict=True):
        if value != values[0]:
            raise InputError(
                f"Shard {sh.spec} of predict was made with another {what} than shard "
                f"{shards[0].spec}.",
                hint=f"Rerun every shard the same way (urbangeo predict --shard I/"
                f"{sh.spec.count} --overwrite), then merge.",
            )
    return values[0]


def _baselines(shards: Sequence[Shard], own: Mapping[str, Any]) -> dict[str, Any]:
    """The baselines' information (``own``: the merge's reading, in the stage's order) as one
    unsharded run gives it: embedded, not reused, when any shard embedded it."""
    out = {name: dict(info) for name, info in own.items()}
    for name, info in out.items():
        if "reused" in info:
            done = [sh.record_params.get("baselines", {}).get(name, {}) for sh in shards]
            info["reused"] = all(bool(d.get("reused", True)) for d in done)
    return out


def _merge_predict(
    run_gpkg: Path, s: StageSettings, shards: Sequence[Shard], regions: gpd.GeoDataFrame
) -> Merged:
    from urbangeo.downstream.fits import Fits, load_fits
    from urbangeo.downstream.heads import MLPConfig
    from urbangeo.downstream.stages import (
        PredictInputs,
        metrics_path,
        predict_outputs,
        say_predicted,
    )
    from urbangeo.settings import PredictSettings

    assert isinstance(s, PredictSettings)
    mlp = MLPConfig(**_same(shards, "mlp", "MLP head"))
    digest = _same(shards, "jobs", "plan of fits")
    output = metrics_path(run_gpkg, s)
    inputs = PredictInputs.read(run_gpkg, s)
    plan = inputs.plan(s)
    if plan.jobs_digest() != digest:
        raise InputError(
            "The shards of predict planned other fits than the run's inputs give now (its "
            "embeddings, indicators or baselines changed since).",
            hint=f"Rerun every shard (urbangeo predict --gpkg {run_gpkg} --shard I/"
            f"{len(shards)} --overwrite), then merge.",
        )
    fits: Fits = {}
    for sh in shards:
        path = sh.folder / FITS_NPZ
        if not path.is_file():
            raise InputError(
                f"Shard {sh.spec} of predict has no {FITS_NPZ} in {sh.folder}.",
                hint=f"Rerun it (urbangeo predict --gpkg {run_gpkg} --shard {sh.spec} "
                "--overwrite), then merge.",
            )
        for model, made in load_fits(path).items():
            fits.setdefault(model, {}).update(made)
    inputs.baselines = _baselines(shards, inputs.baselines)
    report = plan.report(fits, mlp)
    layers, counts, params, files = predict_outputs(run_gpkg, s, inputs, report, output)
    return layers or {}, counts, params, files, lambda: say_predicted(run_gpkg, s, report, output)


PLAN = Plan(
    layers=(),
    whole=(),
    settings=_predict_settings,
    has_work=_predict_work,
    merge=_merge_predict,
    outputs=(C.LAYER_PREDICTIONS,),
    kwargs=_predict_kwargs,
    splits="fits",
)
