"""Encoder ``image-stats``: per-channel mean, standard deviation and an 8-bin histogram of the
RGB pixels (3 + 3 + 24 = 30 values, each in [0, 1]), at full resolution."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from urbangeo.model.encoders.base import ImageEncoder

HIST_BINS = 8


def image_statistics(image: Image.Image | np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Per-channel mean, std (of values / 255) and ``bins``-bin histograms (pixel shares).

    Layout: ``[mean_r, mean_g, mean_b, std_r, std_g, std_b, hist_r[0..bins-1], hist_g...,
    hist_b...]``, float32.
    """
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    pixels = pixels.reshape(-1, 3)
    values = pixels.astype(np.float64) / 255.0
    mean, std = values.mean(axis=0), values.std(axis=0)
    # bins over 0..255 in equal widths: value v falls in bin v * bins // 256
    index = pixels.astype(np.int64) * bins // 256
    hist = np.stack([np.bincount(index[:, c], minlength=bins) for c in range(3)])
    shares = hist / max(1, pixels.shape[0])
    return np.concatenate([mean, std, shares.ravel()]).astype(np.float32)


def _stats_transform(image: Image.Image) -> Tensor:
    return torch.from_numpy(image_statistics(image))


class ImageStatsEncoder(ImageEncoder):
    """The statistics are the features: computed per image, nothing runs per batch."""

    @classmethod
    def build(cls, **_unused: Any) -> ImageStatsEncoder:
        """:func:`image_stats_encoder` (it has no settings)."""
        return image_stats_encoder()

    def encode(self, batch: Tensor) -> Tensor:
        """The batch itself: the transform already computed the features."""
        return batch


def image_stats_encoder() -> ImageStatsEncoder:
    """The 30-value image-statistics baseline."""
    return ImageStatsEncoder(
        "image-stats", 6 + 3 * HIST_BINS, _stats_transform, None, {"encoder": "image-stats"}
    )
