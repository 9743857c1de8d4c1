"""The caption cache: ``captions.jsonl`` beside the GeoPackage, one JSON record per call.

Every model call is keyed by (input sha256, backend, model, prompt, generation options). The
record is appended and flushed the moment the call returns, so Ctrl-C loses nothing, and a
rerun finds every answer it has already paid for. The file is both the audit log of the run
and the cache; a torn last line (a kill in mid-write) is ignored.

A caption is stored with at most :data:`~urbangeo.settings.captions.MAX_CAPTION_CHARS`
characters: a longer reply is cut and its record says ``"truncated": true`` (records written
before the cap are cut the same way when read).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from urbangeo import constants as C
from urbangeo.io.files import sha256_bytes
from urbangeo.io.jsonl import LineReader, append_lines, scan_lines
from urbangeo.settings.captions import MAX_CAPTION_CHARS


def cap_caption(text: str, limit: int = MAX_CAPTION_CHARS) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` characters, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit].rstrip(), True


def _capped(record: dict) -> dict:
    """A record whose caption is within the cap (flagged ``truncated`` when it was cut)."""
    caption = record.get("caption")
    if isinstance(caption, str) and len(caption) > MAX_CAPTION_CHARS:
        record["caption"], record["truncated"] = cap_caption(caption)
    return record


def call_key(
    input_sha256: str, backend: str, model: str, prompt: str, options: dict | None = None
) -> str:
    """The cache key of one call."""
    payload = json.dumps(
        [input_sha256, backend, model, prompt, options or {}], sort_keys=True, ensure_ascii=True
    )
    return sha256_bytes(payload.encode())


def cache_path_for(gpkg: str | os.PathLike) -> Path:
    """``captions.jsonl`` in the GeoPackage's folder."""
    return Path(gpkg).parent / C.CAPTIONS_JSONL


#: Byte prefix of a record written by :meth:`CaptionCache.put` (its key comes first).
_KEY_PREFIX = b'{"key": "'


def _index_key(key: str) -> int:
    """A record's place in the index: the first 60 bits of its key (a sha256 in hex; another
    string is hashed first). Two keys that share it are told apart when the line is read."""
    digest = key if len(key) >= 15 and all(c in "0123456789abcdef" for c in key[:15]) else None
    return int((digest or sha256_bytes(key.encode()))[:15], 16)


class CaptionCache:
    """Append-only JSONL cache of caption calls; safe to use from several threads.

    Memory holds an index (key → the byte offset of its line), not the records: a lookup
    reads its line from the file, so a cache of millions of calls costs tens of bytes a call.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._index: dict[int, int] = {}
        self._file: IO[bytes] | None = None
        self._reader = LineReader(self.path)
        self._sessions = 0
        self.torn_lines = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        last = b""
        for offset, line in scan_lines(self.path):
            last = line
            key = _line_key(line)
            if key is not None:
                self._index[_index_key(key)] = offset
            elif line.strip():
                self.torn_lines += 1
        if last and not last.endswith(b"\n"):
            # A kill in mid-write left a partial line: end it so the next record starts clean.
            with open(self.path, "ab") as f:
                f.write(b"\n")

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def get(self, key: str) -> dict | None:
        """The record of a call, or None."""
        offset = self._index.get(_index_key(key))
        if offset is None:
            return None
        line = self._reader.line_at(offset)  # put flushed it
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None  # another key with the same index (or a line changed on disk)
        return _capped(record)

    def close(self) -> None:
        """Close the file the lookups read (reopened by the next lookup)."""
        self._reader.close()

    @contextmanager
    def appending(self) -> Iterator[CaptionCache]:
        """Keep the file open for the :meth:`put` calls inside (opened by the first, once
        instead of once per call; each record is still flushed as it is put)."""
        with self._lock:
            self._sessions += 1
        try:
            yield self
        finally:
            with self._lock:
                self._sessions -= 1
                if not self._sessions and self._file is not None:
                    self._file.close()
                    self._file = None

    def put(self, key: str, caption: str, **fields: Any) -> dict:
        """Record a call's caption (and any JSON-serialisable fields) and flush it to disk.

        A caption over :data:`MAX_CAPTION_CHARS` is cut and the record gets ``truncated: true``;
        the record stored is returned (use its ``caption``).
        """
        caption, truncated = cap_caption(caption)
        record = {"key": key, **fields, "caption": caption, "time": round(time.time(), 3)}
        if truncated:
            record["truncated"] = True
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._sessions:
                if self._file is None:
                    self._file = open(self.path, "ab")  # noqa: SIM115
                f = self._file
            else:
                f = open(self.path, "ab")  # noqa: SIM115
            try:
                (offset,) = append_lines(f, [line])
            finally:
                if f is not self._file:
                    f.close()
            self._index[_index_key(key)] = offset
        return record


def _line_key(line: bytes) -> str | None:
    """The key of a complete record line, or None (a torn or foreign line)."""
    body = line.rstrip()
    if not body.endswith(b"}"):
        return None
    if body.startswith(_KEY_PREFIX) and body[len(_KEY_PREFIX) + 64 : len(_KEY_PREFIX) + 65] == b'"':
        return body[len(_KEY_PREFIX) : len(_KEY_PREFIX) + 64].decode("ascii", "replace")
    try:
        record = json.loads(body)
        key = record["key"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return key if isinstance(key, str) else None
