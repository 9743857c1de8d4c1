"""Progress reporting shared by every long-running function.

Library functions report through :func:`progress`; the caller (CLI, QGIS plugin, notebook)
chooses how it shows with :func:`set_mode`:

- ``"bar"``: tqdm bars on stderr (the default, as in a terminal);
- ``"json"``: one JSON object per line on stdout, for programs such as the QGIS plugin:
  ``{"event": "progress", "task": ..., "done": ..., "total": ...}`` and
  ``{"event": "message", "level": ..., "text": ...}``;
- ``"none"``: silent (``--quiet``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Mode = Literal["bar", "json", "none"]
MODES: tuple[Mode, ...] = ("bar", "json", "none")

_mode: Mode = "bar"


def set_mode(mode: Mode) -> None:
    """Choose how progress is shown for the rest of the process."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, not {mode!r}")
    _mode = mode


def get_mode() -> Mode:
    """The current progress mode."""
    return _mode


def _emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def message(text: str, *, level: str = "info") -> None:
    """Tell the user something (a warning, a result path) in the current mode."""
    if _mode == "json":
        _emit_json({"event": "message", "level": level, "text": text})
    elif _mode == "bar" or level in ("warning", "error"):
        prefix = "" if level == "info" else f"{level}: "
        print(prefix + text, file=sys.stderr)


class Progress:
    """A progress counter; use through :func:`progress`."""

    def __init__(self, total: int | None, task: str, unit: str) -> None:
        self.total = total
        self.task = task
        self.done = 0
        self._bar = None
        self._last_emit = 0.0
        if _mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=task, unit=unit, file=sys.stderr, leave=False)
        elif _mode == "json":
            self._emit(force=True)

    def _emit(self, *, force: bool = False, status: str | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_emit < 0.2:
            return
        self._last_emit = now
        event = {"event": "progress", "task": self.task, "done": self.done, "total": self.total}
        if status:
            event["status"] = status
        _emit_json(event)

    def update(self, n: int = 1, *, status: str | None = None) -> None:
        """Advance by ``n``; ``status`` names the current step."""
        self.done += n
        if self._bar is not None:
            if status:
                self._bar.set_postfix_str(status, refresh=False)
            self._bar.update(n)
        elif _mode == "json":
            self._emit(force=self.done == self.total, status=status)

    def grow(self, n: int) -> None:
        """Add ``n`` to the total (work found as it goes: a stage's next chunk)."""
        self.total = (self.total or 0) + n
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()
        elif _mode == "json":
            self._emit(force=True)

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()
        elif _mode == "json":
            self._emit(force=True)


@contextmanager
def progress(total: int | None, *, task: str, unit: str = "it") -> Iterator[Progress]:
    """A progress counter for ``total`` units of ``task``, closed on exit."""
    bar = Progress(total, task, unit)
    try:
        yield bar
    finally:
        bar.close()
