"""Encoder ``resnet18``: torchvision ResNet-18 up to global average pooling (512 values),
ImageNet weights from a local file, else random with a warning."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.model.encoders.base import ImageEncoder
from urbangeo.model.tensor_files import load_tensors

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNet18Encoder(ImageEncoder):
    """ResNet-18 features (global average pool), ImageNet preprocessing."""

    @classmethod
    def build(
        cls, *, weights: str | os.PathLike | None = None, seed: int = 0, **_unused: Any
    ) -> ResNet18Encoder:
        """:func:`resnet18_encoder` of ``weights``."""
        return resnet18_encoder(weights, seed=seed)

    def encode(self, batch: Tensor) -> Tensor:
        """The pooled features of a batch of preprocessed images."""
        assert self.module is not None
        return self.module(batch)


def _load_weights_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise InputError(f"Weights file not found: {path}", hint="Check --weights.")
    state = load_tensors(path, what="the weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path} does not hold a state dict.")
    return state


def resnet18_encoder(weights: str | os.PathLike | None = None, *, seed: int = 0) -> ResNet18Encoder:
    """ResNet-18 features (global average pool, 512 values), ImageNet preprocessing.

    ``weights``: a local torchvision ResNet-18 state dict (e.g. ``resnet18-f37072fd.pth``);
    without it the network is random (seeded) and a warning says so.
    """
    from torchvision import transforms
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    net = resnet18(weights=None)
    if weights is not None:
        state = _load_weights_file(Path(weights))
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(
                f"{weights} is not a torchvision ResNet-18 state dict ({str(exc)[:200]}).",
                hint="Use the weights torchvision publishes for resnet18 (resnet18-*.pth).",
            ) from exc
    else:
        warnings.warn(
            "ResNet-18 without --weights: the network is randomly initialised (no download "
            "is attempted). Pass a local resnet18-*.pth for ImageNet features.",
            UrbangeoWarning,
            stacklevel=2,
        )
    net.fc = nn.Identity()
    net.eval().requires_grad_(False)
    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    info = {"encoder": "resnet18", "weights": str(weights) if weights else "random"}
    return ResNet18Encoder("resnet18", 512, transform, net, info)
