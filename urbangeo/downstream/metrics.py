"""Regression metrics (R², RMSE, MAE) and their summary over seeds."""

from __future__ import annotations

import numpy as np

METRICS = ("r2", "rmse", "mae")


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R² (1 − SSE/SST, as scikit-learn's r2_score), RMSE and MAE of one prediction."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    err = y_pred - y_true
    sse = float(np.sum(err**2))
    sst = float(np.sum((y_true - y_true.mean()) ** 2))
    # scikit-learn's convention for a constant truth: 1 if predicted exactly, else 0.
    r2 = 1.0 - sse / sst if sst > 0 else float(sse == 0)
    return {"r2": r2, "rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def summarize(values: list[float]) -> dict[str, object]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of per-seed values."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "values": [float(v) for v in arr]}


def is_below_baseline(r2: float, mean_r2: float | None = None) -> bool:
    """Whether a mean R² is below the mean baseline.

    R² < 0 is worse than predicting the test regions' own mean, and so worse than any
    constant, the training mean included (a constant's R² is at most 0). ``mean_r2``, the
    training-mean predictor's R² on the same regions, counts too where it is above 0 (pooled
    out-of-fold predictions of fold-wise means can be).
    """
    return bool(r2 < max(0.0, mean_r2 if mean_r2 is not None else 0.0))
