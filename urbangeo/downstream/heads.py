"""Regression heads on frozen embeddings: MLP (torch), ridge, and a coordinates-only k-NN.

Every head standardises its inputs with its own training rows' mean and standard deviation and
predicts a standardised target (undone on output), so that one set of hyper-parameters fits
any embedding and any indicator. ``weights`` (one per column) then scale the standardised
columns: a feature set of several blocks (``predict --features``) weights each block's columns
in proportion to 1/sqrt(its width), so that a 512-value block does not drown a 2-value one
(:func:`urbangeo.downstream.features.block_weights`); standardising first and weighting after
keeps that weighting (weighting first would be undone).

The MLP heads of many (indicator, seed) pairs are trained together as one batched model
(``torch.baddbmm`` over a head axis) because a Python loop per head is dominated by overhead on
a CPU. The heads share nothing: each has its own initialisation and mini-batch order (both
drawn from ``numpy.random.default_rng([seed, key])``), its own Adam moments, and its own early
stopping; a head that stops is dropped from the batch. Training heads alone or together gives
the same numbers (up to float rounding).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

#: Ridge penalties tried on the validation set (inputs standardised).
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))
#: Neighbour counts tried on the validation set by the coordinates baseline.
KNN_KS = (1, 2, 3, 5, 8, 13, 21, 34)


@dataclass(frozen=True)
class MLPConfig:
    """The MLP head: d → hidden (ReLU) → 1, AdamW, early stopping on validation MSE."""

    hidden: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 10
    #: An "epoch" (between two validation checks) is at least this many steps, so that small
    #: training sets (one batch) are not stopped after a handful of updates.
    min_steps_per_epoch: int = 10
    #: torch threads while training; small batched products gain little from more threads
    #: and lose much on a busy machine (measured: 3× slower with 2 than with 1 on 2 cores).
    threads: int = 1


DEFAULT_MLP = MLPConfig()


@dataclass
class HeadTask:
    """One head to fit: targets ``y`` (length N, NaN where unknown) and its row positions."""

    y: np.ndarray
    train: np.ndarray
    val: np.ndarray
    seed: int
    key: int = 0


@dataclass
class HeadFit:
    """A fitted head's predictions for every row of the prediction matrix, and its choice."""

    predictions: np.ndarray
    chosen: float
    epochs: int = 0


