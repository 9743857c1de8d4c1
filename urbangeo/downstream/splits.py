"""Train/validation/test splits: random 6:2:2, and spatial blocks for honest estimates.

Sizes of a random split of ``n`` regions: ``n_test = round(0.2 n)`` and
``n_val = round(0.2 n)`` with halves rounded up (``floor(0.2 n + 0.5)``), and
``n_train = n − n_val − n_test``; for 4,587 regions that is 2,753 / 917 / 917, for 10 regions
6 / 2 / 2.

Neighbouring regions share values, so a random split lets a model score by recognising the
neighbourhood. The block split cuts the plane into squares of ``block_size`` metres and sends
whole squares to one set: blocks are taken in a random order (per seed) and each goes to the
set that is furthest below its share of the regions, so that the sets approach 6:2:2 of the
regions (exactly only when blocks are small).

Repeated k-fold cross-validation (:func:`kfold_split`, :func:`block_kfold_split`) is for small
datasets, where one 6:2:2 test set is too small to score on: every region is tested once per
repeat, by a model trained on 3/4 and validated on 1/4 of the other regions (with 5 folds the
same 6:2:2 proportions). Below :data:`KFOLD_BELOW` regions ``--cv auto`` uses it: a 6:2:2 test
set then has fewer than 20 regions, and the test R² of a model whose true R² is 0.5 is
0.44 ± 0.20 (std over test sets of 20 regions; 0.36 ± 0.37 for 10, simulated), a spread as large
as the differences between models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from urbangeo.errors import InputError

RATIOS = (0.6, 0.2, 0.2)
SPLITS = ("random", "block")
#: ``--cv auto`` cross-validates targets with fewer regions than this (see the module docstring).
KFOLD_BELOW = 100
#: Train and validation shares of the regions outside a test fold (the 6:2 of 6:2:2).
INNER_RATIOS = (RATIOS[0], RATIOS[1], 0.0)

Parts = tuple[np.ndarray, np.ndarray, np.ndarray]


def split_sizes(n: int, ratios: tuple[float, float, float] = RATIOS) -> tuple[int, int, int]:
    """(train, val, test) sizes for ``n`` regions; see the module docstring for the rounding."""
    total = sum(ratios)
    n_val = math.floor(n * ratios[1] / total + 0.5)
    n_test = math.floor(n * ratios[2] / total + 0.5)
    return n - n_val - n_test, n_val, n_test


def random_split(
    n: int, seed: int | Sequence[int], ratios: tuple[float, float, float] = RATIOS
) -> Parts:
    """Positions 0..n-1 split at random into (train, val, test), sorted; same seed, same split.

    The order is ``numpy.random.default_rng(seed).permutation(n)``: the first ``n_train``
    positions train, the next ``n_val`` validate, the rest test.
    """
    n_train, n_val, _ = split_sizes(n, ratios)
    perm = np.random.default_rng(seed).permutation(n)
    parts = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    return tuple(np.sort(p) for p in parts)  # type: ignore[return-value]


def block_ids(xy: np.ndarray, block_size: float) -> np.ndarray:
    """The block (square of ``block_size`` metres, snapped to multiples of it) of each point."""
    if not block_size or block_size <= 0:
        raise InputError(
            f"Block size must be a positive number of metres, not {block_size!r}.",
            hint="Pass --block-size METRES, several region sizes (e.g. 5000 for 1 km regions).",
        )
    cells = np.floor(np.asarray(xy, dtype=np.float64) / block_size).astype(np.int64)
    _, ids = np.unique(cells, axis=0, return_inverse=True)
    return ids.reshape(-1)


def block_split(
    xy: np.ndarray,
    block_size: float,
    seed: int,
    ratios: tuple[float, float, float] = RATIOS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions split into (train, val, test) by whole spatial blocks, aiming at ``ratios``."""
    blocks = block_ids(xy, block_size)
    n_blocks = int(blocks.max()) + 1 if blocks.size else 0
    if n_blocks < 3:
        raise InputError(
            f"Blocks of {block_size:g} m give {n_blocks} block(s); a split needs at least 3.",
            hint="Use a smaller --block-size (or the random split).",
        )
    counts = np.bincount(blocks, minlength=n_blocks)
    targets = np.array(split_sizes(len(blocks), ratios), dtype=np.float64)
    filled = np.zeros(3)
    assigned = np.empty(n_blocks, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n_blocks)
    # The first three blocks seed val, test and train so that no set is empty.
    share = np.maximum(targets, 1)
    for i, block in enumerate(order):
        part = (1, 2, 0)[i] if i < 3 else int(np.argmax((targets - filled) / share))
        assigned[block] = part
        filled[part] += counts[block]
    which = assigned[blocks]
    return tuple(np.flatnonzero(which == k) for k in range(3))  # type: ignore[return-value]


def _inner(rest: np.ndarray, test: np.ndarray, seed: int, fold: int) -> Parts:
    """``rest`` split 3:1 into (train, val) at random (``default_rng([seed, fold])``)."""
    rest = np.sort(rest)
    train, val, _ = random_split(len(rest), [seed, fold], INNER_RATIOS)
    return rest[train], rest[val], np.sort(test)


def check_folds(n: int, folds: int) -> None:
    """Refuse ``folds`` that leave fewer than two test regions per fold."""
    if folds < 2 or n < 2 * folds:
        raise InputError(
            f"{folds}-fold cross-validation of {n} regions leaves fewer than 2 test regions "
            "per fold.",
            hint=f"Use --folds {max(2, n // 2)} or fewer.",
        )


def kfold_split(n: int, folds: int, seed: int) -> list[Parts]:
    """(train, val, test) positions of each fold of ``n`` regions, for one repeat.

    Test folds as scikit-learn's ``KFold(folds, shuffle=True, random_state=seed)``; the other
    regions of fold ``f`` split 3:1 into train and validation by :func:`random_split` with the
    seed ``[seed, f]``.
    """
    from sklearn.model_selection import KFold

    check_folds(n, folds)
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return [
        _inner(rest, test, seed, f) for f, (rest, test) in enumerate(splitter.split(np.arange(n)))
    ]


def block_kfold_split(xy: np.ndarray, block_size: float, folds: int, seed: int) -> list[Parts]:
    """Like :func:`kfold_split`, with whole spatial blocks in each test fold.

    Blocks are taken in a random order (``default_rng(seed)``) and each goes to the fold with
    the fewest regions so far; validation regions are then drawn at random from the rest.
    """
    check_folds(len(xy), folds)
    blocks = block_ids(xy, block_size)
    n_blocks = int(blocks.max()) + 1 if blocks.size else 0
    if n_blocks < folds:
        raise InputError(
            f"Blocks of {block_size:g} m give {n_blocks} block(s); {folds} folds need at least "
            f"{folds}.",
            hint="Use a smaller --block-size, fewer --folds, or the random split.",
        )
    counts = np.bincount(blocks, minlength=n_blocks)
    filled = np.zeros(folds, dtype=np.int64)
    fold_of = np.empty(n_blocks, dtype=np.int64)
    for block in np.random.default_rng(seed).permutation(n_blocks):
        f = int(np.argmin(filled))
        fold_of[block] = f
        filled[f] += counts[block]
    which = fold_of[blocks]
    every = np.arange(len(blocks))
    return [_inner(every[which != f], every[which == f], seed, f) for f in range(folds)]
