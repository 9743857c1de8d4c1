"""Region encoders: embedding products aggregated to the regions themselves, without images.

The image encoders of ``embed`` turn each region's images into vectors; a region encoder reads
a product that already holds embeddings (an embedding raster such as AlphaEarth or TESSERA, or
a file of patch vectors such as Earth Index, Clay or Major TOM) and aggregates it to each
region polygon. Its outputs are those of every encoder (``embeddings.parquet`` beside the
GeoPackage and the layer ``region_embeddings``), plus quality columns beside the vector:

=================  ==========================================================================
column             meaning
=================  ==========================================================================
valid_share        (raster) share of the region's pixels that hold data; (caption-text) share
                   of its images with a caption; 0: no data at all, and the vector is all
                   zeros (never NaN)
n_pixels           (raster) pixels averaged (valid pixels whose centres fall in the region)
n_patches          (patches) points inside the region, or polygons overlapping it
patch_distance_m   (patches) 0 when the region has patches, else the distance to the nearest
n_captions         (caption-text) captions pooled into the region's vector
=================  ==========================================================================

Rows with ``valid_share`` 0 are kept in both outputs (QGIS shows where data is missing) and
left out of the prediction heads and clusters: :func:`urbangeo.downstream.tables.
embeddings_frame` drops them and never uses a quality column as a feature.

The product's licence and attribution text are recorded three times: in the layer's
GeoPackage ``description`` (``gpkg_contents``; QGIS: Layer Properties → Information,
"Abstract", and the Browser's table comment), in a QGIS metadata document in ``gpkg_metadata``
(QGIS: Layer Properties → Metadata → Access: "Licenses" and "Rights"), and in the parquet's
``urbangeo`` metadata. No torch here.
"""

from __future__ import annotations

import json
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn
from xml.sax.saxutils import escape

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.files import atomic_path
from urbangeo.progress import message

if TYPE_CHECKING:
    from urbangeo.io.runs import StageResult
    from urbangeo.settings import EmbedSettings
    from urbangeo.stage import StageRun

VALID_SHARE = "valid_share"
N_PIXELS = "n_pixels"
N_PATCHES = "n_patches"
PATCH_DISTANCE = "patch_distance_m"
N_CAPTIONS = "n_captions"
#: Columns written beside the vector that are never features (see the module docstring).
QUALITY_COLUMNS = (VALID_SHARE, N_PIXELS, N_PATCHES, PATCH_DISTANCE, N_CAPTIONS)
#: Above this many vector columns a layer holds the vector as one JSON text column (SQLite
#: allows 2000 columns per table); the image encoders' layer too.
MAX_VECTOR_COLUMNS = 1900
#: How QGIS recognises its own layer metadata in ``gpkg_metadata``.
QGIS_METADATA_URI = "http://mrcc.com/qgis.dtd"
_METADATA_EXTENSION = "http://www.geopackage.org/spec121/#extension_metadata"


@dataclass
class RegionVectors:
    """One vector per region: ``frame`` holds ``region_id``, the quality columns ``quality``
    and ``e0 .. e{dim-1}`` (float32); ``info`` and ``counts`` go into the stage's record."""

    frame: pd.DataFrame
    dim: int
    quality: tuple[str, ...]
    title: str
    abstract: str
    attribution: str | None = None
    licence: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def vector_columns(self) -> list[str]:
        """``e0 .. e{dim-1}``."""
        return [f"e{i}" for i in range(self.dim)]

    @property
    def vectors(self) -> np.ndarray:
        """``[regions, dim]`` float32."""
        return self.frame[self.vector_columns].to_numpy(np.float32)


