"""Atomic file writes: a crash or Ctrl-C never leaves a half-written output.

Every output goes to a temporary file beside its target that replaces the target in one
``os.replace``. Files get the permissions an ordinary ``open()`` would give them (``mkstemp``
alone makes them private to their owner).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from urbangeo.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` (which does not exist yet) that replaces ``path``
    when the block ends without an exception; removed otherwise, also on Ctrl-C.

    ``suffix`` ends the temporary name (GDAL picks drivers by extension, e.g. ``.gpkg``).
    SQLite's side files (``-journal``, ``-wal``, ``-shm``) are cleaned up too.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent
        )
    except FileNotFoundError:  # the first file of its folder
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent
        )
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()
    try:
        yield tmp
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, *(Path(f"{tmp}{s}") for s in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def make_folder(
    folder: str | os.PathLike,
    *,
    hint: str | None = "Choose a folder you can write to.",
    name: str | None = None,
) -> Path:
    """``folder``, created with its parents if need be; an :class:`OutputError` that names it
    (``name``; default "the folder FOLDER") and gives ``hint`` when it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        name = name or f"the folder {folder}"
        raise OutputError(f"Cannot create {name}: {exc.strerror}.", hint=hint) from exc
    return folder


def ensure_writable_file(path: str | os.PathLike) -> Path:
    """Fail early, before any work, if the file ``path`` cannot be written; create its folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"Output path {path} is a folder.", hint="Give a file name.")
    make_folder(path.parent, hint="Choose an output path in a folder you can write to.")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(
            f"Cannot write to {path}: permission denied.",
            hint="Choose an output path in a folder you can write to.",
        )
    return path


@contextmanager
def new_folders_removed_on_error(path: str | os.PathLike) -> Iterator[None]:
    """Around work that writes ``path``: if it fails, remove the folders above ``path`` that did
    not exist when it began and are still empty (a failed first command leaves no trace)."""
    missing = []
    parent = Path(path).absolute().parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)  # deepest first
        parent = parent.parent
    try:
        yield
    except BaseException:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): keep it and everything above
                break
        raise


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
