"""Opening a raster the same way everywhere: a missing or unreadable file is a clear error."""

from __future__ import annotations

import os
from pathlib import Path

import rasterio
import rasterio.errors
from rasterio.io import DatasetReader

from urbangeo.errors import InputError


def open_raster(
    path: str | os.PathLike, *, formats: str = "a GeoTIFF, COG or any raster GDAL reads"
) -> DatasetReader:
    """Open ``path`` with rasterio; ``formats`` completes the hint for an unreadable file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Raster {path} does not exist.", hint="Check the --raster path.")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"Cannot read raster {path}: {exc}", hint=f"Give {formats}.") from exc
