"""A run's layers as GeoParquet (1.0.0), streamed: memory holds one batch of rows, not the layer.

Each layer is read from the GeoPackage as Arrow record batches (GDAL's Arrow stream, through
``pyogrio.open_arrow``) and each batch is written as one Parquet row group; the geometry stays
the WKB GDAL reads, named ``geometry``, described by the ``geo`` metadata (CRS as PROJJSON,
geometry types and bounding box, both taken from the rows while they pass). Tables without
geometry become plain Parquet. The file appears whole or not at all (:func:`atomic_path`).

Values read back with ``geopandas.read_parquet`` as :func:`~urbangeo.io.gpkg.read_layer` reads
them (same rows, order, columns, types), except date-times: GeoPackage stores them in UTC, and
GDAL's Arrow reader (so the Parquet file) says so, where ``read_layer`` gives naive ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyogrio
import shapely

from urbangeo import constants as C
from urbangeo.errors import InputError, OutputError
from urbangeo.io.files import atomic_path, ensure_writable_file, new_folders_removed_on_error
from urbangeo.io.gpkg import list_layers
from urbangeo.progress import progress

#: Version of the GeoParquet specification the files follow.
GEOPARQUET_VERSION = "1.0.0"
#: Name of the geometry column in the files (what ``read_layer`` calls it).
GEOMETRY = "geometry"
#: Rows per batch read and per row group written.
BATCH_ROWS = 65_536
#: Tables of a run that are not data: urbangeo's records, GeoPackage's and QGIS's own tables.
INTERNAL_PREFIXES = ("urbangeo_", "gpkg_", "rtree_")
INTERNAL_TABLES = ("layer_styles",)

#: GeoParquet's names of the geometry types, by shapely's type id.
_TYPE_NAMES = {
    0: "Point",
    1: "LineString",
    2: "LineString",  # a LinearRing (WKB has none; for completeness)
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}
#: Geometries parsed at a time for the types and bounds (bounds the parsed objects' memory).
_PARSE_ROWS = 8192


@dataclass(frozen=True)
class ExportResult:
    """One exported layer: its name, the file written, its rows and size in bytes."""

    layer: str
    path: Path
    rows: int
    bytes: int


def data_layers(gpkg: str | os.PathLike) -> list[str]:
    """The layers of a run worth exporting: all but urbangeo's, GeoPackage's and QGIS's tables."""
    return [
        name
        for name in list_layers(gpkg)
        if not name.startswith(INTERNAL_PREFIXES) and name not in INTERNAL_TABLES
    ]


def _check_layers(gpkg: Path, layers: list[str]) -> None:
    """Fail before any work if ``gpkg`` is missing or lacks one of ``layers``."""
    if not gpkg.is_file():
        raise InputError(
            f"GeoPackage {gpkg} does not exist.",
            hint="Pass the run's GeoPackage, e.g. --gpkg RUN/run.gpkg.",
        )
    present = list_layers(gpkg)
    unknown = [name for name in layers if name not in present]
    if unknown:
        raise InputError(
            f"Layer(s) {', '.join(repr(n) for n in unknown)} not in {gpkg}.",
            hint=f"Its layers: {', '.join(data_layers(gpkg)) or '(none)'}.",
        )


def export_layer(
    gpkg: str | os.PathLike,
    layer: str,
    out: str | os.PathLike,
    *,
    batch_rows: int = BATCH_ROWS,
    compression: str = "zstd",
) -> ExportResult:
    """Write ``layer`` of the GeoPackage ``gpkg`` to the (Geo)Parquet file ``out``, replacing
    it atomically, ``batch_rows`` rows at a time (one row group each)."""
    gpkg, out = Path(gpkg), Path(out)
    if batch_rows < 1:
        raise InputError(
            f"The batch size must be at least 1 row, not {batch_rows}.",
            hint="Give --batch-rows (Python: batch_rows=) a positive number, e.g. 65536.",
        )
    _check_layers(gpkg, [layer])
    total = int(pyogrio.read_info(gpkg, layer=layer)["features"])
    with new_folders_removed_on_error(out):
        ensure_writable_file(out)
        with atomic_path(out, suffix=".parquet") as tmp:
            rows = _write(gpkg, layer, tmp, total, batch_rows, compression)
    return ExportResult(layer, out, rows, out.stat().st_size)


def _write(
    gpkg: Path, layer: str, path: Path, total: int, batch_rows: int, compression: str
) -> int:
    """Stream ``layer`` into the Parquet file ``path``; the rows written."""
    rows = 0
    with (
        pyogrio.open_arrow(gpkg, layer=layer, batch_size=batch_rows, use_pyarrow=True) as source,
        progress(total, task=f"export {layer}", unit="rows") as bar,
    ):
        meta, reader = source
        geom = meta["geometry_name"] or None
        schema = _output_schema(reader.schema, geom)
        kinds = layer in (C.LAYER_IMAGES, C.LAYER_CAPTIONS) and C.KIND in schema.names
        column = _GeometryColumn(meta["crs"]) if geom else None
        with pq.ParquetWriter(path, schema, compression=compression, store_schema=False) as writer:
            for batch in reader:
                arrays = [_storage(a) for a in batch.columns]
                if kinds:
                    i = schema.get_field_index(C.KIND)
                    arrays[i] = _normalize_kinds(arrays[i])
                if column is not None:
                    column.add(arrays[-1])
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                rows += batch.num_rows
                bar.update(batch.num_rows)
            if column is not None:
                # Written in the footer (store_schema=False: no Arrow schema that would keep
                # an earlier "geo"), once every geometry has been seen.
                writer.add_key_value_metadata({"geo": json.dumps(column.metadata())})
    return rows


