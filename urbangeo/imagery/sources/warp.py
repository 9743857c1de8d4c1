"""Pixels into a region's square: warping, the coverage check, and the squares' lattice.

Shared by the sources that warp data into squares (:mod:`.raster`, :mod:`.xyz`) and the ones
that draw blocks of neighbouring squares at once (:mod:`.raster`, :mod:`.render`).
"""

from __future__ import annotations

import numpy as np
import rasterio.warp
from rasterio.enums import Resampling
from rasterio.transform import Affine, from_bounds

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.sources.base import Tile
from urbangeo.settings.imagery import RESAMPLING


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


def resampling_method(name: str) -> Resampling:
    """The rasterio resampling called ``name`` (one of :data:`RESAMPLING`)."""
    if name not in RESAMPLING:
        raise InputError(
            f"Unknown resampling {name!r}.", hint=f"Choose one of: {', '.join(RESAMPLING)}."
        )
    return Resampling[name]


def square_transform(bounds: np.ndarray, size: int) -> Affine:
    """The transform of a ``size`` × ``size`` image covering the square ``bounds``."""
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    return from_bounds(minx, miny, maxx, maxy, size, size)


def warp_rgba(
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
        dst_transform=square_transform(bounds, size),
        dst_crs=grid_crs,
        src_alpha=bands + 1,
        dst_alpha=bands + 1,
        resampling=resampling,
    )
    return finish(out[:bands], out[bands] >= 128, min_valid)


def finish(data: np.ndarray, valid: np.ndarray | None, min_valid: float) -> Tile:
    """A tile from uint8 bands (B × H × W) and where they are valid (its ``valid_share``);
    missing if mostly not."""
    share = 1.0
    if valid is not None:
        share = float(np.count_nonzero(valid)) / valid.size
        if share < min_valid:
            return Tile(
                C.STATUS_MISSING,
                reason=f"only {share:.0%} of the region has image data "
                f"(at least {min_valid:.0%} needed)",
                valid_share=share,
            )
        if share < 1:
            data = data.copy()
            data[:, ~valid] = 0  # nodata is black
    if data.shape[0] == 1:
        return Tile(C.STATUS_OK, np.ascontiguousarray(data[0]), valid_share=share)
    return Tile(C.STATUS_OK, np.ascontiguousarray(np.moveaxis(data, 0, -1)), valid_share=share)
