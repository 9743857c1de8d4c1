"""A table built in chunks and kept on disk until it is written: memory holds one chunk.

A stage that produces a large attribute table chunk by chunk (the caption stage's candidates)
appends each chunk to a :class:`FrameSpool`, a Parquet file beside the run, and hands
:meth:`FrameSpool.layer` to the commit: one frame when the table is small, else
:class:`LayerChunks` that :func:`urbangeo.io.gpkg.write_layers` writes chunk after chunk
into the layer (still all-or-nothing). The spool file is removed when it is closed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SPOOL_GLOB", "FrameSpool", "LayerChunks", "remove_stale_spools"]


class LayerChunks:
    """An attribute layer given as frames of rows with the same columns, written in order.

    ``empty`` has the columns and types (the layer's schema when there are no rows).
    """

    def __init__(self, chunks: Iterator[pd.DataFrame], empty: pd.DataFrame) -> None:
        self._chunks = chunks
        self.empty = empty

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter(self._chunks)


#: Spool files are named PREFIX + random + SUFFIX (hidden: they are not outputs).
_PREFIX, _SUFFIX = ".urbangeo-spool-", ".parquet"
#: Name pattern of spool files.
SPOOL_GLOB = f"{_PREFIX}*{_SUFFIX}"


def remove_stale_spools(folder: str | os.PathLike) -> int:
    """Remove the spool files a killed process left in ``folder`` (call it holding the folder's
    run lock: no other stage is spooling there); how many were removed."""
    stale = list(Path(folder).glob(SPOOL_GLOB))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


#: The Arrow type of each column type a spool takes (``object``: text).
_ARROW = {object: pa.string(), float: pa.float64(), bool: pa.bool_(), int: pa.int64()}


class FrameSpool:
    """Frames appended to a Parquet file in ``folder`` (removed by :meth:`close`); ``dtypes``
    names the columns and their types (``object`` for text, ``float``, ``bool``, ``int``)."""

    def __init__(self, folder: str | os.PathLike, dtypes: dict[str, type]) -> None:
        self.folder = Path(folder)
        self.dtypes = dtypes
        self.schema = pa.schema([(name, _ARROW[t]) for name, t in dtypes.items()])
        self.rows = 0
        self._first: pd.DataFrame | None = None
        self._path: Path | None = None
        self._writer: pq.ParquetWriter | None = None

    def append(self, frame: pd.DataFrame) -> None:
        """Add the rows of ``frame`` (the schema's columns). The first frame stays in memory;
        from the second on, every frame goes to the file."""
        if not len(frame):
            return
        self.rows += len(frame)
        if self._first is None and self._writer is None:
            self._first = frame
            return
        if self._writer is None:
            fd, name = tempfile.mkstemp(prefix=_PREFIX, suffix=_SUFFIX, dir=self.folder)
            os.close(fd)
            self._path = Path(name)
            self._writer = pq.ParquetWriter(self._path, self.schema)
            assert self._first is not None
            self._write(self._first)
            self._first = None
        self._write(frame)

    def _write(self, frame: pd.DataFrame) -> None:
        assert self._writer is not None
        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        self._writer.write_table(table)

    def layer(self) -> pd.DataFrame | LayerChunks:
        """The spooled rows: one frame when they fit in one chunk, else :class:`LayerChunks`
        read back one row group at a time."""
        empty = pd.DataFrame({n: pd.Series(dtype=t) for n, t in self.dtypes.items()})
        if self._writer is None:
            return self._first if self._first is not None else empty
        self._writer.close()
        self._writer = None
        return LayerChunks(self._read(), empty)

    def _read(self) -> Iterator[pd.DataFrame]:
        assert self._path is not None
        with pq.ParquetFile(self._path) as f:
            for i in range(f.num_row_groups):
                yield f.read_row_group(i).to_pandas().astype(self.dtypes)

    def close(self) -> None:
        """Remove the spool file."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None
        self._first = None

    def __enter__(self) -> FrameSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
