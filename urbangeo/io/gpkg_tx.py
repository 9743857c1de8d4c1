"""Layer writes into an existing GeoPackage that cost the size of the layers, all-or-nothing.

GDAL writes the new layers into a small scratch GeoPackage beside the target (its geometry
encoding, spatial index, CRS records), and :func:`move_layers` moves them into the target in one
SQLite transaction: each replaced layer is dropped as GDAL drops a layer (its table, R-tree and
triggers, its rows in the GeoPackage's bookkeeping tables, the metadata only it references;
``layer_styles`` rows are kept, as GDAL keeps them), then the new table, its rows, its R-tree and
its bookkeeping rows are copied in. A crash, an error or Ctrl-C before the commit leaves the
target as it was (SQLite's rollback journal); a commit is atomic.

:func:`seed` starts the scratch file with the target's ``gpkg_spatial_ref_sys`` rows, so that
GDAL picks the same ``srs_id`` for each CRS as it would writing into the target itself (the
``srs_id`` is also inside every geometry blob, which is copied as it is).

Whatever this module does not know how to move (a tile table, relations, tables GDAL wrote that
are not listed here) raises :class:`Unsupported` before anything is written; the caller then
falls back to copying the whole file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyogrio

from urbangeo import constants as C
from urbangeo.errors import OutputError

#: The table that creates the scratch GeoPackage (never moved into the target).
SEED = "urbangeo_scratch_seed"
#: Seconds to wait for another connection's lock (e.g. QGIS reading the file) to go.
LOCK_TIMEOUT = 30.0
#: Bookkeeping tables with one row per layer, keyed by ``table_name`` (GDAL's DeleteLayer
#: deletes a layer's rows from each of them).
PER_LAYER = (
    "gpkg_contents",
    "gpkg_geometry_columns",
    "gpkg_extensions",
    "gpkg_ogr_contents",
    "gpkg_data_columns",
)
#: Tables a scratch file may hold besides its layers and their R-trees.
_SCRATCH_SYSTEM = {
    "gpkg_spatial_ref_sys",
    "gpkg_contents",
    "gpkg_geometry_columns",
    "gpkg_extensions",
    "gpkg_ogr_contents",
    "gpkg_data_columns",
    "gpkg_tile_matrix",
    "gpkg_tile_matrix_set",
    "gpkg_metadata",
    "gpkg_metadata_reference",
    "sqlite_sequence",
    SEED,
}
_RTREE_SHADOWS = ("_node", "_parent", "_rowid")
_SYNCHRONOUS = "OGR_SQLITE_SYNCHRONOUS"
#: Triggers that keep ``gpkg_ogr_contents`` counts (only where the target has that table).
_COUNT_TRIGGERS = ("trigger_insert_feature_count_", "trigger_delete_feature_count_")


class Unsupported(Exception):
    """The scratch file or the target holds something :func:`move_layers` cannot move."""


def q(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def scratch_path(target: str | os.PathLike) -> Iterator[Path]:
    """A path for a scratch GeoPackage beside ``target`` (same file system), removed at the
    end with SQLite's side files, also on error or Ctrl-C."""
    target = Path(target)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".scratch.gpkg", dir=target.parent
    )
    os.close(fd)
    path = Path(name)
    path.unlink()
    try:
        yield path
    finally:
        for leftover in (path, *(Path(f"{path}{s}") for s in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


@contextmanager
def unsynced() -> Iterator[None]:
    """GDAL's writes in the block do not wait for the disk (SQLite's ``synchronous = OFF``):
    for the scratch file, which is thrown away; the commit into the target waits for the disk.
    (A GDAL config option is process-wide: another thread's GDAL write in the block, which in
    urbangeo is also into a scratch or temporary file, goes unsynced too.) A value the user set
    (``OGR_SQLITE_SYNCHRONOUS`` in the environment) is kept."""
    if pyogrio.get_gdal_config_option(_SYNCHRONOUS) is not None:
        yield
        return
    pyogrio.set_gdal_config_options({_SYNCHRONOUS: "OFF"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({_SYNCHRONOUS: None})


def seed(scratch: Path, target: Path) -> None:
    """Create ``scratch`` (GeoPackage :data:`~urbangeo.constants.GPKG_VERSION`) holding the
    target's CRS records, so that GDAL gives each CRS the target's ``srs_id``."""
    frame = pd.DataFrame({"seed": pd.Series([], dtype="int64")})
    pyogrio.write_dataframe(
        frame, scratch, layer=SEED, driver="GPKG", dataset_options={"VERSION": C.GPKG_VERSION}
    )
    with _lock_errors(target):
        src = sqlite3.connect(target, timeout=LOCK_TIMEOUT)
        try:
            columns = _columns(src, "main", "gpkg_spatial_ref_sys")
            rows = src.execute(
                f"SELECT {', '.join(map(q, columns))} FROM gpkg_spatial_ref_sys"
            ).fetchall()
        finally:
            src.close()
    con = sqlite3.connect(scratch)
    try:
        with con:
            mine = _columns(con, "main", "gpkg_spatial_ref_sys")
            keep = [i for i, c in enumerate(columns) if c in mine]
            names = ", ".join(q(columns[i]) for i in keep)
            marks = ", ".join("?" for _ in keep)
            con.executemany(
                f"INSERT OR REPLACE INTO gpkg_spatial_ref_sys ({names}) VALUES ({marks})",
                [tuple(row[i] for i in keep) for row in rows],
            )
    finally:
        con.close()


def roll_back_hot_journal(path: str | os.PathLike) -> None:
    """Finish what a process killed in the middle of a commit left (``path-journal``): SQLite
    rolls such a "hot" journal back when a read-write connection opens the file, but GDAL's
    read-only opens fail on it ("attempt to write a readonly database"). Nothing happens when
    there is no journal, or when its writer is still at work (SQLite leaves its journal alone)."""
    path = Path(path)
    if not Path(f"{path}-journal").exists():
        return
    con = sqlite3.connect(path, timeout=LOCK_TIMEOUT)
    try:
        with contextlib.suppress(sqlite3.Error):  # then GDAL's own error will say more
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        con.close()


def move_layers(
    scratch: Path,
    target: Path,
    names: Iterable[str],
    *,
    then: Callable[[sqlite3.Connection], object] | None = None,
) -> None:
    """Move the layers ``names`` from ``scratch`` into ``target`` in one SQLite transaction,
    replacing layers of the same names; ``then(con)`` runs inside the same transaction (e.g.
    the layers' styles). All of it lands, or none of it: the target is left as it was on any
    error or ``KeyboardInterrupt``. Raises :class:`Unsupported` (target untouched) for what it
    cannot move."""
    names = list(names)
    with _lock_errors(target):
        con = sqlite3.connect(target, isolation_level=None, timeout=LOCK_TIMEOUT)
        try:
            _move(con, scratch, names, then)
        finally:
            con.close()


def _move(
    con: sqlite3.Connection,
    scratch: Path,
    names: list[str],
    then: Callable[[sqlite3.Connection], object] | None,
) -> None:
    (mode,) = con.execute("PRAGMA main.journal_mode").fetchone()
    if str(mode).lower() != "wal":
        # A rollback journal, deleted at the commit: what GDAL and QGIS use by default. A
        # file someone put in WAL mode stays in it (it is atomic too).
        con.execute("PRAGMA main.journal_mode = DELETE")
    con.execute("ATTACH DATABASE ? AS src", (str(scratch),))
    con.execute("BEGIN IMMEDIATE")
    try:
        _check(con, names)
        _copy_srs(con, names)
        for name in names:
            _drop(con, name)
            _copy(con, name)
        _copy_system_extensions(con, names)
        if then is not None:
            then(con)
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise


@contextmanager
def _lock_errors(target: Path) -> Iterator[None]:
    """SQLite's "database is locked" (another program kept its lock for LOCK_TIMEOUT seconds)
    as an error that says what to do."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise OutputError(
            f"{target} is locked by another program; nothing was written.",
            hint="Close the layers of this GeoPackage in QGIS (or the program editing it) "
            "and run the command again.",
        ) from exc


def _rollback(con: sqlite3.Connection) -> None:
    if not con.in_transaction:
        return
    with contextlib.suppress(sqlite3.Error):  # closing the connection rolls back too
        con.execute("ROLLBACK")


def _columns(con: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [row[1] for row in con.execute(f"PRAGMA {schema}.table_info({q(table)})")]


def _objects(con: sqlite3.Connection, schema: str) -> list[tuple[str, str, str, str | None]]:
    """``(type, name, tbl_name, sql)`` of every object of ``schema``."""
    return con.execute(f"SELECT type, name, tbl_name, sql FROM {schema}.sqlite_master").fetchall()


def _has_table(con: sqlite3.Connection, schema: str, table: str) -> bool:
    return (
        con.execute(
            f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND lower(name) = lower(?)",
            (table,),
        ).fetchone()
        is not None
    )


def _rtrees(con: sqlite3.Connection, schema: str, name: str) -> list[str]:
    """The R-tree tables of layer ``name`` in ``schema`` (``rtree_<table>_<column>``)."""
    if not _has_table(con, schema, "gpkg_geometry_columns"):
        return []
    rows = con.execute(
        f"SELECT table_name, column_name FROM {schema}.gpkg_geometry_columns "
        "WHERE lower(table_name) = lower(?)",
        (name,),
    ).fetchall()
    return [f"rtree_{t}_{c}" for t, c in rows if _has_table(con, schema, f"rtree_{t}_{c}")]


def _check(con: sqlite3.Connection, names: list[str]) -> None:
    """Raise :class:`Unsupported` for what :func:`move_layers` cannot move (nothing written yet)."""
    lowered = {n.lower() for n in names}
    expected = {n.lower() for n in _SCRATCH_SYSTEM} | lowered
    for name in names:
        if not _has_table(con, "src", name):
            raise Unsupported(f"layer {name} is not in the scratch file")
        for rtree in _rtrees(con, "src", name):
            expected |= {(rtree + s).lower() for s in ("", *_RTREE_SHADOWS)}
    for kind, obj, table, _sql in _objects(con, "src"):
        if kind == "table" and obj.lower() not in expected:
            raise Unsupported(f"GDAL wrote a table urbangeo does not move ({obj})")
        if kind in ("view", "index", "trigger") and table.lower() not in expected:
            raise Unsupported(f"GDAL wrote a {kind} urbangeo does not move ({obj})")
    for table in ("gpkg_metadata", "gpkg_tile_matrix", "gpkg_tile_matrix_set"):
        if (
            _has_table(con, "src", table)
            and con.execute(f"SELECT 1 FROM src.{table} LIMIT 1").fetchone()
        ):
            raise Unsupported(f"the scratch file has rows in {table}")
    for table in ("gpkg_spatial_ref_sys", "gpkg_contents"):
        if not _has_table(con, "main", table):
            raise Unsupported(f"the target has no {table}")
    marks = ", ".join("?" for _ in names)
    lower = [n.lower() for n in names]
    kinds = con.execute(
        f"SELECT data_type FROM main.gpkg_contents WHERE lower(table_name) IN ({marks})", lower
    ).fetchall()
    if any(kind not in ("features", "attributes") for (kind,) in kinds):
        raise Unsupported("a layer to replace is not a vector layer (tiles?)")
    others = [
        obj
        for kind, obj, _t, _s in _objects(con, "main")
        if obj.lower() in lowered and kind != "table"
    ]
    if others:
        raise Unsupported(f"the target has a view or index named {others[0]}")
    if (
        _has_table(con, "main", "gpkgext_relations")
        and con.execute(
            "SELECT 1 FROM main.gpkgext_relations WHERE lower(base_table_name) IN "
            f"({marks}) OR lower(related_table_name) IN ({marks})",
            lower + lower,
        ).fetchone()
    ):
        raise Unsupported("a layer to replace takes part in a related-tables relation")


def _copy_srs(con: sqlite3.Connection, names: list[str]) -> None:
    """Copy the CRS records the new layers use and the target lacks (the same ``srs_id``:
    :func:`seed` made them agree)."""
    marks = ", ".join("?" for _ in names)
    wanted = {
        srs
        for (srs,) in con.execute(
            f"SELECT srs_id FROM src.gpkg_contents WHERE table_name IN ({marks}) "
            "AND srs_id IS NOT NULL",
            names,
        )
    }
    if _has_table(con, "src", "gpkg_geometry_columns"):
        wanted |= {
            srs
            for (srs,) in con.execute(
                f"SELECT srs_id FROM src.gpkg_geometry_columns WHERE table_name IN ({marks})",
                names,
            )
        }
    src_cols = _columns(con, "src", "gpkg_spatial_ref_sys")
    main_cols = _columns(con, "main", "gpkg_spatial_ref_sys")
    key = ("organization", "organization_coordsys_id", "definition")
    for srs in sorted(wanted):
        new = con.execute(
            f"SELECT {', '.join(key)} FROM src.gpkg_spatial_ref_sys WHERE srs_id = ?", (srs,)
        ).fetchone()
        if new is None:
            raise Unsupported(f"srs_id {srs} is not in the scratch file's gpkg_spatial_ref_sys")
        old = con.execute(
            f"SELECT {', '.join(key)} FROM main.gpkg_spatial_ref_sys WHERE srs_id = ?", (srs,)
        ).fetchone()
        if old is not None:
            if tuple(old) != tuple(new):
                raise Unsupported(f"srs_id {srs} means another CRS in the target")
            continue
        common = [c for c in main_cols if c in src_cols]
        # A target with the CRS WKT extension: "undefined" is the spec's value for a CRS
        # without a WKT2 definition.
        extra = [c for c in main_cols if c == "definition_12_063" and c not in src_cols]
        columns = ", ".join(map(q, common + extra))
        values = ", ".join([*map(q, common), *("'undefined'" for _ in extra)])
        con.execute(
            f"INSERT INTO main.gpkg_spatial_ref_sys ({columns}) SELECT {values} "
            "FROM src.gpkg_spatial_ref_sys WHERE srs_id = ?",
            (srs,),
        )


def _drop(con: sqlite3.Connection, name: str) -> None:
    """Drop layer ``name`` from the target as GDAL's DeleteLayer does (if it is there)."""
    for rtree in _rtrees(con, "main", name):
        con.execute(f"DROP TABLE main.{q(rtree)}")
    if _has_table(con, "main", name):
        con.execute(f"DROP TABLE main.{q(name)}")  # and its triggers
    if _has_table(con, "main", "gpkg_metadata_reference"):
        if _has_table(con, "main", "gpkg_metadata"):
            # Metadata documents that only this layer references (GDAL's rule).
            con.execute(
                "DELETE FROM main.gpkg_metadata WHERE id IN (SELECT md_file_id FROM "
                "main.gpkg_metadata_reference WHERE lower(table_name) = lower(?) AND "
                "md_parent_id IS NULL) AND id NOT IN (SELECT md_file_id FROM "
                "main.gpkg_metadata_reference WHERE lower(table_name) <> lower(?) OR "
                "table_name IS NULL)",
                (name, name),
            )
        con.execute(
            "DELETE FROM main.gpkg_metadata_reference WHERE lower(table_name) = lower(?)",
            (name,),
        )
    for table in PER_LAYER:
        if _has_table(con, "main", table):
            con.execute(f"DELETE FROM main.{table} WHERE lower(table_name) = lower(?)", (name,))


def _copy(con: sqlite3.Connection, name: str) -> None:
    """Copy layer ``name`` from the scratch file: table, rows, R-tree, then triggers and
    indexes (the R-tree triggers call GDAL's ST_* functions, which this connection lacks: they
    must not fire here), then its bookkeeping rows."""
    objects = _objects(con, "src")
    (create,) = [s for k, o, _t, s in objects if k == "table" and o == name]
    con.execute(str(create))
    con.execute(f"INSERT INTO main.{q(name)} SELECT * FROM src.{q(name)}")
    if _has_table(con, "main", "sqlite_sequence"):
        # as GDAL left it (an INSERT of no rows adds a row of its own)
        con.execute("DELETE FROM main.sqlite_sequence WHERE name = ?", (name,))
        if _has_table(con, "src", "sqlite_sequence"):
            con.execute(
                "INSERT INTO main.sqlite_sequence SELECT * FROM src.sqlite_sequence WHERE name = ?",
                (name,),
            )
    for rtree in _rtrees(con, "src", name):
        (create,) = [s for k, o, _t, s in objects if k == "table" and o == rtree]
        con.execute(str(create))
        con.execute(f"INSERT INTO main.{q(rtree)} SELECT * FROM src.{q(rtree)}")
    counts = _has_table(con, "main", "gpkg_ogr_contents")
    for kind, obj, table, sql in objects:
        if kind not in ("trigger", "index") or table != name or sql is None:
            continue
        if not counts and obj.startswith(_COUNT_TRIGGERS):
            continue  # GDAL keeps no counts in a file without gpkg_ogr_contents either
        con.execute(sql)
    for table in PER_LAYER:
        if not _has_table(con, "src", table):
            continue
        if not _has_table(con, "main", table):
            if table == "gpkg_ogr_contents":
                continue
            (create,) = [s for k, o, _t, s in objects if k == "table" and o == table]
            con.execute(str(create))
        cols = ", ".join(
            q(c) for c in _columns(con, "src", table) if c in _columns(con, "main", table)
        )
        con.execute(
            f"INSERT INTO main.{table} ({cols}) SELECT {cols} FROM src.{table} "
            "WHERE table_name = ?",
            (name,),
        )


def _copy_system_extensions(con: sqlite3.Connection, names: list[str]) -> None:
    """``gpkg_extensions`` rows of system tables GDAL registered (e.g. ``gpkg_data_columns``)
    that the target lacks."""
    if not (
        _has_table(con, "src", "gpkg_extensions") and _has_table(con, "main", "gpkg_extensions")
    ):
        return
    marks = ", ".join("?" for _ in names)
    con.execute(
        "INSERT INTO main.gpkg_extensions (table_name, column_name, extension_name, definition, "
        "scope) SELECT s.table_name, s.column_name, s.extension_name, s.definition, s.scope "
        f"FROM src.gpkg_extensions s WHERE (s.table_name IS NULL OR s.table_name NOT IN "
        f"({marks}, ?)) AND NOT EXISTS (SELECT 1 FROM main.gpkg_extensions m WHERE "
        "m.table_name IS s.table_name AND m.column_name IS s.column_name AND "
        "m.extension_name = s.extension_name)",
        [*names, SEED],
    )
