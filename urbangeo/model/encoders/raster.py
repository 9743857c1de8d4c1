"""Encoder ``raster``: a multi-band embedding raster aggregated to each region (no torch).

``urbangeo embed --encoder raster --raster FILE [--product aef|tessera|generic]`` reads any
raster GDAL reads (GeoTIFF, COG, a VRT of tiles), in any CRS, one band per embedding
dimension. A region's vector is the mean over its pixels: the pixels whose centres fall in
the region polygon (a centre exactly on the border between two regions counts in one of them),
less those without data; then the product's own post-processing:

=========  =====================================================================================
product    values, nodata and post-processing
=========  =====================================================================================
aef        AlphaEarth Foundations / Google Satellite Embedding (64 bands A00..A63). int8 COGs
           are de-quantised as sign(x)·(|x|/127.5)², -128 is nodata (in every band); float
           rasters (an Earth Engine export) are taken as they are. Its pixel vectors have unit
           length, so the region's mean is re-normalised to unit length (as Google builds the
           COGs' overviews).
tessera    TESSERA (128 bands). Its tiles are int8 with a separate per-pixel float32 scale
           (value = int8 × scale); geotessera de-quantises them when it exports GeoTIFFs,
           float32 with NaN where there is no data. That GeoTIFF (or a mosaic or VRT of them)
           is read: NaN and the file's nodata are no data; the mean is kept as it is (the
           vectors are not documented as unit length). An int8 raster is refused: its scales
           are not in it.
generic    any bands as they are: the file's nodata, masks and non-finite values are no data;
           the plain mean.
=========  =====================================================================================

A pixel holds data when every band does. ``valid_share`` is the share of the region's pixel
centres that hold data (centres outside the raster count as without data); a region with none
gets ``valid_share`` 0 and an all-zero vector. A region too small to hold a pixel centre takes
the pixel under a point inside it.

Memory stays bounded whatever the raster's size: the region polygons are reprojected to the
raster's CRS (densified first; the raster is never warped), the raster's pixel grid is cut into
chunks of about :data:`CHUNK_VALUES` values, and each chunk that regions touch is read once,
only over the regions' extent within it (a COG's blocks decoded on :func:`free_cores` threads);
the pixel centres are tested against the polygons with shapely, vectorised, and per-region sums
accumulate across chunks (in float64). GDAL's block cache is capped at
:data:`GDAL_CACHE_BYTES` while aggregating (GDAL takes the cap when the process reads its
first raster, as ``urbangeo embed`` does here; otherwise its default, 5% of the memory).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
import shapely
from pyproj import CRS
from rasterio.enums import ColorInterp, MaskFlags

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.raster import open_raster
from urbangeo.model.encoders.region_encoder import (
    N_PIXELS,
    VALID_SHARE,
    RegionEncoder,
    RegionVectors,
    unit_rows,
    vectors_frame,
)
from urbangeo.model.threads import free_cores
from urbangeo.progress import message, progress

if TYPE_CHECKING:
    from urbangeo.settings import EmbedSettings

#: Values (bands × pixels) read at once, at most: 16 Mi, 16 MB of int8 or 64 MB of float32.
CHUNK_VALUES = 1 << 24
#: Fewer bands than this is not an embedding (unless ``--product generic``).
MIN_BANDS = 8
#: GDAL's block cache while aggregating, at least (its default is 5% of the machine's
#: memory); four blocks of all bands when that is more, so that a pixel-interleaved block is
#: decoded once for all its bands.
GDAL_CACHE_BYTES = 64 * 1024 * 1024
AEF_NODATA = -128
#: Rows and columns of a chunk, at most (few-band rasters).
MAX_SIDE = 1024
#: Pixel centres tested against the regions at once, at most (per batch of a chunk).
CANDIDATES = 1 << 20
#: Values converted to float64 at once when adding pixels up (8 MB).
PIECE_VALUES = 1 << 20
#: Shift of the pixel centres, in pixels: breaks ties on the border between two regions.
NUDGE = 1e-6


@dataclass(frozen=True)
class Product:
    """What an embedding product stores and how its region means are finished."""

    name: str
    title: str
    bands: int | None
    normalise: bool
    attribution: str | None
    licence: str | None
    #: How int8 bands are read: "dequantise" (AlphaEarth), "refuse" (TESSERA) or "as-is".
    int8: str
    #: Whether integer types other than int8 are accepted.
    integers: bool


PRODUCTS: dict[str, Product] = {
    "aef": Product(
        "aef",
        "AlphaEarth Foundations Satellite Embedding",
        64,
        True,
        "The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and "
        "Google DeepMind.",
        "CC-BY-4.0",
        "dequantise",
        False,
    ),
    "tessera": Product(
        "tessera",
        "TESSERA embeddings",
        128,
        False,
        "TESSERA embeddings, University of Cambridge (https://arxiv.org/abs/2506.20380).",
        "CC-BY-4.0",
        "refuse",
        False,
    ),
    "generic": Product("generic", "embedding raster", None, False, None, None, "as-is", True),
}


def aef_dequantise(values: np.ndarray) -> np.ndarray:
    """AlphaEarth's int8 values as floats in [-1, 1]: sign(x)·(|x|/127.5)² (-128 is nodata)."""
    x = np.asarray(values, dtype=np.float64)
    return np.sign(x) * (x / 127.5) ** 2


