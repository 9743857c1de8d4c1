"""Predicting urban indicators from frozen region embeddings (the paper's protocol).

For each indicator: targets ``ln(1 + y)``; regions without a finite value dropped. Test scores
come from one of two schemes, chosen per target by ``cv``:

* ``split``: per seed a 6:2:2 train/validation/test split (random, or by spatial blocks, see
  :mod:`.splits`); metrics on the test regions of each seed.
* ``kfold``: repeated k-fold cross-validation; per repeat every region is tested once, by the
  model of the fold that held it out (trained on 3/4 and validated on 1/4 of the other
  regions); metrics on the pooled out-of-fold predictions of each repeat.
* ``auto``: ``kfold`` below :data:`~urbangeo.downstream.splits.KFOLD_BELOW` regions with a
  value, else ``split``.

Models, all fitted on the same regions: an MLP head on the standardised embeddings with early
stopping on validation; a ridge head (penalty chosen on validation); the same heads on
baseline embeddings (``extra_features``: a random encoder, image statistics); a
coordinates-only k-NN (k chosen on validation), which shows how much of the score neighbouring
regions alone explain; and the training mean. R², RMSE and MAE (in ``ln(1 + y)``) as mean ± std
over the seeds or repeats, with their n; a model whose mean R² is below the mean baseline is
flagged (:func:`~urbangeo.downstream.metrics.is_below_baseline`).

Transfer (:func:`transfer`): fit on one city's regions (split 3:1 into train and validation,
the 6:2 of 6:2:2), test on all regions of another; the baseline is the training mean.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from urbangeo.downstream.heads import (
    DEFAULT_MLP,
    HeadTask,
    MLPConfig,
    check_weights,
    fit_knn,
    fit_mlp_heads,
    fit_ridge,
)
from urbangeo.downstream.metrics import METRICS, is_below_baseline, regression_metrics, summarize
from urbangeo.downstream.report import (
    HEADS,
    MODEL_LABELS,
    SET_NAMES,
    PredictionReport,
    TargetResult,
    model_label,
)
from urbangeo.downstream.splits import (
    KFOLD_BELOW,
    RATIOS,
    SPLITS,
    Parts,
    block_kfold_split,
    block_split,
    kfold_split,
    random_split,
)
from urbangeo.downstream.tables import MIN_REGIONS, Dataset, indicator_columns
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.progress import progress

MODELS = ("mlp", "ridge", "coords_knn", "train_mean")
#: How test scores are measured (see the module docstring).
CV = ("auto", "split", "kfold")

__all__ = [
    "CV",
    "MODELS",
    "MODEL_LABELS",
    "SET_NAMES",
    "PredictionReport",
    "TargetResult",
    "evaluate",
    "model_label",
    "scheme_for",
    "select_targets",
    "transfer",
]


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
            "With fewer, no model has enough regions to train, validate and be tested on: "
            "10 regions in 5-fold cross-validation train on 6, validate on 2 and test on 2 per "
            "fold, and a score from fewer says nothing. Attach more ground truth or use a finer "
            "grid.",
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


def scheme_for(cv: str, n_valid: int) -> str:
    """The scheme (``split`` or ``kfold``) of a target with ``n_valid`` regions."""
    if cv not in CV:
        raise InputError(f"Unknown cv {cv!r}.", hint=f"Choose one of: {', '.join(CV)}.")
    if cv == "auto":
        return "kfold" if n_valid < KFOLD_BELOW else "split"
    return cv


@dataclass
class _Fit:
    """One model to fit: a target, its row of results (seed/repeat), fold, and regions."""

    name: str
    row: int
    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class _MeanFit:
    predictions: np.ndarray
    chosen: float = 0.0


def _mean_fits(tasks: list[HeadTask], n_predict: int) -> list[_MeanFit]:
    return [_MeanFit(np.full(n_predict, t.y[t.train].mean())) for t in tasks]


def _check_split(split: str, xy: np.ndarray | None, block_size: float | None) -> None:
    if split not in SPLITS:
        raise InputError(f"Unknown split {split!r}.", hint=f"Choose one of: {', '.join(SPLITS)}.")
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


def _partitions(
    scheme: str, split: str, n: int, xy: np.ndarray | None, block_size: float, folds: int, seed: int
) -> list[Parts]:
    """The (train, val, test) positions of one seed (split) or repeat (k-fold)."""
    if scheme == "kfold":
        if split == "block":
            assert xy is not None
            return block_kfold_split(xy, block_size, folds, seed)
        return kfold_split(n, folds, seed)
    if split == "block":
        assert xy is not None
        return [block_split(xy, block_size, seed)]
    return [random_split(n, seed)]


def _aligned(extra: Mapping[str, pd.DataFrame] | None, index: pd.Index) -> dict[str, np.ndarray]:
    """Baseline features in the dataset's region order; every region must have a row."""
    out = {}
    for name, frame in (extra or {}).items():
        values = frame.reindex(index).to_numpy(dtype=np.float64)
        missing = int(np.isnan(values).any(axis=1).sum())
        if missing:
            raise InputError(
                f"The {name} baseline has no embedding for {missing} of the {len(index)} regions.",
                hint="Baseline embeddings must cover the regions of the embeddings scored.",
            )
        out[name] = values
    return out


