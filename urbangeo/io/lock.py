"""The run folder's lock: one writer at a time for a run folder and its GeoPackage.

``urbangeo run`` and every stage command take the same lock (a file ``.urbangeo.lock`` in the
folder of the GeoPackage, naming the process that holds it). A second writer is refused with a
message naming the holder. The lock is re-entrant within a process, so a stage that
``urbangeo run`` calls holds the run's lock without taking it twice. A lock left by a process
that no longer runs on this host, or one that is empty or unreadable and older than a few
seconds (a writer that could not even write it, e.g. on a full disk), is recovered.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from urbangeo.errors import OutputError
from urbangeo.io.files import make_folder

LOCK_FILE = ".urbangeo.lock"
#: An empty or unreadable lock younger than this may be one being written right now.
_FRESH_S = 5.0

_held: dict[Path, int] = {}
_guard = threading.Lock()


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of a run folder."""
    return Path(folder) / LOCK_FILE


def read_lock(folder: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the lock of ``folder`` (pid, host, since, command), or None."""
    try:
        return json.loads(lock_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def holder_alive(holder: dict[str, Any]) -> bool:
    """Whether the process named by a lock still runs (True when it runs on another host)."""
    if holder.get("host") != socket.gethostname():
        return True
    return _alive(int(holder.get("pid", -1)))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(path: Path) -> bool:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        try:
            return time.time() - path.stat().st_mtime > _FRESH_S
        except FileNotFoundError:
            return True
    return not isinstance(holder, dict) or not holder_alive(holder)


def check_storage_writable(folder: Path) -> None:
    """Refuse a folder on read-only storage (or the nearest existing folder above it) before
    any work; permissions are left to the lock and the write checks (root ignores them)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows), or nothing to ask
        return
    if read_only:
        raise OutputError(
            f"{folder} is on read-only storage: urbangeo cannot write its lock, layers or "
            "records there.",
            hint=f"Copy the run folder to writable storage (e.g. `cp -r {folder} ~/runs/`) and "
            "run there, or mount the storage read-write. Reading works as it is "
            "(`urbangeo status`, QGIS).",
        )


@contextmanager
def run_lock(folder: str | os.PathLike, *, command: str = "urbangeo") -> Iterator[None]:
    """Hold ``folder`` for this process; another process writing it is refused clearly."""
    folder = Path(folder).resolve()
    path = lock_path(folder)
    with _guard:
        if _held.get(folder):
            _held[folder] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[folder] -= 1
        return
    check_storage_writable(folder)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
        "command": command,
    }
    for attempt in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if attempt < 2 and _stale(path):
                try:
                    path.unlink(missing_ok=True)  # left by a process that is gone
                except OSError as exc:  # read-only storage
                    raise OutputError(
                        f"Cannot write in {folder}: {exc.strerror}.",
                        hint="Copy the run folder somewhere writable, or write to another folder.",
                    ) from exc
                continue
            other = read_lock(folder) or {}
            raise OutputError(
                f"Another urbangeo process ({other.get('command', 'urbangeo')}, pid "
                f"{other.get('pid', '?')} on {other.get('host', '?')}) is writing {folder}.",
                hint="Wait for it to finish, or write to another folder. If no urbangeo runs, "
                f"delete {path}.",
            ) from None
        except FileNotFoundError:
            make_folder(folder)
            continue
        except OSError as exc:  # not a folder, read-only storage, no permission
            raise OutputError(
                f"Cannot create the folder {folder} or write in it: {exc.strerror}.",
                hint="Choose a folder you can write to.",
            ) from exc
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
        except BaseException:
            path.unlink(missing_ok=True)  # e.g. a full disk: leave no empty lock behind
            raise
        break
    with _guard:
        _held[folder] = 1
    try:
        yield
    finally:
        with _guard:
            _held.pop(folder, None)
        path.unlink(missing_ok=True)
