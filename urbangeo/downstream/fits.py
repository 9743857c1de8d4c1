"""The fits of an evaluation (:func:`urbangeo.downstream.predict.evaluate`), planned before any
is made, so that they are made all at once or in shares (``predict --shard I/N``,
:mod:`urbangeo.shard_plans.predict`) and assembled into the same report.

A :class:`FitPlan` holds what every fit needs whole: the feature sets, the targets, each
seed's split (each repeat's folds) and the heads. Its :meth:`FitPlan.jobs` are the units of
work in a fixed order, group by group: the embeddings' heads, then each baseline feature set's,
then the coordinates k-NN with the training mean; within a group target by target, seed by seed
(repeat by repeat). One job is one group's models on one seed's split, or on every fold of one
repeat. Shard I of N makes jobs I, I + N, I + 2N... (:func:`share_of`): round-robin over a
group-major list, so every shard gets its 1/N of each group's jobs, the costly MLP ones
included. :func:`fit_jobs` makes a list of jobs (every job: what ``evaluate`` does);
:meth:`FitPlan.report` assembles the fits of all jobs, from one call or many, into the report.

Every fit depends on its own task alone (its rows, seed and key), so the shares' fits are the
unsharded ones: ridge, k-NN and the training mean exactly; the MLP heads to float rounding,
since the heads trained together as one batched model (:mod:`.heads`) run matrix kernels of
other shapes when fewer heads share the batch (and a head's best epoch can then move where two
epochs' validation errors tie to the last bits).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urbangeo.downstream.heads import (
    HeadTask,
    MLPConfig,
    fit_knn,
    fit_mlp_heads,
    fit_ridge,
)
from urbangeo.downstream.metrics import METRICS, is_below_baseline, regression_metrics, summarize
from urbangeo.downstream.report import HEADS, PredictionReport, TargetResult, model_label
from urbangeo.errors import InputError
from urbangeo.io.files import atomic_path
from urbangeo.progress import progress

#: The job group of the coordinates k-NN and the training mean (the other groups are named by
#: their feature set: "" the embeddings, else a baseline's or a feature set's name).
COORDS = "*coords"


@dataclass
class Fit:
    """One model to fit: a target, its row of results (seed/repeat), fold, and regions."""

    name: str
    row: int
    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class Fitted:
    """A fitted model as the report reads it: its predictions of every row, and its choice."""

    predictions: np.ndarray
    chosen: float = 0.0


def mean_fits(tasks: list[HeadTask], n_predict: int) -> list[Fitted]:
    """The training mean of each task, predicted for ``n_predict`` rows."""
    return [Fitted(np.full(n_predict, t.y[t.train].mean())) for t in tasks]


@dataclass(frozen=True)
class Job:
    """One unit of work: ``group``'s models on the fits (``tasks``) of one row of a target."""

    group: str
    target: str
    row: int
    tasks: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{self.group}|{self.target}|{self.row}|{len(self.tasks)}"


#: Per model, the fits made, by task position in the plan.
Fits = dict[str, dict[int, Any]]