def _column_weights(
    given: Mapping[str, np.ndarray] | None, feature_sets: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The column weights of the feature sets that have them, checked against their widths."""
    out: dict[str, np.ndarray] = {}
    for name, w in (given or {}).items():
        if w is None:
            continue
        if name not in feature_sets:
            raise InputError(
                f"Column weights for an unknown feature set {name!r}.",
                hint="Name the dataset's features '' or a key of extra_features.",
            )
        try:
            out[name] = check_weights(w, feature_sets[name].shape[1])
        except ValueError as exc:
            raise InputError(f"Feature set {name or 'main'!r}: {exc}.") from exc
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
    cv: str = "auto",
    folds: int = 5,
    repeats: int | None = None,
    extra_features: Mapping[str, pd.DataFrame] | None = None,
    baseline_heads: Sequence[str] = HEADS,
    coords_baseline: bool = True,
    column_weights: Mapping[str, np.ndarray] | None = None,
) -> PredictionReport:
    """Fit and test every model on every target (see the module docstring).

    ``seeds``: the 6:2:2 splits; ``repeats``: the k-fold repeats (seeds 0..repeats-1; default
    the ``seeds``). ``extra_features``: baseline embeddings by name (region_id-indexed), each
    fitted with ``baseline_heads``; ``coords_baseline``: the coordinates-only k-NN.
    ``column_weights``: per feature set (``""``: the dataset's features; else a name of
    ``extra_features``), one weight per column that the MLP and ridge heads apply after
    standardising (the blocks of ``--features``: :mod:`urbangeo.downstream.heads`).
    """
    seed_list = _seeds(seeds)
    repeat_list = _seeds(repeats) if repeats is not None else seed_list
    names = select_targets(dataset.indicators, targets, log=log)
    # float32 embeddings stay float32, sharing the frame's memory: the heads upcast blocks
    single = bool(len(dataset.features.columns)) and (dataset.features.dtypes == np.float32).all()
    X = dataset.features.to_numpy(dtype=np.float32 if single else np.float64)
    extra = _aligned(extra_features, dataset.features.index)
    xy = None if dataset.coords is None else dataset.coords[["x", "y"]].to_numpy(np.float64)
    _check_split(split, xy, block_size)
    if xy is None and coords_baseline:
        warnings.warn(
            "No region coordinates: the coordinates-only baseline is skipped.",
            UrbangeoWarning,
            stacklevel=2,
        )
    n = len(X)
    tasks: list[HeadTask] = []
    plan: list[_Fit] = []
    sets: dict[str, np.ndarray] = {}
    ys: dict[str, np.ndarray] = {}
    schemes: dict[str, str] = {}
    rows: dict[str, list[int]] = {}
    for name in names:
        y = _transform(dataset.indicators[name].to_numpy(dtype=np.float64), log)
        valid = np.flatnonzero(np.isfinite(y))
        scheme = schemes[name] = scheme_for(cv, len(valid))
        rows[name] = repeat_list if scheme == "kfold" else seed_list
        ys[name] = y
        sets[name] = np.full((len(rows[name]), n), -1, dtype=np.int64)
        sub_xy = None if xy is None else xy[valid]
        for r, seed in enumerate(rows[name]):
            parts = _partitions(scheme, split, len(valid), sub_xy, block_size or 0, folds, seed)
            for f, part in enumerate(parts):
                train, val, test = (valid[p] for p in part)
                if scheme == "kfold":
                    sets[name][r, test] = f
                    key = _key(f"{name}#fold{f}")
                else:
                    for k, set_rows in enumerate((train, val, test)):
                        sets[name][r, set_rows] = k
                    key = _key(name)
                tasks.append(HeadTask(y, train, val, seed, key=key))
                plan.append(_Fit(name, r, f, train, val, test))

    feature_sets = {"": X, **extra}
    weights = _column_weights(column_weights, feature_sets)
    fits: dict[str, list] = {}
    steps = sum(len(HEADS if k == "" else baseline_heads) for k in feature_sets) + 1
    with progress(steps, task="predict", unit="model") as bar:
        for features, values in feature_sets.items():
            heads = HEADS if features == "" else tuple(baseline_heads)
            prefix = f"{features}:" if features else ""
            what = f" on {features}" if features else ""
            w = weights.get(features)
            if "mlp" in heads:
                bar.update(0, status=f"MLP heads{what} ({len(tasks)})")
                fits[prefix + "mlp"] = fit_mlp_heads(values, tasks, mlp, weights=w)
                bar.update(1)
            if "ridge" in heads:
                bar.update(0, status=f"ridge{what}")
                cache: dict = {}  # one per feature set: it is keyed by training rows
                fits[prefix + "ridge"] = [
                    fit_ridge(values, t, cache=cache, weights=w) for t in tasks
                ]
                bar.update(1)
        bar.update(0, status="coordinates baseline")
        if xy is not None and coords_baseline:
            fits["coords_knn"] = [fit_knn(xy, t) for t in tasks]
        fits["train_mean"] = _mean_fits(tasks, n)
        bar.update(1)

    results = _collect(names, plan, fits, ys, sets, schemes, rows, folds, n)
    protocol = {
        "kind": "within-city",
        "dataset": dataset.name,
        "cv": cv,
        "kfold_below": KFOLD_BELOW,
        "schemes": schemes,
        "split": split,
        "block_size": block_size,
        "ratios": list(RATIOS),
        "seeds": seed_list,
        "folds": folds,
        "repeats": repeat_list,
        "log": log,
        "features": int(X.shape[1]),
        "regions": n,
        "models": {m: model_label(m) for m in fits},
        "baseline_features": {k: int(v.shape[1]) for k, v in extra.items()},
        "weighted_features": [k or "main" for k in weights],
        "mlp": asdict(mlp),
        "rounding": "n_val = n_test = floor(0.2 n + 0.5), n_train = n - n_val - n_test"
        if split == "random"
        else "whole blocks; each goes to the set furthest below its 6:2:2 share",
        "kfold_rule": "test folds as sklearn KFold(folds, shuffle=True, random_state=seed) "
        "(block split: whole blocks, each to the smallest fold); the other regions 3:1 "
        "train/val, n_val = floor(0.25 m + 0.5)",
    }
    return PredictionReport(protocol, results, dataset.features.index, dataset.indicators[names])


def _collect(
    names: list[str],
    plan: list[_Fit],
    fits: dict[str, list],
    ys: dict[str, np.ndarray],
    sets: dict[str, np.ndarray],
    schemes: dict[str, str],
    rows: dict[str, list[int]],
    folds: int,
    n_predict: int,
) -> dict[str, TargetResult]:
    results = {}
    for name in names:
        entries = [(i, p) for i, p in enumerate(plan) if p.name == name]
        scheme, n_rows = schemes[name], len(rows[name])
        metrics: dict[str, dict[str, dict]] = {}
        predictions: dict[str, np.ndarray] = {}
        chosen: dict[str, list[float]] = {}
        for model, model_fits in fits.items():
            chosen[model] = [float(model_fits[i].chosen) for i, _ in entries]
            if scheme == "kfold":
                pred, scores = _kfold_scores(entries, model_fits, ys[name], sets[name], n_rows)
            else:
                pred = np.empty((n_rows, n_predict))
                scores = []
                for i, p in entries:
                    pred[p.row] = model_fits[i].predictions
                    values = regression_metrics(ys[name][p.test], pred[p.row][p.test])
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
        set_rows = sets[name]
        results[name] = TargetResult(
            name=name,
            n_regions=int((set_rows[0] >= 0).sum()),
            sizes=[(len(p.train), len(p.val), len(p.test)) for _, p in entries],
            metrics=metrics,
            predictions=predictions,
            sets=set_rows,
            chosen=chosen,
            scheme=scheme,
            seeds=list(rows[name]),
            folds=folds if scheme == "kfold" else 0,
            below_baseline=below,
        )
    return results


def _kfold_scores(
    entries: list[tuple[int, _Fit]],
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
    tasks: list[HeadTask] = []
    plan: list[_Fit] = []
    ys: dict[str, np.ndarray] = {}
    sets: dict[str, np.ndarray] = {}
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
            plan.append(_Fit(name, s, 0, valid[tr], valid[va], test_rows))
    with progress(2, task="transfer", unit="model") as bar:
        bar.update(0, status=f"MLP heads ({len(tasks)})")
        mlp_fits = fit_mlp_heads(X, tasks, mlp, X_predict=Xt)
        bar.update(1, status="ridge")
        cache: dict = {}
        ridge_fits = [fit_ridge(X, t, X_predict=Xt, cache=cache) for t in tasks]
        bar.update(1)
    fits: dict[str, list] = {
        "mlp": mlp_fits,
        "ridge": ridge_fits,
        "train_mean": _mean_fits(tasks, n_test),
    }
    schemes = dict.fromkeys(names, "transfer")
    rows = dict.fromkeys(names, seed_list)
    results = _collect(names, plan, fits, ys, sets, schemes, rows, 0, n_test)
    protocol = {
        "kind": "transfer",
        "train_on": train.name,
        "test_on": test.name,
        "split": "train city 3:1 train/val, test city all",
        "seeds": seed_list,
        "log": log,
        "features": int(X.shape[1]),
        "regions": {"train_city": len(X), "test_city": n_test},
        "models": {m: model_label(m) for m in fits},
        "mlp": asdict(mlp),
    }
    return PredictionReport(protocol, results, test.features.index, test.indicators[names])
