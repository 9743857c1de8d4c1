"""Predicting urban indicators from frozen region embeddings (the paper's protocol).

For each indicator: targets ``ln(1 + y)``; regions without a finite value dropped; per seed a
6:2:2 train/validation/test split (random, or by spatial blocks, see :mod:`.splits`); an MLP
head on the standardised embeddings with early stopping on validation; beside it a ridge
baseline (penalty chosen on validation) and, when the regions have coordinates, a
coordinates-only k-NN baseline (k chosen on validation) that shows how much of the score
neighbouring regions alone explain. Test R², RMSE and MAE (in ``ln(1 + y)``) as mean ± std
over the seeds.

Transfer (:func:`transfer`): fit on one city's regions (split 3:1 into train and validation,
the 6:2 of 6:2:2), test on all regions of another; the baseline is the training mean.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from urbangeo.downstream.heads import (
    DEFAULT_MLP,
    HeadTask,
    MLPConfig,
    fit_knn,
    fit_mlp_heads,
    fit_ridge,
)
from urbangeo.downstream.metrics import METRICS, regression_metrics, summarize
from urbangeo.downstream.splits import RATIOS, SPLITS, block_split, random_split
from urbangeo.downstream.tables import MIN_REGIONS, Dataset, indicator_columns
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.progress import progress

MODELS = ("mlp", "ridge", "coords_knn", "train_mean")
MODEL_LABELS = {
    "mlp": "MLP head (embedding)",
    "ridge": "ridge (embedding)",
    "coords_knn": "k-NN on x/y only",
    "train_mean": "training mean",
}
#: Split labels of the predictions layer.
SET_NAMES = ("train", "val", "test")


@dataclass
class TargetResult:
    """Everything measured for one indicator."""

    name: str
    n_regions: int
    sizes: list[tuple[int, int, int]]
    #: model -> metric -> {"mean", "std", "values"}
    metrics: dict[str, dict[str, dict]]
    #: model -> (seeds × regions) predictions in model units (ln(1+y) unless log=False)
    predictions: dict[str, np.ndarray] = field(repr=False)
    #: (seeds × regions): 0 train, 1 val, 2 test, -1 no valid target
    sets: np.ndarray = field(repr=False)
    #: model -> per-seed choice (MLP best epoch, ridge alpha, k of k-NN)
    chosen: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class PredictionReport:
    """Results of :func:`evaluate` or :func:`transfer`."""

    protocol: dict
    targets: dict[str, TargetResult]
    region_ids: pd.Index
    observed: pd.DataFrame

    def to_dict(self) -> dict:
        """A JSON-serialisable summary (no per-region predictions)."""
        return {
            "protocol": self.protocol,
            "targets": {
                name: {
                    "n_regions": r.n_regions,
                    "sizes": [dict(zip(("train", "val", "test"), s, strict=True)) for s in r.sizes],
                    "metrics": r.metrics,
                    "chosen": r.chosen,
                }
                for name, r in self.targets.items()
            },
        }

    def table(self) -> str:
        """The results as a plain-text table: mean ± std over the seeds."""
        unit = "ln(1+y)" if self.protocol.get("log", True) else "y"
        seeds = len(self.protocol["seeds"])
        w = max([16, *(len(name) for name in self.targets)])
        head = f"{'target':<{w}} {'n':>6}  {'model':<22} {'R²':>15} {'RMSE':>15} {'MAE':>15}"
        lines = [
            f"{self.protocol['kind']} ({self.protocol['split']} split), test metrics in {unit}, "
            f"mean ± std over {seeds} seed(s)",
            head,
            "-" * len(head),
        ]
        for name, r in self.targets.items():
            for i, (model, values) in enumerate(r.metrics.items()):
                cells = [f"{values[m]['mean']:.3f} ± {values[m]['std']:.3f}" for m in METRICS]
                label = MODEL_LABELS.get(model, model)
                first = f"{name:<{w}} {r.n_regions:>6}" if i == 0 else " " * (w + 7)
                lines.append(f"{first}  {label:<22} " + " ".join(f"{c:>15}" for c in cells))
        return "\n".join(lines)

    def prediction_frame(self, *, model: str = "mlp", seed: int | None = None) -> pd.DataFrame:
        """Per region: observed, predicted, residual (and split) per target.

        ``seed=None`` averages every seed's model (the ensemble mean; its training regions are
        in-sample for some seeds, ``{t}_test_seeds`` counts the seeds that tested a region);
        a seed gives that seed's model and ``{t}_split`` (train, val, test, or empty).
        Observed and predicted are in the indicator's own units; the residual
        (predicted − observed) is in model units, ln(1 + y) unless log=False.
        """
        seeds = list(self.protocol["seeds"])
        log = self.protocol.get("log", True)
        out = pd.DataFrame(index=self.region_ids)
        for name, r in self.targets.items():
            preds = r.predictions[model]
            if seed is None:
                pred = preds.mean(axis=0)
            else:
                if seed not in seeds:
                    raise InputError(
                        f"Seed {seed} was not run (seeds: {seeds}).",
                        hint="Choose one of the seeds, or the ensemble.",
                    )
                pred = preds[seeds.index(seed)]
            observed = self.observed[name].to_numpy(dtype=np.float64)
            obs_model = _transform(observed, log)
            out[f"{name}_observed"] = observed
            out[f"{name}_predicted"] = np.expm1(pred) if log else pred
            out[f"{name}_residual"] = pred - obs_model
            if seed is None:
                out[f"{name}_test_seeds"] = (r.sets == 2).sum(axis=0)
            else:
                labels = np.array(["", *SET_NAMES], dtype=object)
                out[f"{name}_split"] = labels[r.sets[seeds.index(seed)] + 1]
        return out


def _transform(values: np.ndarray, log: bool) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log1p(values) if log else values.astype(np.float64)


def select_targets(
    indicators: pd.DataFrame,
    targets: Sequence[str] | None = None,
    *,
    log: bool = True,
    min_regions: int = MIN_REGIONS,
) -> list[str]:
    """The indicators to fit; explicit ``targets`` must be valid, others are skipped if not.

    A target needs at least ``min_regions`` finite values, must not be constant, and with
    ``log`` must have no value ≤ −1 (ln(1 + y) is undefined there).
    """
    explicit = bool(targets)
    candidates = list(targets) if targets else indicator_columns(indicators)
    if explicit:
        missing = [t for t in candidates if t not in indicators.columns]
        if missing:
            raise InputError(
                f"Indicator(s) not found: {', '.join(missing)}.",
                hint="Available: " + (", ".join(indicator_columns(indicators)) or "none") + ".",
            )
    chosen = []
    for name in candidates:
        problem = _target_problem(indicators[name], log=log, min_regions=min_regions)
        if problem is None:
            chosen.append(name)
        elif explicit:
            raise InputError(f"Indicator '{name}' {problem[0]}.", hint=problem[1])
        else:
            warnings.warn(f"Skipping indicator '{name}': {problem[0]}.", UrbangeoWarning, 2)
    if not chosen:
        raise InputError(
            "No indicator to predict.",
            hint="Give an indicator table with at least one numeric column of region values "
            f"(≥ {min_regions} regions, not constant), or name one with --target.",
        )
    return chosen


def _target_problem(column: pd.Series, *, log: bool, min_regions: int) -> tuple[str, str] | None:
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return "is not numeric", "Choose a numeric indicator column."
    values = column.to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < min_regions:
        return (
            f"has {values.size} region(s) with a value; at least {min_regions} are needed",
            "A 6:2:2 split needs enough regions to train, validate and test; attach more "
            "ground truth or use a finer grid.",
        )
    if log and values.min() <= -1:
        return (
            f"has values ≤ -1 (min {values.min():g}), where ln(1 + y) is undefined",
            "Pass --no-log to fit the values as they are.",
        )
    if np.ptp(values) == 0:
        return (
            f"is constant ({values[0]:g} in every region)",
            "A constant has nothing to predict; drop it or choose another indicator.",
        )
    return None


def _key(name: str) -> int:
    return zlib.crc32(name.encode())


def _seeds(seeds: int | Sequence[int]) -> list[int]:
    out = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not out:
        raise InputError("At least one seed is needed.", hint="Pass --seeds 5 (the default).")
    return out


def evaluate(
    dataset: Dataset,
    targets: Sequence[str] | None = None,
    *,
    seeds: int | Sequence[int] = 5,
    split: str = "random",
    block_size: float | None = None,
    log: bool = True,
    mlp: MLPConfig = DEFAULT_MLP,
) -> PredictionReport:
    """Fit and test every model on every target for every seed (see the module docstring)."""
    if split not in SPLITS:
        raise InputError(f"Unknown split {split!r}.", hint=f"Choose one of: {', '.join(SPLITS)}.")
    seed_list = _seeds(seeds)
    names = select_targets(dataset.indicators, targets, log=log)
    X = dataset.features.to_numpy(dtype=np.float64)
    xy = None if dataset.coords is None else dataset.coords[["x", "y"]].to_numpy(np.float64)
    if split == "block":
        if xy is None:
            raise InputError(
                "The block split needs region coordinates, and these regions have none.",
                hint="Use a run's GeoPackage (--gpkg), or add lon/lat (WGS84) or x/y (metres) "
                "columns to the indicator table.",
            )
        if not block_size:
            raise InputError(
                "The block split needs --block-size METRES.",
                hint="Use several region sizes, e.g. --block-size 5000 for 1 km regions.",
            )
    if xy is None:
        warnings.warn(
            "No region coordinates: the coordinates-only baseline is skipped.",
            UrbangeoWarning,
            stacklevel=2,
        )
    n = len(X)
    tasks: list[HeadTask] = []
    plan: list[tuple[str, int, np.ndarray]] = []
    sets: dict[str, np.ndarray] = {}
    ys: dict[str, np.ndarray] = {}
    for name in names:
        y = _transform(dataset.indicators[name].to_numpy(dtype=np.float64), log)
        valid = np.flatnonzero(np.isfinite(y))
        ys[name] = y
        sets[name] = np.full((len(seed_list), n), -1, dtype=np.int64)
        for s, seed in enumerate(seed_list):
            if split == "random":
                parts = random_split(len(valid), seed)
            else:
                assert xy is not None and block_size  # the block split checked both above
                parts = block_split(xy[valid], float(block_size), seed)
            train, val, test = (valid[p] for p in parts)
            for k, rows in enumerate((train, val, test)):
                sets[name][s, rows] = k
            tasks.append(HeadTask(y, train, val, seed, key=_key(name)))
            plan.append((name, s, test))

    with progress(3, task="predict", unit="model") as bar:
        bar.update(0, status=f"MLP heads ({len(tasks)})")
        mlp_fits = fit_mlp_heads(X, tasks, mlp)
        bar.update(1, status="ridge")
        cache: dict = {}
        ridge_fits = [fit_ridge(X, t, cache=cache) for t in tasks]
        bar.update(1, status="coordinates baseline")
        knn_fits = [fit_knn(xy, t) for t in tasks] if xy is not None else None
        bar.update(1)

    fits = {"mlp": mlp_fits, "ridge": ridge_fits}
    if knn_fits is not None:
        fits["coords_knn"] = knn_fits
    results = _collect(names, seed_list, plan, fits, ys, sets, n)
    protocol = {
        "kind": "within-city",
        "dataset": dataset.name,
        "split": split,
        "block_size": block_size,
        "ratios": list(RATIOS),
        "seeds": seed_list,
        "log": log,
        "features": int(X.shape[1]),
        "regions": n,
        "mlp": asdict(mlp),
        "rounding": "n_val = n_test = floor(0.2 n + 0.5), n_train = n - n_val - n_test"
        if split == "random"
        else "whole blocks; each goes to the set furthest below its 6:2:2 share",
    }
    return PredictionReport(protocol, results, dataset.features.index, dataset.indicators[names])


def _collect(
    names: list[str],
    seed_list: list[int],
    plan: list[tuple[str, int, np.ndarray]],
    fits: dict[str, list],
    ys: dict[str, np.ndarray],
    sets: dict[str, np.ndarray],
    n_predict: int,
) -> dict[str, TargetResult]:
    results = {}
    for name in names:
        entries = [(i, s, test) for i, (t, s, test) in enumerate(plan) if t == name]
        metrics: dict[str, dict[str, dict]] = {}
        predictions: dict[str, np.ndarray] = {}
        chosen: dict[str, list[float]] = {}
        for model, model_fits in fits.items():
            per_seed: dict[str, list[float]] = {m: [] for m in METRICS}
            predictions[model] = np.empty((len(seed_list), n_predict))
            chosen[model] = []
            for i, s, test in entries:
                fit = model_fits[i]
                predictions[model][s] = fit.predictions
                chosen[model].append(float(fit.chosen))
                values = regression_metrics(ys[name][test], fit.predictions[test])
                for m in METRICS:
                    per_seed[m].append(values[m])
            metrics[model] = {m: summarize(v) for m, v in per_seed.items()}
        set_rows = sets[name]
        sizes = [_set_sizes(row) for row in set_rows]
        results[name] = TargetResult(
            name=name,
            n_regions=int((set_rows[0] >= 0).sum()),
            sizes=sizes,
            metrics=metrics,
            predictions=predictions,
            sets=set_rows,
            chosen=chosen,
        )
    return results


def _set_sizes(row: np.ndarray) -> tuple[int, int, int]:
    """The number of regions in the train, validation and test sets (0, 1, 2) of one seed."""
    train, val, test = (int((row == k).sum()) for k in range(3))
    return train, val, test


def transfer(
    train: Dataset,
    test: Dataset,
    targets: Sequence[str] | None = None,
    *,
    seeds: int | Sequence[int] = 5,
    log: bool = True,
    mlp: MLPConfig = DEFAULT_MLP,
) -> PredictionReport:
    """Fit on ``train``'s regions (3:1 train/validation per seed), test on all of ``test``."""
    seed_list = _seeds(seeds)
    missing = [c for c in train.features.columns if c not in test.features.columns]
    if missing or len(train.features.columns) != len(test.features.columns):
        raise InputError(
            f"The two cities' embeddings have different features ({train.features.shape[1]} "
            f"vs {test.features.shape[1]} columns"
            + (f"; e.g. '{missing[0]}' only in the first" if missing else "")
            + ").",
            hint="Embed both cities with the same model so that their columns match.",
        )
    names = select_targets(train.indicators, targets, log=log)
    absent = [t for t in names if t not in test.indicators.columns]
    if absent:
        raise InputError(
            f"Indicator(s) {', '.join(absent)} missing in the test city {test.name}.",
            hint="Name shared indicators with --target.",
        )
    for name in names:
        problem = _target_problem(test.indicators[name], log=log, min_regions=2)
        if problem:
            raise InputError(f"Indicator '{name}' of {test.name} {problem[0]}.", hint=problem[1])
    X = train.features.to_numpy(np.float64)
    Xt = test.features[list(train.features.columns)].to_numpy(np.float64)
    n_test = len(Xt)
    tasks, plan, ys, sets = [], [], {}, {}
    for name in names:
        y = _transform(train.indicators[name].to_numpy(np.float64), log)
        yt = _transform(test.indicators[name].to_numpy(np.float64), log)
        valid = np.flatnonzero(np.isfinite(y))
        test_rows = np.flatnonzero(np.isfinite(yt))
        ys[name] = yt
        sets[name] = np.full((len(seed_list), n_test), -1, dtype=np.int64)
        for s, seed in enumerate(seed_list):
            tr, va, _ = random_split(len(valid), seed, ratios=(RATIOS[0], RATIOS[1], 0.0))
            sets[name][s, test_rows] = 2
            tasks.append(HeadTask(y, valid[tr], valid[va], seed, key=_key(name)))
            plan.append((name, s, test_rows))
    with progress(2, task="transfer", unit="model") as bar:
        bar.update(0, status=f"MLP heads ({len(tasks)})")
        mlp_fits = fit_mlp_heads(X, tasks, mlp, X_predict=Xt)
        bar.update(1, status="ridge")
        cache: dict = {}
        ridge_fits = [fit_ridge(X, t, X_predict=Xt, cache=cache) for t in tasks]
        bar.update(1)
    mean_fits = [_MeanFit(np.full(n_test, t.y[t.train].mean())) for t in tasks]
    fits: dict[str, list] = {"mlp": mlp_fits, "ridge": ridge_fits, "train_mean": mean_fits}
    results = _collect(names, seed_list, plan, fits, ys, sets, n_test)
    for (name, _, test_rows), task in zip(plan, tasks, strict=True):
        if len(results[name].sizes) == len(seed_list):
            results[name].sizes = []
        results[name].sizes.append((len(task.train), len(task.val), len(test_rows)))
    protocol = {
        "kind": "transfer",
        "train_on": train.name,
        "test_on": test.name,
        "split": "train city 3:1 train/val, test city all",
        "seeds": seed_list,
        "log": log,
        "features": int(X.shape[1]),
        "regions": {"train_city": len(X), "test_city": n_test},
        "mlp": asdict(mlp),
    }
    return PredictionReport(protocol, results, test.features.index, test.indicators[names])


@dataclass
class _MeanFit:
    predictions: np.ndarray
    chosen: float = 0.0
