"""Synthetic runs, rasters, images and HTTP servers for the imagery tests (no network)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import geopandas as gpd
import numpy as np
import shapely
from PIL import Image

from tests.helpers import Loopback, QuietHandler, write_geotiff
from urbangeo import constants as C
from urbangeo.io.gpkg import write_layers

UTM35 = "EPSG:32635"
#: South-west corner of the synthetic grids (Kotka, Finland, ~60.5 N).
X0, Y0 = 496_000.0, 6_709_000.0


def grid(cols: int = 3, rows: int = 2, cell: float = 1000.0, origin=(X0, Y0), crs=UTM35):
    """Square regions with ids "{col}_{row}" on the lattice of ``cell``."""
    c0, r0 = round(origin[0] / cell), round(origin[1] / cell)
    records = []
    for r in range(rows):
        for c in range(cols):
            minx, miny = origin[0] + c * cell, origin[1] + r * cell
            records.append(
                {
                    C.REGION_ID: f"{c0 + c}_{r0 + r}",
                    C.COL: c0 + c,
                    C.ROW: r0 + r,
                    "geometry": shapely.box(minx, miny, minx + cell, miny + cell),
                }
            )
    return gpd.GeoDataFrame(records, geometry="geometry", crs=crs)


def points(xy: list[tuple[float, float]], headings: list[float], regions=None, crs=UTM35):
    """Sample points like `urbangeo sample` writes them."""
    geoms = shapely.points(np.asarray(xy, dtype=float))
    frame = gpd.GeoDataFrame(
        {C.POINT_ID: np.arange(len(xy), dtype="int64"), C.HEADING: headings},
        geometry=geoms,
        crs=crs,
    )
    ll = frame.geometry.to_crs(C.WGS84)
    frame[C.LON], frame[C.LAT] = ll.x, ll.y
    if regions is not None:
        joined = gpd.sjoin(frame, regions[[C.REGION_ID, "geometry"]], how="left")
        frame[C.REGION_ID] = joined[~joined.index.duplicated()][C.REGION_ID].to_numpy()
    else:
        frame[C.REGION_ID] = None
    return frame[[C.POINT_ID, C.REGION_ID, C.HEADING, C.LON, C.LAT, "geometry"]]


def make_run(folder: Path, regions=None, sv_points=None) -> Path:
    """A run GeoPackage with the given layers."""
    layers = {}
    if regions is not None:
        layers[C.LAYER_REGIONS] = regions
    if sv_points is not None:
        layers[C.LAYER_SV_POINTS] = sv_points
    path = folder / "run.gpkg"
    write_layers(path, layers, overwrite=True)
    return path


def count_tile_calls(monkeypatch) -> dict:
    """Count (and optionally interrupt) RasterSource.tile calls: ``calls`` so far, a
    KeyboardInterrupt at call ``interrupt_at``."""
    from urbangeo.imagery.sources.raster import RasterSource

    state = {"calls": 0, "interrupt_at": None}
    original = RasterSource.tile

    def tile(self, b, size):
        state["calls"] += 1
        if state["calls"] == state["interrupt_at"]:
            raise KeyboardInterrupt
        return original(self, b, size)

    monkeypatch.setattr(RasterSource, "tile", tile)
    return state


def coded_raster(
    path: Path,
    *,
    left: float,
    top: float,
    pixel: float,
    width: int,
    height: int,
    crs: object | None,
    nodata: float | None = None,
) -> Path:
    """A 3-band uint8 GeoTIFF whose pixels name their own column and row.

    band 1 = col % 256, band 2 = row % 256, band 3 = 16 * (col // 256) + row // 256.
    """
    rows, cols = np.mgrid[0:height, 0:width]
    data = np.stack([cols % 256, rows % 256, 16 * (cols // 256) + rows // 256]).astype(np.uint8)
    tiles = {"tiled": True, "blockxsize": 256, "blockysize": 256}
    if nodata is not None:
        tiles["nodata"] = nodata
    return write_geotiff(path, data, left=left, top=top, pixel=pixel, crs=crs, **tiles)


def edge_column_raster(path: Path, cols: int, rows: int) -> Path:
    """A :func:`coded_raster` (10 m pixels, UTM 35N) over :func:`grid`'s ``cols`` x ``rows``
    cells of 1 km that covers all but the last column of cells: those are edge cells (little
    image data)."""
    width, height = (cols - 1) * 100 + 30, rows * 100
    top = Y0 + rows * 1000
    return coded_raster(path, left=X0, top=top, pixel=10, width=width, height=height, crs=UTM35)


def decode_cols_rows(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`coded_raster`'s encoding for an H × W × 3 image."""
    img = image.astype(np.int64)
    return img[..., 0] + 256 * (img[..., 2] // 16), img[..., 1] + 256 * (img[..., 2] % 16)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def jpeg_bytes(color=(90, 120, 150), size=(64, 32), exif=None) -> bytes:
    buffer = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    Image.new("RGB", size, color).save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


class HeaderServer(Loopback):
    """A loopback HTTP server whose handler sees request headers and sets response headers.

    ``handler(path, query, headers) -> (status, headers, body)``; requests are recorded as
    (path with query, headers). ``latency`` seconds are added to every reply.
    """

    def __init__(self, handler: Callable, latency: float = 0.0) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with outer.lock:
                    outer.requests.append((self.path, dict(self.headers)))
                if latency:
                    time.sleep(latency)
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                status, headers, body = handler(parts.path, query, dict(self.headers))
                self.reply(status, body, headers)

        super().__init__(Handler)


def coded_tile(z: int, x: int, y: int, size: int = 256) -> bytes:
    """A PNG tile whose pixel colours name their global web-mercator pixel position.

    R = X % 256, G = Y % 256, B = 16 * (x % 16) + (y % 16) for global pixel (X, Y) at zoom z.
    """
    j, i = np.mgrid[0:size, 0:size]
    rgb = np.stack([i % 256, j % 256, np.full_like(i, 16 * (x % 16) + (y % 16))], axis=-1).astype(
        np.uint8
    )
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def decode_tile_pixels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global pixel position modulo 4096 from a mosaic made of :func:`coded_tile` tiles."""
    img = image.astype(np.int64)
    return (img[..., 2] // 16) * 256 + img[..., 0], (img[..., 2] % 16) * 256 + img[..., 1]
