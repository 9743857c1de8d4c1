"""Checkpoints of a training run: atomic writes, reading them back, what they record about the
model (for embedding), and the random-number state that makes a resumption exact."""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from urbangeo.errors import InputError, OutputError
from urbangeo.io.files import atomic_path, make_folder
from urbangeo.model.tensor_files import load_tensors
from urbangeo.model.training.config import CHECKPOINT_FORMAT, RESUME_FREE
from urbangeo.progress import message
from urbangeo.settings.model import AUTO_BATCH, TrainSettings

if TYPE_CHECKING:
    from urbangeo.model.training.trainer import Trainer

#: Errors of a write that failed for want of room.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:,.0f} bytes"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024:
            return f"{n:,.1f} {unit}"
    return f"{n / 1024:,.1f} TB"


def _free_space(folder: Path) -> str:
    try:
        return _size(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown"


def atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to ``path`` all or nothing (synced to disk before it replaces ``path``).

    A write that fails (a full disk, a quota) raises :class:`OutputError` naming the file and
    the free space; whatever ``path`` held before is left as it was.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        kept = " (the previous one is intact)" if path.exists() else ""
        reason = exc.strerror or str(exc)
        room = exc.errno in _NO_ROOM
        raise OutputError(
            f"Could not write {path}{kept}: {reason}; {_free_space(path.parent)} free in "
            f"{path.parent}.",
            hint="Free some disk space (a checkpoint of the full training state is about four "
            "times the model's size), then continue with --resume."
            if room
            else "Check that the folder is writable, then continue with --resume.",
        ) from exc
    return path


def non_finite(tensors: dict[str, Any]) -> list[str]:
    """The names of the floating-point tensors in ``tensors`` (a state dict, nested dicts
    allowed) that hold NaN or infinity."""
    bad = []
    for name, value in tensors.items():
        if isinstance(value, dict):
            bad += [f"{name}.{inner}" for inner in non_finite(value)]
        elif (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            bad.append(name)
    return bad


def model_metadata(
    config: TrainSettings, image_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
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
    state = load_tensors(
        path,
        what="the training checkpoint",
        hint="Start over with --overwrite, or point --name at another run.",
    )
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a training checkpoint written by urbangeo train.")
    return state


def check_resume_config(state: dict[str, Any], config: TrainSettings, path: Path) -> None:
    """Refuse to resume ``state`` with settings other than its own (but :data:`RESUME_FREE`).

    A setting that a checkpoint written by an older urbangeo does not record counts as its
    declared default (what that version did without it).
    """
    defaults = {f.name: f.default for f in config.fields()}
    saved = {**defaults, **state["config"]}
    now = config.to_dict()
    diff = [k for k in now if k not in RESUME_FREE and saved.get(k) != now[k]]
    if "batch_size" in diff and now["batch_size"] in (AUTO_BATCH, recorded_batch_size(state)):
        diff.remove("batch_size")  # auto, or the size auto chose: the size it trained with
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff[:6])
        raise InputError(
            f"Cannot resume {path}: settings differ from the interrupted run ({shown}).",
            hint="Resume with the same settings, or start over with --overwrite (or another "
            "--name).",
        )


def recorded_batch_size(state: dict[str, Any]) -> int | None:
    """The batch size a training checkpoint was trained with: the size ``auto`` chose (its
    ``batch_size`` entry) or the one its settings give; None if neither."""
    size = state.get("batch_size")
    if size is None:
        size = state.get("config", {}).get("batch_size")
    if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
        return size
    return None


def resume_state(
    last_path: Path, cfg: TrainSettings, *, resume: bool, overwrite: bool, main: bool
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
        make_folder(last_path.parent, name=str(last_path.parent), hint=None)
    return state


def weight_tensors(trainer: Trainer) -> dict[str, Any]:
    """The learned state of a run: student, teacher and queues (what must stay finite)."""
    out: dict[str, Any] = {"model": trainer.model.state_dict()}
    if trainer.teacher is not None:
        out["teacher"] = trainer.teacher.module.state_dict()
    for key, queue in (("img_queue", trainer.img_queue), ("txt_queue", trainer.txt_queue)):
        if queue is not None:
            out[key] = queue.state_dict()
    return out


def save_training_state(trainer: Trainer, final: bool) -> None:
    """Write the trainer's full state to ``last.pt`` (and its weights to ``model.pt`` when
    ``final``), each atomically."""
    queues = {
        key: queue.state_dict() if queue is not None else None
        for key, queue in (("img_queue", trainer.img_queue), ("txt_queue", trainer.txt_queue))
    }
    meta = model_metadata(trainer.cfg, trainer.image_norm)
    teacher = trainer.teacher
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "state_dict": trainer.model.state_dict(),
            "urbangeo": meta,
            "teacher": teacher.module.state_dict() if teacher is not None else None,
            **queues,
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "rng": rng_state(),
            "step": trainer.step,
            "epoch": trainer.epoch,
            "position": trainer.position,
            "epoch_acc": trainer.epoch_acc,
            "failed": sorted(trainer.failed),
            "validation": trainer.validation,
            "finished": final,
            "config": trainer.cfg.to_dict(),
            "batch_size": trainer.batch_size,  # the size trained with (auto's choice)
            "data_fingerprint": trainer.pairs.fingerprint,
        },
        trainer.last_path,
    )
    if final:
        weights = {"state_dict": trainer.model.state_dict(), "urbangeo": meta}
        atomic_save(weights, trainer.model_path)


def restore_training_state(trainer: Trainer, state: dict[str, Any]) -> None:
    """Put what :func:`save_training_state` wrote back into ``trainer`` (same data only)."""
    if state.get("data_fingerprint") != trainer.pairs.fingerprint:
        raise InputError(
            f"Cannot resume {trainer.last_path}: the training pairs changed since it was written.",
            hint="Resume on the same data, or start over with --overwrite.",
        )
    trainer.model.load_state_dict(state["state_dict"])
    if trainer.teacher is not None:
        trainer.teacher.module.load_state_dict(state["teacher"])
    if trainer.img_queue is not None and trainer.txt_queue is not None:
        trainer.img_queue.load_state_dict(state["img_queue"])
        trainer.txt_queue.load_state_dict(state["txt_queue"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.step, trainer.epoch = int(state["step"]), int(state["epoch"])
    trainer.position = int(state["position"])
    trainer.epoch_acc = dict(state["epoch_acc"])
    trainer.failed = set(state.get("failed", []))
    trainer.validation = dict(state.get("validation", {}))
    trainer.finished = bool(state.get("finished"))
    set_rng_state(state["rng"])
