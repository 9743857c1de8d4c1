"""Benchmark: ``embed --encoder raster`` (:mod:`urbangeo.model.encoders.raster`) on a synthetic
AlphaEarth-style COG: 64 int8 bands at 10 m, 5% of its pixels nodata (-128), aggregated over
10,000 square regions of 100 m (a 100 × 100 grid in UTM 35N: 1,000 × 1,000 pixels).

The COG is written by a child process first (so that building it does not count in this
process's peak memory); this process then times :func:`aggregate_raster` alone (a warm-up run
on 100 regions first: imports, GDAL's first open) and reports wall-clock seconds, regions per
second and the peak resident memory (``resource.getrusage``) before and after. With
``--raster-crs EPSG:3857`` the COG is in Web Mercator (20 m pixels, about 10 m on the ground
at 60 N), so that the regions are reprojected to it.

Run from the repository root (not part of the test suite)::

    .venv/bin/python benchmarks/bench_raster_products.py
    .venv/bin/python benchmarks/bench_raster_products.py --raster-crs EPSG:3857 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID_CRS = "EPSG:32635"
X0, Y0 = 490_000.0, 6_700_000.0


def regions_grid(n: int, cell: float):
    """``n`` square regions of ``cell`` metres on a square lattice (UTM 35N)."""
    import geopandas as gpd
    import shapely

    side = math.isqrt(n)
    boxes, ids = [], []
    for k in range(side * side):
        c, r = k % side, k // side
        x, y = X0 + c * cell, Y0 - r * cell
        boxes.append(shapely.box(x, y - cell, x + cell, y))
        ids.append(f"c{c}r{r}")
    return gpd.GeoDataFrame({"region_id": ids}, geometry=boxes, crs=GRID_CRS)


def make_cog(path: Path, n: int, cell: float, res: float, bands: int, crs: str) -> None:
    """The COG covering the grid (plus 100 m), random int8 with 5% nodata."""
    import numpy as np
    import rasterio
    import rasterio.shutil
    from pyproj import Transformer
    from rasterio.transform import from_origin

    x0, y0, x1, y1 = regions_grid(n, cell).total_bounds
    to = Transformer.from_crs(GRID_CRS, crs, always_xy=True)
    left, bottom, right, top = to.transform_bounds(x0 - 100, y0 - 100, x1 + 100, y1 + 100)
    if crs != GRID_CRS:
        res *= 2.0  # Web Mercator at 60 N: 20 m of projection for 10 m on the ground
    width, height = int((right - left) / res) + 1, int((top - bottom) / res) + 1
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp.tif")
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype="int8")
    profile.update(crs=crs, transform=from_origin(left, top, res, res), nodata=-128)
    profile.update(tiled=True, blockxsize=512, blockysize=512, BIGTIFF="IF_SAFER")
    with rasterio.open(tmp, "w", **profile) as ds:
        for row in range(0, height, 512):
            h = min(512, height - row)
            block = rng.integers(-127, 128, (bands, h, width)).astype(np.int8)
            block[:, rng.random((h, width)) < 0.05] = -128
            ds.write(block, window=rasterio.windows.Window(0, row, width, h))
    rasterio.shutil.copy(tmp, path, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE")
    tmp.unlink()


def peak_mb() -> float:
    """This process's peak resident memory so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=10_000)
    parser.add_argument("--cell", type=float, default=100.0, help="region side (m)")
    parser.add_argument("--res", type=float, default=10.0, help="pixel size on the ground (m)")
    parser.add_argument("--bands", type=int, default=64)
    parser.add_argument("--raster-crs", default=GRID_CRS)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args()
    if args.make:
        make_cog(args.make, args.regions, args.cell, args.res, args.bands, args.raster_crs)
        return
    with tempfile.TemporaryDirectory(prefix="bench_raster_") as folder:
        cog = Path(folder) / "aef.tif"
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--make", str(cog)], check=True)
        made = time.perf_counter() - started
        from urbangeo.model.encoders.raster import aggregate_raster
        from urbangeo.progress import set_mode

        set_mode("none")
        regions = regions_grid(args.regions, args.cell)
        aggregate_raster(regions.iloc[:100], cog, product="aef")  # warm-up
        before = peak_mb()
        started = time.perf_counter()
        result = aggregate_raster(regions, cog, product="aef")
        seconds = time.perf_counter() - started
        after = peak_mb()
        import rasterio

        with rasterio.open(cog) as ds:
            shape = (ds.count, ds.height, ds.width)
            size_mb = os.path.getsize(cog) / 2**20
    numbers = {
        "regions": len(regions),
        "raster": f"{shape[0]} x {shape[1]} x {shape[2]} int8, {args.raster_crs}",
        "raster_mb_uncompressed": round(shape[0] * shape[1] * shape[2] / 2**20, 1),
        "cog_mb": round(size_mb, 1),
        "seconds": round(seconds, 3),
        "regions_per_s": round(len(regions) / seconds, 1),
        "peak_rss_mb_before": round(before, 1),
        "peak_rss_mb_after": round(after, 1),
        "pixels": result.counts["pixels"],
        "cog_build_s": round(made, 1),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    print(
        f"{numbers['regions']:,} regions of {args.cell:g} m over a {numbers['raster']} COG "
        f"({numbers['raster_mb_uncompressed']} MB of pixels, {numbers['cog_mb']} MB on disk):\n"
        f"  {seconds:.2f} s, {numbers['regions_per_s']:,.0f} regions/s, peak RSS "
        f"{after:.0f} MB (before the run: {before:.0f} MB)"
    )
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
