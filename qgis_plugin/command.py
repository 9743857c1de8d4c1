"""Running the ``urbangeo`` command of the user's own Python environment.

Pure Python (no QGIS import) so that it is testable anywhere. The plugin never imports urbangeo
or torch: QGIS's Python runs the command as a subprocess, passes arguments as a list (never
through a shell) and reads the JSON lines that ``--progress json`` prints.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

SETTINGS_KEY = "urbangeo/executable"
#: Written by ``urbangeo qgis-plugin install``: the command of the environment that installed it.
EXECUTABLE_FILE = Path(__file__).with_name("executable.txt")
ENV_EXECUTABLE = "URBANGEO_EXECUTABLE"

NOT_FOUND_HINT = (
    "Set its path in the urbangeo panel (Settings ▸ urbangeo command), e.g. "
    "/home/you/venvs/urbangeo/bin/urbangeo, or reinstall the plugin with "
    "`urbangeo qgis-plugin install` from the environment where urbangeo is installed."
)


class CommandNotFound(RuntimeError):
    """The urbangeo command cannot be found or run."""


def find_executable(configured: str | None = None) -> str:
    """The urbangeo command: the setting, $URBANGEO_EXECUTABLE, the install record, or PATH."""
    candidates = [configured, os.environ.get(ENV_EXECUTABLE)]
    if EXECUTABLE_FILE.exists():
        candidates.append(EXECUTABLE_FILE.read_text(encoding="utf-8").strip())
    for candidate in candidates:
        if candidate:
            if Path(candidate).is_file() and os.access(candidate, os.X_OK):
                return candidate
            if configured and candidate == configured:
                raise CommandNotFound(
                    f"The urbangeo command set in the plugin settings, {candidate}, "
                    f"does not exist or is not executable. {NOT_FOUND_HINT}"
                )
    found = shutil.which("urbangeo")
    if found:
        return found
    raise CommandNotFound(f"The urbangeo command was not found. {NOT_FOUND_HINT}")


def with_progress(args: list[str]) -> list[str]:
    """``args`` with ``--progress json`` added (after the subcommand)."""
    return [*args, "--progress", "json"] if "--progress" not in args else list(args)


@dataclass
class Event:
    """One line of the command's JSON stream."""

    kind: str
    data: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        """Progress of the current task in [0, 1], if this is a progress event."""
        done, total = self.data.get("done"), self.data.get("total")
        if self.kind != "progress" or not total:
            return None
        return min(max(float(done) / float(total), 0.0), 1.0)


def parse_line(line: str) -> Event:
    """Parse a line of output; anything that is not a JSON event becomes a log line."""
    text = line.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and "event" in data:
            return Event(str(data["event"]), data)
    return Event("log", {"text": text})


def bundled_cities(executable: str, *, timeout: float = 60) -> list[dict]:
    """The bundled cities as the command lists them (``urbangeo cities --json``)."""
    import subprocess

    proc = subprocess.run(
        [executable, "cities", "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0,
    )
    if proc.returncode != 0:
        raise CommandNotFound(proc.stderr.strip() or "urbangeo cities failed")
    return json.loads(proc.stdout)


@dataclass
class Outcome:
    """How a command ended."""

    returncode: int
    canceled: bool = False
    error: str | None = None
    hint: str | None = None
    stderr: str = ""

    @property
    def ok(self) -> bool:
        """True when the command finished successfully."""
        return self.returncode == 0 and not self.canceled

    def message(self) -> str:
        """The command's own error message (with its hint), or the tail of its stderr."""
        if self.canceled:
            return "Canceled. Layers written before canceling are intact; run it again to resume."
        if self.error:
            return self.error + (f"\n{self.hint}" if self.hint else "")
        tail = "\n".join(self.stderr.strip().splitlines()[-15:])
        return tail or f"urbangeo exited with code {self.returncode}."


def stream_command(
    executable: str,
    args: list[str],
    *,
    on_event=None,
    is_canceled=None,
    poll_seconds: float = 0.1,
) -> Outcome:
    """Run ``executable args --progress json``, calling ``on_event(Event)`` for each line.

    ``is_canceled()`` is polled; when it turns true the command gets SIGINT (Ctrl-C, so that it
    cleans up), then is killed if it has not stopped within 10 s.
    """
    import queue
    import signal
    import subprocess
    import threading

    kwargs: dict = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
    try:
        process = subprocess.Popen(
            [executable, *with_progress(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
    except OSError as exc:
        raise CommandNotFound(f"Cannot run {executable}: {exc.strerror}. {NOT_FOUND_HINT}") from exc

    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def pump_stdout() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    def pump_stderr() -> None:
        stderr.extend(process.stderr)

    threads = [threading.Thread(target=f, daemon=True) for f in (pump_stdout, pump_stderr)]
    for thread in threads:
        thread.start()

    outcome = Outcome(returncode=0)
    finished = False
    while not finished:
        if is_canceled is not None and is_canceled() and not outcome.canceled:
            outcome.canceled = True
            if sys.platform == "win32":
                process.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        try:
            line = lines.get(timeout=poll_seconds)
        except queue.Empty:
            continue
        if line is None:
            finished = True
            continue
        event = parse_line(line)
        if event.kind == "error":
            outcome.error = str(event.data.get("text", ""))
            outcome.hint = event.data.get("hint")
        if on_event is not None:
            on_event(event)
    outcome.returncode = process.wait()
    for thread in threads:
        thread.join(timeout=5)
    outcome.stderr = "".join(stderr)
    return outcome
