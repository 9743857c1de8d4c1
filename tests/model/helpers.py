"""Helpers of the model tests that need torch (the synthetic runs are in ``synthetic.py``)."""

from __future__ import annotations

from pathlib import Path

import torch

from urbangeo.model.clip import create_model

TINY = "urbangeo-tiny-vit"
#: Training settings that make the tiny model learn in a few steps.
FAST_TRAIN = {"model": TINY, "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 1, "queue_size": 16}


def tiny_checkpoint(path: Path, *, seed: int) -> tuple[Path, torch.nn.Module]:
    """A tiny random CLIP (seeded) saved at ``path`` as `urbangeo train` saves it, 248-token
    text context; returns the path and the model (in eval mode)."""
    torch.manual_seed(seed)
    model = create_model(TINY).model.eval()
    meta = {"model": TINY, "context_length": 248, "mode": "urbanln", "name": "urbanln"}
    torch.save({"state_dict": model.state_dict(), "urbangeo": meta}, path)
    return path, model
