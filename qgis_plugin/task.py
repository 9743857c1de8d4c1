"""A QgsTask that runs one urbangeo command in the background."""

from __future__ import annotations

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .command import CommandNotFound, Outcome, stream_command


class CommandTask(QgsTask):
    """Runs ``urbangeo ARGS`` in QGIS's task manager; progress and events come back as signals.

    ``streamed`` is emitted for every line of the command's JSON stream (queued to the main
    thread); ``done`` with the :class:`Outcome` when it ends, canceled or not.
    """

    streamed = pyqtSignal(object)
    done = pyqtSignal(object)

    def __init__(self, description: str, executable: str, args: list[str]) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.executable = executable
        self.args = list(args)
        self.outcome: Outcome | None = None

    def run(self) -> bool:
        """Worker thread: stream the command."""
        try:
            self.outcome = stream_command(
                self.executable, self.args, on_event=self._on_event, is_canceled=self.isCanceled
            )
        except CommandNotFound as exc:
            self.outcome = Outcome(returncode=-1, error=str(exc))
        return self.outcome.ok

    def _on_event(self, event) -> None:
        fraction = event.fraction
        if fraction is not None:
            self.setProgress(100.0 * fraction)
        self.streamed.emit(event)

    def finished(self, result: bool) -> None:
        """Main thread: report the outcome."""
        if self.outcome is None:  # canceled before it started
            self.outcome = Outcome(returncode=-1, canceled=True)
        self.done.emit(self.outcome)
