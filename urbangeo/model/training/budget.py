"""How long a training run is and when it saves: the budget and the checkpoint clock.

**The budget** (:func:`training_budget`). Exactly one setting sizes a run:

* ``steps`` (``--steps``): optimizer steps in all;
* else ``samples`` (``--samples``): pairs seen in all, i.e. ``steps x batch_size x
  accum_steps x processes``; the steps are that many pairs divided by the pairs of one step,
  rounded up;
* else ``epochs`` (``--epochs``, 10 by default): passes over the training pairs.

``steps`` and ``samples`` together are refused (:class:`~urbangeo.settings.TrainSettings`);
``epochs`` given beside either in one place (the same command line, the same keyword
arguments: :func:`check_budget_keywords`) is refused too, while an ``epochs`` that comes from
elsewhere (a profile, run.toml) gives way to them. A budget in steps or samples may end part-way
through a pass over the pairs: that last pass ends there, with its validation. The warm-up
(``warmup_steps``, default 5 % of the steps) and the cosine decay span the budget's steps
(:func:`lr_schedule`).

**Checkpoints** (:class:`CheckpointClock`): the full training state (``last.pt``, with the
optimizer's) is written after ``checkpoint_minutes`` of training since the last one (10 by
default; 0: never by time) or at every multiple of ``checkpoint_every`` steps (off by
default), whichever comes first; and always at the end and on Ctrl-C. ``model.pt`` is written
at the end only.

This module imports no torch (the stage and the command check their keywords with it).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.settings.model import TrainSettings

if TYPE_CHECKING:
    from urbangeo.model.training.optim import WarmupCosine

#: The settings that size a run, in the order in which they decide.
BUDGET_SETTINGS = ("steps", "samples", "epochs")


@dataclass(frozen=True)
class Budget:
    """The length of a run in optimizer steps, and how it falls into passes over the pairs."""

    total_steps: int
    #: Optimizer steps of one whole pass over the training pairs (per process).
    steps_per_epoch: int
    #: Passes begun (the last one may stop part-way when steps or samples decide).
    epochs: int
    #: Which setting decided: ``steps``, ``samples`` or ``epochs``.
    decided_by: str


def training_budget(
    cfg: TrainSettings, n_batches: int, world_size: int = 1, *, batch_size: int | None = None
) -> Budget:
    """The budget of ``cfg`` for ``n_batches`` micro-batches per pass and process of
    ``batch_size`` pairs (default: ``cfg``'s, which must then be a number, not auto)."""
    per_epoch = max(1, math.ceil(n_batches / cfg.accum_steps))
    if cfg.steps is not None:
        total, by = cfg.steps, "steps"
    elif cfg.samples is not None:
        size = cfg.batch_size if batch_size is None else batch_size
        if not isinstance(size, int):
            raise ValueError("training_budget needs the batch size auto chose (batch_size=).")
        per_step = size * cfg.accum_steps * world_size
        total, by = math.ceil(cfg.samples / per_step), "samples"
    else:
        total, by = per_epoch * cfg.epochs, "epochs"
    return Budget(total, per_epoch, math.ceil(total / per_epoch), by)


def warmup_steps(cfg: TrainSettings, total_steps: int) -> int:
    """Steps of linear warm-up: ``warmup_steps``, else 5 % of the run (never past its end)."""
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(0.05 * total_steps)
    return min(warmup, total_steps)


def lr_schedule(cfg: TrainSettings, total_steps: int) -> WarmupCosine:
    """The learning-rate multiplier of a run of ``total_steps``: warm-up, then cosine."""
    from urbangeo.model.training.optim import WarmupCosine

    return WarmupCosine(warmup_steps(cfg, total_steps), total_steps, cfg.min_lr_ratio)


def run_settings(
    settings: TrainSettings | Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> TrainSettings:
    """The settings of a run: ``settings`` (an object, a mapping or None) with the keyword
    ``overrides`` on top (``None`` values ignored; ``epochs`` beside ``steps`` or ``samples``
    among them refused)."""
    values = {k: v for k, v in overrides.items() if v is not None}
    check_budget_keywords(values, "the keyword arguments")
    if settings is None or isinstance(settings, Mapping):
        return TrainSettings.from_mapping({**(settings or {}), **values})
    if not isinstance(settings, TrainSettings):
        raise InputError(f"Expected TrainSettings, got {type(settings).__name__}.")
    return TrainSettings.from_mapping({**settings.to_dict(), **values}) if values else settings


def check_budget_keywords(values: Mapping[str, Any], where: str = "") -> None:
    """Refuse ``epochs`` given together with ``steps`` or ``samples`` in one set of values
    (keyword arguments, the options of one command line); ``None`` counts as not given."""
    given = [name for name in ("epochs", "steps", "samples") if values.get(name) is not None]
    if "epochs" in given and len(given) > 1:
        flags = [f"{name} (--{name})" for name in given]
        both = " and ".join(flags) + " both" if len(flags) == 2 else ", ".join(flags) + " all"
        raise InputError(
            f"{both} size the training{f' in {where}' if where else ''}: give one.",
            hint="--steps counts optimizer steps, --samples pairs seen, --epochs passes over "
            "the pairs; --steps or --samples, when given, replaces --epochs (and a profile's).",
        )


def stop_after_keyword(stop_after: int | None, max_steps: int | None) -> int | None:
    """``stop_after``, or its old name ``max_steps`` (with a deprecation warning)."""
    if max_steps is None:
        return stop_after
    if stop_after is not None:
        raise InputError("max_steps is the old name of stop_after: give one of them.")
    warnings.warn(
        "max_steps (--max-steps), which stops early with a checkpoint to --resume from, is now "
        "stop_after (--stop-after); the old name goes in the next release. The length of the "
        "training itself is steps, samples or epochs (--steps, --samples, --epochs).",
        UrbangeoWarning,
        stacklevel=3,
    )
    return max_steps


def now() -> float:
    """The checkpoint clock's time in seconds (monotonic; replaced in tests)."""
    return time.monotonic()


class CheckpointClock:
    """When the next periodic checkpoint is due: ``checkpoint_minutes`` after the last save,
    or at a multiple of ``checkpoint_every`` steps, whichever comes first."""

    def __init__(self, cfg: TrainSettings) -> None:
        self.every = cfg.checkpoint_every
        self.seconds = cfg.checkpoint_minutes * 60.0
        self.since = now()

    def due(self, step: int) -> bool:
        """Whether a checkpoint is due after optimizer step ``step``."""
        if self.every is not None and step % self.every == 0:
            return True
        return self.seconds > 0 and now() - self.since >= self.seconds

    def saved(self) -> None:
        """A checkpoint was just written (or resumed from): the minutes count from now."""
        self.since = now()
