"""Encoder ``trained``: the image tower of a model from ``urbangeo train`` (this run's or any
checkpoint: transfer between cities), L2-normalised."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.model.clip import (
    DEFAULT_MODEL,
    ModelConfigError,
    _checkpoint_text_positions,
    checkpoint_metadata,
    create_model,
)
from urbangeo.model.encoders.clip_tower import ClipEncoder
from urbangeo.model.training.config import MODEL_FILE


class TrainedEncoder(ClipEncoder):
    """A trained checkpoint's image tower, normalising images as the model was trained."""

    @classmethod
    def build(
        cls,
        *,
        checkpoint: str | os.PathLike | None = None,
        model: str | None = None,
        **_unused: Any,
    ) -> TrainedEncoder:
        """:func:`trained_encoder` of ``checkpoint`` (required)."""
        if checkpoint is None:
            raise InputError("The trained encoder needs a checkpoint.")
        return trained_encoder(checkpoint, model=model)


def trained_encoder(checkpoint: str | os.PathLike, *, model: str | None = None) -> TrainedEncoder:
    """The image tower of a checkpoint written by ``urbangeo train`` (or any CLIP state dict).

    The architecture comes from the checkpoint's record; ``model`` is needed only for plain
    state dicts and must agree with the record otherwise.
    """
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
        context = _checkpoint_text_positions(path) or 77
    bundle = create_model(name, checkpoint=path, context_length=int(context))  # its statistics
    info = {"encoder": "trained", "checkpoint": str(path), "model": name}
    if "image_mean" in meta:
        info["image_mean"], info["image_std"] = meta["image_mean"], meta["image_std"]
    return TrainedEncoder("trained", bundle, info)


def default_checkpoint(run_dir: str | os.PathLike, name: str = "urbanln") -> Path:
    """Where ``urbangeo train --name NAME`` leaves its final model in a run folder."""
    return Path(run_dir) / C.CHECKPOINTS_DIR / name / MODEL_FILE