def vectors_frame(
    region_ids: Sequence[Any], vectors: np.ndarray, quality: dict[str, np.ndarray]
) -> pd.DataFrame:
    """``region_id`` (text), the quality columns in order, then ``e0..`` as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    columns: dict[str, Any] = {C.REGION_ID: [str(r) for r in region_ids], **quality}
    columns.update({f"e{i}": vectors[:, i] for i in range(vectors.shape[1])})
    return pd.DataFrame(columns)


class RegionEncoder(ABC):
    """A product of vectors aggregated to region polygons (no images, no torch)."""

    #: Tells ``embed`` to hand this encoder the regions instead of the images.
    encodes_regions: ClassVar[bool] = True
    #: The encoder's name in :data:`~urbangeo.model.encoders.ENCODERS` (``--encoder``).
    name: ClassVar[str] = ""

    def __init_subclass__(cls, name: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name:  # class RasterProductEncoder(RegionEncoder, name="raster")
            cls.name = name

    @classmethod
    @abstractmethod
    def from_settings(cls, s: EmbedSettings) -> RegionEncoder:
        """The encoder the embed stage's settings describe (inputs checked, nothing read)."""

    @classmethod
    def product_file(cls, s: EmbedSettings, setting: str) -> Path:
        """The file of the product, the embed stage's ``setting`` (``raster``, ``patches``); a
        clear error, with the setting's own help, when it is not given."""
        value = getattr(s, setting)
        if value is None:
            f = next(f for f in s.fields() if f.name == setting)
            raise InputError(
                f"--encoder {cls.name} needs {f.flag}.",
                hint=f"Pass {f.flag} {f.spec.unit or 'FILE'}: {f.spec.help}",
            )
        return Path(value)

    @classmethod
    def for_run(cls, s: EmbedSettings, gpkg: str | os.PathLike) -> RegionEncoder:
        """The encoder for the run ``gpkg`` (default: :meth:`from_settings`; an encoder that
        reads the run's own tables, such as ``caption-text``, overrides it)."""
        return cls.from_settings(s)

    @abstractmethod
    def encode(self, regions: gpd.GeoDataFrame) -> RegionVectors:
        """One vector per row of ``regions`` (``region_id`` + polygons, in any CRS)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open files."""

    @classmethod
    def build(cls, **_: Any) -> NoReturn:
        """Region encoders read no images: refuse the image encoders' constructor."""
        raise InputError(
            f"Encoder {cls.name!r} aggregates a product to the regions; it encodes no images.",
            hint="Run it through the embed stage (`urbangeo embed --encoder "
            f"{cls.name} ...`) or call {cls.__name__}.from_settings(...).encode(regions).",
        )


def _check_finite(result: RegionVectors) -> None:
    finite = np.isfinite(result.vectors).all(axis=1)
    if not finite.all():
        raise InputError(
            f"{int((~finite).sum()):,} regions got embedding values that are not finite numbers "
            "(overflowing values in the product); nothing was written.",
            hint="Check the product's values, or give its nodata value to GDAL.",
        )


