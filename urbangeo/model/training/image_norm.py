"""Where a training run's image normalisation comes from (``--image-norm``).

A model trained from scratch learns faster from inputs standardised by its own data: rendered
maps and aerial tiles sit far from CLIP's statistics, and a random encoder fed them maps every
image to nearly the same feature. Pretrained weights keep their architecture's statistics, and
fine-tuning a checkpoint keeps the statistics it was trained with.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch import nn

from urbangeo.errors import UrbangeoWarning
from urbangeo.model.clip import (
    brings_own_weights,
    checkpoint_metadata,
    recorded_image_norm,
    unnormalized_transform,
)
from urbangeo.model.data import channel_stats
from urbangeo.progress import message
from urbangeo.settings.model import TrainSettings

ImageNorm = tuple[tuple[float, ...], tuple[float, ...]]


def image_norm_source(cfg: TrainSettings) -> str:
    """Where a training run's image normalisation comes from: ``model`` (the architecture's,
    for pretrained weights), ``checkpoint`` (what the initial checkpoint recorded) or ``data``
    (the training images' statistics, for a random init); see :data:`IMAGE_NORMS`."""
    if cfg.image_norm != "auto":
        return cfg.image_norm
    if cfg.checkpoint is not None:
        return "checkpoint"
    if cfg.pretrained is not None or brings_own_weights(cfg.model):
        return "model"
    return "data"


def choose_image_norm(
    cfg: TrainSettings,
    model: nn.Module,
    train_paths: Sequence[str],
    state: dict[str, Any] | None,
    *,
    main: bool,
) -> ImageNorm | None:
    """The (mean, std) to normalise images with, or None for the architecture's own.

    ``state``: the checkpoint being resumed, whose recorded statistics win. ``main``: whether
    this process reports (a warning, or the statistics chosen).
    """
    if state is not None:  # resuming: exactly what the interrupted run used
        return recorded_image_norm(state.get("urbangeo") or {})
    source = image_norm_source(cfg)
    if source == "checkpoint":  # fine-tuning keeps its inputs as they were
        assert cfg.checkpoint is not None  # image_norm_source says "checkpoint" only then
        return recorded_image_norm(checkpoint_metadata(cfg.checkpoint))
    if source == "model":
        return None
    stats = channel_stats(train_paths, unnormalized_transform(model), seed=cfg.seed)
    if stats is None:
        if main:
            warnings.warn(
                "No training image could be read for the image statistics; the model's own "
                "normalisation is used.",
                UrbangeoWarning,
                stacklevel=4,
            )
        return None
    if main:
        mean, std = (", ".join(f"{v:.3f}" for v in values) for values in stats)
        message(f"Images normalised by the training set's statistics: mean {mean}, std {std}.")
    return stats
