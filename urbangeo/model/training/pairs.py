"""A training run's pairs: read, checked on disk, split, tokenised and fingerprinted."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.model.clip import LongTokenizer
from urbangeo.model.data import (
    TokenTable,
    drop_excluded,
    drop_missing_files,
    load_pairs,
    pairs_fingerprint,
    split_pairs,
)
from urbangeo.progress import message
from urbangeo.settings.model import TrainSettings


@dataclass
class TrainingPairs:
    """The pairs a run trains and validates on, with their token ids and counts."""

    train: pd.DataFrame
    val: pd.DataFrame
    #: Token ids, made as rows are used (:class:`~urbangeo.model.data.TokenTable`).
    train_tokens: TokenTable
    val_tokens: TokenTable
    #: One group per distinct validation caption: retrieving any pair of the group counts.
    val_groups: np.ndarray
    #: Of the training pairs: resuming on other data is refused.
    fingerprint: str
    n_pairs: int
    n_missing: int
    #: Pairs of the regions the run excludes (edge cells), left out.
    n_excluded: int = 0

    @property
    def n_truncated(self) -> int:
        """Captions found longer than the context among those tokenised so far."""
        return len(self.train_tokens.truncated) + len(self.val_tokens.truncated)

    def warn_truncated(self) -> None:
        """Warn about the captions cut to the context (of those tokenised, when not all)."""
        n = self.n_truncated
        if not n:
            return
        seen = len(self.train_tokens.seen) + len(self.val_tokens.seen)
        length = self.train_tokens.context_length
        of = (
            f"{n} of {self.n_pairs} captions are"
            if seen >= self.n_pairs
            else f"{n} of the {seen:,} captions used (of {self.n_pairs:,}) are"
        )
        warnings.warn(
            f"{of} longer than {length} tokens and were truncated (end-of-text kept).",
            UrbangeoWarning,
            stacklevel=3,
        )


def load_training_pairs(source: Path, cfg: TrainSettings, *, main: bool) -> TrainingPairs:
    """The pairs of ``source`` whose images exist, split by ``cfg.val_fraction`` (at most
    ``cfg.val_max`` regions held out) and tokenised for ``cfg.model`` as they are used;
    warnings come from the ``main`` process only."""
    pairs = load_pairs(source, kind=cfg.kind)
    pairs, n_excluded, n_regions = drop_excluded(pairs, source)
    if n_excluded and main:
        message(
            f"Left out {n_excluded:,} pairs of {n_regions:,} excluded regions (edge cells: "
            "column excluded of layer regions; `urbangeo tiles --include-edges` keeps them)."
        )
    if pairs.empty:
        raise InputError(
            f"Every image-caption pair of {source} belongs to an excluded region (edge cells).",
            hint="Keep them with `urbangeo tiles --include-edges`, or lower --min-inside-share "
            "and --min-valid-share.",
        )
    with warnings.catch_warnings():
        if not main:
            warnings.simplefilter("ignore", UrbangeoWarning)
        pairs, n_missing = drop_missing_files(pairs)
    if pairs.empty:
        raise InputError(
            f"None of the images of {source} exist on disk.",
            hint="Image paths are relative to the GeoPackage's folder; check images/.",
        )
    train, val = split_pairs(pairs, cfg.val_fraction, max_groups=cfg.val_max)
    assert cfg.context_length is not None, "expects cfg.resolved()"
    tokenizer = LongTokenizer.for_model(cfg.model, cfg.context_length)
    return TrainingPairs(
        train=train,
        val=val,
        train_tokens=TokenTable(train[C.CAPTION].tolist(), tokenizer),
        val_tokens=TokenTable(val[C.CAPTION].tolist(), tokenizer),
        val_groups=pd.factorize(val[C.CAPTION])[0],
        fingerprint=pairs_fingerprint(train),
        n_pairs=len(pairs),
        n_missing=n_missing,
        n_excluded=n_excluded,
    )
