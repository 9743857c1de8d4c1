"""Overhead images per region: from a GeoTIFF/COG, an XYZ tile service, or rendered OSM data.

Every source implements :class:`TileSource`: given the regions' squares (in the grid's CRS) it
yields one image per square, warped so that the image covers exactly that square, north up,
``size`` × ``size`` pixels; or the reason there is none.

- :class:`RasterSource`: a windowed read of the square's extent (decimated on read, so a COG's
  overviews serve coarse tiles), then ``rasterio.warp.reproject`` into a destination grid that
  is exactly the square. Any raster CRS.
- :class:`XyzSource`: the web-mercator tiles covering the square at one zoom level, fetched
  concurrently (cached on disk), mosaicked and warped the same way.
- :class:`urbangeo.imagery.render.OsmRenderSource`: map tiles drawn from an OSM extract.

A square that has data for less than ``min_valid`` of its area (default half; nodata, outside
the raster, missing tiles) is reported as missing, not drawn.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import mercantile
import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
from PIL import Image
from pyproj import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.transform import Affine, from_bounds, from_origin
from rasterio.vrt import WarpedVRT

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.http import HttpClient, HttpError, redact_url
from urbangeo.io.files import sha256_bytes, write_bytes_atomic

#: A square with data on less than this share of its area is reported missing.
DEFAULT_MIN_VALID = 0.5
RESAMPLING = ("nearest", "bilinear", "cubic", "average", "lanczos")
DEFAULT_RESAMPLING = "bilinear"
#: Block shape (rows, columns) of GDAL's warped VRTs.
WARPED_BLOCK = (128, 512)
#: Read rasters at about this many source pixels per output pixel before warping.
OVERSAMPLE = 2
#: Web-mercator tile size assumed for choosing a zoom level when the provider does not say.
TILE_PX = 256
EARTH_CIRCUMFERENCE_M = 2 * math.pi * 6378137.0
TILE_CACHE_DIR = f"{C.IMAGES_DIR}/.tilecache"
KEY_PLACEHOLDERS = ("apikey", "api_key", "accessToken", "access_token", "key", "token")


@dataclass(frozen=True)
class Tile:
    """One region's image (``image``: H × W × 3 or H × W uint8) or why there is none."""

    status: str
    image: np.ndarray | None = None
    reason: str = ""


