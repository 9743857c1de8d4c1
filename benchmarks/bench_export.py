"""Benchmark: ``urbangeo export`` of a 1,000,000-row regions layer, streamed against whole.

Makes (once, in ``--folder``) a synthetic run GeoPackage whose regions layer has ``--rows``
square cells of 100 m with the columns a downstream layer carries (id, counts, a float, an
integer with NULLs, a short text), then exports it in child processes, each under
``/usr/bin/time -v`` for its wall time and peak resident memory:

- ``imports``: the imports only (the floor of every row below);
- ``stream``: :func:`urbangeo.io.export.export_layer` with ``--batch-rows``;
- ``whole``: ``read_layer(...).to_parquet(...)`` (geopandas), the layer loaded at once.

Run from the repository root (not part of the test suite)::

    .venv/bin/python benchmarks/bench_export.py --rows 1000000 --folder /tmp/bench_export
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CRS = "EPSG:32723"
SIDE = 1000  # cells per grid row


def make_run(path: Path, rows: int, chunk: int = 200_000) -> None:
    """A GeoPackage with ``rows`` regions, written ``chunk`` rows at a time."""
    import geopandas as gpd
    import pandas as pd
    import pyogrio
    import shapely

    from urbangeo import constants as C
    from urbangeo.io.gpkg import write_layers

    for start in range(0, rows, chunk):
        i = np.arange(start, min(rows, start + chunk))
        x = 330_000 + (i % SIDE) * 100.0
        y = 7_390_000 + (i // SIDE) * 100.0
        frame = gpd.GeoDataFrame(
            {
                C.REGION_ID: [f"{c}_{r}" for c, r in zip(i % SIDE, i // SIDE, strict=True)],
                "n_images": i % 7,
                "population": np.sin(i) * 1000 + 1000,
                "cluster": pd.Series(i % 3, dtype="Int64").mask(i % 11 == 0),
                "label": np.where(i % 3 == 0, "dense", "sparse"),
            },
            geometry=shapely.box(x, y, x + 100, y + 100),
            crs=CRS,
        )
        if start == 0:
            write_layers(path, {C.LAYER_REGIONS: frame})
        else:
            pyogrio.write_dataframe(frame, path, layer=C.LAYER_REGIONS, append=True)


def child(mode: str, gpkg: Path, out: Path, batch_rows: int) -> None:
    """One measured run (in its own process)."""
    from urbangeo import constants as C
    from urbangeo.io.export import export_layer
    from urbangeo.io.gpkg import read_layer
    from urbangeo.progress import set_mode

    set_mode("none")
    start = time.perf_counter()
    if mode == "stream":
        rows = export_layer(gpkg, C.LAYER_REGIONS, out, batch_rows=batch_rows).rows
    elif mode == "whole":
        frame = read_layer(gpkg, C.LAYER_REGIONS)
        frame.to_parquet(out, compression="zstd")
        rows = len(frame)
    else:
        rows = 0
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"rows": rows, "seconds": round(seconds, 2)}))


def measure(mode: str, gpkg: Path, out: Path, batch_rows: int) -> dict:
    """Run ``mode`` in a child under ``/usr/bin/time -v``: its result, wall and peak RSS."""
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        __file__,
        "--child",
        mode,
        "--gpkg",
        str(gpkg),
        "--out",
        str(out),
        "--batch-rows",
        str(batch_rows),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.split("RESULT ")[-1])
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    assert rss is not None, proc.stderr
    result["peak_rss_mb"] = round(int(rss.group(1)) / 1024)
    result["file_mb"] = round(out.stat().st_size / 2**20, 1) if mode != "imports" else None
    return {"mode": mode, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_export"))
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--modes", default="imports,stream,whole")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--gpkg", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.gpkg, args.out, args.batch_rows)
        return
    args.folder.mkdir(parents=True, exist_ok=True)
    gpkg = args.folder / f"run_{args.rows}.gpkg"
    if not gpkg.exists():
        start = time.perf_counter()
        make_run(gpkg, args.rows)
        print(
            f"made {gpkg} ({gpkg.stat().st_size / 2**20:.0f} MB) in "
            f"{time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
    for mode in args.modes.split(","):
        out = args.folder / f"regions_{mode}.parquet"
        print(json.dumps(measure(mode, gpkg, out, args.batch_rows)))


if __name__ == "__main__":
    main()
