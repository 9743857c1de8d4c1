"""What a run trains and how fast: parameter freezing, AdamW's parameter groups, and the
learning-rate schedule (linear warm-up, then cosine decay)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from urbangeo.errors import InputError
from urbangeo.model.training.config import TRAIN_CHOICES


def _resblock_prefixes(model: nn.Module, tower: str) -> list[str]:
    """Names of the residual blocks of the image (``visual``) or text tower, in order."""
    prefixes = []
    for name, _module in model.named_modules():
        parent, _, index = name.rpartition(".")
        if not parent.endswith("resblocks") or not index.isdigit():
            continue
        if (tower == "image") == name.startswith("visual."):
            prefixes.append(name + ".")
    return prefixes


def _is_image_param(name: str) -> bool:
    return name.startswith("visual.")


def apply_freezing(model: nn.Module, train: str = "both", last_n: int = 2) -> tuple[int, int]:
    """Set ``requires_grad`` per :data:`TRAIN_CHOICES`; returns (trainable, total) counts."""
    if train not in TRAIN_CHOICES:
        raise InputError(f"train must be one of {TRAIN_CHOICES}; got {train!r}")
    keep: Callable[[str], bool]
    if train == "both":

        def keep(name: str) -> bool:
            return True

    elif train == "image":

        def keep(name: str) -> bool:
            return _is_image_param(name) or name.startswith("logit_")

    elif train == "text":

        def keep(name: str) -> bool:
            return not _is_image_param(name)

    else:
        image_blocks = _resblock_prefixes(model, "image")
        text_blocks = _resblock_prefixes(model, "text")
        if not image_blocks or not text_blocks:
            raise InputError(
                f"train='last-n' needs transformer towers; {type(model).__name__} has "
                f"{len(image_blocks)} image and {len(text_blocks)} text residual blocks.",
                hint="Use --train both, image or text for this architecture.",
            )
        chosen = tuple(image_blocks[-last_n:] + text_blocks[-last_n:])
        heads = (
            "visual.ln_post",
            "visual.proj",
            "visual.head",
            "ln_final",
            "text_projection",
            "positional_embedding",
            "text.ln_final",
            "text.text_projection",
            "text.positional_embedding",
            "logit_",
        )

        def keep(name: str) -> bool:
            return name.startswith(chosen) or name.startswith(heads)

    trainable = total = 0
    for name, param in model.named_parameters():
        param.requires_grad_(keep(name))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups; gains, biases, embeddings and ``logit_scale`` get no decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = (
            param.ndim < 2
            or "bn" in name
            or "ln" in name
            or "bias" in name
            or "logit_scale" in name
            or "embedding" in name
        )
        (no_decay if exclude else decay).append(param)
    groups = [{"params": no_decay, "weight_decay": 0.0}]
    if decay:
        groups.insert(0, {"params": decay, "weight_decay": weight_decay})
    return groups


def fused_ok(device: torch.device) -> bool:
    """Whether AdamW's fused kernel exists for ``device`` (CPU and CUDA; several times faster)."""
    return device.type in ("cpu", "cuda")


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): linear warm-up, then cosine."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress_ = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress_))


class WarmupCosine:
    """:func:`warmup_cosine` as a picklable LR lambda (a plain function would not survive
    ``torch.save`` of a scheduler)."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, warmup=self.warmup, total=self.total, min_ratio=self.min_ratio)