@dataclass
class FitPlan:
    """Every fit of an evaluation and what it needs, decided before any fit is made."""

    names: list[str]
    tasks: list[HeadTask]
    planned: list[Fit]
    #: "" (the dataset's features) first, then the baselines' (by name)
    feature_sets: dict[str, np.ndarray]
    #: the heads fitted on each feature set
    heads: dict[str, tuple[str, ...]]
    weights: dict[str, np.ndarray]
    xy: np.ndarray | None
    coords: bool
    ys: dict[str, np.ndarray]
    sets: dict[str, np.ndarray]
    schemes: dict[str, str]
    rows: dict[str, list[int]]
    folds: int
    n: int
    protocol: dict[str, Any] = field(default_factory=dict)
    region_ids: Any = None
    observed: Any = None

    def group_models(self, group: str) -> list[str]:
        """The models of a job group, in the report's order."""
        if group == COORDS:
            return (["coords_knn"] if self.coords else []) + ["train_mean"]
        prefix = f"{group}:" if group else ""
        return [prefix + h for h in HEADS if h in self.heads[group]]

    def models(self) -> list[str]:
        """Every model, in the report's order."""
        return [m for g in (*self.feature_sets, COORDS) for m in self.group_models(g)]

    def jobs(self) -> list[Job]:
        """The units of work, group by group, target by target, row by row."""
        out = []
        for group in (*self.feature_sets, COORDS):
            for name in self.names:
                for r in range(len(self.rows[name])):
                    tasks = tuple(
                        i for i, p in enumerate(self.planned) if p.name == name and p.row == r
                    )
                    out.append(Job(group, name, r, tasks))
        return out

    def jobs_digest(self) -> str:
        """A digest of what the fits are made from: the jobs, the regions, every feature set
        and target, and every fit's rows (so that shards of other inputs are told apart)."""
        h = hashlib.sha256("\n".join(j.key for j in self.jobs()).encode("utf-8"))
        h.update("\n".join(map(str, self.region_ids)).encode("utf-8"))
        for name, values in self.feature_sets.items():
            h.update(f"{name}|{values.shape}|{values.dtype}|{self.heads[name]}".encode())
            h.update(np.ascontiguousarray(values).tobytes())
        for name in self.names:
            h.update(np.ascontiguousarray(self.ys[name]).tobytes())
        for fit in self.planned:
            for rows in (fit.train, fit.val, fit.test):
                h.update(np.asarray(rows, dtype=np.int64).tobytes())
        h.update(f"{self.coords}".encode())
        return h.hexdigest()[:16]

    def report(self, fits: Fits, mlp: MLPConfig) -> PredictionReport:
        """The report of the fits of every job (refused when one is missing)."""
        from dataclasses import asdict

        lists: dict[str, list] = {}
        for model in self.models():
            made = fits.get(model, {})
            missing = len(self.tasks) - len(made)
            if missing:
                raise InputError(
                    f"{missing} of the {len(self.tasks)} fits of model {model} are missing.",
                    hint="Rerun the shards of predict (--shard I/N --overwrite), then merge.",
                )
            lists[model] = [made[i] for i in range(len(self.tasks))]
        results = collect(self, lists)
        protocol = dict(self.protocol)
        protocol["models"] = {m: model_label(m) for m in lists}
        protocol["mlp"] = asdict(mlp)
        return PredictionReport(protocol, results, self.region_ids, self.observed)


