"""Encoder ``random``: a CLIP architecture, randomly initialised (seeded), L2-normalised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from urbangeo.model.clip import (
    DEFAULT_MODEL,
    create_model,
    unnormalized_transform,
    with_image_normalization,
)
from urbangeo.model.data import channel_stats
from urbangeo.model.encoders.base import ImageEncoder
from urbangeo.model.encoders.clip_tower import ClipEncoder


class RandomClipEncoder(ClipEncoder):
    """A randomly initialised CLIP image tower that normalises the images it embeds by their
    own per-channel statistics, as a model trained from scratch does (see ``train
    --image-norm``): the fair baseline for pre-training from a random init."""

    @classmethod
    def build(cls, *, model: str | None = None, seed: int = 0, **_unused: Any) -> RandomClipEncoder:
        """The architecture ``model`` (default ViT-B-16) with weights drawn from ``seed``."""
        name = model or DEFAULT_MODEL
        torch.manual_seed(seed)
        bundle = create_model(name, context_length=77)
        return cls("random", bundle, {"encoder": "random", "model": name, "seed": seed})

    def fit(self, paths: Sequence[str]) -> ImageEncoder:
        """This tower with images normalised by the statistics of ``paths`` (self if none of
        them can be read)."""
        stats = channel_stats(paths, unnormalized_transform(self.bundle.model))
        if stats is None:
            return self
        fitted = with_image_normalization(self.bundle, *stats)
        extra = {"image_mean": list(stats[0]), "image_std": list(stats[1])}
        return ClipEncoder(self.name, fitted, {**self.info, **extra})
