"""Region embeddings: a frozen image encoder, one vector per image, mean-pooled per region.

Every image with status ``ok`` in the run's ``images`` layer is encoded in batches (DataLoader
workers decode and preprocess, the encoder runs under ``torch.inference_mode``, with bf16
autocast on CUDA). A region's vector is the mean of its images' vectors (the paper's rule for
several street-view images per region); satellite and street-view images are pooled
separately, and ``concat`` joins the two vectors of regions that have both. Images that fail
to decode are skipped and counted; regions without a usable image are left out; vectors that
are not finite (NaN, infinity: a diverged model) are refused. Results:
``embeddings.parquet`` beside the GeoPackage (``region_id, e0 .. e{D-1}``, float32; the
settings in the file's metadata under ``urbangeo``) and the ``region_embeddings`` layer
(region polygons + ``n_images`` + the same vector columns, or one JSON text column
``embedding`` above :data:`MAX_VECTOR_COLUMNS` values), which QGIS opens like any polygon
layer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from urbangeo import constants as C
from urbangeo.errors import InputError
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
from urbangeo.progress import progress

N_IMAGES = "n_images"
#: Above this many vector columns the layer stores the vector as one JSON text column instead
#: (SQLite allows 2000 columns per table).
MAX_VECTOR_COLUMNS = 1900


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
    def vectors(self) -> np.ndarray:
        """``[regions, dim]`` float32."""
        return self.frame[self.vector_columns].to_numpy(np.float32)


def vector_columns(dim: int) -> list[str]:
    """The names of ``dim`` vector columns."""
    return [f"e{i}" for i in range(dim)]


def embed_images(
    encoder: ImageEncoder,
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    precision: str = "auto",
    task: str = "embed",
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[n, dim]`` (float32; NaN rows for images that failed) and the ok mask."""
    if batch_size < 1 or num_workers < 0:
        raise InputError("batch_size must be >= 1 and num_workers >= 0.")
    device = pick_device(str(device) if device is not None else None)
    dtype = resolve_precision(precision, device)
    encoder.to(device)
    if encoder.module is not None:
        encoder.module.eval()
    n = len(paths)
    features = np.full((n, encoder.dim), np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    loader = DataLoader(
        ImageDataset([str(p) for p in paths], encoder.transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
    )
    with torch.inference_mode(), progress(n, task=task, unit="img") as bar:
        for batch in loader:
            index = batch["index"].numpy()
            if len(index):
                images = batch["images"].to(device, non_blocking=True)
                with autocast(device, dtype):
                    out = encoder.encode(images)
                features[index] = out.float().cpu().numpy()
                ok[index] = True
            bar.update(len(index) + batch["failed"].numel())
    return features, ok


def pool_by_region(
    features: np.ndarray, region_ids: Sequence[Any], ok: np.ndarray | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean of the (ok) feature rows of each region: ids (sorted), ``[r, dim]``, counts."""
    features = np.asarray(features, dtype=np.float64)
    keep = np.ones(len(features), bool) if ok is None else np.asarray(ok, bool)
    ids = np.asarray([str(r) for r in region_ids], dtype=object)[keep]
    names, inverse = np.unique(ids, return_inverse=True)
    sums = np.zeros((len(names), features.shape[1]))
    np.add.at(sums, inverse, features[keep])
    counts = np.bincount(inverse, minlength=len(names))
    means = sums / np.maximum(counts, 1)[:, None]
    return [str(x) for x in names], means.astype(np.float32), counts


def _select_images(images: pd.DataFrame, kind: str) -> tuple[pd.DataFrame, str]:
    ok = images[(images[C.STATUS] == C.STATUS_OK) & images[C.REGION_ID].notna()]
    kinds = set(ok[C.KIND])
    if kind == "auto":
        kind = C.KIND_STREETVIEW if C.KIND_STREETVIEW in kinds else C.KIND_SATELLITE
    wanted = (C.KIND_SATELLITE, C.KIND_STREETVIEW) if kind == "concat" else (kind,)
    missing = [k for k in wanted if k not in kinds]
    if missing:
        raise InputError(
            f"No {' or '.join(missing)} images with status 'ok' and a region_id in the images "
            f"layer (kinds present: {', '.join(sorted(kinds)) or 'none'}).",
            hint="Fetch those images first (`urbangeo tiles` for satellite, `urbangeo streetview` "
            "for street view), or choose another --kind.",
        )
    return ok[ok[C.KIND].isin(wanted)].reset_index(drop=True), kind


def embed_regions(
    gpkg: str | os.PathLike,
    encoder: ImageEncoder,
    *,
    kind: str = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    precision: str = "auto",
) -> RegionEmbeddings:
    """Region vectors of a run: images of ``kind`` → ``encoder`` → mean per region.

    ``kind``: ``streetview``, ``satellite``, ``concat`` ([satellite, street-view] of regions
    that have both) or ``auto`` (street-view if the run has any, else satellite).
    """
    if kind not in EMBED_KINDS:
        raise InputError(f"kind must be one of {EMBED_KINDS}; got {kind!r}")
    images, kind = _select_images(read_image_rows(gpkg), kind)
    if encoder.fit is not None:
        encoder = encoder.fit(images[C.PATH].tolist())
    features, ok = embed_images(
        encoder,
        images[C.PATH].tolist(),
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        precision=precision,
    )
    failed = int((~ok).sum())
    if not ok.any():
        raise InputError(
            f"None of the {len(images)} images could be read.",
            hint="Check the files under images/ beside the GeoPackage.",
        )
    pooled: dict[str, pd.DataFrame] = {}
    for k in (C.KIND_SATELLITE, C.KIND_STREETVIEW):
        rows = (images[C.KIND] == k).to_numpy()
        if not rows.any():
            continue
        ids, means, n_rows = pool_by_region(features[rows], images.loc[rows, C.REGION_ID], ok[rows])
        frame = pd.DataFrame(means, columns=vector_columns(encoder.dim))
        frame.insert(0, N_IMAGES, n_rows.astype(np.int64))
        frame.insert(0, C.REGION_ID, ids)
        pooled[k] = frame
    if kind == "concat":
        sat, sv = pooled[C.KIND_SATELLITE], pooled[C.KIND_STREETVIEW]
        both = sat.merge(sv, on=C.REGION_ID, suffixes=("_sat", "_sv"))
        dim = 2 * encoder.dim
        vectors = np.hstack(
            [
                both[[f"{c}_sat" for c in vector_columns(encoder.dim)]].to_numpy(np.float32),
                both[[f"{c}_sv" for c in vector_columns(encoder.dim)]].to_numpy(np.float32),
            ]
        )
        frame = pd.DataFrame(vectors, columns=vector_columns(dim))
        frame.insert(0, N_IMAGES, (both["n_images_sat"] + both["n_images_sv"]).to_numpy())
        frame.insert(0, C.REGION_ID, both[C.REGION_ID].to_numpy())
    else:
        dim, frame = encoder.dim, pooled[kind]
    _check_finite(frame, dim, encoder.name)
    counts = {
        "images": len(images),
        "images_embedded": int(ok.sum()),
        "failed_images": failed,
        "regions": len(frame),
        "dim": dim,
    }
    return RegionEmbeddings(frame, dim, kind, dict(encoder.info), counts)


def _check_finite(frame: pd.DataFrame, dim: int, encoder: str) -> None:
    """Refuse region vectors holding NaN or infinity (a broken model): none is written."""
    finite = np.isfinite(frame[vector_columns(dim)].to_numpy(np.float64)).all(axis=1)
    if not finite.all():
        raise InputError(
            f"{int((~finite).sum()):,} of {len(finite):,} regions got embedding values that are "
            f"not finite numbers (NaN or infinity) from encoder {encoder}; nothing was written.",
            hint="The model's weights are broken, e.g. by a training run that diverged: train "
            "again with a lower --lr (and --overwrite), or embed with another --checkpoint.",
        )


def write_parquet(emb: RegionEmbeddings, path: str | os.PathLike) -> Path:
    """``region_id, e0..`` as float32 to ``path`` (atomically), settings in the metadata."""
    path = Path(path)
    columns: dict[str, Any] = {C.REGION_ID: pa.array(emb.frame[C.REGION_ID].astype(str))}
    vectors = emb.vectors
    for i, name in enumerate(emb.vector_columns):
        columns[name] = pa.array(vectors[:, i], type=pa.float32())
    meta = {"kind": emb.kind, "dim": emb.dim, **emb.info, **emb.counts}
    table = pa.table(columns).replace_schema_metadata({"urbangeo": json.dumps(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_parquet(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An ``embeddings.parquet`` and its ``urbangeo`` metadata."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(b"urbangeo", b"{}")
    return table.to_pandas(), json.loads(raw)


def region_layer(emb: RegionEmbeddings, regions: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Region polygons with ``n_images`` and the vector (columns, or JSON text if very wide)."""
    geo = regions[[C.REGION_ID, regions.geometry.name]].copy()
    geo[C.REGION_ID] = geo[C.REGION_ID].astype(str)
    frame = emb.frame
    if emb.dim > MAX_VECTOR_COLUMNS:
        vectors = emb.vectors
        frame = frame[[C.REGION_ID, N_IMAGES]].copy()
        # 9 significant digits: float32 values survive the text round trip exactly
        frame["embedding"] = ["[" + ",".join(f"{x:.9g}" for x in row) + "]" for row in vectors]
    merged = geo.merge(frame, on=C.REGION_ID, how="inner")
    return gpd.GeoDataFrame(merged, geometry=regions.geometry.name, crs=regions.crs)