def share_of(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """Shard ``index`` (1-based) of ``count``'s jobs: every count-th, from the index-th."""
    return list(jobs[index - 1 :: count])


def fit_jobs(plan: FitPlan, mlp: MLPConfig, jobs: Sequence[Job] | None = None) -> Fits:
    """Fit the models of ``jobs`` (None: every job). The MLP heads of a feature set are
    trained together (:func:`~urbangeo.downstream.heads.fit_mlp_heads`); each feature set's
    ridge heads share one cache of Gram matrices."""
    chosen: dict[str, list[int]] = {}
    for job in plan.jobs() if jobs is None else jobs:
        chosen.setdefault(job.group, []).extend(job.tasks)
    picked = {g: sorted(chosen[g]) for g in chosen}
    fits: Fits = {}
    steps = sum(len(plan.group_models(g)) for g in picked if g != COORDS) + 1
    with progress(steps, task="predict", unit="model") as bar:
        for features, values in plan.feature_sets.items():
            idx = picked.get(features)
            if not idx:
                continue
            tasks = [plan.tasks[i] for i in idx]
            heads = plan.heads[features]
            prefix = f"{features}:" if features else ""
            what = f" on {features}" if features else ""
            w = plan.weights.get(features)
            if "mlp" in heads:
                bar.update(0, status=f"MLP heads{what} ({len(tasks)})")
                made = fit_mlp_heads(values, tasks, mlp, weights=w)
                fits[prefix + "mlp"] = dict(zip(idx, made, strict=True))
                bar.update(1)
            if "ridge" in heads:
                bar.update(0, status=f"ridge{what}")
                cache: dict = {}  # one per feature set: it is keyed by training rows
                fits[prefix + "ridge"] = {
                    i: fit_ridge(values, t, cache=cache, weights=w)
                    for i, t in zip(idx, tasks, strict=True)
                }
                bar.update(1)
        bar.update(0, status="coordinates baseline")
        idx = picked.get(COORDS, [])
        if idx:
            tasks = [plan.tasks[i] for i in idx]
            if plan.coords:
                assert plan.xy is not None
                fits["coords_knn"] = {i: fit_knn(plan.xy, plan.tasks[i]) for i in idx}
            fits["train_mean"] = dict(zip(idx, mean_fits(tasks, plan.n), strict=True))
        bar.update(1)
    return fits


def save_fits(path: str | os.PathLike, fits: Fits) -> Path:
    """``fits`` (predictions and choices, float64) as one ``.npz`` file, atomically."""
    models = list(fits)
    arrays: dict[str, np.ndarray] = {"models": np.array(json.dumps(models))}
    for k, model in enumerate(models):
        idx = sorted(fits[model])
        arrays[f"i{k}"] = np.asarray(idx, dtype=np.int64)
        arrays[f"c{k}"] = np.asarray([float(fits[model][i].chosen) for i in idx], np.float64)
        arrays[f"p{k}"] = np.stack([np.asarray(fits[model][i].predictions) for i in idx])
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
    return Path(path)


def load_fits(path: str | os.PathLike) -> Fits:
    """The fits :func:`save_fits` wrote."""
    with np.load(path) as data:
        models = json.loads(str(data["models"]))
        out: Fits = {}
        for k, model in enumerate(models):
            pred, chosen = data[f"p{k}"], data[f"c{k}"]
            out[model] = {
                int(i): Fitted(pred[j], float(chosen[j])) for j, i in enumerate(data[f"i{k}"])
            }
    return out


def collect(plan: FitPlan, fits: dict[str, list]) -> dict[str, TargetResult]:
    """Each target's metrics, predictions and choices from the fits (lists by task)."""
    results = {}
    for name in plan.names:
        entries = [(i, p) for i, p in enumerate(plan.planned) if p.name == name]
        scheme, n_rows = plan.schemes[name], len(plan.rows[name])
        metrics: dict[str, dict[str, dict]] = {}
        predictions: dict[str, np.ndarray] = {}
        chosen: dict[str, list[float]] = {}
        for model, model_fits in fits.items():
            chosen[model] = [float(model_fits[i].chosen) for i, _ in entries]
            if scheme == "kfold":
                pred, scores = _kfold_scores(
                    entries, model_fits, plan.ys[name], plan.sets[name], n_rows
                )
            else:
                pred = np.empty((n_rows, plan.n))
                scores = []
                for i, p in entries:
                    pred[p.row] = model_fits[i].predictions
                    values = regression_metrics(plan.ys[name][p.test], pred[p.row][p.test])
                    scores.append((values, len(p.test)))
            predictions[model] = pred
            metrics[model] = {
                m: {**summarize([v[m] for v, _ in scores]), "n": [k for _, k in scores]}
                for m in METRICS
            }
        mean_r2 = metrics["train_mean"]["r2"]["mean"] if "train_mean" in metrics else None
        below = {
            model: is_below_baseline(values["r2"]["mean"], mean_r2)
            for model, values in metrics.items()
            if model != "train_mean"
        }
        set_rows = plan.sets[name]
        results[name] = TargetResult(
            name=name,
            n_regions=int((set_rows[0] >= 0).sum()),
            sizes=[(len(p.train), len(p.val), len(p.test)) for _, p in entries],
            metrics=metrics,
            predictions=predictions,
            sets=set_rows,
            chosen=chosen,
            scheme=scheme,
            seeds=list(plan.rows[name]),
            folds=plan.folds if scheme == "kfold" else 0,
            below_baseline=below,
        )
    return results


def _kfold_scores(
    entries: list[tuple[int, Fit]],
    model_fits: list,
    y: np.ndarray,
    sets: np.ndarray,
    n_rows: int,
) -> tuple[np.ndarray, list[tuple[dict[str, float], int]]]:
    """Out-of-fold predictions per repeat, and the metrics of each repeat's pooled predictions.

    Regions without a target (in no test fold) get the mean of the repeat's fold models.
    """
    n = sets.shape[1]
    pred = np.zeros((n_rows, n))
    others = np.zeros((n_rows, n))
    count = np.zeros(n_rows)
    for i, p in entries:
        values = model_fits[i].predictions
        pred[p.row, p.test] = values[p.test]
        others[p.row] += values
        count[p.row] += 1
    untested = sets < 0
    pred[untested] = (others / np.maximum(count, 1)[:, None])[untested]
    scores = []
    for r in range(n_rows):
        tested = ~untested[r]
        scores.append((regression_metrics(y[tested], pred[r, tested]), int(tested.sum())))
    return pred, scores
