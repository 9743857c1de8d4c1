"""Block weighting that survives the heads (issue #17): ``predict --features`` weights each
block so that a wide block does not drown a narrow one, and the heads, which standardise every
column on their training rows, apply the weights after that standardisation.

The expected ridge fits are computed here with numpy alone: z-score on the training rows,
scale by the intended weights, solve the penalised normal equations for every penalty of the
grid, keep the one with the smallest validation error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from urbangeo.downstream.features import block_weights, standardise_blocks
from urbangeo.downstream.heads import (
    RIDGE_ALPHAS,
    HeadTask,
    MLPConfig,
    _standardiser,
    fit_mlp_heads,
    fit_ridge,
)
from urbangeo.downstream.predict import evaluate
from urbangeo.downstream.tables import Dataset
from urbangeo.errors import InputError

FAST = MLPConfig(hidden=16, max_epochs=20, patience=4)
NARROW, WIDE = 2, 150


def _blocks(n: int = 240, seed: int = 0) -> tuple[dict[str, pd.DataFrame], np.ndarray]:
    """A 2-column block that explains the target and a 150-column block of noise, on very
    different scales."""
    rng = np.random.default_rng(seed)
    narrow = rng.normal(size=(n, NARROW)) * [3.0, 0.2] + [10.0, -1.0]
    wide = rng.normal(size=(n, WIDE)) * 50.0
    y = narrow @ [0.5, 4.0] + 0.3 * rng.normal(size=n) + 20
    ids = [f"r{i}" for i in range(n)]
    blocks = {
        "narrow": pd.DataFrame(narrow, index=ids),
        "wide": pd.DataFrame(wide, index=ids),
    }
    return blocks, y


def _task(y: np.ndarray, seed: int = 3) -> HeadTask:
    order = np.random.default_rng(seed).permutation(len(y))
    return HeadTask(y, np.sort(order[:140]), np.sort(order[140:190]), seed)


def _ridge_numpy(X: np.ndarray, task: HeadTask, w: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge on the training rows z-scored then scaled by ``w``; the penalty with the
    smallest validation MSE; predictions for every row."""
    train, val = task.train, task.val
    mu = X[train].mean(axis=0)
    sd = X[train].std(axis=0)
    sd[sd == 0] = 1
    Z = (X - mu) / sd * w
    ymu, ysd = task.y[train].mean(), task.y[train].std()
    ys = (task.y - ymu) / ysd
    best, best_err, best_coef = None, np.inf, None
    for alpha in RIDGE_ALPHAS:
        A = Z[train].T @ Z[train] + alpha * np.eye(Z.shape[1])
        coef = np.linalg.solve(A, Z[train].T @ ys[train])
        err = np.mean((Z[val] @ coef - ys[val]) ** 2)
        if err < best_err:
            best, best_err, best_coef = alpha, err, coef
    assert best is not None and best_coef is not None
    return Z @ best_coef * ysd + ymu, best


def test_block_weights_give_every_block_the_same_variance() -> None:
    blocks, _ = _blocks()
    w = block_weights(blocks)
    total = NARROW + WIDE
    np.testing.assert_allclose(w[:NARROW], np.sqrt(total / (2 * NARROW)))
    np.testing.assert_allclose(w[NARROW:], np.sqrt(total / (2 * WIDE)))
    frame = standardise_blocks(blocks).to_numpy()
    assert frame[:, :NARROW].var(axis=0).sum() == pytest.approx(total / 2)
    assert frame[:, NARROW:].var(axis=0).sum() == pytest.approx(total / 2)
    np.testing.assert_allclose(block_weights({"a": blocks["wide"]}), 1.0)  # one block: plain


def test_ridge_keeps_the_block_weights() -> None:
    blocks, y = _blocks()
    X = standardise_blocks(blocks).to_numpy()
    w = block_weights(blocks)
    task = _task(y)
    weighted = fit_ridge(X, task, weights=w)
    expected, alpha = _ridge_numpy(X, task, w)
    np.testing.assert_allclose(weighted.predictions, expected, rtol=1e-7, atol=1e-7)
    assert weighted.chosen == alpha
    # without the weights the heads' standardisation undoes the blocks' scaling: the fit is
    # that of the unweighted columns, and it differs
    plain = fit_ridge(X, task)
    unweighted, _ = _ridge_numpy(X, task, np.ones(X.shape[1]))
    np.testing.assert_allclose(plain.predictions, unweighted, rtol=1e-7, atol=1e-7)
    assert np.abs(plain.predictions - weighted.predictions).max() > 1e-3
    # scaling the columns before the head changes nothing; the weights do
    rescaled = fit_ridge(X * w, task)
    np.testing.assert_allclose(rescaled.predictions, plain.predictions, rtol=1e-7, atol=1e-7)


def test_mlp_standardises_then_weights() -> None:
    blocks, y = _blocks()
    X = standardise_blocks(blocks).to_numpy()
    w = block_weights(blocks)
    task = _task(y)
    mu, sd = _standardiser(X, task.train, w)
    z = (X - X[task.train].mean(axis=0)) / X[task.train].std(axis=0)
    np.testing.assert_allclose((X - mu) / sd, z * w, atol=1e-10)
    weighted = fit_mlp_heads(X, [task], FAST, weights=w)[0]
    plain = fit_mlp_heads(X, [task], FAST)[0]
    ones = fit_mlp_heads(X, [task], FAST, weights=np.ones(X.shape[1]))[0]
    np.testing.assert_array_equal(ones.predictions, plain.predictions)
    assert np.abs(plain.predictions - weighted.predictions).max() > 1e-3
    with pytest.raises(ValueError, match="positive"):
        fit_mlp_heads(X, [task], FAST, weights=np.zeros(X.shape[1]))


def test_evaluate_applies_the_weights_of_each_feature_set() -> None:
    blocks, y = _blocks()
    features = standardise_blocks(blocks)
    w = block_weights(blocks)
    ids = features.index
    rng = np.random.default_rng(9)
    coords = pd.DataFrame({"x": rng.uniform(0, 1e4, len(ids)), "y": rng.uniform(0, 1e4, len(ids))})
    dataset = Dataset(
        features=features,
        indicators=pd.DataFrame({"target": np.expm1(y / 10)}, index=ids),
        coords=coords.set_index(ids),
    )
    other = features * 1.0  # the same set again, scored unweighted beside it
    report = evaluate(
        dataset,
        seeds=2,
        mlp=FAST,
        cv="split",
        extra_features={"same": other},
        baseline_heads=("ridge",),
        column_weights={"": w},
    )
    result = report.targets["target"]
    target = np.log1p(np.expm1(y / 10))
    X = features.to_numpy()
    for row in range(2):
        sets = result.sets[row]
        task = HeadTask(target, np.flatnonzero(sets == 0), np.flatnonzero(sets == 1), row)
        expected, _ = _ridge_numpy(X, task, w)
        np.testing.assert_allclose(result.predictions["ridge"][row], expected, atol=1e-6)
        unweighted, _ = _ridge_numpy(X, task, np.ones(len(w)))
        np.testing.assert_allclose(result.predictions["same:ridge"][row], unweighted, atol=1e-6)
    assert report.protocol["weighted_features"] == ["main"]
    with pytest.raises(InputError, match="Column weights"):
        evaluate(dataset, seeds=1, mlp=FAST, column_weights={"nope": w})
    with pytest.raises(InputError, match="positive numbers"):
        evaluate(dataset, seeds=1, mlp=FAST, column_weights={"": w[:3]})