def write_vectors_parquet(result: RegionVectors, path: str | os.PathLike) -> Path:
    """``region_id``, the quality columns and ``e0..`` (float32) to ``path``, atomically; the
    encoder's info, licence and attribution in the file's ``urbangeo`` metadata."""
    path = Path(path)
    frame = result.frame
    columns: dict[str, Any] = {C.REGION_ID: pa.array(frame[C.REGION_ID].astype(str))}
    for name in result.quality:
        columns[name] = pa.array(frame[name].to_numpy())
    vectors = result.vectors
    for i, name in enumerate(result.vector_columns):
        columns[name] = pa.array(vectors[:, i], type=pa.float32())
    meta = {
        "kind": "regions",
        "dim": result.dim,
        "quality_columns": list(result.quality),
        "attribution": result.attribution,
        "licence": result.licence,
        **result.info,
        **result.counts,
    }
    table = pa.table(columns).replace_schema_metadata({"urbangeo": json.dumps(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def vectors_layer(result: RegionVectors, regions: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Region polygons with the quality columns and the vector (columns, or JSON text if very
    wide), in the regions' CRS."""
    return region_vector_layer(result.frame, result.dim, result.quality, regions)


def region_vector_layer(
    frame: pd.DataFrame,
    dim: int,
    columns: Sequence[str],
    regions: gpd.GeoDataFrame,
    *,
    vectors: bool = True,
) -> gpd.GeoDataFrame:
    """The layer of any region encoder: region polygons joined with ``frame``'s ``columns``
    and its vector ``e0..`` (as columns, or one JSON text column ``embedding`` above
    :data:`MAX_VECTOR_COLUMNS` values; none without ``vectors``), in the regions' CRS."""
    geo = regions[[C.REGION_ID, regions.geometry.name]].copy()
    geo[C.REGION_ID] = geo[C.REGION_ID].astype(str)
    if not vectors:
        frame = frame[[C.REGION_ID, *columns]]
    elif dim > MAX_VECTOR_COLUMNS:
        values = frame[[f"e{i}" for i in range(dim)]].to_numpy(np.float32)
        frame = frame[[C.REGION_ID, *columns]].copy()
        # 9 significant digits: float32 values survive the text round trip exactly
        frame["embedding"] = ["[" + ",".join(f"{x:.9g}" for x in row) + "]" for row in values]
    merged = geo.merge(frame, on=C.REGION_ID, how="inner")
    return gpd.GeoDataFrame(merged, geometry=regions.geometry.name, crs=regions.crs)


def unit_rows(values: np.ndarray) -> np.ndarray:
    """``values`` (float64) with every non-zero row scaled to unit length (zero rows stay)."""
    values = np.asarray(values, dtype=np.float64)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)


def qgis_metadata_xml(
    layer: str,
    *,
    title: str,
    abstract: str,
    licence: str | None,
    rights: str | None,
    history: str,
    crs: Any = None,
) -> str:
    """A QGIS layer-metadata document (what QGIS itself stores in ``gpkg_metadata``)."""
    crs_block = ""
    if crs is not None:
        from pyproj import CRS

        parsed = CRS.from_user_input(crs)
        authority = parsed.to_authority()
        authid = f"{authority[0]}:{authority[1]}" if authority else ""
        crs_block = (
            '  <crs>\n    <spatialrefsys nativeFormat="Wkt">\n'
            f"      <wkt>{escape(parsed.to_wkt())}</wkt>\n"
            f"      <authid>{escape(authid)}</authid>\n"
            "    </spatialrefsys>\n  </crs>\n"
        )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0">\n'
        f"  <identifier>{escape(layer)}</identifier>\n"
        "  <parentidentifier></parentidentifier>\n"
        "  <language></language>\n"
        "  <type>dataset</type>\n"
        f"  <title>{escape(title)}</title>\n"
        f"  <abstract>{escape(abstract)}</abstract>\n"
        "  <links/>\n"
        f"  <history>{escape(history)}</history>\n"
        "  <fees></fees>\n"
        f"  <rights>{escape(rights or '')}</rights>\n"
        f"  <license>{escape(licence or '')}</license>\n"
        "  <encoding></encoding>\n"
        f"{crs_block}"
        "</qgis>\n"
    )


def write_layer_metadata(
    gpkg: str | os.PathLike, layer: str, *, description: str, qgis_xml: str
) -> None:
    """Set ``layer``'s GeoPackage description and its QGIS metadata document, in one SQLite
    transaction (replacing an earlier document of urbangeo's for the same layer)."""
    con = sqlite3.connect(gpkg)
    try:
        with con:
            con.execute(
                "UPDATE gpkg_contents SET description = ? WHERE table_name = ?",
                (description, layer),
            )
            con.executescript(
                """
                CREATE TABLE IF NOT EXISTS gpkg_metadata (
                  id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
                  md_scope TEXT NOT NULL DEFAULT 'dataset',
                  md_standard_uri TEXT NOT NULL,
                  mime_type TEXT NOT NULL DEFAULT 'text/xml',
                  metadata TEXT NOT NULL DEFAULT '');
                CREATE TABLE IF NOT EXISTS gpkg_metadata_reference (
                  reference_scope TEXT NOT NULL, table_name TEXT, column_name TEXT,
                  row_id_value INTEGER,
                  timestamp DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
                  md_file_id INTEGER NOT NULL, md_parent_id INTEGER,
                  CONSTRAINT crmr_mfi_fk FOREIGN KEY (md_file_id) REFERENCES gpkg_metadata(id),
                  CONSTRAINT crmr_mpi_fk FOREIGN KEY (md_parent_id) REFERENCES gpkg_metadata(id));
                CREATE TABLE IF NOT EXISTS gpkg_extensions (
                  table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL,
                  definition TEXT NOT NULL, scope TEXT NOT NULL,
                  CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));
                """
            )
            for table in ("gpkg_metadata", "gpkg_metadata_reference"):
                known = con.execute(
                    "SELECT 1 FROM gpkg_extensions WHERE table_name = ? "
                    "AND extension_name = 'gpkg_metadata'",
                    (table,),
                ).fetchone()
                if not known:
                    con.execute(
                        "INSERT INTO gpkg_extensions VALUES (?, NULL, 'gpkg_metadata', ?, "
                        "'read-write')",
                        (table, _METADATA_EXTENSION),
                    )
            old = [
                row[0]
                for row in con.execute(
                    "SELECT m.id FROM gpkg_metadata m JOIN gpkg_metadata_reference r "
                    "ON r.md_file_id = m.id WHERE r.table_name = ? AND m.md_standard_uri = ?",
                    (layer, QGIS_METADATA_URI),
                )
            ]
            for md_id in old:
                con.execute("DELETE FROM gpkg_metadata_reference WHERE md_file_id = ?", (md_id,))
                con.execute("DELETE FROM gpkg_metadata WHERE id = ?", (md_id,))
            cursor = con.execute(
                "INSERT INTO gpkg_metadata (md_scope, md_standard_uri, mime_type, metadata) "
                "VALUES ('dataset', ?, 'text/xml', ?)",
                (QGIS_METADATA_URI, qgis_xml),
            )
            con.execute(
                "INSERT INTO gpkg_metadata_reference (reference_scope, table_name, md_file_id) "
                "VALUES ('table', ?, ?)",
                (layer, cursor.lastrowid),
            )
    finally:
        con.close()


def run_region_encoder(
    run: StageRun, s: EmbedSettings, regions: gpd.GeoDataFrame, implementation: type[RegionEncoder]
) -> StageResult:
    """The embed stage for a region encoder: aggregate, write the parquet, the layer (in the
    stage's one atomic write) and the layer's licence metadata; the stage's result."""
    path = run.gpkg
    encoder: RegionEncoder = implementation.for_run(s, path)
    try:
        result = encoder.encode(regions)
    finally:
        encoder.close()
    _check_finite(result)
    layer = vectors_layer(result, regions)
    parquet = write_vectors_parquet(result, path.parent / C.EMBEDDINGS_PARQUET)
    params = {
        **s.to_dict(runtime=False),
        **{k: v for k, v in result.info.items() if v is not None},
        "attribution": result.attribution,
        "licence": result.licence,
    }
    out = run.commit(
        {C.LAYER_REGION_EMBEDDINGS: layer}, counts=result.counts, params=params, files=[parquet]
    )
    notice = f" Attribution: {result.attribution}." if result.attribution else ""
    description = f"{result.abstract}{notice}"
    history = f"urbangeo embed --encoder {encoder.name}: {json.dumps(result.info)}"
    write_layer_metadata(
        path,
        C.LAYER_REGION_EMBEDDINGS,
        description=description,
        qgis_xml=qgis_metadata_xml(
            C.LAYER_REGION_EMBEDDINGS,
            title=result.title,
            abstract=description,
            licence=result.licence,
            rights=result.attribution,
            history=history,
            crs=regions.crs,
        ),
    )
    empty = result.counts.get("regions_empty", 0)
    left_out = (
        f"; {empty:,} region(s) without data got valid_share 0 and a zero vector (left out of "
        "predict and cluster)"
        if empty
        else ""
    )
    message(
        f"Embedded {len(layer):,} regions from {result.title} ({result.dim} values, encoder "
        f"{encoder.name}){left_out}. Wrote {parquet} and layer {C.LAYER_REGION_EMBEDDINGS} in "
        f"{path}.{notice}"
    )
    return out