def _int8_table(product: Product) -> np.ndarray:
    """Float value of each int8 code, indexed by the code's uint8 view."""
    codes = np.arange(256, dtype=np.uint8).view(np.int8)
    if product.int8 == "dequantise":
        return aef_dequantise(codes)
    return codes.astype(np.float64)


class RasterProductEncoder(RegionEncoder, name="raster"):
    """The mean of an embedding raster's pixels in each region; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        product: str = "aef",
        attribution: str | None = None,
        chunk_values: int = CHUNK_VALUES,
    ) -> None:
        if product not in PRODUCTS:
            raise InputError(
                f"Unknown raster product {product!r}.",
                hint=f"Choose one of: {', '.join(PRODUCTS)}.",
            )
        self.path = Path(path)
        self.product = PRODUCTS[product]
        self.attribution = attribution or self.product.attribution
        self.ds = open_raster(self.path, formats="a GeoTIFF, COG, VRT or any raster GDAL reads")
        try:
            self._check()
        except InputError:
            self.ds.close()
            raise
        ds = self.ds
        self.dtype = np.dtype(ds.dtypes[0]) if len(set(ds.dtypes)) == 1 else np.dtype("float64")
        self.table = _int8_table(self.product) if self.dtype == np.int8 else None
        self.nodata = [v for v in set(ds.nodatavals) if v is not None]
        if self.dtype == np.int8 and self.product.int8 == "dequantise":
            self.nodata = sorted({*self.nodata, AEF_NODATA})
        flags = {f for band in ds.mask_flag_enums for f in band}
        self.masked = bool(flags & {MaskFlags.per_dataset, MaskFlags.alpha})
        block_rows, block_cols = ds.block_shapes[0] if ds.block_shapes else (256, 256)
        side = max(64, min(MAX_SIDE, int(math.sqrt(max(1, chunk_values) / ds.count))))
        # whole blocks per chunk where blocks are smaller than a chunk (tiles, not strips)
        self.chunk = (_aligned(side, block_rows), _aligned(side, block_cols))
        block_bytes = block_rows * block_cols * ds.count * self.dtype.itemsize
        self.cache_bytes = max(GDAL_CACHE_BYTES, 4 * block_bytes)

    @classmethod
    def from_settings(cls, s: EmbedSettings) -> RasterProductEncoder:
        """``--raster``, ``--product`` and ``--attribution`` of the embed stage."""
        return cls(cls.product_file(s, "raster"), product=s.product, attribution=s.attribution)

    def _check(self) -> None:
        """Refuse a raster without a CRS, or one that is not an embedding of the product."""
        ds, spec = self.ds, self.product
        if ds.crs is None:
            raise InputError(
                f"Raster {self.path} has no CRS, so it cannot be placed on the grid.",
                hint="Assign its CRS first, e.g. `gdal_edit.py -a_srs EPSG:32635 FILE.tif`.",
            )
        if spec.name == "generic":
            return
        dtypes = {np.dtype(d) for d in ds.dtypes}
        colour = {ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha}
        palette = ColorInterp.palette in set(ds.colorinterp)
        floats = all(d.kind == "f" for d in dtypes)
        int8 = dtypes == {np.dtype(np.int8)}
        problem = None
        if ds.count < MIN_BANDS:
            problem = f"{ds.count} band(s); an embedding has dozens (here {spec.bands})"
        elif palette or len(colour & set(ds.colorinterp)) >= 3:
            problem = "colour bands (red, green, blue or a palette)"
        elif int8 and spec.int8 == "refuse":
            raise InputError(
                f"{self.path} holds int8 values: TESSERA's quantised tiles need their separate "
                "scales file, which a raster does not carry.",
                hint="Export de-quantised float32 GeoTIFFs with geotessera (`geotessera download "
                "--format tiff`) and give one of them, or a VRT of them.",
            )
        elif not (floats or int8 or spec.integers):
            kinds = ", ".join(sorted(str(d) for d in dtypes))
            problem = f"{kinds} values; {spec.title} rasters hold int8 or floats"
        if problem:
            raise InputError(
                f"{self.path} does not look like {spec.title} ({problem}).",
                hint="Give the product's own raster, or pass --product generic to average any "
                "raster's bands as they are.",
            )
        if spec.bands and ds.count != spec.bands:
            message(
                f"{self.path.name} has {ds.count} bands; {spec.title} has {spec.bands}. "
                "Each band is taken as one dimension.",
                level="warning",
            )

    # --- regions in the raster's pixel grid --------------------------------------------------

    def _to_raster(self, regions: gpd.GeoDataFrame) -> np.ndarray:
        """The region polygons in the raster's CRS (densified first when the CRS differ)."""
        if regions.crs is None:
            raise InputError("The regions layer has no CRS.", hint="Recreate it with grid.")
        geoms = np.asarray(regions.geometry.values, dtype=object)
        raster_crs = CRS.from_user_input(self.ds.crs.to_wkt())
        if CRS.from_user_input(regions.crs).equals(raster_crs, ignore_axis_order=True):
            return geoms
        # Straight edges become curves: add vertices every eighth of a typical region's side.
        side = float(np.sqrt(np.nanmedian(shapely.area(geoms)))) if len(geoms) else 0.0
        if side > 0:
            geoms = shapely.segmentize(geoms, side / 8)
        moved = gpd.GeoSeries(geoms, crs=regions.crs).to_crs(raster_crs)
        return np.asarray(moved.values, dtype=object)

    def coverage(self, geoms: np.ndarray) -> tuple[float, int]:
        """Share of the regions' area inside the raster's extent, and regions touching it."""
        ds = self.ds
        corners = [
            ds.transform @ (float(c), float(r))
            for c, r in ((0, 0), (ds.width, 0), (ds.width, ds.height), (0, ds.height))
        ]
        footprint = shapely.Polygon(corners)
        shapely.prepare(footprint)
        areas = shapely.area(geoms)
        inside = areas.copy()
        partly = ~shapely.contains(footprint, geoms)  # intersections only where needed
        inside[partly] = shapely.area(shapely.intersection(geoms[partly], footprint))
        total = float(np.nansum(areas))
        share = float(np.nansum(inside)) / total if total > 0 else 0.0
        touching = int(np.count_nonzero(inside > 0))
        return share, touching

    def _check_coverage(self, geoms: np.ndarray, regions: gpd.GeoDataFrame) -> float:
        share, touching = self.coverage(geoms)
        if touching == 0:
            raster_ll = rasterio.warp.transform_bounds(self.ds.crs, C.WGS84, *self.ds.bounds)
            grid_ll = regions.to_crs(C.WGS84).total_bounds
            raise InputError(
                f"Raster {self.path} covers none of the {len(geoms):,} regions (0% of their area).",
                hint=f"The raster covers {_fmt(raster_ll)} and the regions {_fmt(grid_ll)} "
                "(lon/lat). Give a raster of the study area, or check the raster's CRS.",
            )
        if share < 0.9995:
            message(
                f"Raster {self.path.name} covers {100 * share:.1f}% of the regions' area "
                f"({touching:,} of {len(geoms):,} regions touch it); the rest has no data "
                "(valid_share below 1, or 0 with a zero vector).",
                level="warning",
            )
        return share

    def _windows(self, geoms: np.ndarray) -> np.ndarray:
        """Per region: first and last row and column of the pixel centres in its bounds (on
        the raster's pixel grid, extended beyond the raster); rows ``[r0, r1, c0, c1]``."""
        bounds = shapely.bounds(geoms)
        inverse = ~self.ds.transform
        xs = bounds[:, [0, 2, 2, 0]]
        ys = bounds[:, [1, 1, 3, 3]]
        cols = inverse.a * xs + inverse.b * ys + inverse.c
        rows = inverse.d * xs + inverse.e * ys + inverse.f
        out = np.tile(np.array([0, -1, 0, -1], dtype=np.int64), (len(geoms), 1))
        ok = np.isfinite(bounds).all(axis=1)  # empty geometries have NaN bounds
        out[ok, 0] = np.ceil(rows[ok].min(axis=1) - 0.5)
        out[ok, 1] = np.floor(rows[ok].max(axis=1) - 0.5)
        out[ok, 2] = np.ceil(cols[ok].min(axis=1) - 0.5)
        out[ok, 3] = np.floor(cols[ok].max(axis=1) - 0.5)
        return out

    # --- reading -----------------------------------------------------------------------------

    def _read(self, row0: int, row1: int, col0: int, col1: int) -> tuple[np.ndarray, np.ndarray]:
        """Bands and validity of pixel rows ``row0..row1-1``, columns ``col0..col1-1``."""
        window = rasterio.windows.Window(col0, row0, col1 - col0, row1 - row0)
        data = self.ds.read(window=window, out_dtype=self.dtype)
        valid = np.ones(data.shape[1:], dtype=bool)
        for value in self.nodata:
            if not _representable(value, data.dtype):
                continue  # NaN (caught below), or a value this type cannot hold
            valid &= (data != np.asarray(value).astype(data.dtype)).all(axis=0)
        if data.dtype.kind == "f":
            valid &= np.isfinite(data).all(axis=0)
        if self.masked:
            valid &= self.ds.read_masks(1, window=window) > 0
        return data, valid

    def _accumulate(
        self,
        data: np.ndarray,
        index: np.ndarray,
        labels: np.ndarray,
        ids: np.ndarray,
        sums: np.ndarray,
        counts: np.ndarray,
    ) -> None:
        """Add the pixels ``index`` (flat, into ``data``'s rows and columns) to the sums of
        regions ``ids[labels]``; ``labels`` come in runs (each region's pixels together)."""
        if not len(index):
            return
        flat = data.reshape(data.shape[0], -1)
        counts[ids] += np.bincount(labels, minlength=len(ids))
        step = max(1, PIECE_VALUES // data.shape[0])
        for start in range(0, len(index), step):
            part, lab = index[start : start + step], labels[start : start + step]
            # [bands, pixels], row by row in memory (fancy indexing alone gives columns, and
            # reduceat along rows is then 20 times slower)
            values = np.ascontiguousarray(flat[:, part])
            if self.table is not None:
                values = self.table[values.view(np.uint8)]
            else:
                values = values.astype(np.float64, copy=False)
            runs = np.concatenate([[0], np.flatnonzero(np.diff(lab)) + 1])
            # one run per region within this piece: plain indexing adds each region once
            sums[ids[lab[runs]]] += np.add.reduceat(values, runs, axis=1).T

    def encode(self, regions: gpd.GeoDataFrame) -> RegionVectors:
        """The mean vector, ``valid_share`` and ``n_pixels`` of every region."""
        geoms = self._to_raster(regions)
        share = self._check_coverage(geoms, regions)
        n, bands = len(geoms), self.ds.count
        sums = np.zeros((n, bands), dtype=np.float64)
        valid_n = np.zeros(n, dtype=np.int64)
        total_n = np.zeros(n, dtype=np.int64)
        windows = self._windows(geoms)
        chunks = self._chunks(windows)
        shapely.prepare(geoms)
        threads = free_cores()
        with rasterio.Env(GDAL_CACHEMAX=self.cache_bytes, GDAL_NUM_THREADS=threads):
            with progress(len(chunks), task="embed", unit="block") as bar:
                for key, members in chunks.items():
                    self._chunk(key, np.asarray(members), geoms, windows, sums, valid_n, total_n)
                    bar.update(1)
            self._centre_pixels(np.flatnonzero(total_n == 0), geoms, sums, valid_n, total_n)
        has = valid_n > 0
        vectors = np.zeros((n, bands), dtype=np.float64)
        vectors[has] = sums[has] / valid_n[has, None]
        if self.product.normalise:
            vectors = unit_rows(vectors)
        valid_share = valid_n / np.maximum(total_n, 1)
        frame = vectors_frame(
            regions[C.REGION_ID].tolist(),
            vectors,
            {VALID_SHARE: valid_share.astype(np.float64), N_PIXELS: valid_n},
        )
        spec = self.product
        title = spec.title if spec.name != "generic" else f"embedding raster {self.path.name}"
        abstract = (
            f"Region embeddings: per region, the mean of the {spec.title} pixels whose centres "
            "fall in it"
            + (", re-normalised to unit length" if spec.normalise else "")
            + f" ({bands} values, e0..e{bands - 1}); valid_share: share of its pixels with "
            "data (0: no data, an all-zero vector left out of predict and cluster)."
        )
        info = {
            "encoder": self.name,
            "product": spec.name,
            "raster": str(self.path.resolve()),
            "raster_crs": CRS.from_user_input(self.ds.crs.to_wkt()).to_string(),
            "raster_dtype": str(self.dtype),
            "normalised": spec.normalise,
            "coverage": round(share, 6),
        }
        counts = {
            "regions": n,
            "regions_empty": int((~has).sum()),
            "regions_partial": int(((valid_share > 0) & (valid_share < 1)).sum()),
            "pixels": int(valid_n.sum()),
            "dim": bands,
        }
        quality = (VALID_SHARE, N_PIXELS)
        return RegionVectors(
            frame, bands, quality, title, abstract, self.attribution, spec.licence, info, counts
        )

    def _chunks(self, windows: np.ndarray) -> dict[tuple[int, int], list[int]]:
        """Chunk (row, column) of the pixel grid → the regions with pixel centres in it, in
        reading order."""
        rows, cols = self.chunk
        out: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (r0, r1, c0, c1) in enumerate(windows.tolist()):
            if r1 < r0 or c1 < c0:
                continue  # no pixel centre inside its bounds: see _centre_pixels
            for cr in range(r0 // rows, r1 // rows + 1):
                for cc in range(c0 // cols, c1 // cols + 1):
                    out[(cr, cc)].append(i)
        return dict(sorted(out.items()))

    def _chunk(
        self,
        key: tuple[int, int],
        members: np.ndarray,
        geoms: np.ndarray,
        windows: np.ndarray,
        sums: np.ndarray,
        valid_n: np.ndarray,
        total_n: np.ndarray,
    ) -> None:
        """Aggregate one chunk: read it over its regions' extent, test the pixel centres
        against each region (vectorised), add them up."""
        rows, cols = self.chunk
        w = windows[members].copy()
        np.maximum(w[:, 0], key[0] * rows, out=w[:, 0])
        np.minimum(w[:, 1], key[0] * rows + rows - 1, out=w[:, 1])
        np.maximum(w[:, 2], key[1] * cols, out=w[:, 2])
        np.minimum(w[:, 3], key[1] * cols + cols - 1, out=w[:, 3])
        # the part of the chunk inside the raster, read once
        rr0, rr1 = max(int(w[:, 0].min()), 0), min(int(w[:, 1].max()) + 1, self.ds.height)
        cc0, cc1 = max(int(w[:, 2].min()), 0), min(int(w[:, 3].max()) + 1, self.ds.width)
        read = self._read(rr0, rr1, cc0, cc1) if rr1 > rr0 and cc1 > cc0 else None
        sizes = (w[:, 1] - w[:, 0] + 1) * (w[:, 3] - w[:, 2] + 1)
        # in batches of at most CANDIDATES pixel centres (many overlapping regions)
        batch, start = [], 0
        for k, size in enumerate(sizes.tolist()):
            batch.append(k)
            if start + size >= CANDIDATES or k == len(sizes) - 1:
                ks = np.asarray(batch)
                inside, label, row, col = self._centres(geoms[members[ks]], w[ks], sizes[ks])
                total_n[members[ks]] += np.bincount(label[inside], minlength=len(ks))
                if read is not None:
                    data, valid = read
                    row, col, label = row[inside], col[inside], label[inside]
                    keep = (row >= rr0) & (row < rr1) & (col >= cc0) & (col < cc1)
                    flat = (row[keep] - rr0) * (cc1 - cc0) + (col[keep] - cc0)
                    label = label[keep]
                    ok = valid.ravel()[flat]
                    self._accumulate(data, flat[ok], label[ok], members[ks], sums, valid_n)
                batch, start = [], 0
            else:
                start += size

    def _centres(
        self, geoms: np.ndarray, w: np.ndarray, sizes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every pixel centre of each window ``w`` (rows ``[r0, r1, c0, c1]``): whether it
        falls in that window's region, the region's position, and the centre's row and
        column. Centres are nudged by :data:`NUDGE` of a pixel so that one exactly on the
        border between two regions falls in one of them, not in both nor in neither."""
        label = np.repeat(np.arange(len(geoms)), sizes)
        offset = np.arange(len(label)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        width = (w[:, 3] - w[:, 2] + 1)[label]
        row = w[label, 0] + offset // width
        col = w[label, 2] + offset % width
        t = self.ds.transform
        x = col + (0.5 + NUDGE)
        y = row + (0.5 + NUDGE)
        xs = t.a * x + t.b * y + t.c
        ys = t.d * x + t.e * y + t.f
        inside = shapely.contains_xy(geoms[label], xs, ys)
        return inside, label, row, col

    def _centre_pixels(
        self,
        small: np.ndarray,
        geoms: np.ndarray,
        sums: np.ndarray,
        valid_n: np.ndarray,
        total_n: np.ndarray,
    ) -> None:
        """Regions holding no pixel centre take the pixel under a point inside them."""
        if not len(small):
            return
        points = shapely.point_on_surface(geoms[small])
        inverse = ~self.ds.transform
        for i, point in zip(small.tolist(), points, strict=True):
            if point is None or point.is_empty:
                continue
            col, row = (math.floor(v) for v in inverse @ (point.x, point.y))
            total_n[i] = 1
            if 0 <= row < self.ds.height and 0 <= col < self.ds.width:
                data, valid = self._read(row, row + 1, col, col + 1)
                if valid[0, 0]:
                    index = np.zeros(1, dtype=np.int64)
                    self._accumulate(data, index, index, np.array([i]), sums, valid_n)

    def close(self) -> None:
        """Close the raster."""
        self.ds.close()


def aggregate_raster(
    regions: gpd.GeoDataFrame,
    raster: str | os.PathLike,
    *,
    product: str = "aef",
    attribution: str | None = None,
    **kwargs: Any,
) -> RegionVectors:
    """One vector per region from ``raster`` (see the module docstring)."""
    encoder = RasterProductEncoder(raster, product=product, attribution=attribution, **kwargs)
    try:
        return encoder.encode(regions)
    finally:
        encoder.close()


def _aligned(side: int, block: int) -> int:
    """``side`` rounded down to whole blocks, or ``side`` itself for blocks larger than it."""
    return side // block * block if block <= side else side


def _representable(value: float, dtype: np.dtype) -> bool:
    """Whether the nodata ``value`` is a value of ``dtype`` (NaN is handled apart)."""
    if math.isnan(value):
        return False
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    return True


def _fmt(b: Any) -> str:
    return ",".join(f"{float(v):.5f}" for v in b)
