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


class CaptionCache:
    """Append-only JSONL cache of caption calls; safe to use from several threads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records: dict[str, dict] = {}
        self._file: IO[str] | None = None
        self._sessions = 0
        self.torn_lines = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self._records[record["key"]] = _capped(record)
            except (json.JSONDecodeError, KeyError, TypeError):
                self.torn_lines += 1
        if data and not data.endswith(b"\n"):
            # A kill in mid-write left a partial line: end it so the next record starts clean.
            with open(self.path, "ab") as f:
                f.write(b"\n")

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict | None:
        """The record of a call, or None."""
        return self._records.get(key)

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
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            if self._sessions:
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
                self._file.write(line)
                self._file.flush()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
            self._records[key] = record
        return record