class TileSource(Protocol):
    """Where overhead images come from."""

    #: What the manifest's ``source`` column says (never holds a secret).
    source: str

    def params(self) -> dict:
        """Settings that decide what the images look like (recorded with the stage)."""
        ...

    def tiles(self, bounds: np.ndarray, size: int) -> Iterator[tuple[int, Tile]]:
        """(index into ``bounds``, tile) for each square (rows of minx, miny, maxx, maxy)."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...


def lattice_step(bounds: np.ndarray) -> float | None:
    """The side of the squares if they are all equal and on one lattice (a grid), else None."""
    bounds = np.asarray(bounds, dtype=float).reshape(-1, 4)
    if len(bounds) == 0:
        return None
    widths = bounds[:, 2] - bounds[:, 0]
    heights = bounds[:, 3] - bounds[:, 1]
    cell = float(widths[0])
    tol = 1e-6 * cell
    if not (
        np.allclose(widths, cell, rtol=0, atol=tol) and np.allclose(heights, cell, rtol=0, atol=tol)
    ):
        return None
    corners = (bounds[:, :2] - bounds[0, :2]) / cell
    return cell if np.allclose(corners, np.round(corners), rtol=0, atol=1e-6) else None


def _resampling(name: str) -> Resampling:
    if name not in RESAMPLING:
        raise InputError(
            f"Unknown resampling {name!r}.", hint=f"Choose one of: {', '.join(RESAMPLING)}."
        )
    return Resampling[name]


def _square_transform(bounds: np.ndarray, size: int) -> Affine:
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    return from_bounds(minx, miny, maxx, maxy, size, size)


def _warp_rgba(
    data: np.ndarray,
    valid: np.ndarray,
    src_transform: Affine,
    src_crs: object,
    bounds: np.ndarray,
    grid_crs: object,
    size: int,
    resampling: Resampling,
    min_valid: float,
) -> Tile:
    """Warp uint8 bands (B × h × w) with a validity mask into the square; check coverage."""
    bands = data.shape[0]
    source = np.concatenate([data, (valid > 0).astype(np.uint8)[None] * 255], axis=0)
    out = np.zeros((bands + 1, size, size), dtype=np.uint8)
    rasterio.warp.reproject(
        source=source,
        destination=out,
        src_transform=src_transform,
        src_crs=src_crs,
        dst_transform=_square_transform(bounds, size),
        dst_crs=grid_crs,
        src_alpha=bands + 1,
        dst_alpha=bands + 1,
        resampling=resampling,
    )
    return _finish(out[:bands], out[bands] >= 128, min_valid)


def _finish(data: np.ndarray, valid: np.ndarray | None, min_valid: float) -> Tile:
    """A tile from uint8 bands (B × H × W) and where they are valid; missing if mostly not."""
    if valid is not None:
        share = float(np.count_nonzero(valid)) / valid.size
        if share < min_valid:
            return Tile(
                C.STATUS_MISSING,
                reason=f"only {share:.0%} of the region has image data "
                f"(at least {min_valid:.0%} needed)",
            )
        if share < 1:
            data = data.copy()
            data[:, ~valid] = 0  # nodata is black
    if data.shape[0] == 1:
        return Tile(C.STATUS_OK, np.ascontiguousarray(data[0]))
    return Tile(C.STATUS_OK, np.ascontiguousarray(np.moveaxis(data, 0, -1)))


# --- GeoTIFF / COG ------------------------------------------------------------------------------
class RasterSource:
    """Images cut from a raster file GDAL reads (GeoTIFF, COG, VRT...), any CRS.

    ``bands``: 1-based band numbers, three for RGB or one for grey (default: 1,2,3 when the
    raster has three bands or more, else 1; a one-band raster with a colour table is drawn in
    its colours). Bands that are not 8-bit are stretched linearly between their 2nd and 98th
    percentiles (computed once, on a decimated read of the whole raster).

    Each square is read by the cheapest exact method: a resampled windowed read (GDAL picks a
    COG's overviews) when the raster is north-up in the grid's CRS and holds the whole square;
    else a windowed read of the square's footprint and ``rasterio.warp.reproject`` into the
    square. ``workers`` threads read at once, each with its own dataset handle.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        grid_crs: object,
        bands: tuple[int, ...] | None = None,
        resampling: str = DEFAULT_RESAMPLING,
        min_valid: float = DEFAULT_MIN_VALID,
        workers: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"Raster {self.path} does not exist.", hint="Check the --raster path.")
        try:
            self.ds = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(
                f"Cannot read raster {self.path}: {exc}",
                hint="Give a GeoTIFF, COG or any raster GDAL reads.",
            ) from exc
        if self.ds.crs is None:
            self.ds.close()
            raise InputError(
                f"Raster {self.path} has no CRS, so it cannot be placed on the grid.",
                hint="Assign its CRS first, e.g. `gdal_edit.py -a_srs EPSG:32635 FILE.tif` or "
                "`rio edit-info --crs EPSG:32635 FILE.tif`.",
            )
        self.grid_crs = CRS.from_user_input(grid_crs)
        self.resampling_name = resampling
        self.resampling = _resampling(resampling)
        self.min_valid = min_valid
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.bands = self._choose_bands(bands)
        self.colormap = None
        if len(self.bands) == 1:
            try:
                self.colormap = self.ds.colormap(self.bands[0])
            except ValueError:
                self.colormap = None
        self.stretch = self._stretch()
        t = self.ds.transform
        self.direct = (
            CRS.from_user_input(self.ds.crs.to_wkt()).equals(self.grid_crs, ignore_axis_order=True)
            and t.b == 0
            and t.d == 0
            and t.a > 0
            and t.e < 0
        )
        # No mask to read when every pixel is valid (no nodata, alpha or mask; no NaN).
        floats = any(np.dtype(self.ds.dtypes[b - 1]).kind == "f" for b in self.bands)
        self.all_valid = not floats and all(
            self.ds.mask_flag_enums[b - 1] == [MaskFlags.all_valid] for b in self.bands
        )
        self._local = threading.local()
        self._vrt: tuple | None = None
        self._handles: list = []
        self._handles_lock = threading.Lock()
        self.source = f"raster:{self.path.resolve()}"

    def _choose_bands(self, bands: tuple[int, ...] | None) -> tuple[int, ...]:
        count = self.ds.count
        if bands is None:
            return (1, 2, 3) if count >= 3 else (1,)
        bands = tuple(int(b) for b in bands)
        if len(bands) not in (1, 3) or any(b < 1 or b > count for b in bands):
            raise InputError(
                f"Bands {','.join(map(str, bands))} cannot make an image of {self.path} "
                f"({count} band{'s' if count != 1 else ''}).",
                hint=f"Give three band numbers for RGB or one for grey, from 1 to {count} "
                "(e.g. --bands 1,2,3 or --bands 1).",
            )
        return bands

    def _stretch(self) -> list[tuple[float, float]] | None:
        dtypes = {self.ds.dtypes[b - 1] for b in self.bands}
        if dtypes == {"uint8"}:
            return None
        scale = max(1.0, max(self.ds.width, self.ds.height) / 1024)
        shape = (
            len(self.bands),
            max(1, round(self.ds.height / scale)),
            max(1, round(self.ds.width / scale)),
        )
        data = self.ds.read(self.bands, out_shape=shape, masked=True).astype("float64")
        limits = []
        for band in data:
            values = band.compressed()
            values = values[np.isfinite(values)]
            if values.size == 0:
                limits.append((0.0, 1.0))
                continue
            low, high = np.percentile(values, [2, 98])
            limits.append((float(low), float(high) if high > low else float(low) + 1.0))
        return limits

    def params(self) -> dict:
        """Settings that decide the images."""
        return {
            "source": self.source,
            "bands": list(self.bands),
            "resampling": self.resampling_name,
            "min_valid": self.min_valid,
        }

    def check_overlap(self, bounds: np.ndarray) -> None:
        """Fail clearly when no square meets the raster."""
        left, bottom, right, top = self.ds.bounds
        grid = rasterio.warp.transform_bounds(
            self.grid_crs,
            self.ds.crs,
            bounds[:, 0].min(),
            bounds[:, 1].min(),
            bounds[:, 2].max(),
            bounds[:, 3].max(),
            densify_pts=21,
        )
        if grid[0] >= right or grid[2] <= left or grid[1] >= top or grid[3] <= bottom:
            raster_ll = rasterio.warp.transform_bounds(self.ds.crs, C.WGS84, *self.ds.bounds)
            grid_ll = rasterio.warp.transform_bounds(self.ds.crs, C.WGS84, *grid)
            raise InputError(
                f"Raster {self.path} does not overlap the grid.",
                hint=f"The raster covers {_fmt_bounds(raster_ll)} and the regions cover "
                f"{_fmt_bounds(grid_ll)} (lon/lat). Give a raster of the study area, or check "
                "that the raster's CRS is right.",
            )

    def _dataset(self) -> rasterio.io.DatasetReader:
        """This thread's own handle on the raster (GDAL handles are not thread-safe)."""
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = self._local.ds = rasterio.open(self.path)
            with self._handles_lock:
                self._handles.append(ds)
        return ds

    def _direct(self, ds, b: np.ndarray, size: int) -> Tile | None:
        """A resampled read of the square itself; None if it is not wholly inside."""
        window = rasterio.windows.from_bounds(*(float(v) for v in b), transform=ds.transform)
        eps = 1e-6
        if (
            window.col_off < -eps
            or window.row_off < -eps
            or window.col_off + window.width > ds.width + eps
            or window.row_off + window.height > ds.height + eps
        ):
            return None
        data = ds.read(
            self.bands,
            window=window,
            out_shape=(len(self.bands), size, size),
            resampling=self.resampling,
        )
        valid = None
        if not self.all_valid:
            valid = ds.read_masks(
                self.bands[0],
                window=window,
                out_shape=(size, size),
                resampling=Resampling.nearest,
            )
        data, valid = self._to_uint8(data, valid)
        return _finish(data, None if valid is None else valid > 0, self.min_valid)

    def _read(self, ds, b: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, Affine] | None:
        """The square's footprint in the raster, decimated when much finer than needed."""
        west, south, east, north = rasterio.warp.transform_bounds(
            self.grid_crs, ds.crs, *(float(v) for v in b), densify_pts=21
        )
        window = rasterio.windows.from_bounds(west, south, east, north, ds.transform)
        inner_w, inner_h = window.width, window.height
        # Whole pixels, padded by two so that the warp's kernel has neighbours at the edges.
        col0 = max(0, math.floor(window.col_off) - 2)
        row0 = max(0, math.floor(window.row_off) - 2)
        col1 = min(ds.width, math.ceil(window.col_off + window.width) + 2)
        row1 = min(ds.height, math.ceil(window.row_off + window.height) + 2)
        if col1 - col0 < 1 or row1 - row0 < 1:
            return None
        window = rasterio.windows.Window(col0, row0, col1 - col0, row1 - row0)
        # Decimate on read (whole factors, so overviews serve) when the raster is much finer.
        factor = max(1, math.floor(min(inner_w, inner_h) / (OVERSAMPLE * size)))
        out_w = max(1, math.ceil(window.width / factor))
        out_h = max(1, math.ceil(window.height / factor))
        data = ds.read(
            self.bands,
            window=window,
            out_shape=(len(self.bands), out_h, out_w),
            resampling=self.resampling,
        )
        valid = ds.read_masks(
            self.bands[0], window=window, out_shape=(out_h, out_w), resampling=Resampling.nearest
        )
        transform = ds.window_transform(window) @ Affine.scale(
            window.width / out_w, window.height / out_h
        )
        return data, valid, transform

    def _to_uint8(
        self, data: np.ndarray, valid: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.colormap is not None:
            lut = np.zeros((256, 3), dtype=np.uint8)
            for value, rgba in self.colormap.items():
                if 0 <= value < 256:
                    lut[value] = rgba[:3]
            index = np.clip(data[0], 0, 255).astype(np.uint8)
            return np.moveaxis(np.take(lut, index, axis=0), -1, 0), valid
        if self.stretch is None:
            return data.astype(np.uint8, copy=False), valid
        out = np.empty(data.shape, dtype=np.uint8)
        finite = np.ones(data.shape[1:], dtype=bool)
        for i, (low, high) in enumerate(self.stretch):
            band = data[i].astype("float64")
            finite &= np.isfinite(band)
            scaled = (np.nan_to_num(band, nan=low) - low) * (255.0 / (high - low))
            out[i] = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
        if valid is None:
            return out, None if finite.all() else np.where(finite, 255, 0).astype(np.uint8)
        return out, np.where(finite, valid, 0)

    def _plan_vrt(self, bounds: np.ndarray, size: int) -> tuple | None:
        """A warped grid covering all squares, if they lie on a lattice (one warp setup for
        all of them) and the raster is not much finer than the images (then reads decimate).
        """
        cell = lattice_step(bounds)
        if self.direct or cell is None:
            return None
        res = cell / size
        default, _, _ = rasterio.warp.calculate_default_transform(
            self.ds.crs, self.grid_crs, self.ds.width, self.ds.height, *self.ds.bounds
        )
        if abs(default.a) < res / OVERSAMPLE:
            return None
        x0, top = float(bounds[:, 0].min()), float(bounds[:, 3].max())
        width = round((float(bounds[:, 2].max()) - x0) / res)
        height = round((top - float(bounds[:, 1].min())) / res)
        return (x0, top, res, width, height)

    def _vrt_tile(self, b: np.ndarray, size: int) -> Tile:
        spec = self._vrt
        vrt = getattr(self._local, "vrt", None)
        if vrt is None or self._local.vrt_spec != spec:
            x0, top, res, width, height = spec
            vrt = WarpedVRT(
                self._dataset(),
                crs=self.grid_crs.to_wkt(),
                transform=from_origin(x0, top, res, res),
                width=width,
                height=height,
                resampling=self.resampling,
                add_alpha=True,
            )
            self._local.vrt, self._local.vrt_spec = vrt, spec
            with self._handles_lock:
                self._handles.append(vrt)
        x0, top, res = spec[:3]
        window = rasterio.windows.Window(
            round((b[0] - x0) / res), round((top - b[3]) / res), size, size
        )
        data = vrt.read([*self.bands, vrt.count], window=window)
        valid = data[-1] > 0
        if not valid.any():
            return Tile(C.STATUS_MISSING, reason="no image data (outside the raster or nodata)")
        rgb, mask = self._to_uint8(data[:-1], valid.astype(np.uint8))
        return _finish(rgb, mask > 0, self.min_valid)

    def tile(self, b: np.ndarray, size: int) -> Tile:
        """The image of one square."""
        ds = self._dataset()
        if self.direct:
            tile = self._direct(ds, b, size)
            if tile is not None:
                return tile
        elif self._vrt is not None:
            return self._vrt_tile(b, size)
        read = self._read(ds, b, size)
        if read is None:
            return Tile(C.STATUS_MISSING, reason="outside the raster")
        data, valid, transform = read
        data, valid = self._to_uint8(data, valid)
        return _warp_rgba(
            data,
            valid,
            transform,
            ds.crs,
            b,
            self.grid_crs,
            size,
            self.resampling,
            self.min_valid,
        )

    def tiles(self, bounds: np.ndarray, size: int) -> Iterator[tuple[int, Tile]]:
        """One tile per square, ``workers`` threads at a time."""
        bounds = np.asarray(bounds, dtype=float).reshape(-1, 4)
        self._vrt = self._plan_vrt(bounds, size)
        groups = self._groups(bounds)
        if self.workers == 1:
            for group in groups:
                for i in group:
                    yield int(i), self.tile(bounds[i], size)
            return

        def work(group: np.ndarray) -> list[tuple[int, Tile]]:
            return [(int(i), self.tile(bounds[i], size)) for i in group]

        chunk = 8 * self.workers  # bounded: never more than a few dozen images in memory
        with ThreadPoolExecutor(self.workers) as pool:
            for start in range(0, len(groups), chunk):
                for done in pool.map(work, groups[start : start + chunk]):
                    yield from done

    def _groups(self, bounds: np.ndarray) -> list[np.ndarray]:
        """Squares to read in one thread: those whose windows start in the same block of the
        warped grid (GDAL warps whole blocks; two threads would warp a shared block twice)."""
        if self._vrt is None:
            return [np.array([i]) for i in range(len(bounds))]
        x0, top, res = self._vrt[:3]
        block_h, block_w = WARPED_BLOCK
        cols = np.round((bounds[:, 0] - x0) / res).astype(np.int64) // block_w
        rows = np.round((top - bounds[:, 3]) / res).astype(np.int64) // block_h
        order = np.lexsort((cols, rows))
        keys = np.stack([rows[order], cols[order]], axis=1)
        cuts = np.flatnonzero((np.diff(keys, axis=0) != 0).any(axis=1)) + 1
        return np.split(order, cuts)

    def close(self) -> None:
        """Close the raster and every thread's handle."""
        with self._handles_lock:
            for handle in reversed(self._handles):  # warped VRTs before their datasets
                handle.close()
            self._handles.clear()
        self.ds.close()


def _fmt_bounds(b: tuple[float, float, float, float]) -> str:
    return f"{b[0]:.5f},{b[1]:.5f},{b[2]:.5f},{b[3]:.5f}"


# --- XYZ tile services --------------------------------------------------------------------------
def resolve_xyz(template_or_name: str, *, key: str | None = None) -> tuple[str, dict]:
    """A tile URL template with ``{z}``, ``{x}``, ``{y}`` from a URL or an xyzservices name.

    Returns (template with the key filled in, provider attributes). A template without the
    three placeholders is refused; a provider that needs a key gets ``key``.
    """
    attrs: dict = {}
    template = template_or_name.strip()
    if "://" not in template:
        import xyzservices.providers as xyz

        try:
            provider = xyz.query_name(template)
        except ValueError:
            raise InputError(
                f"{template!r} is neither a tile URL nor a known xyzservices provider.",
                hint="Give a URL template such as https://tile.example.org/{z}/{x}/{y}.png or a "
                'provider name such as Esri.WorldImagery (list: python -c "import xyzservices.'
                'providers as p; print(p.flatten().keys())").',
            ) from None
        attrs = dict(provider)
        if provider.requires_token():
            if not key:
                raise InputError(
                    f"Tile provider {provider.name} needs an API key.",
                    hint="Put it in the environment variable named by --key-env "
                    "(default URBANGEO_TILE_KEY).",
                )
            for name, value in provider.items():
                if isinstance(value, str) and value.startswith("<insert"):
                    provider = provider.copy()
                    provider[name] = key
        template = provider.build_url(fill_subdomain=False)
        attrs["url"] = template
    missing = [p for p in ("{z}", "{x}") if p not in template]
    if "{y}" not in template and "{-y}" not in template:
        missing.append("{y}")
    if missing:
        raise InputError(
            f"The tile URL {_public(template, key)} lacks {', '.join(missing)}.",
            hint="An XYZ tile URL names the zoom, column and row of each tile, e.g. "
            "https://tile.example.org/{z}/{x}/{y}.png (Leaflet/QGIS 'XYZ Tiles' syntax).",
        )
    if key:
        for name in KEY_PLACEHOLDERS:
            template = template.replace("{" + name + "}", key)
    leftover = re.findall(r"\{([a-zA-Z_]+)\}", template)
    unknown = sorted(set(leftover) - {"z", "x", "y", "s", "r"})
    if unknown:
        raise InputError(
            f"The tile URL {_public(template, key)} has placeholders urbangeo cannot fill: "
            f"{', '.join('{' + u + '}' for u in unknown)}.",
            hint="Fill them in the URL yourself; an API key placeholder ({apikey}, "
            "{accessToken}, {key}) is filled from the environment variable named by --key-env.",
        )
    return template, attrs


def _public(template: str, key: str | None) -> str:
    """``template`` fit to show: key parameters and the key itself replaced by ``***``."""
    return redact_url(template.replace(key, "***") if key else template)


def tile_url(template: str, tile: mercantile.Tile, subdomains: str = "abc") -> str:
    """The URL of one tile."""
    url = template.replace("{z}", str(tile.z)).replace("{x}", str(tile.x))
    url = url.replace("{-y}", str(2**tile.z - 1 - tile.y)).replace("{y}", str(tile.y))
    url = url.replace("{r}", "")
    if "{s}" in url:
        url = url.replace("{s}", subdomains[(tile.x + tile.y) % len(subdomains)])
    return url


def auto_zoom(
    cell_m: float, size: int, lat: float, *, tile_px: int = TILE_PX, max_zoom: int = 19
) -> int:
    """The lowest zoom whose pixels are at least as fine as ``cell_m / size`` at ``lat``."""
    ground = EARTH_CIRCUMFERENCE_M * math.cos(math.radians(lat)) * size / (tile_px * cell_m)
    return int(min(max(0, math.ceil(math.log2(max(ground, 1e-9)) - 1e-9)), max_zoom))


def _magic_ext(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "tile"


TILE_EXTS = ("png", "jpg", "webp", "tile")


class TileCache:
    """Raw tiles on disk, ``{root}/{z}/{x}/{y}.{ext}``; a 404 leaves ``{y}.404``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find(self, tile: mercantile.Tile) -> Path | None:
        """The cached file of ``tile`` (possibly a ``.404`` marker), or None."""
        folder = self.root / str(tile.z) / str(tile.x)
        for ext in (*TILE_EXTS, "404"):
            path = folder / f"{tile.y}.{ext}"
            if path.is_file():
                return path
        return None

    def put(self, tile: mercantile.Tile, data: bytes | None) -> Path:
        """Store a tile's bytes (None: the server has no such tile)."""
        ext = "404" if data is None else _magic_ext(data)
        path = self.root / str(tile.z) / str(tile.x) / f"{tile.y}.{ext}"
        write_bytes_atomic(path, data or b"")
        return path


class XyzSource:
    """Images from an XYZ (slippy map) tile service, warped to each square.

    Tiles are fetched with ``client`` (concurrent, rate-limited, retried), cached under
    ``cache_dir`` so a rerun never fetches a tile twice, decoded with Pillow (transparent
    pixels count as missing data), mosaicked per square and warped from web mercator.
    """

    def __init__(
        self,
        template: str,
        *,
        grid_crs: object,
        cache_dir: Path,
        zoom: int | None = None,
        client: HttpClient | None = None,
        key: str | None = None,
        resampling: str = DEFAULT_RESAMPLING,
        min_valid: float = DEFAULT_MIN_VALID,
        batch: int = 64,
    ) -> None:
        self.template, self.attrs = resolve_xyz(template, key=key)
        self.grid_crs = CRS.from_user_input(grid_crs)
        self.zoom = zoom
        self.client = client or HttpClient(secrets=[key] if key else ())
        if key:
            self.client.secrets = sorted({*self.client.secrets, key}, key=len, reverse=True)
        self.resampling_name = resampling
        self.resampling = _resampling(resampling)
        self.min_valid = min_valid
        self.batch = batch
        self.subdomains = self.attrs.get("subdomains", "abc")
        self.max_zoom = int(self.attrs.get("max_zoom", 19))
        self.tile_px = int(self.attrs.get("tileSize", TILE_PX))
        public = redact_url(self.client.scrub(self.template))
        self.cache = TileCache(cache_dir / sha256_bytes(public.encode())[:12])
        self.public_template = public
        self.fetched = 0

    @property
    def source(self) -> str:
        """The manifest's source: the template without secrets, and the zoom."""
        return f"xyz:{self.public_template}" + (f"@z{self.zoom}" if self.zoom is not None else "")

    def params(self) -> dict:
        """Settings that decide the images."""
        return {
            "source": f"xyz:{self.public_template}",
            "zoom": self.zoom,
            "resampling": self.resampling_name,
            "min_valid": self.min_valid,
        }

    def choose_zoom(self, bounds: np.ndarray, size: int) -> int:
        """``zoom`` if given, else :func:`auto_zoom` for the squares' size and latitude."""
        if self.zoom is None:
            centre = np.array([bounds[:, [0, 2]].mean(), bounds[:, [1, 3]].mean()])
            _, lat = rasterio.warp.transform(self.grid_crs, C.WGS84, [centre[0]], [centre[1]])
            cell = float(np.median(bounds[:, 2] - bounds[:, 0]))
            self.zoom = auto_zoom(cell, size, lat[0], tile_px=self.tile_px, max_zoom=self.max_zoom)
        return self.zoom

    def _tiles_of(self, b: np.ndarray) -> list[mercantile.Tile]:
        west, south, east, north = rasterio.warp.transform_bounds(
            self.grid_crs, C.WGS84, *(float(v) for v in b), densify_pts=21
        )
        return list(mercantile.tiles(west, south, east, north, self.zoom))

    def fetch(self, tile: mercantile.Tile) -> Path | None:
        """The cached file of ``tile``, fetching it first if needed; None if it failed."""
        cached = self.cache.find(tile)
        if cached is not None:
            return cached
        url = tile_url(self.template, tile, self.subdomains)
        response = self.client.get(url)
        if response.status_code == 404:
            return self.cache.put(tile, None)
        self.fetched += 1
        return self.cache.put(tile, response.content)

    def fetch_all(self, tiles: list[mercantile.Tile]) -> dict[mercantile.Tile, Path | str]:
        """Fetch ``tiles`` concurrently: the cached path of each, or why it failed."""
        results: dict[mercantile.Tile, Path | str] = {}
        todo = []
        for t in tiles:
            cached = self.cache.find(t)
            if cached is not None:
                results[t] = cached
            else:
                todo.append(t)
        if not todo:
            return results
        pool = ThreadPoolExecutor(self.client.concurrency)
        try:
            futures = {t: pool.submit(self.fetch, t) for t in todo}
            for t, future in futures.items():
                try:
                    results[t] = future.result()
                except HttpError as exc:
                    results[t] = str(exc)
        finally:
            # On AccessDeniedError or Ctrl-C: drop the queued fetches, do not start new ones.
            pool.shutdown(wait=True, cancel_futures=True)
        return results

    def _decode(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        if path.suffix == ".404":
            return None
        try:
            with Image.open(path) as im:
                im.load()
                rgba = np.asarray(im.convert("RGBA"))
        except Exception:
            path.unlink(missing_ok=True)  # a corrupt cache entry is fetched again next time
            return None
        return rgba[..., :3], rgba[..., 3]

    def _mosaic(
        self,
        tiles: list[mercantile.Tile],
        files: dict[mercantile.Tile, Path | str],
        pixels: dict[mercantile.Tile, tuple[np.ndarray, np.ndarray] | None],
    ) -> tuple[np.ndarray, np.ndarray, Affine, str]:
        xs = [t.x for t in tiles]
        ys = [t.y for t in tiles]
        x0, y0 = min(xs), min(ys)
        decoded = {}
        problems = []
        px = None
        for t in tiles:
            d = pixels.get(t)
            if d is not None:
                decoded[t] = d
                px = px or d[0].shape[0]
            elif isinstance(files.get(t), str):
                problems.append(files[t])
        px = px or self.tile_px
        nx, ny = max(xs) - x0 + 1, max(ys) - y0 + 1
        data = np.zeros((3, ny * px, nx * px), dtype=np.uint8)
        valid = np.zeros((ny * px, nx * px), dtype=np.uint8)
        for t, (rgb, alpha) in decoded.items():
            if rgb.shape[:2] != (px, px):
                rgb = np.asarray(Image.fromarray(rgb).resize((px, px), Image.BILINEAR))
                alpha = np.asarray(Image.fromarray(alpha).resize((px, px), Image.NEAREST))
            r, c = (t.y - y0) * px, (t.x - x0) * px
            data[:, r : r + px, c : c + px] = np.moveaxis(rgb, -1, 0)
            valid[r : r + px, c : c + px] = alpha
        left, _, _, top = mercantile.xy_bounds(mercantile.Tile(x0, y0, self.zoom))
        step = EARTH_CIRCUMFERENCE_M / (2**self.zoom * px)
        transform = Affine(step, 0, left, 0, -step, top)
        return data, valid, transform, "; ".join(dict.fromkeys(problems))

    def tiles(self, bounds: np.ndarray, size: int) -> Iterator[tuple[int, Tile]]:
        """One image per square; tiles are fetched ``batch`` squares at a time."""
        bounds = np.asarray(bounds, dtype=float).reshape(-1, 4)
        if len(bounds) == 0:
            return
        self.choose_zoom(bounds, size)
        for start in range(0, len(bounds), self.batch):
            chunk = bounds[start : start + self.batch]
            per_square = [self._tiles_of(b) for b in chunk]
            needed = list(dict.fromkeys(t for ts in per_square for t in ts))
            files = self.fetch_all(needed)
            # Decoded once per batch: neighbouring squares share tiles.
            pixels = {t: self._decode(f) for t, f in files.items() if isinstance(f, Path)}
            for offset, (b, ts) in enumerate(zip(chunk, per_square, strict=True)):
                if not ts:
                    yield start + offset, Tile(C.STATUS_MISSING, reason="outside web mercator")
                    continue
                data, valid, transform, problems = self._mosaic(ts, files, pixels)
                tile = _warp_rgba(
                    data,
                    valid,
                    transform,
                    "EPSG:3857",
                    b,
                    self.grid_crs,
                    size,
                    self.resampling,
                    self.min_valid,
                )
                if tile.status != C.STATUS_OK and problems:
                    tile = Tile(C.STATUS_FAILED, reason=f"tile requests failed: {problems}")
                yield start + offset, tile

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()
