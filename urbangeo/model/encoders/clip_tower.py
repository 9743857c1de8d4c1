"""The image tower of an open_clip model as an encoder: what the ``trained``, ``frozen-clip``
and ``random`` encoders share."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from urbangeo.model.encoders.base import ImageEncoder
from urbangeo.model.protocols import ClipModel


class ClipImageTower(nn.Module):
    """``model.encode_image(x, normalize=True)`` as a module (frozen, eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        return cast(ClipModel, self.model).encode_image(images, normalize=True)


class ClipEncoder(ImageEncoder):
    """L2-normalised image features of a CLIP model (a ``ClipBundle``), preprocessed as the
    bundle says."""

    def __init__(self, name: str, bundle: Any, info: dict[str, Any]) -> None:
        tower = ClipImageTower(bundle.model)
        with torch.no_grad():
            size = bundle.model.visual.image_size
            size = size if isinstance(size, tuple | list) else (size, size)
            dim = int(tower(torch.zeros(1, 3, *size)).shape[1])
        super().__init__(name, dim, bundle.preprocess, tower, info)
        self.bundle = bundle

    def encode(self, batch: Tensor) -> Tensor:
        """The tower's features of a batch of preprocessed images."""
        assert self.module is not None
        return self.module(batch)
