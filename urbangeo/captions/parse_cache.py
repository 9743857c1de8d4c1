"""The parse cache: scene graphs kept in ``caption_parses.jsonl`` beside the run, indexed.

Memory holds an index of the file (each text's 64-bit digest → its line's byte offset) and the
last graphs used; the others are read back from the file when asked for. A line is appended as
each batch is parsed, so an interruption keeps what was parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from urbangeo.captions.scenegraph import PARSE_BATCH, Parser, RuleParser, SceneGraph, parse_chunk
from urbangeo.io.jsonl import LineReader, append_lines, scan_lines

if TYPE_CHECKING:
    from urbangeo.captions.workers import WorkerPool

__all__ = ["KEEP_GRAPHS", "CachedParser"]


#: Parses a :class:`CachedParser` with a file keeps in memory (the rest are read back).
KEEP_GRAPHS = 50_000


class CachedParser:
    """A parser whose results are kept in memory and, with ``path``, in a JSONL file.

    With a file, memory holds an index of the file (the text's digest → its line's offset)
    and the last ``keep`` graphs parsed or read; the others are read back from the file when
    asked for, so a cache of millions of parses costs tens of bytes a parse.
    """

    def __init__(
        self, parser: Parser, path: str | os.PathLike | None = None, *, keep: int = KEEP_GRAPHS
    ) -> None:
        self.parser = parser
        self.name = parser.name
        self.path = Path(path) if path is not None else None
        self.keep = max(1, int(keep))
        self._cache: dict[str, SceneGraph] = {}
        self._index: dict[int, int] = {}
        self._reader = LineReader(self.path) if self.path is not None else None
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        for offset, line in scan_lines(path):
            text = _line_text(line, self.name)
            if text is not None:
                self._index[_digest(text)] = offset

    def __len__(self) -> int:
        return len(self._index) if self.path is not None else len(self._cache)

    def __contains__(self, text: str) -> bool:
        return text in self._cache or _digest(text) in self._index

    def parse(self, text: str) -> SceneGraph:
        graph = self._cache.get(text)
        if graph is None and self._index:
            graph = self._read(text)
        if graph is not None:
            return graph
        graph = self.parser.parse(text)
        self._store([text], [graph])
        return graph

    def _read(self, text: str) -> SceneGraph | None:
        """The graph of ``text`` read back from the file, or None."""
        offset = self._index.get(_digest(text))
        if offset is None or self._reader is None:
            return None
        line = self._reader.line_at(offset)
        try:
            record = json.loads(line)
            if record.get("parser") != self.name or record.get("text") != text:
                return None  # another text with the same digest
            graph = SceneGraph.from_dict(record["graph"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None
        with self._lock:
            self._remember([text], [graph])
        return graph

    def close(self) -> None:
        """Close the file that read-backs use (reopened when needed)."""
        if self._reader is not None:
            self._reader.close()

    def parse_many(
        self,
        texts: Iterable[str],
        *,
        pool: WorkerPool | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Parse (and cache) the texts not cached yet: in batches of :data:`PARSE_BATCH` when
        the parser takes batches, in ``pool``'s worker processes when it has several and the
        parser can go there (the rule-based one). Each batch is appended to the file as it
        is done, in order, so an interruption keeps what was parsed. ``progress(n)`` is
        called with the number of texts of each batch done."""
        todo = [t for t in dict.fromkeys(texts) if t not in self]
        if not todo:
            return
        chunks = [tuple(todo[i : i + PARSE_BATCH]) for i in range(0, len(todo), PARSE_BATCH)]

        def settle(chunk: tuple[str, ...], graphs: list[SceneGraph]) -> None:
            self._store(chunk, graphs)
            if progress is not None:
                progress(len(chunk))

        if pool is not None and pool.parallel and isinstance(self.parser, RuleParser):
            from urbangeo.captions.workers import picklable_by_reference

            if picklable_by_reference(self.parser):
                pool.run(
                    parse_chunk,
                    chunks,
                    settle,
                    args=(self.parser,),
                    what=lambda c: f"{len(c)} captions starting {c[0][:60]!r}",
                )
                return
        for chunk in chunks:
            settle(chunk, parse_chunk(chunk, self.parser))

    def _remember(self, texts: Sequence[str], graphs: Sequence[SceneGraph]) -> None:
        """Keep the graphs in memory (with a file: the last :attr:`keep` of them)."""
        self._cache.update(zip(texts, graphs, strict=True))
        if self.path is not None and len(self._cache) > self.keep:
            for old in list(self._cache)[: len(self._cache) - self.keep]:
                del self._cache[old]

    def _store(self, texts: Sequence[str], graphs: Sequence[SceneGraph]) -> None:
        with self._lock:
            self._remember(texts, graphs)
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lines = [
                (
                    json.dumps(
                        {"parser": self.name, "text": text, "graph": graph.to_dict()},
                        ensure_ascii=False,
                    )
                    + "\n"
                ).encode("utf-8")
                for text, graph in zip(texts, graphs, strict=True)
            ]
            with open(self.path, "ab") as f:
                offsets = append_lines(f, lines)
            self._index.update(zip(map(_digest, texts), offsets, strict=True))


_LINE_START = '{"parser": '
_DECODER = json.JSONDecoder()


def _digest(text: str) -> int:
    """A text's 64-bit digest (the index of a :class:`CachedParser`'s file)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _line_text(line: bytes, parser: str) -> str | None:
    """The text of a complete parse record of ``parser``, or None (another parser's, a torn
    line). Decodes the two leading strings only, not the graph."""
    body = line.decode("utf-8", "replace").rstrip()
    if not body.endswith("}"):
        return None
    try:
        if body.startswith(_LINE_START + '"'):
            name, end = _DECODER.raw_decode(body, len(_LINE_START))
            if body.startswith(', "text": "', end):
                text, _ = _DECODER.raw_decode(body, end + len(', "text": '))
                if isinstance(name, str) and isinstance(text, str):
                    return text if name == parser else None
        record = json.loads(body)
        if record.get("parser") != parser:
            return None
        text = record["text"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    return text if isinstance(text, str) else None
