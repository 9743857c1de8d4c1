"""Imagery throughput: rendered OSM tiles, GeoTIFF tiles and XYZ fetching (issue 3).

Measures, on this machine, at 256 px:

1. rendered OSM map tiles per second: the whole ``tiles`` stage (render, PNG encode, atomic
   write, sha256, manifest) after the one-off OSM read, which is timed apart;
2. GeoTIFF tiles per second: the whole stage on a synthetic 3-band 8-bit textured GeoTIFF
   (1 m pixels, tiled, deflate) in the grid's CRS, and again in EPSG:3857;
3. XYZ fetching with 1 and 8 concurrent connections against a loopback tile server that
   answers after 50 ms, with the rate limit off; and the whole stage at 8 connections.

Targets: >= 200 rendered tiles/s, >= 100 GeoTIFF tiles/s, >= 6x XYZ speed-up at 8 connections.

Usage::

    .venv/bin/python benchmarks/bench_imagery.py                      # bundled Helsinki
    .venv/bin/python benchmarks/bench_imagery.py --pbf ../shared/data/sao_paulo/spo_osm.pbf
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import mercantile
import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
import shapely
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from urbangeo import constants as C
from urbangeo.geo.boundary import get_city
from urbangeo.geo.grid import make_grid
from urbangeo.imagery.sources.render import OsmRenderSource
from urbangeo.imagery.sources.xyz import XyzSource
from urbangeo.imagery.stages import tiles_stage
from urbangeo.io.gpkg import write_layers
from urbangeo.io.http import HttpClient
from urbangeo.progress import set_mode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.helpers
from tests.helpers import Loopback, QuietHandler

SIZE = 256


def _boundary_of_pbf(pbf: Path) -> gpd.GeoDataFrame:
    """The extract's extent (pyrosm reads the header's bounding box cheaply enough)."""
    import pyrosm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        osm = pyrosm.OSM(str(pbf))
        nodes = osm.get_network(network_type="all")
    box = shapely.box(*nodes.total_bounds)
    return gpd.GeoDataFrame({"name": ["bench"], "source": ["bench"]}, geometry=[box], crs=C.WGS84)


def bench_render(work: Path, pbf: Path, cell: float) -> dict:
    """Rendered OSM tiles per second, the OSM read timed apart."""
    regions = make_grid(_boundary_of_pbf(pbf), cell_size=cell)
    gpkg = work / "render" / "run.gpkg"
    write_layers(gpkg, {C.LAYER_REGIONS: regions})
    source = OsmRenderSource(pbf, grid_crs=regions.crs)
    t0 = time.perf_counter()
    source.load(regions.geometry.bounds.to_numpy())
    read_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    result = tiles_stage(gpkg, source=source, size=SIZE)
    stage_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    n = result.counts["ok"]
    return {
        "osm": str(pbf),
        "cell_m": cell,
        "regions": len(regions),
        "osm_read_s": round(read_s, 2),
        "stage_s": round(stage_s, 2),
        "tiles_per_s": round(n / stage_s, 1),
        "cpu_ms_per_tile": round(cpu_s / n * 1000, 2),
    }


def textured_raster(path: Path, *, left: float, top: float, pixel: float, n: int, crs) -> Path:
    """A 3-band uint8 raster with smooth fields, noise and sharp edges (like aerial photos)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (3, n // 64 + 2, n // 64 + 2)).astype(np.float32)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=n,
        height=n,
        count=3,
        dtype="uint8",
        crs=crs,
        transform=from_origin(left, top, pixel, pixel),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
    ) as dst:
        for row0 in range(0, n, 512):
            rows = min(512, n - row0)
            yy = (np.arange(row0, row0 + rows) / 64.0)[:, None]
            xx = (np.arange(n) / 64.0)[None, :]
            iy, ix = yy.astype(int), xx.astype(int)
            fy, fx = yy - iy, xx - ix
            block = np.empty((3, rows, n), dtype=np.uint8)
            for b in range(3):
                c = coarse[b]
                smooth = (
                    c[iy, ix] * (1 - fy) * (1 - fx)
                    + c[iy + 1, ix] * fy * (1 - fx)
                    + c[iy, ix + 1] * (1 - fy) * fx
                    + c[iy + 1, ix + 1] * fy * fx
                )
                edges = ((np.floor(yy / 0.4) + np.floor(xx / 0.4)) % 2) * 40  # "buildings"
                noise = rng.normal(0, 8, (rows, n))
                block[b] = np.clip(smooth * 0.7 + edges + noise, 0, 255).astype(np.uint8)
            dst.write(block, window=rasterio.windows.Window(0, row0, n, rows))
    return path


