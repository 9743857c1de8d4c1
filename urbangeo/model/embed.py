"""Region embeddings: a frozen image encoder, one vector per image, mean-pooled per region.

Every image with status ``ok`` in the run's ``images`` layer is encoded in batches (DataLoader
workers decode and preprocess, the encoder runs under ``torch.inference_mode``, with bf16
autocast on CUDA). A region's vector is the mean of its images' vectors (the paper's rule for
several street-view images per region); overhead and street-view images are pooled
separately, and ``concat`` joins the two vectors of regions that have both. Images that fail
to decode are skipped and counted; regions without a usable image are left out; vectors that
are not finite (NaN, infinity: a diverged model) are refused. Results:
``embeddings.parquet`` beside the GeoPackage (``region_id, e0 .. e{D-1}``, float32, regions
sorted by id; the settings in the file's metadata under ``urbangeo``) and the
``region_embeddings`` layer (region polygons + ``n_images`` + the same vector columns, or one
JSON text column ``embedding`` above
:data:`~urbangeo.model.encoders.region_encoder.MAX_VECTOR_COLUMNS` values), which QGIS opens
like any polygon layer. Above ``layer_vectors`` regions (a setting) the layer holds the polygons and
``n_images`` only: the vectors are in the parquet (its layer description says so).

Memory is bounded by ``chunk_size`` images, not by the city: the images are taken in region
order, encoded batch by batch, and every ``chunk_size`` images the regions whose images are all
encoded are pooled (float64 sums of their images only) and written to the parquet as one row
group (:func:`embed_regions_to_parquet`). No image vector outlives its chunk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.kinds import canonical_kind
from urbangeo.io.files import atomic_path
from urbangeo.model.data import (
    ImageDataset,
    autocast,
    collate_images,
    pick_device,
    read_image_rows,
    resolve_precision,
)
from urbangeo.model.defaults import EMBED_KINDS
from urbangeo.model.encoders.base import ImageEncoder
from urbangeo.model.encoders.region_encoder import region_vector_layer
from urbangeo.progress import progress

N_IMAGES = "n_images"
#: Images encoded between two writes of pooled regions (``embed --chunk-size``).
DEFAULT_CHUNK_SIZE = 8192
#: Above this many regions the layer holds no vectors (``embed --layer-vectors``).
DEFAULT_LAYER_VECTORS = 100_000


@dataclass
class RegionEmbeddings:
    """Region vectors: ``frame`` has ``region_id``, ``n_images`` and ``e0 .. e{dim-1}``."""

    frame: pd.DataFrame
    dim: int
    kind: str
    info: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def vector_columns(self) -> list[str]:
        """``e0 .. e{dim-1}``."""
        return vector_columns(self.dim)

    @property
    def has_vectors(self) -> bool:
        """Whether ``frame`` holds the vectors (a large run's streamed result does not)."""
        return self.dim > 0 and f"e{self.dim - 1}" in self.frame.columns

    @property
    def vectors(self) -> np.ndarray:
        """``[regions, dim]`` float32."""
        return self.frame[self.vector_columns].to_numpy(np.float32)


def vector_columns(dim: int) -> list[str]:
    """The names of ``dim`` vector columns."""
    return [f"e{i}" for i in range(dim)]


class EncodeOptions(TypedDict, total=False):
    """How images are encoded: ``batch_size`` (64), DataLoader ``num_workers`` (0),
    ``device`` (auto), ``precision`` ("auto") and the progress bar's ``task`` ("embed")."""

    batch_size: int
    num_workers: int
    device: str | torch.device | None
    precision: str
    task: str


def _encode_batches(
    encoder: ImageEncoder, paths: Sequence[str | os.PathLike], **options: Unpack[EncodeOptions]
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Per batch, in order: the dataset positions of the images decoded, their features
    ``[k, dim]`` (float32) and the number of images of the batch that failed to decode."""
    batch_size, num_workers = options.get("batch_size", 64), options.get("num_workers", 0)
    device, precision = options.get("device"), options.get("precision", "auto")
    task = options.get("task", "embed")
    if batch_size < 1 or num_workers < 0:
        raise InputError("batch_size must be >= 1 and num_workers >= 0.")
    device = pick_device(str(device) if device is not None else None)
    dtype = resolve_precision(precision, device)
    encoder.to(device)
    if encoder.module is not None:
        encoder.module.eval()
    n = len(paths)
    loader = DataLoader(
        ImageDataset([str(p) for p in paths], encoder.transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
    )
    empty = np.zeros((0, encoder.dim), dtype=np.float32)
    with torch.inference_mode(), progress(n, task=task, unit="img") as bar:
        for batch in loader:
            index = batch["index"].numpy()
            features = empty
            if len(index):
                images = batch["images"].to(device, non_blocking=True)
                with autocast(device, dtype):
                    out = encoder.encode(images)
                features = out.float().cpu().numpy()
            failed = int(batch["failed"].numel())
            yield index, features, failed
            bar.update(len(index) + failed)


def embed_images(
    encoder: ImageEncoder, paths: Sequence[str | os.PathLike], **options: Unpack[EncodeOptions]
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[n, dim]`` (float32; NaN rows for images that failed) and the ok mask;
    ``options``: :class:`EncodeOptions`.

    Holds every image's vector: for a run's regions use :func:`embed_regions_to_parquet`,
    which keeps ``chunk_size`` of them at a time.
    """
    n = len(paths)
    features = np.full((n, encoder.dim), np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    for index, out, _ in _encode_batches(encoder, paths, **options):
        features[index] = out
        ok[index] = True
    return features, ok


def pool_by_region(
    features: np.ndarray, region_ids: Sequence[Any], ok: np.ndarray | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean of the (ok) feature rows of each region: ids (sorted), ``[r, dim]``, counts."""
    keep = np.ones(len(features), bool) if ok is None else np.asarray(ok, bool)
    ids = np.asarray([str(r) for r in region_ids], dtype=object)[keep]
    names, inverse = np.unique(ids, return_inverse=True)
    means, counts = _means(np.asarray(features)[keep], inverse, len(names))
    return [str(x) for x in names], means, counts


def _means(features: np.ndarray, inverse: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group ``0..n-1`` of ``inverse``: the mean of its rows (float64 sums, in row order,
    as float32) and its number of rows."""
    sums = np.zeros((n, features.shape[1]))
    np.add.at(sums, inverse, features.astype(np.float64, copy=False))
    counts = np.bincount(inverse, minlength=n)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32), counts


def _select_images(images: pd.DataFrame, kind: str) -> tuple[pd.DataFrame, str]:
    ok = images[(images[C.STATUS] == C.STATUS_OK) & images[C.REGION_ID].notna()]
    kinds = set(ok[C.KIND])
    if kind == "auto":
        kind = C.KIND_STREETVIEW if C.KIND_STREETVIEW in kinds else C.KIND_OVERHEAD
    wanted = (C.KIND_OVERHEAD, C.KIND_STREETVIEW) if kind == "concat" else (kind,)
    missing = [k for k in wanted if k not in kinds]
    if missing:
        raise InputError(
            f"No {' or '.join(missing)} images with status 'ok' and a region_id in the images "
            f"layer (kinds present: {', '.join(sorted(kinds)) or 'none'}).",
            hint="Fetch those images first (`urbangeo tiles` for overhead, `urbangeo streetview` "
            "for street view), or choose another --kind.",
        )
    return ok[ok[C.KIND].isin(wanted)].reset_index(drop=True), kind


@dataclass
class _Plan:
    """The images to embed, in region order: ``paths`` (sorted by region id, stable),
    ``region`` (the position of each image's region in ``names``, non-decreasing), ``is_sv``
    (street view, else overhead), and ``fit_paths`` (the paths in the layer's order, for an
    encoder fitted to them)."""

    kind: str
    names: np.ndarray
    paths: list[str]
    region: np.ndarray
    is_sv: np.ndarray
    fit_paths: list[str]


#: The columns of the images layer embed reads.
_IMAGE_COLUMNS = (C.IMAGE_ID, C.KIND, C.REGION_ID, C.PATH, C.STATUS)


def _image_rows(gpkg: Path) -> pd.DataFrame:
    """The columns of the ``images`` layer that embed needs (not the whole layer)."""
    import pyogrio

    from urbangeo.imagery.kinds import normalize_kinds
    from urbangeo.io.gpkg import list_layers

    if C.LAYER_IMAGES not in list_layers(gpkg):
        return read_image_rows(gpkg)  # its error names the command that writes the layer
    fields = set(pyogrio.read_info(gpkg, layer=C.LAYER_IMAGES)["fields"])
    columns = [c for c in _IMAGE_COLUMNS if c in fields]
    if len(columns) < len(_IMAGE_COLUMNS) - (C.REGION_ID not in fields):
        return read_image_rows(gpkg)  # a required column is missing: its error says which
    frame = pd.DataFrame(
        pyogrio.read_dataframe(gpkg, layer=C.LAYER_IMAGES, columns=columns, read_geometry=False)
    )
    if C.REGION_ID not in frame:
        frame[C.REGION_ID] = None
    return normalize_kinds(frame)


def _plan(gpkg: str | os.PathLike, kind: str) -> _Plan:
    kind = canonical_kind(kind)
    if kind not in EMBED_KINDS:
        raise InputError(f"kind must be one of {EMBED_KINDS}; got {kind!r}")
    gpkg = Path(gpkg)
    images, kind = _select_images(_image_rows(gpkg), kind)
    paths = [str(p) if Path(p).is_absolute() else str(gpkg.parent / p) for p in images[C.PATH]]
    names, region = np.unique(images[C.REGION_ID].astype(str).to_numpy(), return_inverse=True)
    is_sv = (images[C.KIND] == C.KIND_STREETVIEW).to_numpy()
    order = np.argsort(region, kind="stable")  # a region's images keep the layer's order
    return _Plan(
        kind,
        names,
        [paths[i] for i in order],
        region[order],
        is_sv[order],
        paths,
    )


@dataclass
class _Tally:
    """What the streamed embedding counted."""

    embedded: int = 0
    failed: int = 0
    regions: int = 0
    not_finite: int = 0


def _pooled_chunks(
    plan: _Plan,
    encoder: ImageEncoder,
    tally: _Tally,
    *,
    chunk_size: int,
    **options: Unpack[EncodeOptions],
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Region ids, ``n_images`` and vectors ``[r, dim]`` (float32), a chunk of regions at a
    time, in region order: every ``chunk_size`` encoded images, the regions whose images are
    all encoded are pooled and handed over; the others wait for their remaining images."""
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1; got {chunk_size}")
    n = len(plan.paths)
    positions: list[np.ndarray] = []
    features: list[np.ndarray] = []
    pending = done = 0
    for index, out, failed in _encode_batches(encoder, plan.paths, **options):
        done += len(index) + failed
        tally.embedded += len(index)
        tally.failed += failed
        if len(index):
            positions.append(index)
            features.append(out)
            pending += len(index)
        if pending < chunk_size and done < n:
            continue
        # regions before the next image's region have all their images encoded
        boundary = int(plan.region[done]) if done < n else len(plan.names)
        pos = np.concatenate(positions) if positions else np.zeros(0, np.int64)
        feats = np.concatenate(features) if features else np.zeros((0, encoder.dim), np.float32)
        cut = int(np.searchsorted(plan.region[pos], boundary))
        positions, features = [pos[cut:]], [feats[cut:]]
        pending = len(pos) - cut
        if cut:
            chunk = _pool_chunk(plan, pos[:cut], feats[:cut])
            tally.regions += len(chunk[0])
            tally.not_finite += int((~np.isfinite(chunk[2]).all(axis=1)).sum())
            yield chunk


def _pool_chunk(
    plan: _Plan, pos: np.ndarray, feats: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The regions of one chunk of encoded images (``pos``, in region order)."""
    pooled = {}
    for sv in (False, True):
        rows = plan.is_sv[pos] == sv
        if not rows.any():
            continue
        codes, inverse = np.unique(plan.region[pos[rows]], return_inverse=True)
        means, counts = _means(feats[rows], inverse, len(codes))
        pooled[sv] = (codes, counts.astype(np.int64), means)
    if plan.kind != "concat":
        codes, counts, means = next(iter(pooled.values()))
        return plan.names[codes], counts, means
    if len(pooled) < 2:  # no region of this chunk has both kinds
        return plan.names[:0], np.zeros(0, np.int64), np.zeros((0, 2 * feats.shape[1]), np.float32)
    (ov, n_ov, v_ov), (sv_, n_sv, v_sv) = pooled[False], pooled[True]
    both, i_ov, i_sv = np.intersect1d(ov, sv_, assume_unique=True, return_indices=True)
    vectors = np.hstack([v_ov[i_ov], v_sv[i_sv]])
    return plan.names[both], n_ov[i_ov] + n_sv[i_sv], vectors


def _prepare(
    gpkg: str | os.PathLike, encoder: ImageEncoder, kind: str
) -> tuple[_Plan, ImageEncoder, int]:
    """The images in region order, the encoder (fitted to them if it fits) and the output
    width."""
    plan = _plan(gpkg, kind)
    if encoder.fit is not None:
        encoder = encoder.fit(plan.fit_paths)
    return plan, encoder, 2 * encoder.dim if plan.kind == "concat" else encoder.dim


def _counts(plan: _Plan, tally: _Tally, dim: int, encoder: ImageEncoder) -> dict[str, int]:
    """The stage's counts; refuses a run where no image decoded or a vector is not finite."""
    if not tally.embedded:
        raise InputError(
            f"None of the {len(plan.paths)} images could be read.",
            hint="Check the files under images/ beside the GeoPackage.",
        )
    if tally.not_finite:
        _refuse_not_finite(tally.not_finite, tally.regions, encoder.name)
    return {
        "images": len(plan.paths),
        "images_embedded": tally.embedded,
        "failed_images": tally.failed,
        "regions": tally.regions,
        "dim": dim,
    }


def embed_regions(
    gpkg: str | os.PathLike,
    encoder: ImageEncoder,
    *,
    kind: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    **options: Unpack[EncodeOptions],
) -> RegionEmbeddings:
    """Region vectors of a run, in memory: images of ``kind`` → ``encoder`` → mean per region.

    ``kind``: ``streetview``, ``overhead``, ``concat`` ([overhead, street-view] of regions
    that have both) or ``auto`` (street-view if the run has any, else overhead). Images are
    encoded ``chunk_size`` at a time (``options``: :class:`EncodeOptions`); the region vectors
    (float32) are all kept: for a large run, :func:`embed_regions_to_parquet` writes them as
    they come instead.
    """
    plan, encoder, dim = _prepare(gpkg, encoder, kind)
    tally = _Tally()
    chunks = _pooled_chunks(plan, encoder, tally, chunk_size=chunk_size, **options)
    frame = _gather(chunks, dim, keep=True)
    counts = _counts(plan, tally, dim, encoder)
    return RegionEmbeddings(frame, dim, plan.kind, dict(encoder.info), counts)


def embed_regions_to_parquet(
    gpkg: str | os.PathLike,
    encoder: ImageEncoder,
    path: str | os.PathLike,
    *,
    kind: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    keep_vectors: int = DEFAULT_LAYER_VECTORS,
    **options: Unpack[EncodeOptions],
) -> RegionEmbeddings:
    """:func:`embed_regions` streamed to ``path`` (``embeddings.parquet``, atomically: one
    row group per chunk of regions, the same columns, values and metadata as
    :func:`write_parquet`); memory holds ``chunk_size`` images, not the run.

    The result's frame holds ``region_id`` and ``n_images`` of every region, and the vectors
    too when the run has at most ``keep_vectors`` regions (:attr:`RegionEmbeddings.has_vectors`;
    the layer of a larger run holds no vectors). Nothing replaces ``path`` when a vector is
    not finite or no image decodes.
    """
    plan, encoder, dim = _prepare(gpkg, encoder, kind)
    tally = _Tally()
    with atomic_path(Path(path)) as tmp:
        writer = pq.ParquetWriter(tmp, _schema(dim), store_schema=False)
        try:
            chunks = _pooled_chunks(plan, encoder, tally, chunk_size=chunk_size, **options)
            frame = _gather(
                chunks,
                dim,
                keep=len(plan.names) <= keep_vectors,
                write=lambda ids, vectors: writer.write_table(_table(ids, vectors, dim)),
            )
            counts = _counts(plan, tally, dim, encoder)
            meta = {"kind": plan.kind, "dim": dim, **encoder.info, **counts}
            writer.add_key_value_metadata({"urbangeo": json.dumps(meta)})
        finally:
            writer.close()
    return RegionEmbeddings(frame, dim, plan.kind, dict(encoder.info), counts)


def _gather(
    chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    dim: int,
    *,
    keep: bool,
    write: Callable[[np.ndarray, np.ndarray], object] | None = None,
) -> pd.DataFrame:
    """``region_id``, ``n_images`` (and with ``keep`` the vectors) of every chunk of regions,
    each non-empty chunk handed to ``write`` as it comes."""
    ids: list[np.ndarray] = []
    n_images: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    for chunk_ids, chunk_n, chunk_vectors in chunks:
        if write is not None and len(chunk_ids):
            write(chunk_ids, chunk_vectors)
        ids.append(chunk_ids)
        n_images.append(chunk_n)
        if keep:
            vectors.append(chunk_vectors)
    frame = pd.DataFrame({C.REGION_ID: [str(r) for r in np.concatenate(ids)] if ids else []})
    frame[N_IMAGES] = np.concatenate(n_images) if n_images else np.zeros(0, np.int64)
    if keep:
        values = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        frame = pd.concat([frame, pd.DataFrame(values, columns=vector_columns(dim))], axis=1)
    return frame


def _refuse_not_finite(bad: int, total: int, encoder: str) -> None:
    raise InputError(
        f"{bad:,} of {total:,} regions got embedding values that are not finite numbers "
        f"(NaN or infinity) from encoder {encoder}; nothing was written.",
        hint="The model's weights are broken, e.g. by a training run that diverged: train "
        "again with a lower --lr (and --overwrite), or embed with another --checkpoint.",
    )


def _schema(dim: int) -> pa.Schema:
    """``region_id`` (string) and ``e0..`` (float32): the columns of ``embeddings.parquet``."""
    return pa.schema(
        [(C.REGION_ID, pa.string())] + [(name, pa.float32()) for name in vector_columns(dim)]
    )


def _table(ids: Sequence[Any] | np.ndarray, vectors: np.ndarray, dim: int) -> pa.Table:
    """One row group of ``embeddings.parquet``."""
    columns = [pa.array([str(r) for r in ids], type=pa.string())]
    columns += [pa.array(vectors[:, i], type=pa.float32()) for i in range(dim)]
    return pa.Table.from_arrays(columns, schema=_schema(dim))


def write_parquet(emb: RegionEmbeddings, path: str | os.PathLike) -> Path:
    """``region_id, e0..`` as float32 to ``path`` (atomically), settings in the metadata;
    written in row groups of :data:`DEFAULT_CHUNK_SIZE` regions (no copy of the whole)."""
    path = Path(path)
    meta = {"kind": emb.kind, "dim": emb.dim, **emb.info, **emb.counts}
    ids = emb.frame[C.REGION_ID].astype(str).to_numpy()
    columns = emb.vector_columns
    with (
        atomic_path(path) as tmp,
        pq.ParquetWriter(tmp, _schema(emb.dim), store_schema=False) as writer,
    ):
        for start in range(0, max(len(ids), 1), DEFAULT_CHUNK_SIZE):
            rows = slice(start, start + DEFAULT_CHUNK_SIZE)
            vectors = emb.frame.iloc[rows].loc[:, columns].to_numpy(np.float32)
            writer.write_table(_table(ids[rows], vectors, emb.dim))
        writer.add_key_value_metadata({"urbangeo": json.dumps(meta)})
    return path


def read_parquet(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An ``embeddings.parquet`` and its ``urbangeo`` metadata."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(b"urbangeo", b"{}")
    return table.to_pandas(), json.loads(raw)


def region_layer(emb: RegionEmbeddings, regions: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Region polygons with ``n_images`` and the vector (columns, or JSON text if very wide;
    none when ``emb`` holds no vectors: a large run's are in ``embeddings.parquet``)."""
    return region_vector_layer(emb.frame, emb.dim, [N_IMAGES], regions, vectors=emb.has_vectors)


def vectors_elsewhere_note(emb: RegionEmbeddings, limit: int) -> str:
    """The layer description of a run whose layer holds no vectors."""
    return (
        f"Region polygons and n_images of {len(emb.frame):,} regions. The {emb.dim}-value "
        f"region embeddings are in {C.EMBEDDINGS_PARQUET} beside the GeoPackage (region_id, "
        f"e0..e{emb.dim - 1}): above {limit:,} regions the layer holds no vectors "
        "(embed --layer-vectors)."
    )


def region_polygons(gpkg: str | os.PathLike) -> gpd.GeoDataFrame:
    """``region_id`` and the polygons of the run's ``regions`` layer (its other columns are
    not read)."""
    from urbangeo.io.gpkg import list_layers, read_layer

    if C.LAYER_REGIONS not in list_layers(gpkg):
        return read_layer(gpkg, C.LAYER_REGIONS)  # its error names the command to run
    return gpd.read_file(gpkg, layer=C.LAYER_REGIONS, engine="pyogrio", columns=[C.REGION_ID])