def _standardiser(
    X: np.ndarray, rows: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of the columns: ``(X - mu) / sd`` is each column z-scored over
    ``rows`` (constant columns: 0), times its weight."""
    if len(rows) <= ROW_BLOCK:
        mu = X[rows].mean(axis=0, dtype=np.float64)
        sd = X[rows].std(axis=0, dtype=np.float64)
    else:  # two passes over blocks of rows: no copy of the matrix (float32 stays float32)
        mu = sum(X[b].sum(axis=0, dtype=np.float64) for b in _blocks(rows)) / len(rows)
        sq = sum((((X[b] - mu) ** 2).sum(axis=0)) for b in _blocks(rows))
        sd = np.sqrt(sq / len(rows))
    sd[sd == 0] = 1.0
    if weights is not None:
        sd = sd / check_weights(weights, X.shape[1])
    return mu, sd


def check_weights(weights: np.ndarray, columns: int) -> np.ndarray:
    """``weights`` as float64, one positive finite value per column."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != columns or not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError(f"column weights must be {columns} positive numbers; got {len(w)}")
    return w


def _y_scale(y: np.ndarray) -> tuple[float, float]:
    sd = float(y.std())
    return float(y.mean()), sd if sd > 0 else 1.0


def fit_ridge(
    X: np.ndarray,
    task: HeadTask,
    *,
    X_predict: np.ndarray | None = None,
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
    cache: dict | None = None,
    weights: np.ndarray | None = None,
) -> HeadFit:
    """Ridge regression with its penalty chosen on the validation rows.

    Solved through the eigendecomposition of the standardised (and ``weights``-scaled, see the
    module docstring) training Gram matrix (d × d), so every penalty costs one small product;
    ``cache`` (a dict) shares it between tasks with the same training rows of the same ``X``
    and weights (use one cache per feature matrix).
    """
    wkey = b"" if weights is None else np.asarray(weights, dtype=np.float64).tobytes()
    key = (id(X), task.train.tobytes(), X.shape, wkey)
    if cache is not None and key in cache:
        mu, sd, evals, evecs, Xs = cache[key]
    else:
        mu, sd = _standardiser(X, task.train, weights)
        # one block (small runs): the standardised rows are kept for the next tasks; else
        # the Gram matrix is summed over blocks of rows, and nothing of size n x d is kept
        Xs = _scaled(X, task.train, mu, sd) if len(task.train) <= ROW_BLOCK else None
        if Xs is not None:
            gram = Xs.T @ Xs
        else:
            gram = sum((lambda B: B.T @ B)(_scaled(X, b, mu, sd)) for b in _blocks(task.train))
        evals, evecs = np.linalg.eigh(gram)
        evals = np.clip(evals, 0.0, None)
        if cache is not None:
            cache[key] = (mu, sd, evals, evecs, Xs)
    ymu, ysd = _y_scale(task.y[task.train])
    yc = (task.y[task.train] - ymu) / ysd
    if Xs is not None:
        Vty = evecs.T @ (Xs.T @ yc)
    else:
        parts = _blocks(np.arange(len(task.train)))
        Vty = evecs.T @ sum(_scaled(X, task.train[b], mu, sd).T @ yc[b] for b in parts)
    yv = (task.y[task.val] - ymu) / ysd
    coefs = [Vty / (evals + alpha) for alpha in alphas]  # in the eigenbasis
    if len(task.val) <= ROW_BLOCK:
        Xv = _scaled(X, task.val, mu, sd) @ evecs
        errors = [float(np.mean((Xv @ c - yv) ** 2)) for c in coefs]
    else:
        W = evecs @ np.stack(coefs, axis=1)
        sq = np.zeros(len(alphas))
        for b in _blocks(np.arange(len(task.val))):
            sq += (((_scaled(X, task.val[b], mu, sd) @ W) - yv[b][:, None]) ** 2).sum(axis=0)
        errors = [float(e) for e in sq / len(task.val)]
    best, best_err = alphas[0], math.inf
    for alpha, err in zip(alphas, errors, strict=True):
        if err < best_err:
            best, best_err = alpha, err
    coef = evecs @ (Vty / (evals + best))
    Xp = X if X_predict is None else X_predict
    if len(Xp) <= ROW_BLOCK:
        return HeadFit(((Xp - mu) / sd @ coef) * ysd + ymu, best)
    out = np.empty(len(Xp))
    for start in range(0, len(Xp), ROW_BLOCK):
        rows = slice(start, start + ROW_BLOCK)
        out[rows] = ((Xp[rows] - mu) / sd @ coef) * ysd + ymu
    return HeadFit(out, best)


#: Rows the ridge head and the standardiser take at a time above it (memory: a block of
#: rows in float64, not a copy of the matrix).
ROW_BLOCK = 16_384


def _tensor(torch, X: np.ndarray):
    """``X`` as a float32 tensor, sharing its memory when it is float32 already (pandas hands
    out read-only views: the heads never write to it)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(X)


def _blocks(rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` in consecutive pieces of :data:`ROW_BLOCK`."""
    return [rows[i : i + ROW_BLOCK] for i in range(0, len(rows), ROW_BLOCK)]


def _scaled(X: np.ndarray, rows: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``(X[rows] - mu) / sd`` in float64 (float32 inputs are upcast block by block)."""
    return (X[rows] - mu) / sd


def fit_knn(
    xy: np.ndarray,
    task: HeadTask,
    *,
    xy_predict: np.ndarray | None = None,
    ks: tuple[int, ...] = KNN_KS,
) -> HeadFit:
    """k-nearest-neighbour mean of the training targets, k chosen on the validation rows."""
    from sklearn.neighbors import KNeighborsRegressor

    train_xy, train_y = xy[task.train], task.y[task.train]
    candidates = [k for k in ks if k <= len(task.train)] or [1]
    best, best_err = candidates[0], math.inf
    for k in candidates:
        model = KNeighborsRegressor(n_neighbors=k).fit(train_xy, train_y)
        err = float(np.mean((model.predict(xy[task.val]) - task.y[task.val]) ** 2))
        if err < best_err:
            best, best_err = k, err
    model = KNeighborsRegressor(n_neighbors=best).fit(train_xy, train_y)
    return HeadFit(model.predict(xy if xy_predict is None else xy_predict), float(best))


class _Stream:
    """An endless stream of a head's training rows, reshuffled every pass."""

    def __init__(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        self.rows, self.rng = rows, rng
        self.perm, self.pos = rng.permutation(rows), 0

    def take(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            if self.pos == len(self.perm):
                self.perm, self.pos = self.rng.permutation(self.rows), 0
            part = self.perm[self.pos : self.pos + n]
            self.pos += len(part)
            n -= len(part)
            out.append(part)
        return np.concatenate(out)


def fit_mlp_heads(
    X: np.ndarray,
    tasks: list[HeadTask],
    config: MLPConfig = DEFAULT_MLP,
    *,
    X_predict: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> list[HeadFit]:
    """Fit one MLP head per task on the rows of ``X``; predict every row of ``X_predict``.

    Inputs are standardised on each head's training rows, then scaled by ``weights`` (see the
    module docstring).

    Each epoch is ``ceil(n_train / batch_size)`` steps (at least ``min_steps_per_epoch``) of
    one head; after each epoch the head's validation MSE is measured and the best weights
    kept; ``patience`` epochs without improvement (or ``max_epochs``) stop it.
    ``HeadFit.chosen`` is the best epoch.
    """
    import torch

    if not tasks:
        return []
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _fit_mlp_heads(torch, X, tasks, config, X_predict, weights)
    finally:
        torch.set_num_threads(previous)


def _fit_mlp_heads(
    torch,
    X: np.ndarray,
    tasks: list[HeadTask],
    config: MLPConfig,
    X_predict: np.ndarray | None,
    weights: np.ndarray | None = None,
) -> list[HeadFit]:
    n_heads, (n_rows, dim) = len(tasks), X.shape
    hidden = config.hidden
    Xt = _tensor(torch, X)
    stats = [_standardiser(X, t.train, weights) for t in tasks]
    mu = torch.from_numpy(np.stack([m for m, _ in stats]).astype(np.float32))
    sd = torch.from_numpy(np.stack([s for _, s in stats]).astype(np.float32))
    yscale = [_y_scale(t.y[t.train]) for t in tasks]
    Y = np.zeros((n_heads, n_rows), dtype=np.float32)
    for h, (t, (ymu, ysd)) in enumerate(zip(tasks, yscale, strict=True)):
        rows = np.concatenate([t.train, t.val])
        Y[h, rows] = (t.y[rows] - ymu) / ysd
    Yt = torch.from_numpy(Y)

    # Initialisation as torch.nn.Linear (uniform ±1/sqrt(fan_in)), from each head's own rng.
    rngs = [np.random.default_rng([t.seed, t.key]) for t in tasks]
    b_in, b_hid = 1 / math.sqrt(dim), 1 / math.sqrt(hidden)
    init = [
        (
            r.uniform(-b_in, b_in, (dim, hidden)),
            r.uniform(-b_in, b_in, (1, hidden)),
            r.uniform(-b_hid, b_hid, (hidden, 1)),
            r.uniform(-b_hid, b_hid, (1, 1)),
        )
        for r in rngs
    ]
    params = [torch.from_numpy(np.stack([p[i] for p in init]).astype(np.float32)) for i in range(4)]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    best = [[p[h].clone() for p in params] for h in range(n_heads)]
    streams = [_Stream(t.train, r) for t, r in zip(tasks, rngs, strict=True)]
    batch = [min(config.batch_size, len(t.train)) for t in tasks]
    steps_per_epoch = [
        max(config.min_steps_per_epoch, math.ceil(len(t.train) / b))
        for t, b in zip(tasks, batch, strict=True)
    ]
    best_val = [math.inf] * n_heads
    best_epoch = [0] * n_heads
    epochs = [0] * n_heads
    active = list(range(n_heads))
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0

    def forward(ps: list, xb: torch.Tensor) -> torch.Tensor:
        hid = torch.relu(torch.baddbmm(ps[1], xb, ps[0]))
        return torch.baddbmm(ps[3], hid, ps[2]).squeeze(-1)

    while active:
        step += 1
        width = max(batch[h] for h in active)
        idx = np.zeros((len(active), width), dtype=np.int64)
        mask = np.zeros((len(active), width), dtype=np.float32)
        for i, h in enumerate(active):
            idx[i, : batch[h]] = streams[h].take(batch[h])
            mask[i, : batch[h]] = 1.0
        idx_t, mask_t = torch.from_numpy(idx), torch.from_numpy(mask)
        act = torch.tensor(active)
        xb = (Xt[idx_t] - mu[act, None, :]) / sd[act, None, :]
        yb = torch.gather(Yt[act], 1, idx_t)
        leaves = [p.requires_grad_(True) for p in params]
        out = forward(leaves, xb)
        loss = (((out - yb) ** 2 * mask_t).sum(1) / mask_t.sum(1)).sum()
        grads = torch.autograd.grad(loss, leaves)
        with torch.no_grad():
            c1, c2 = 1 - beta1**step, 1 - beta2**step
            for p, g, (m, v) in zip(params, grads, moments, strict=True):
                p.requires_grad_(False)
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                p.mul_(1 - config.lr * config.weight_decay)
                p.addcdiv_(m, v.sqrt().div_(math.sqrt(c2)).add_(eps), value=-config.lr / c1)

            done = [i for i, h in enumerate(active) if step % steps_per_epoch[h] == 0]
            stopped: list[int] = []
            for i in done:
                h = active[i]
                epochs[h] += 1
                val = torch.from_numpy(tasks[h].val)
                xv = ((Xt[val] - mu[h]) / sd[h])[None]
                pv = forward([p[i : i + 1] for p in params], xv)[0]
                err = float(((pv - Yt[h, val]) ** 2).mean())
                if err < best_val[h]:
                    best_val[h], best_epoch[h] = err, epochs[h]
                    best[h] = [p[i].clone() for p in params]
                if epochs[h] - best_epoch[h] >= config.patience or epochs[h] >= config.max_epochs:
                    stopped.append(i)
            if stopped:
                keep = torch.tensor([i for i in range(len(active)) if i not in stopped])
                active = [h for i, h in enumerate(active) if i not in stopped]
                if active:
                    params = [p[keep] for p in params]
                    moments = [(m[keep], v[keep]) for m, v in moments]

    Xp = Xt if X_predict is None else _tensor(torch, X_predict)
    fits = []
    with torch.no_grad():
        for h in range(n_heads):
            pred = torch.cat(  # by blocks of rows: no standardised copy of the whole
                [
                    forward([p[None] for p in best[h]], ((part - mu[h]) / sd[h])[None])[0]
                    for part in Xp.split(ROW_BLOCK)
                ]
            )
            ymu, ysd = yscale[h]
            values = pred.numpy().astype(np.float64) * ysd + ymu
            fits.append(HeadFit(values, best_epoch[h], epochs[h]))
    return fits