def export_run(
    gpkg: str | os.PathLike,
    folder: str | os.PathLike,
    layers: list[str] | None = None,
    *,
    batch_rows: int = BATCH_ROWS,
    compression: str = "zstd",
) -> list[ExportResult]:
    """Write ``layers`` of ``gpkg`` (default: :func:`data_layers`) as ``folder/LAYER.parquet``,
    each file atomically."""
    gpkg, folder = Path(gpkg), Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file.", hint="Give a folder for several layers.")
    names = list(dict.fromkeys(layers)) if layers is not None else None
    _check_layers(gpkg, names or [])
    if names is None:
        names = data_layers(gpkg)
    with new_folders_removed_on_error(folder / "-"):
        return [
            export_layer(
                gpkg,
                name,
                folder / f"{name}.parquet",
                batch_rows=batch_rows,
                compression=compression,
            )
            for name in names
        ]


def export(
    gpkg: str | os.PathLike, out: str | os.PathLike, layers: list[str] | None = None, **options: Any
) -> list[ExportResult]:
    """What ``urbangeo export`` does: ``out`` ending in ``.parquet`` is the file of the one
    layer in ``layers``; any other ``out`` is a folder for ``layers`` (default: all).
    ``options``: ``batch_rows`` and ``compression``, as :func:`export_layer` takes them."""
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        return export_run(gpkg, out, layers, **options)
    names = list(dict.fromkeys(layers or []))
    if len(names) != 1:
        _check_layers(Path(gpkg), names)
        raise InputError(
            f"{out} is one file: it takes exactly one layer, not {len(names) or 'all'}.",
            hint="Name the layer (--layer regions), or give a folder as the output to write "
            f"each layer as FOLDER/LAYER.parquet. Layers: {', '.join(data_layers(gpkg))}.",
        )
    return [export_layer(gpkg, names[0], out, **options)]


def _storage(array: pa.Array) -> pa.Array:
    """``array`` without an Arrow extension type (GDAL marks WKB as ``geoarrow.wkb``, which
    pyarrow turns into a type where geoarrow-pyarrow is installed)."""
    return array.storage if isinstance(array.type, pa.ExtensionType) else array


def _output_schema(schema: pa.Schema, geom: str | None) -> pa.Schema:
    """The file's schema: GDAL's, with the geometry last, named :data:`GEOMETRY`, plain
    binary, and no field metadata."""
    fields = []
    for field in schema:
        kind = field.type.storage_type if isinstance(field.type, pa.ExtensionType) else field.type
        name = GEOMETRY if field.name == geom else field.name
        fields.append(pa.field(name, kind, nullable=field.nullable))
    if geom is not None and fields[-1].name != GEOMETRY:  # GDAL puts it last; rely on that
        raise OutputError(f"Unexpected column order from GDAL: {schema.names}.")
    return pa.schema(fields)


def _normalize_kinds(array: pa.Array) -> pa.Array:
    """Old spellings of image kinds replaced, as :func:`~urbangeo.io.gpkg.read_layer` does."""
    for old, new in C.LEGACY_KINDS.items():
        array = pc.if_else(pc.equal(array, old), new, array)
    return array


class _GeometryColumn:
    """The ``geo`` metadata of the geometry column, gathered batch by batch."""

    def __init__(self, crs: str | None) -> None:
        self.crs = crs
        self.types: set[str] = set()
        self.bounds = np.array([np.inf, np.inf, -np.inf, -np.inf])

    def add(self, wkb: pa.Array) -> None:
        """Account for one batch of WKB geometries."""
        for start in range(0, len(wkb), _PARSE_ROWS):
            geoms = shapely.from_wkb(wkb.slice(start, _PARSE_ROWS).to_numpy(zero_copy_only=False))
            ids = shapely.get_type_id(geoms)
            z = shapely.has_z(geoms)
            for type_id, has_z in set(zip(ids.tolist(), z.tolist(), strict=True)):
                if type_id >= 0:  # -1: a missing geometry
                    self.types.add(_TYPE_NAMES[type_id] + (" Z" if has_z else ""))
            box = shapely.bounds(geoms)  # NaN for missing and empty geometries
            if not np.isnan(box).all():
                self.bounds = np.concatenate(
                    [
                        np.minimum(self.bounds[:2], np.nanmin(box[:, :2], axis=0)),
                        np.maximum(self.bounds[2:], np.nanmax(box[:, 2:], axis=0)),
                    ]
                )

    def metadata(self) -> dict:
        """The file's ``geo`` metadata (GeoParquet :data:`GEOPARQUET_VERSION`)."""
        column: dict = {
            "encoding": "WKB",
            "geometry_types": sorted(self.types),
            "crs": _projjson(self.crs),
        }
        if np.isfinite(self.bounds).all():
            column["bbox"] = [float(v) for v in self.bounds]
        return {
            "version": GEOPARQUET_VERSION,
            "primary_column": GEOMETRY,
            "columns": {GEOMETRY: column},
        }


def _projjson(crs: str | None) -> dict | None:
    """The CRS as PROJJSON; None (GeoParquet: undefined) for a layer without one."""
    if not crs:
        return None
    from pyproj import CRS

    return CRS.from_user_input(crs).to_json_dict()
