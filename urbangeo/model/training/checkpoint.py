"""Checkpoints of a training run: atomic writes, reading them back, what they record about the
model (for embedding), and the random-number state that makes a resumption exact."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from urbangeo.errors import InputError, OutputError
from urbangeo.io.files import atomic_path
from urbangeo.model.training.config import CHECKPOINT_FORMAT, RESUME_FREE, TrainConfig
from urbangeo.progress import message


def rng_state() -> dict[str, Any]:
    """The state of every random-number generator training draws from (python, numpy, torch)."""
    np_state: Any = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` recorded."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to ``path`` all or nothing (synced to disk before it replaces ``path``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def model_metadata(
    config: TrainConfig, image_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
) -> dict[str, Any]:
    """What embedding needs to rebuild the model from a checkpoint.

    ``image_norm``: the (mean, std) the model was trained with when not its architecture's.
    """
    meta: dict[str, Any] = {
        "model": config.model,
        "context_length": int(config.context_length or 77),
        "mode": config.mode,
        "name": config.name,
        "format": "open_clip state_dict",
    }
    if image_norm is not None:
        meta["image_mean"], meta["image_std"] = list(image_norm[0]), list(image_norm[1])
    return meta


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint written by ``train`` (tensors on CPU)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"Cannot read the training checkpoint {path}: {exc}",
            hint="Start over with --overwrite, or point --name at another run.",
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a training checkpoint written by urbangeo train.")
    return state


def check_resume_config(state: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse to resume ``state`` with settings other than its own (but :data:`RESUME_FREE`)."""
    saved = state["config"]
    now = config.to_dict()
    diff = [k for k in now if k not in RESUME_FREE and saved.get(k) != now[k]]
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff[:6])
        raise InputError(
            f"Cannot resume {path}: settings differ from the interrupted run ({shown}).",
            hint="Resume with the same settings, or start over with --overwrite (or another "
            "--name).",
        )


def resume_state(
    last_path: Path, cfg: TrainConfig, *, resume: bool, overwrite: bool, main: bool
) -> dict[str, Any] | None:
    """The state to resume from ``last_path`` (None: start afresh), checked against ``cfg``.

    An existing checkpoint needs ``resume`` or ``overwrite``. The ``main`` process creates
    the checkpoint's folder (an :class:`OutputError` if it cannot).
    """
    state = None
    if last_path.exists():
        if resume:
            state = load_train_state(last_path)
            check_resume_config(state, cfg, last_path)
        elif not overwrite:
            raise OutputError(
                f"A training checkpoint already exists: {last_path}.",
                hint="Pass --resume to continue it, --overwrite to start over, or --name to "
                "train another model beside it.",
            )
    elif resume and main:
        message(f"No checkpoint at {last_path}; starting from the beginning.")
    if main:
        try:
            last_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot create {last_path.parent}: {exc.strerror}.") from exc
    return state
