"""Benchmark: writing a small layer into a large GeoPackage, old way against new way.

``urbangeo.io.gpkg.write_layers`` writes layers into an existing GeoPackage by one SQLite
transaction (:mod:`urbangeo.io.gpkg_tx`); the old way, kept as its fallback
(``gpkg._write_by_copy``), copies the whole file, writes into the copy and renames it. For each
file size (``--sizes`` in MB: a GeoPackage with a region grid and an attribute table of random
1 MiB blobs that fills it up, synthetic) it replaces a layer of ``--rows`` points (with its
style, as every stage writes) ``--repeat`` times each way, alternating, and prints the medians.

Both ways run in the same process on the same files, so their ratio holds on a busy machine;
the absolute times depend on the disk and the page cache (the files were just written, so the
old way's copy mostly reads from memory). The new way's commit also waits for the disk
(SQLite's fsync), which the old way's copy and rename do not. Run from the repository root (not
part of the test suite)::

    .venv/bin/python benchmarks/bench_gpkg_write.py --sizes 10,200,1000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from urbangeo import constants as C
from urbangeo.io import gpkg

CRS = "EPSG:32723"
MIB = 1 << 20


def small_layer(rows: int) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10_000, (rows, 2))
    return gpd.GeoDataFrame(
        {C.POINT_ID: np.arange(rows), "bearing": rng.uniform(0, 360, rows)},
        geometry=shapely.points(xy[:, 0] + 330_000, xy[:, 1] + 7_390_000),
        crs=CRS,
    )


def regions(n: int = 40) -> gpd.GeoDataFrame:
    cells = [
        shapely.box(330_000 + 250 * c, 7_390_000, 330_250 + 250 * c, 7_390_250) for c in range(n)
    ]
    return gpd.GeoDataFrame({C.REGION_ID: [f"{c}_0" for c in range(n)]}, geometry=cells, crs=CRS)


def make_file(path: Path, size_mb: int) -> None:
    """A GeoPackage of about ``size_mb`` MB: a styled region layer and a filler table."""
    gpkg.write_layers(path, {C.LAYER_REGIONS: regions()}, styles=True)
    con = sqlite3.connect(path)
    try:
        with con:
            con.execute(
                'CREATE TABLE "filler" ("fid" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, '
                '"data" BLOB)'
            )
            blobs = max(size_mb - 1, 0)
            con.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO filler (data) SELECT randomblob(?) FROM n",
                (blobs, MIB),
            )
            con.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier) "
                "VALUES ('filler', 'attributes', 'filler')"
            )
            con.execute("INSERT INTO gpkg_ogr_contents VALUES ('filler', ?)", (blobs,))
    finally:
        con.close()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(folder: Path, size_mb: int, rows: int, repeat: int) -> dict:
    path = folder / f"run_{size_mb}mb.gpkg"
    make_file(path, size_mb)
    layer = {C.LAYER_SV_POINTS: small_layer(rows)}
    gpkg.write_layers(path, layer, styles=True)  # the layer exists: both ways replace it
    size = path.stat().st_size
    old, new = [], []
    for _ in range(repeat):
        old.append(timed(lambda: gpkg._write_by_copy(path, layer, styles=True)))
        new.append(timed(lambda: gpkg.write_layers(path, layer, overwrite=True, styles=True)))
    assert len(gpkg.read_layer(path, C.LAYER_SV_POINTS)) == rows
    path.unlink()
    return {
        "size_mb": round(size / 1e6, 1),
        "old_s": statistics.median(old),
        "new_s": statistics.median(new),
        "old_all": old,
        "new_all": new,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,200,1000", help="file sizes in MB, comma-separated")
    parser.add_argument("--rows", type=int, default=1000, help="rows of the layer written")
    parser.add_argument("--repeat", type=int, default=3, help="writes each way, per size")
    parser.add_argument("--dir", default=None, help="folder for the files (default: a temp one)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for size in sizes:
            results.append(bench(Path(folder), size, args.rows, args.repeat))
    print(f"write {args.rows} rows (with styles), median of {args.repeat}:")
    print(f"{'file MB':>9} {'old: copy file s':>17} {'new: transaction s':>19} {'old/new':>8}")
    for r in results:
        ratio = r["old_s"] / r["new_s"]
        print(f"{r['size_mb']:>9} {r['old_s']:>17.3f} {r['new_s']:>19.3f} {ratio:>8.1f}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
