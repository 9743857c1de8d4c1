"""``train_metrics.csv``: one row per optimizer step and per epoch of every named run; the
progress bar of the steps."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from urbangeo.io.files import atomic_path
from urbangeo.progress import progress

METRIC_COLUMNS = (
    "run",
    "kind",
    "epoch",
    "step",
    "lr",
    "loss",
    "loss_c",
    "loss_d",
    "logit_scale",
    "images",
    "images_per_s",
    "seconds",
    "failed_images",
    "val_pairs",
    "i2t_r1",
    "i2t_r5",
    "t2i_r1",
    "t2i_r5",
    "chance_r1",
)


class MetricsLog:
    """Rows of ``train_metrics.csv`` for one named run (other runs' rows are kept)."""

    def __init__(self, path: Path, run: str, enabled: bool) -> None:
        self.path, self.run, self.enabled = path, run, enabled

    def truncate(self, after_step: int | None = None, epochs_done: int = 0) -> None:
        """Drop this run's rows: all of them, or, when resuming, those the checkpoint has not
        seen (steps after ``after_step``, epoch rows after ``epochs_done`` epochs)."""
        if not self.enabled or not self.path.exists():
            return
        frame = pd.read_csv(self.path, dtype={"run": str})
        mine = frame["run"] == self.run
        if after_step is None:
            drop = mine
        else:
            unseen_epoch = (frame["kind"] == "epoch") & (frame["epoch"] > epochs_done)
            drop = mine & ((frame["step"] > after_step) | unseen_epoch)
        if drop.any():
            with atomic_path(self.path) as tmp:
                frame[~drop].to_csv(tmp, index=False)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (columns :data:`METRIC_COLUMNS`)."""
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            out = {"run": self.run}
            for key, value in row.items():
                out[key] = f"{value:.6g}" if isinstance(value, float) else value
            writer.writerow(out)


class _NoProgress:
    def update(self, n: int = 1, *, status: str | None = None) -> None:
        pass


@contextmanager
def step_progress(enabled: bool, total: int, done: int) -> Iterator[Any]:
    """The progress bar of ``total`` optimizer steps, ``done`` of them already (when resumed);
    one that shows nothing unless ``enabled`` (the main process)."""
    if not enabled:
        yield _NoProgress()
        return
    with progress(total, task="train", unit="step") as bar:
        if done:
            bar.update(done, status="resumed")
        yield bar
