"""Image encoders behind ``urbangeo embed --encoder``: the trained model and the baselines.

============  ==============================================================================
encoder       image features
============  ==============================================================================
trained       the image tower of a model from ``urbangeo train`` (this run's or any
              checkpoint: transfer between cities), L2-normalised
frozen-clip   an open_clip model without pre-training on captions (``pretrained`` tag or a
              local weights file), L2-normalised; random weights with a warning if neither
random        the same architecture, randomly initialised (seeded), L2-normalised
resnet18      torchvision ResNet-18 up to global average pooling (512 values), ImageNet
              weights from a local file, else random with a warning
image-stats   per-channel mean, standard deviation and an 8-bin histogram of the RGB pixels
              (3 + 3 + 24 = 30 values, each in [0, 1]), at full resolution
============  ==============================================================================
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.model.clip import checkpoint_metadata

ENCODERS = ("trained", "frozen-clip", "random", "resnet18", "image-stats")
HIST_BINS = 8
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageEncoder:
    """An image → vector function, split where a DataLoader wants it.

    ``transform`` runs per image (in loader workers): PIL image → tensor. ``module`` runs per
    batch on the device: stacked tensors → ``[n, dim]`` features (``None``: the transform
    already produced the features). ``fit``, when set, returns the encoder adapted to the images
    it is about to embed (a random CLIP normalises them by their own statistics).
    """

    name: str
    dim: int
    transform: Callable[[Image.Image], Tensor]
    module: nn.Module | None
    info: dict[str, Any] = field(default_factory=dict)
    fit: Callable[[Sequence[str]], ImageEncoder] | None = None

    def to(self, device: torch.device | str) -> ImageEncoder:
        """Move the batch module to ``device`` (in place); returns self."""
        if self.module is not None:
            self.module.to(device)
        return self

    def encode(self, batch: Tensor) -> Tensor:
        """Features ``[n, dim]`` of a batch of transformed images."""
        return batch if self.module is None else self.module(batch)


class ClipImageTower(nn.Module):
    """``model.encode_image(x, normalize=True)`` as a module (frozen, eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        return self.model.encode_image(images, normalize=True)


# --------------------------------------------------------------------------------------------
# image statistics
# --------------------------------------------------------------------------------------------


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
    hist = hist / max(1, pixels.shape[0])
    return np.concatenate([mean, std, hist.ravel()]).astype(np.float32)


def _stats_transform(image: Image.Image) -> Tensor:
    return torch.from_numpy(image_statistics(image))


def image_stats_encoder() -> ImageEncoder:
    """The 30-value image-statistics baseline."""
    return ImageEncoder(
        "image-stats", 6 + 3 * HIST_BINS, _stats_transform, None, {"encoder": "image-stats"}
    )


# --------------------------------------------------------------------------------------------
# ResNet-18
# --------------------------------------------------------------------------------------------


def _load_weights_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise InputError(f"Weights file not found: {path}", hint="Check --weights.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"Cannot read the weights file {path} ({type(exc).__name__}).") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path} does not hold a state dict.")
    return state


def resnet18_encoder(weights: str | os.PathLike | None = None, *, seed: int = 0) -> ImageEncoder:
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
    return ImageEncoder("resnet18", 512, transform, net, info)


# --------------------------------------------------------------------------------------------
# CLIP encoders
# --------------------------------------------------------------------------------------------


def _clip_encoder(name: str, bundle: Any, info: dict[str, Any]) -> ImageEncoder:
    tower = ClipImageTower(bundle.model)
    with torch.no_grad():
        size = bundle.model.visual.image_size
        size = size if isinstance(size, tuple | list) else (size, size)
        dim = int(tower(torch.zeros(1, 3, *size)).shape[1])
    return ImageEncoder(name, dim, bundle.preprocess, tower, info)


def _random_encoder(name: str, bundle: Any, info: dict[str, Any]) -> ImageEncoder:
    """A randomly initialised CLIP image tower that normalises the images it embeds by their
    own per-channel statistics, as a model trained from scratch does (see ``train
    --image-norm``): the fair baseline for pre-training from a random init."""

    def fit(paths: Sequence[str]) -> ImageEncoder:
        from urbangeo.model.clip import unnormalized_transform, with_image_normalization
        from urbangeo.model.data import channel_stats

        stats = channel_stats(paths, unnormalized_transform(bundle.model))
        if stats is None:
            return encoder
        fitted = with_image_normalization(bundle, *stats)
        extra = {"image_mean": list(stats[0]), "image_std": list(stats[1])}
        return _clip_encoder(name, fitted, {**info, **extra})

    encoder = _clip_encoder(name, bundle, info)
    encoder.fit = fit
    return encoder


def trained_encoder(
    checkpoint: str | os.PathLike,
    *,
    model: str | None = None,
) -> ImageEncoder:
    """The image tower of a checkpoint written by ``urbangeo train`` (or any CLIP state dict).

    The architecture comes from the checkpoint's record; ``model`` is needed only for plain
    state dicts and must agree with the record otherwise.
    """
    from urbangeo.model.clip import DEFAULT_MODEL, ModelConfigError, create_model

    path = Path(checkpoint)
    if not path.is_file():
        raise InputError(
            f"No trained model at {path}.",
            hint="Train one first (`urbangeo train --gpkg RUN.gpkg --model urbangeo-tiny-vit "
            "--lr 1e-3 --epochs 5` trains in seconds on a CPU; the default ViT-B-16 wants a GPU), "
            "pass --checkpoint PATH (e.g. a model trained on another city), or choose another "
            "--encoder.",
        )
    meta = checkpoint_metadata(path)
    recorded = meta.get("model")
    if recorded and model and recorded != model:
        raise ModelConfigError(
            f"Checkpoint {path} was trained with architecture {recorded!r}, not {model!r}.",
            hint="Leave --model out; the checkpoint records its architecture.",
        )
    name = recorded or model or DEFAULT_MODEL
    context = meta.get("context_length")
    if context is None:
        from urbangeo.model.clip import _checkpoint_text_positions

        context = _checkpoint_text_positions(path) or 77
    bundle = create_model(name, checkpoint=path, context_length=int(context))  # its statistics
    info = {"encoder": "trained", "checkpoint": str(path), "model": name}
    if "image_mean" in meta:
        info["image_mean"], info["image_std"] = meta["image_mean"], meta["image_std"]
    return _clip_encoder("trained", bundle, info)


def build_encoder(
    encoder: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
) -> ImageEncoder:
    """The encoder named ``encoder`` (one of :data:`ENCODERS`); see the module docstring.

    ``checkpoint``: trained weights (``trained``); ``model``: the architecture (CLIP
    encoders; default ViT-B-16); ``pretrained``: an open_clip tag and ``weights``: a local file
    (``frozen-clip``; ``weights`` is the ResNet-18 state dict for ``resnet18``).
    """
    if encoder not in ENCODERS:
        raise InputError(f"Unknown encoder {encoder!r}.", hint=f"Use one of {', '.join(ENCODERS)}.")
    if encoder == "trained":
        if checkpoint is None:
            raise InputError("The trained encoder needs a checkpoint.")
        return trained_encoder(checkpoint, model=model)
    if encoder == "image-stats":
        return image_stats_encoder()
    if encoder == "resnet18":
        return resnet18_encoder(weights, seed=seed)

    from urbangeo.model.clip import DEFAULT_MODEL, create_model

    name = model or DEFAULT_MODEL
    torch.manual_seed(seed)
    if encoder == "random":
        bundle = create_model(name, context_length=77)
        return _random_encoder("random", bundle, {"encoder": "random", "model": name, "seed": seed})
    if pretrained is None and weights is None:
        warnings.warn(
            "frozen-clip without --pretrained or --weights: the CLIP model is randomly "
            "initialised (the same as --encoder random).",
            UrbangeoWarning,
            stacklevel=2,
        )
        bundle = create_model(name, context_length=77)
        info = {"encoder": "frozen-clip", "model": name, "pretrained": "", "weights": ""}
        return _random_encoder("frozen-clip", bundle, info)
    context = 77
    if weights is not None:
        from urbangeo.model.clip import _checkpoint_text_positions

        if not Path(weights).is_file():
            raise InputError(f"Weights file not found: {weights}", hint="Check --weights.")
        context = _checkpoint_text_positions(Path(weights)) or 77
    bundle = create_model(name, pretrained=pretrained, checkpoint=weights, context_length=context)
    info = {
        "encoder": "frozen-clip",
        "model": name,
        "pretrained": pretrained or "",
        "weights": str(weights or ""),
    }
    return _clip_encoder("frozen-clip", bundle, info)


def default_checkpoint(run_dir: str | os.PathLike, name: str = "urbanln") -> Path:
    """Where ``urbangeo train --name NAME`` leaves its final model in a run folder."""
    return Path(run_dir) / C.CHECKPOINTS_DIR / name / "model.pt"
