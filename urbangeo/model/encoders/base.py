"""The image encoder family's base: an image → vector function, split where a DataLoader
wants it."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypedDict, Unpack

import torch
from PIL import Image
from torch import Tensor, nn


class BuildOptions(TypedDict, total=False):
    """The embed stage's settings an image encoder is built from (each implementation reads
    those it needs): ``checkpoint`` (trained weights), ``model`` (a CLIP architecture),
    ``pretrained`` (an open_clip tag), ``weights`` (a local state dict) and ``seed``."""

    checkpoint: str | os.PathLike | None
    model: str | None
    pretrained: str | None
    weights: str | os.PathLike | None
    seed: int


class ImageEncoder(ABC):
    """An image → vector function in two parts.

    ``transform`` runs per image (in loader workers): PIL image → tensor. ``module`` runs per
    batch on the device: stacked tensors → ``[n, dim]`` features (``None``: the transform
    already produces the features). ``info`` is what the embed stage records about it.
    """

    #: Optional hook: the encoder adapted to the images it is about to embed (a random CLIP
    #: normalises them by their own statistics); ``None``: the encoder is used as it is.
    fit: Callable[[Sequence[str]], ImageEncoder] | None = None

    def __init__(
        self,
        name: str,
        dim: int,
        transform: Callable[[Image.Image], Tensor],
        module: nn.Module | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.dim = dim
        self.transform = transform
        self.module = module
        self.info: dict[str, Any] = dict(info or {})

    @classmethod
    def build(cls, **options: Unpack[BuildOptions]) -> ImageEncoder:
        """The encoder from the embed stage's settings, each implementation reading those it
        needs (see :func:`urbangeo.model.encoders.build_encoder`). Every implementation in
        the registry defines it."""
        raise NotImplementedError(f"{cls.__name__} is not built by name.")

    def to(self, device: torch.device | str) -> ImageEncoder:
        """Move the batch module to ``device`` (in place); returns self."""
        if self.module is not None:
            self.module.to(device)
        return self

    @abstractmethod
    def encode(self, batch: Tensor) -> Tensor:
        """Features ``[n, dim]`` of a batch of transformed images."""
