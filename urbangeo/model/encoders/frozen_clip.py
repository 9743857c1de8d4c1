"""Encoder ``frozen-clip``: an open_clip model without pre-training on captions (a
``pretrained`` tag or a local weights file), L2-normalised; random weights with a warning if
neither is given."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.model.clip import DEFAULT_MODEL, _checkpoint_text_positions, create_model
from urbangeo.model.encoders.clip_tower import ClipEncoder
from urbangeo.model.encoders.random_clip import RandomClipEncoder


class FrozenClipEncoder(ClipEncoder):
    """A CLIP image tower as its weights come (open_clip's or a local file's)."""

    @classmethod
    def build(
        cls,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        weights: str | os.PathLike | None = None,
        seed: int = 0,
        **_unused: Any,
    ) -> ClipEncoder:
        """The architecture ``model`` (default ViT-B-16) with the open_clip tag ``pretrained``
        or the state dict ``weights``; with neither, the random encoder (warns)."""
        name = model or DEFAULT_MODEL
        torch.manual_seed(seed)
        if pretrained is None and weights is None:
            warnings.warn(
                "frozen-clip without --pretrained or --weights: the CLIP model is randomly "
                "initialised (the same as --encoder random).",
                UrbangeoWarning,
                stacklevel=3,
            )
            bundle = create_model(name, context_length=77)
            info = {"encoder": "frozen-clip", "model": name, "pretrained": "", "weights": ""}
            return RandomClipEncoder("frozen-clip", bundle, info)
        context = 77
        if weights is not None:
            if not Path(weights).is_file():
                raise InputError(f"Weights file not found: {weights}", hint="Check --weights.")
            context = _checkpoint_text_positions(Path(weights)) or 77
        bundle = create_model(
            name, pretrained=pretrained, checkpoint=weights, context_length=context
        )
        info = {
            "encoder": "frozen-clip",
            "model": name,
            "pretrained": pretrained or "",
            "weights": str(weights or ""),
        }
        return cls("frozen-clip", bundle, info)
