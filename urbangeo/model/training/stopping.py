"""Stopping a training run early: Ctrl-C (SIGINT), and a loss or weights gone non-finite.

Ctrl-C stops at the next safe point, with a checkpoint where the state is whole.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to
be. At an epoch boundary that is often inside code that cannot pass it on: the fork of the
DataLoader's worker processes (``os.register_at_fork`` callbacks such as logging's lock
release) or a finished iterator's ``__del__`` that shuts its workers down. There Python prints
"Exception ignored ... KeyboardInterrupt" and goes on, and training ran to its end as if
nothing had happened. While training runs, :class:`StopRequest` therefore replaces the
handler: the first Ctrl-C only records the request, which the trainer acts on at its next
check (between micro-batches, validation batches and steps), saving a checkpoint where the
state is whole; a second Ctrl-C raises at once, as Python would. DataLoader workers ignore
SIGINT (:func:`ignore_sigint`): the main process stops them, rather than a terminal's Ctrl-C
killing them under a loader that still waits for their batches.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

from urbangeo.errors import InputError

if TYPE_CHECKING:
    from urbangeo.model.training.trainer import Trainer


def ignore_sigint(worker_id: int) -> None:
    """``worker_init_fn`` of the training loaders: workers leave SIGINT to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """While active (``with``), SIGINT asks training to stop instead of raising at once.

    Only where Python's own handler is installed in the main thread (a host application's
    handler is left alone), and only when ``enabled`` (the processes of a torchrun job keep
    the default: they must stop at the same step, which a request seen at different times
    cannot promise).
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.requested = False
        self._previous: object = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        if (
            self.enabled
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._installed = False


def _kept(trainer: Trainer, what: str) -> str:
    if trainer.saved_step is None:
        return "no checkpoint was written yet"
    return f"{what} {trainer.last_path} (step {trainer.saved_step:,}) is kept"


def interrupted_message(trainer: Trainer) -> str:
    """What an interrupted run tells the user: where it stopped and what it kept."""
    return (
        f"Interrupted at step {trainer.step:,} of {trainer.total_steps:,}; "
        f"{_kept(trainer, 'the checkpoint')}. Continue with --resume."
    )


def diverged_error(trainer: Trainer, what: str, step: int) -> InputError:
    """The error of a run whose loss or weights stopped being finite numbers (``what``) at
    optimizer step ``step``."""
    lr = trainer.cfg.lr
    return InputError(
        f"Training diverged at step {step:,} (epoch {trainer.epoch + 1}): {what}. "
        f"Stopped without saving it; {_kept(trainer, 'the last good checkpoint')}.",
        hint=f"Lower --lr (it is {lr:g}; try {lr / 10:g}), add --grad-clip 1.0, or check the "
        "inputs (unreadable or blank images, empty captions); then start over with --overwrite "
        "(a resumed run keeps its settings).",
    )
