"""Append-only JSON-lines files read back by offset: the caption stage's caches.

Memory holds what a cache indexes (its keys → the byte offset of each line), not the records;
:class:`LineReader` reads one line back at a given offset.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO


def scan_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """Each line of ``path`` with its byte offset (the last one may lack its newline)."""
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            yield offset, line
            offset += len(line)


def append_lines(f: IO[bytes], lines: Sequence[bytes]) -> list[int]:
    """Append ``lines`` (each ending with a newline) to the file ``f`` opened for appending,
    flushed; the byte offset where each starts."""
    f.seek(0, os.SEEK_END)
    offset = f.tell()
    offsets = []
    for line in lines:
        offsets.append(offset)
        f.write(line)
        offset += len(line)
    f.flush()
    return offsets


class LineReader:
    """Reads lines of ``path`` back by offset; safe to use from several threads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None

    def line_at(self, offset: int) -> bytes:
        """The line that starts at byte ``offset``."""
        with self._lock:
            if self._file is None:
                self._file = open(self.path, "rb")  # noqa: SIM115
            self._file.seek(offset)
            return self._file.readline()

    def close(self) -> None:
        """Close the file (reopened by the next read)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
