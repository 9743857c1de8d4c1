"""Benchmark: ``urbangeo.geo.grid.make_grid`` for grids of a million cells and more.

Cases (each with ``force=True``, median of ``--repeat`` runs):

- ``disc``: a round boundary of ``--radius-km`` (default 565 km: ~1,000,000 cells of 1 km²
  inside it), 1000 m cells, in UTM zone 23S;
- ``sao-paulo``: the union of the São Paulo hexagon grid (``--sao-paulo-grid``, a zipped
  GeoPackage, 34 km²), a 143-vertex polygon, at ``--sp-cell-size`` m cells (default 5 m:
  ~1.4 million cells).

``--breakdown`` also times make_grid's steps (grid.py's helpers, one by one) to show where the
time goes. Run from the repository root
(not part of the test suite)::

    .venv/bin/python benchmarks/bench_grid.py \\
        --sao-paulo-grid ../shared/data/sao_paulo/spo_hexgrid_EPSG32723.gpkg.zip --repeat 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from urbangeo.geo.grid import make_grid

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SP_GRID = REPO / ".." / "shared" / "data" / "sao_paulo" / "spo_hexgrid_EPSG32723.gpkg.zip"
CRS = "EPSG:32723"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disc(radius_km: float) -> gpd.GeoDataFrame:
    centre = shapely.Point(333_000, 7_395_000)  # São Paulo, in UTM 23S
    return gpd.GeoDataFrame(geometry=[centre.buffer(radius_km * 1000, quad_segs=64)], crs=CRS)


def sao_paulo(path: str) -> gpd.GeoDataFrame:
    hexes = gpd.read_file(f"zip://{Path(path).resolve()}")
    return gpd.GeoDataFrame(geometry=[shapely.union_all(hexes.geometry.values)], crs=hexes.crs)


def breakdown(boundary: gpd.GeoDataFrame, s: float) -> dict[str, float]:
    """make_grid's steps, timed one by one (grid.py's own helpers, called as it calls them)."""
    from urbangeo.geo import grid as G

    out: dict[str, float] = {}

    def lap(name, t0):
        out[name] = time.perf_counter() - t0
        return time.perf_counter()

    t = time.perf_counter()
    geom = shapely.union_all(boundary.geometry.values)
    minx, miny, maxx, maxy = geom.bounds
    c0, r0 = math.floor(minx / s), math.floor(miny / s)
    c1, r1 = math.ceil(maxx / s), math.ceil(maxy / s)
    rows, cols = np.mgrid[r0:r1, c0:c1]
    cols, rows = cols.ravel(), rows.ravel()
    t = lap(f"boundary and lattice ({len(cols):,} cells in the bounding box)", t)
    near = G._near_rings(geom, cols, rows, s)
    t = lap(f"cells near the rings ({int(near.sum()):,})", t)
    share = G._inside_share(geom, cols, rows, s)
    t = lap("inside_share (predicates near the rings, centres elsewhere; incl. the step above)", t)
    keep = share > 0
    cols, rows = cols[keep], rows[keep]
    cells = G._cells(cols, rows, s)
    t = lap(f"squares of the {len(cells):,} cells kept", t)
    ids = G._region_ids(cols, rows, c0, c1, r0, r1)
    t = lap("region_id strings", t)
    gpd.GeoDataFrame({"region_id": ids, "col": cols, "row": rows}, geometry=cells, crs=CRS)
    lap("GeoDataFrame", t)
    return out


def same_grid(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> bool:
    """Equal grids: the same columns, dtypes and values, geometries equal in WKB."""
    if list(a.columns) != list(b.columns) or list(a.dtypes) != list(b.dtypes) or len(a) != len(b):
        return False
    if not (shapely.to_wkb(a.geometry.values) == shapely.to_wkb(b.geometry.values)).all():
        return False
    return all(
        np.array_equal(a[c].to_numpy(), b[c].to_numpy()) for c in a.columns if c != "geometry"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sao-paulo-grid", default=str(DEFAULT_SP_GRID))
    parser.add_argument("--radius-km", type=float, default=565.0)
    parser.add_argument("--cell-size", type=float, default=1000.0, help="disc cell size (m)")
    parser.add_argument("--sp-cell-size", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument(
        "--reference-rev",
        help="a git revision whose urbangeo/geo/grid.py to time too, checking grids are equal",
    )
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    cases = [("disc", disc(args.radius_km), args.cell_size)]
    if args.sao_paulo_grid and Path(args.sao_paulo_grid).exists():
        cases.append(("sao-paulo", sao_paulo(args.sao_paulo_grid), args.sp_cell_size))
    else:
        print(f"(no São Paulo grid at {args.sao_paulo_grid}: that case is skipped)")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M %Z')}, load {load}", flush=True)
    reference = None
    if args.reference_rev:
        from git_reference import load_at

        reference = load_at(args.reference_rev, "urbangeo/geo/grid.py").make_grid
    results: dict = {"command": " ".join([sys.executable, *sys.argv]), "cases": {}}
    for name, boundary, size in cases:
        times, cpu, grid = [], [], None
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            grid = make_grid(boundary, cell_size=size, force=True)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        geom = boundary.geometry.iloc[0]
        res = dict(
            cell_size=size,
            boundary_km2=geom.area / 1e6,
            boundary_vertices=int(shapely.get_num_coordinates(geom)),
            cells=len(grid),
            edge_cells=int((grid["inside_share"] < 1).sum()),
            seconds=times,
            median_s=statistics.median(times),
            cpu_seconds=cpu,
            peak_rss_mb=round(peak_rss_mb()),
        )
        print(
            f"[{name}] {len(grid):,} cells of {size:g} m ({res['edge_cells']:,} on the edge), "
            f"runs {', '.join(f'{t:.2f}' for t in times)} s, median {res['median_s']:.2f} s "
            f"(CPU {statistics.median(cpu):.2f} s)",
            flush=True,
        )
        if reference is not None:
            t0, c0 = time.perf_counter(), time.process_time()
            ref = reference(boundary, cell_size=size, force=True)
            res["reference_s"] = time.perf_counter() - t0
            res["reference_cpu_s"] = time.process_time() - c0
            res["reference_identical"] = same_grid(grid, ref)
            print(
                f"    reference make_grid: {len(ref):,} cells, {res['reference_s']:.2f} s "
                f"(CPU {res['reference_cpu_s']:.2f} s), identical: {res['reference_identical']}"
            )
        if args.breakdown:
            res["breakdown"] = breakdown(boundary, size)
            for step, sec in res["breakdown"].items():
                print(f"    {sec:7.3f} s  {step}")
        results["cases"][name] = res
    results["load_average_end"] = os.getloadavg()
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in results['load_average_end'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