def bench_geotiff(work: Path, km: float, cell: float) -> dict:
    """GeoTIFF tiles per second, raster in the grid's CRS and in web mercator."""
    crs = "EPSG:32635"
    x0, y0 = 496_000.0, 6_709_000.0
    n = int(km * 1000)
    box = shapely.box(x0, y0, x0 + km * 1000, y0 + km * 1000)
    regions = make_grid(
        gpd.GeoDataFrame({"name": ["b"], "source": ["b"]}, geometry=[box], crs=crs),
        cell_size=cell,
        crs=crs,
    )
    regions = regions[regions.geometry.within(box.buffer(1e-6))]
    out = {"raster_km": km, "pixel_m": 1.0, "cell_m": cell, "regions": len(regions)}
    same = textured_raster(work / "utm.tif", left=x0, top=y0 + n, pixel=1.0, n=n, crs=crs)
    merc = work / "merc.tif"
    with rasterio.open(same) as src:
        transform, width, height = rasterio.warp.calculate_default_transform(
            src.crs, "EPSG:3857", src.width, src.height, *src.bounds
        )
        profile = src.profile | {
            "crs": "EPSG:3857",
            "transform": transform,
            "width": width,
            "height": height,
        }
        with rasterio.open(merc, "w", **profile) as dst:
            for b in range(1, 4):
                rasterio.warp.reproject(
                    rasterio.band(src, b), rasterio.band(dst, b), resampling=Resampling.bilinear
                )
    for name, tif in (("same_crs", same), ("epsg3857", merc)):
        gpkg = work / name / "run.gpkg"
        write_layers(gpkg, {C.LAYER_REGIONS: regions})
        t0, c0 = time.perf_counter(), time.process_time()
        result = tiles_stage(gpkg, raster=tif, size=SIZE)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        n = result.counts["ok"]
        out[f"{name}_ok"] = n
        out[f"{name}_s"] = round(seconds, 2)
        out[f"{name}_tiles_per_s"] = round(n / seconds, 1)
        out[f"{name}_cpu_ms_per_tile"] = round(cpu_s / n * 1000, 2)
    return out


def _tile_png() -> bytes:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(
        buffer, "PNG", compress_level=1
    )
    return buffer.getvalue()


class SlowTileServer(Loopback):
    """Loopback tile server: every reply after ``latency`` seconds, keep-alive HTTP/1.1."""

    def __init__(self, latency: float) -> None:
        body = _tile_png()

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                time.sleep(latency)
                self.reply(200, body, {"Content-Type": "image/png"})

        super().__init__(Handler)


def bench_xyz(work: Path, latency: float, tiles_per_run: int) -> dict:
    """XYZ tiles fetched per second with 1 and 8 connections, and the stage at 8."""
    server = SlowTileServer(latency)
    out: dict = {"latency_ms": latency * 1000}
    try:
        template = server.url + "/{z}/{x}/{y}.png"
        tiles = list(mercantile.tiles(26.9, 60.45, 27.1, 60.6, 15))
        for concurrency in (1, 8):
            n = tiles_per_run if concurrency == 1 else tiles_per_run * 4
            cache = work / f"cache{concurrency}"
            client = HttpClient(concurrency=concurrency, rate_limit=0)
            source = XyzSource(template, grid_crs="EPSG:32635", cache_dir=cache, client=client)
            t0 = time.perf_counter()
            got = source.fetch_all(tiles[:n])
            seconds = time.perf_counter() - t0
            source.close()
            assert all(isinstance(p, Path) for p in got.values())
            out[f"c{concurrency}_tiles"] = n
            out[f"c{concurrency}_tiles_per_s"] = round(n / seconds, 1)
        out["speedup"] = round(out["c8_tiles_per_s"] / out["c1_tiles_per_s"], 2)
        # The whole stage: 1 km regions at 256 px (zoom 15 at 60.5 N), 8 connections.
        x0, y0 = 496_000.0, 6_709_000.0
        box = shapely.box(x0, y0, x0 + 6000, y0 + 6000)
        regions = make_grid(
            gpd.GeoDataFrame({"name": ["b"], "source": ["b"]}, geometry=[box], crs="EPSG:32635"),
            cell_size=1000,
            crs="EPSG:32635",
        )
        regions = regions[regions.geometry.within(box.buffer(1e-6))]
        gpkg = work / "xyz" / "run.gpkg"
        write_layers(gpkg, {C.LAYER_REGIONS: regions})
        t0 = time.perf_counter()
        result = tiles_stage(gpkg, xyz=template, concurrency=8, rate_limit=0, size=SIZE)
        seconds = time.perf_counter() - t0
        cached = sum(1 for _ in (gpkg.parent / C.IMAGES_DIR / ".tilecache").rglob("*.png"))
        out["stage_regions"] = result.counts["ok"]
        out["stage_tiles_fetched"] = cached
        out["stage_s"] = round(seconds, 2)
        out["stage_regions_per_s"] = round(result.counts["ok"] / seconds, 1)
    finally:
        server.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pbf", type=Path, help="OSM extract (default: bundled Helsinki)")
    parser.add_argument("--render-cell", type=float, default=100.0, help="cell size, metres")
    parser.add_argument("--raster-km", type=float, default=4.0)
    parser.add_argument("--raster-cell", type=float, default=250.0)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--xyz-tiles", type=int, default=40, help="tiles at 1 connection")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    set_mode("none")
    pbf = args.pbf or get_city("helsinki").osm_path()
    work = Path(tempfile.mkdtemp(prefix="bench-imagery-"))
    try:
        load_before = os.getloadavg()
        results = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "render": bench_render(work, pbf, args.render_cell),
            "geotiff": bench_geotiff(work, args.raster_km, args.raster_cell),
            "xyz": bench_xyz(work, args.latency, args.xyz_tiles),
        }
        # Other programs on the machine slow every figure down: record how busy it was.
        results["load_average_1min"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    r, g, x = results["render"], results["geotiff"], results["xyz"]
    ok = (
        r["tiles_per_s"] >= 200
        and min(g["same_crs_tiles_per_s"], g["epsg3857_tiles_per_s"]) >= 100
        and x["speedup"] >= 6
    )
    print("targets met" if ok else "TARGETS MISSED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
