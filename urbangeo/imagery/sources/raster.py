"""Overhead images cut from a raster file GDAL reads (GeoTIFF, COG, VRT...), in any CRS.

Each square is a windowed read of its extent (decimated on read, so a COG's overviews serve
coarse tiles), then ``rasterio.warp.reproject`` into a destination grid that is exactly the
square; or, when the raster is north-up in the grid's CRS, a resampled read of the square
itself; or a read from one warped VRT covering all squares when they lie on a lattice.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import overload

import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
from pyproj import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.transform import Affine, from_origin
from rasterio.vrt import WarpedVRT

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.sources.base import Tile, TileOptions, TileSource
from urbangeo.imagery.sources.warp import finish, lattice_step, resampling_method, warp_rgba
from urbangeo.io.pool import BoundedPool
from urbangeo.io.raster import open_raster
from urbangeo.settings.imagery import DEFAULT_MIN_VALID, DEFAULT_RESAMPLING

#: Block shape (rows, columns) of GDAL's warped VRTs.
WARPED_BLOCK = (128, 512)
#: Read rasters at about this many source pixels per output pixel before warping.
OVERSAMPLE = 2


class RasterSource(TileSource):
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
        self.ds = open_raster(self.path)
        if self.ds.crs is None:
            self.ds.close()
            raise InputError(
                f"Raster {self.path} has no CRS, so it cannot be placed on the grid.",
                hint="Assign its CRS first, e.g. `gdal_edit.py -a_srs EPSG:32635 FILE.tif` or "
                "`rio edit-info --crs EPSG:32635 FILE.tif`.",
            )
        self.grid_crs = CRS.from_user_input(grid_crs)
        self.resampling_name = resampling
        self.resampling = resampling_method(resampling)
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
        self._source = f"raster:{self.path.resolve()}"

    @classmethod
    def from_options(cls, options: TileOptions) -> RasterSource:
        """The raster at ``options.location``."""
        if options.location is None:
            raise InputError(
                "The raster source needs a raster file.", hint="Pass --raster FILE.tif."
            )
        return cls(
            options.location,
            grid_crs=options.grid_crs,
            bands=options.bands,
            resampling=options.resampling,
            min_valid=options.min_valid,
        )

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

    @property
    def source(self) -> str:
        """``raster:/absolute/path``."""
        return self._source

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
        return finish(data, None if valid is None else valid > 0, self.min_valid)

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

    @overload
    def _to_uint8(self, data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def _to_uint8(self, data: np.ndarray, valid: None) -> tuple[np.ndarray, np.ndarray | None]: ...

    def _to_uint8(
        self, data: np.ndarray, valid: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The bands as uint8 (colour map or stretch) and where they are valid: a mask in, a
        mask out; without one, the stretched bands' finite pixels, or None (all valid)."""
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
        assert spec is not None  # tile() calls this only with a planned grid
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
            return Tile(
                C.STATUS_MISSING,
                reason="no image data (outside the raster or nodata)",
                valid_share=0.0,
            )
        rgb, mask = self._to_uint8(data[:-1], valid.astype(np.uint8))
        return finish(rgb, mask > 0, self.min_valid)

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
            return Tile(C.STATUS_MISSING, reason="outside the raster", valid_share=0.0)
        data, valid, transform = read
        data, valid = self._to_uint8(data, valid)
        return warp_rgba(
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

        def work(group: np.ndarray) -> list[tuple[int, Tile]] | BaseException:
            try:
                return [(int(i), self.tile(bounds[i], size)) for i in group]
            except BaseException as exc:  # raised again in the caller's thread, in turn
                return exc

        ready: deque[list[tuple[int, Tile]] | BaseException] = deque()

        def settle(_: None, done: list[tuple[int, Tile]] | BaseException) -> None:
            ready.append(done)

        def take() -> Iterator[tuple[int, Tile]]:
            # The squares before a failure are yielded, then the failure is raised.
            while ready:
                done = ready.popleft()
                if isinstance(done, BaseException):
                    raise done
                yield from done

        # Bounded: never more than a few dozen images in memory.
        with BoundedPool(self.workers, settle, window=8 * self.workers) as pool:
            for group in groups:
                pool.submit(None, work, group)
                yield from take()
        yield from take()

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
