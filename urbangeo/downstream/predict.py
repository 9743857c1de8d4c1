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
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from urbangeo.downstream.fits import Fit, FitPlan, collect, fit_jobs, mean_fits
from urbangeo.downstream.heads import (
    DEFAULT_MLP,
    HeadTask,
    MLPConfig,
    check_weights,
    fit_mlp_heads,
    fit_ridge,
)
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
    "plan_evaluation",
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
    mlp: MLPConfig = DEFAULT_MLP,
    **options: Any,
) -> PredictionReport:
    """Fit and test every model on every target (see the module docstring); ``options`` are
    :func:`plan_evaluation`'s (seeds, split, cv, folds, extra_features, baseline_heads...).

    ``seeds``: the 6:2:2 splits; ``repeats``: the k-fold repeats (seeds 0..repeats-1; default
    the ``seeds``). ``extra_features``: baseline embeddings by name (region_id-indexed), each
    fitted with ``baseline_heads``; ``coords_baseline``: the coordinates-only k-NN.
    ``column_weights``: per feature set (``""``: the dataset's features; else a name of
    ``extra_features``), one weight per column that the MLP and ridge heads apply after
    standardising (the blocks of ``--features``: :mod:`urbangeo.downstream.heads`).
    """
    plan = plan_evaluation(dataset, targets, **options)
    return plan.report(fit_jobs(plan, mlp), mlp)


def plan_evaluation(
    dataset: Dataset,
    targets: Sequence[str] | None = None,
    *,
    seeds: int | Sequence[int] = 5,
    split: str = "random",
    block_size: float | None = None,
    log: bool = True,
    cv: str = "auto",
    folds: int = 5,
    repeats: int | None = None,
    extra_features: Mapping[str, pd.DataFrame] | None = None,
    baseline_heads: Sequence[str] = HEADS,
    coords_baseline: bool = True,
    column_weights: Mapping[str, np.ndarray] | None = None,
) -> FitPlan:
    """Every fit :func:`evaluate` makes (its arguments but ``mlp``), planned: the targets, each
    seed's split or repeat's folds, the feature sets and heads (:mod:`.fits`)."""
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
            stacklevel=3,
        )
    n = len(X)
    tasks: list[HeadTask] = []
    planned: list[Fit] = []
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
                planned.append(Fit(name, r, f, train, val, test))

    feature_sets = {"": X, **extra}
    weights = _column_weights(column_weights, feature_sets)
    heads = {k: HEADS if k == "" else tuple(baseline_heads) for k in feature_sets}
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
        "models": {},  # filled in by the report, as "mlp"
        "baseline_features": {k: int(v.shape[1]) for k, v in extra.items()},
        "weighted_features": [k or "main" for k in weights],
        "mlp": {},
        "rounding": "n_val = n_test = floor(0.2 n + 0.5), n_train = n - n_val - n_test"
        if split == "random"
        else "whole blocks; each goes to the set furthest below its 6:2:2 share",
        "kfold_rule": "test folds as sklearn KFold(folds, shuffle=True, random_state=seed) "
        "(block split: whole blocks, each to the smallest fold); the other regions 3:1 "
        "train/val, n_val = floor(0.25 m + 0.5)",
    }
    return FitPlan(
        names=names,
        tasks=tasks,
        planned=planned,
        feature_sets=feature_sets,
        heads=heads,
        weights=weights,
        xy=xy,
        coords=xy is not None and coords_baseline,
        ys=ys,
        sets=sets,
        schemes=schemes,
        rows=rows,
        folds=folds,
        n=n,
        protocol=protocol,
        region_ids=dataset.features.index,
        observed=dataset.indicators[names],
    )


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
    planned: list[Fit] = []
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
            planned.append(Fit(name, s, 0, valid[tr], valid[va], test_rows))
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
        "train_mean": mean_fits(tasks, n_test),
    }
    plan = FitPlan(
        names=names,
        tasks=tasks,
        planned=planned,
        feature_sets={},
        heads={},
        weights={},
        xy=None,
        coords=False,
        ys=ys,
        sets=sets,
        schemes=dict.fromkeys(names, "transfer"),
        rows=dict.fromkeys(names, seed_list),
        folds=0,
        n=n_test,
    )
    results = collect(plan, fits)
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
