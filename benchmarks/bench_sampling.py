"""Benchmark: urbangeo's vectorised street-view sampler against the per-edge loop.

The loop is what common street-view tools do: for every edge of a directed osmnx graph,
``list(osmnx.utils_geo.interpolate_points(edge_geometry, interval))``. The vectorised sampler is
``urbangeo.geo.sampling.sample_points`` on the same edges as a GeoDataFrame. Both run on

- the São Paulo extract (``--sao-paulo``, an .osm.pbf), read with pyrosm into an osmnx-compatible
  MultiDiGraph of the drive network, projected to UTM with osmnx;
- a synthetic street lattice of at least ``--synthetic-km`` km (see ``synthetic_roads.py``).

Run from the repository root (not part of the test suite)::

    .venv/bin/python benchmarks/bench_sampling.py \\
        --sao-paulo ../shared/data/sao_paulo/spo_osm.pbf --synthetic-km 100000 --repeat 3

``--reference-rev REV`` also times ``sample_points`` from sampling.py at git revision REV (such
as the version before an optimisation) and checks that its output is identical. Only
sampling.py comes from REV: where it imports ``urbangeo.geo.linemerge`` (since the dedupe and
merge moved there), that module is the working tree's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import shapely

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from synthetic_roads import synthetic_network  # noqa: E402

from urbangeo.geo.sampling import sample_points  # noqa: E402

DEFAULT_PBF = REPO / ".." / "shared" / "data" / "sao_paulo" / "spo_osm.pbf"


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def digest(points) -> str:
    """A short hash of the sampled points' coordinates and headings."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(shapely.get_coordinates(points.geometry.values)).tobytes())
    h.update(np.ascontiguousarray(points["heading"].to_numpy()).tobytes())
    return h.hexdigest()[:16]


CPU: dict[int, list[float]] = {}  # CPU seconds of the calls timed, by id of their times list


def timed(fn, repeat: int) -> tuple[list[float], object]:
    """Wall-clock seconds of ``repeat`` calls (the first included) and the last result.

    The process's CPU seconds of the same calls go to ``CPU[id(times)]``: on a shared machine
    they show how much of the wall-clock time was waiting for a core.
    """
    times, cpu, result = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU[id(times)] = cpu
    return times, result


def timings(name: str, times: list[float]) -> dict:
    """``{name}_s``, ``{name}_cpu_s`` and ``{name}_median_s`` of the ``times`` of :func:`timed`."""
    return {
        f"{name}_s": times,
        f"{name}_cpu_s": CPU[id(times)],
        f"{name}_median_s": statistics.median(times),
    }


def loop_baseline(geometries, interval: float) -> int:
    """The per-edge loop: every edge's points, as osmnx's interpolate_points yields them."""
    from osmnx.utils_geo import interpolate_points

    n = 0
    for geom in geometries:
        n += len(list(interpolate_points(geom, interval)))
    return n


def product_loop(geometries, interval: float, crs, *, tolerance: float = 25.0, cell: float = 250.0):
    """The per-edge loop finished into the product ``sample_points`` returns, as a
    straightforward street-view script does it: skip the reverse copy of a two-way street (by
    its end points), ``interpolate_points`` per edge, drop points within ``tolerance`` of one
    kept before (a grid of ``tolerance`` cells), lon/lat per edge (one pyproj call per edge),
    heading from each point towards the next along the edge (``osmnx.bearing``), a region id.
    A reference for what the same output costs with a Python loop per edge; the points are
    not the same as ``sample_points``' (per-edge starts, no carry-over between edges)."""
    from osmnx.bearing import calculate_bearing
    from osmnx.utils_geo import interpolate_points
    from pyproj import Transformer

    to_wgs = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    seen_edges, seen_cells, rows = set(), set(), []
    for geom in geometries:
        coords = geom.coords
        a, b = coords[0], coords[-1]
        key = (a, b) if a <= b else (b, a)
        if key in seen_edges:
            continue
        seen_edges.add(key)
        pts = list(interpolate_points(geom, interval))
        lons, lats = to_wgs.transform([x for x, _ in pts], [y for _, y in pts])
        for i, (x, y) in enumerate(pts):
            grid = (round(x / tolerance), round(y / tolerance))
            if grid in seen_cells:
                continue
            seen_cells.add(grid)
            j, k = (i, i + 1) if i + 1 < len(pts) else (i - 1, i)
            heading = calculate_bearing(lats[j], lons[j], lats[k], lons[k])
            region = f"{int(x // cell)}_{int(y // cell)}"
            rows.append((x, y, heading, lons[i], lats[i], region))
    return len(rows)


def graph_edge_geometries(G):
    """The edge geometries as a loop over the graph gets them."""
    return (geom for _, _, _, geom in G.edges(keys=True, data="geometry"))


def load_reference(rev: str | None):
    if not rev:
        return None
    from git_reference import load_at

    return load_at(rev, "urbangeo/geo/sampling.py").sample_points


def bench_sampler(name, roads, args, reference, result):
    """Time sample_points (and the reference implementation) on ``roads``."""
    times, points = timed(lambda: sample_points(roads, interval=args.interval), args.repeat)
    result.update(
        timings("sample", times),
        sample_first_s=times[0],
        sample_points=len(points),
        sample_digest=digest(points),
        peak_rss_mb_after_sample=round(peak_rss_mb()),
    )
    print(f"[{name}] sample_points: {len(points):,} points, runs {fmt(times)}", flush=True)
    if reference is not None:
        ref_times, ref_points = timed(lambda: reference(roads, interval=args.interval), 1)
        same = len(ref_points) == len(points) and digest(ref_points) == result["sample_digest"]
        far = turn = None
        if len(ref_points) == len(points):
            xy = shapely.get_coordinates(points.geometry.values)
            far = float(np.abs(xy - shapely.get_coordinates(ref_points.geometry.values)).max())
            turns = (points["heading"] - ref_points["heading"] + 180) % 360 - 180
            turn = float(np.abs(turns).max())
        result.update(
            reference_s=ref_times[0],
            reference_cpu_s=CPU[id(ref_times)][0],
            reference_points=len(ref_points),
            reference_digest=digest(ref_points),
            reference_identical=bool(same),
            reference_max_distance_m=far,
            reference_max_heading_difference=turn,
        )
        print(
            f"[{name}] reference sample_points: {len(ref_points):,} points, "
            f"{ref_times[0]:.3f} s, identical output: {same}, largest distance between the "
            f"same point: {far} m, largest heading difference: {turn} degrees",
            flush=True,
        )


def fmt(times: list[float]) -> str:
    cpu = CPU.get(id(times))
    text = ", ".join(f"{t:.3f}" for t in times) + f" s (median {statistics.median(times):.3f}"
    if cpu:
        text += f"; CPU {', '.join(f'{t:.3f}' for t in cpu)} s"
    return text + ")"


def bench_sao_paulo(args, reference) -> dict:
    import osmnx as ox
    from pyrosm import OSM

    from urbangeo.geo.linemerge import unique_undirected

    pbf = Path(args.sao_paulo)
    result: dict = {"source": str(pbf)}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        osm = OSM(str(pbf))
        nodes, edges = osm.get_network(network_type="driving", nodes=True)
        # retain_all: the whole extract, not only its largest connected part.
        G = osm.to_graph(nodes, edges, graph_type="networkx", retain_all=True)
    G = ox.projection.project_graph(G)
    result["graph_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    roads = ox.graph_to_gdfs(G, nodes=False)
    result["graph_to_gdfs_s"] = time.perf_counter() - t0
    geoms = roads.geometry.values
    result.update(
        crs=str(G.graph["crs"]),
        nodes=G.number_of_nodes(),
        directed_edges=G.number_of_edges(),
        directed_km=float(shapely.length(geoms).sum() / 1000),
        road_km=float(shapely.length(unique_undirected(np.asarray(geoms))).sum() / 1000),
    )
    print(
        f"[São Paulo] {result['directed_edges']:,} directed edges, "
        f"{result['directed_km']:.1f} km directed, {result['road_km']:.1f} km of road "
        f"({result['crs']})",
        flush=True,
    )
    times, n = timed(lambda: loop_baseline(graph_edge_geometries(G), args.interval), args.repeat)
    result.update(timings("loop", times), loop_points=n, loop_subset=None)
    print(f"[São Paulo] loop: {n:,} points, runs {fmt(times)}", flush=True)
    bench_sampler("São Paulo", roads, args, reference, result)
    result["speedup"] = result["loop_median_s"] / result["sample_median_s"]
    if args.product_loop:
        times, n = timed(
            lambda: product_loop(graph_edge_geometries(G), args.interval, G.graph["crs"]),
            args.repeat,
        )
        result.update(
            product_loop_s=times,
            product_loop_median_s=statistics.median(times),
            product_loop_points=n,
            speedup_vs_product_loop=statistics.median(times) / result["sample_median_s"],
        )
        print(
            f"[São Paulo] same-product loop: {n:,} points, runs {fmt(times)}: "
            f"{result['speedup_vs_product_loop']:.1f}x sample_points' time",
            flush=True,
        )
    result["speedup_incl_graph_to_gdfs"] = result["loop_median_s"] / (
        result["sample_median_s"] + result["graph_to_gdfs_s"]
    )
    print(f"[São Paulo] speed-up (median loop / median sample_points): {result['speedup']:.2f}x")
    return result


def bench_synthetic(args, reference) -> dict:
    result: dict = {"requested_km": args.synthetic_km, "scattered": args.scattered}
    t0 = time.perf_counter()
    roads = synthetic_network(args.synthetic_km, seed=args.seed, scattered=args.scattered)
    result["build_s"] = time.perf_counter() - t0
    lengths = shapely.length(roads.geometry.values)
    result.update(
        directed_edges=len(roads),
        two_way_edge_pairs=int(roads["reverse_copy"].sum()),
        directed_km=float(lengths.sum() / 1000),
        road_km=float(lengths[~roads["reverse_copy"].to_numpy()].sum() / 1000),
        peak_rss_mb_after_build=round(peak_rss_mb()),
    )
    print(
        f"[synthetic] {result['directed_edges']:,} directed edges, "
        f"{result['directed_km']:,.0f} km directed, {result['road_km']:,.0f} km of road, "
        f"built in {result['build_s']:.1f} s" + (", rows scattered in memory" * args.scattered),
        flush=True,
    )
    bench_sampler("synthetic", roads, args, reference, result)

    geoms = roads.geometry.values
    if args.loop_edges and args.loop_edges < len(geoms):
        rng = np.random.default_rng(args.seed)
        subset = np.sort(rng.choice(len(geoms), args.loop_edges, replace=False))
        sub = np.asarray(geoms)[subset]
        times, n = timed(lambda: loop_baseline(sub, args.interval), args.loop_repeat)
        sub_km = float(shapely.length(sub).sum() / 1000)
        scale = result["directed_km"] / sub_km
        result.update(
            loop_subset=dict(
                edges=len(sub), km=sub_km, seconds=times, cpu_seconds=CPU[id(times)], points=n
            ),
            loop_median_s=statistics.median(times) * scale,
            loop_points=round(n * scale),
            loop_extrapolated=True,
        )
        print(
            f"[synthetic] loop on a random {len(sub):,}-edge subset ({sub_km:,.0f} km): "
            f"{n:,} points, runs {fmt(times)}; extrapolated per km to the whole network: "
            f"{result['loop_median_s']:.1f} s",
            flush=True,
        )
    else:
        times, n = timed(lambda: loop_baseline(geoms, args.interval), args.loop_repeat)
        result.update(
            timings("loop", times), loop_points=n, loop_subset=None, loop_extrapolated=False
        )
        print(f"[synthetic] loop (whole network): {n:,} points, runs {fmt(times)}", flush=True)
    result["speedup"] = result["loop_median_s"] / result["sample_median_s"]
    if args.product_loop:
        # the whole network: its two-way and junction checks need every edge
        times, n = timed(lambda: product_loop(geoms, args.interval, roads.crs), args.loop_repeat)
        result.update(timings("product_loop", times), product_loop_points=n)
        result["speedup_vs_product_loop"] = (
            result["product_loop_median_s"] / result["sample_median_s"]
        )
        print(
            f"[synthetic] same-product loop: {n:,} points, runs {fmt(times)}: "
            f"{result['speedup_vs_product_loop']:.1f}x sample_points' time",
            flush=True,
        )
    result["peak_rss_mb_end"] = round(peak_rss_mb())
    print(f"[synthetic] speed-up (median loop / median sample_points): {result['speedup']:.2f}x")
    return result


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import geopandas
    import osmnx
    import pyproj

    versions = {m.__name__: m.__version__ for m in (np, shapely, geopandas, pyproj, osmnx)}
    return dict(
        nproc=os.cpu_count(),
        cpu=cpu,
        python=platform.python_version(),
        **versions,
        geos=shapely.geos_version_string,
        date=time.strftime("%Y-%m-%d %H:%M %Z"),
        load_average_start=os.getloadavg(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sao-paulo", default=str(DEFAULT_PBF), help="the São Paulo .osm.pbf")
    parser.add_argument("--synthetic-km", type=float, default=100_000, help="synthetic km")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each sampler (median)")
    parser.add_argument("--interval", type=float, default=500.0, help="metres between points")
    parser.add_argument(
        "--loop-edges",
        type=int,
        default=0,
        help="time the loop on the synthetic network on a random subset of this many edges "
        "and extrapolate per km (default: the whole network)",
    )
    parser.add_argument(
        "--loop-repeat", type=int, default=1, help="runs of the loop on the synthetic network"
    )
    parser.add_argument(
        "--product-loop",
        action="store_true",
        help="also time the loop finished into sample_points' product (two-way dedup, "
        "junction merge, lon/lat, headings, regions) on both networks",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scattered",
        action="store_true",
        help="make the synthetic network's geometries in lattice order, then shuffle the rows "
        "(the default makes them in row order, as when read from a file)",
    )
    parser.add_argument("--skip-sao-paulo", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument(
        "--reference-rev",
        dest="reference_impl",
        help="a git revision whose urbangeo/geo/sampling.py to time and compare (e.g. e8984cd)",
    )
    parser.add_argument("--json", help="write the results as JSON to this file")
    args = parser.parse_args(argv)

    info = machine()
    print(
        f"{info['nproc']} CPUs ({info['cpu']}), {info['date']}, "
        f"load average {' '.join(f'{x:.2f}' for x in info['load_average_start'])}",
        flush=True,
    )
    reference = load_reference(args.reference_impl)
    results: dict = {"machine": info, "command": " ".join([sys.executable, *sys.argv])}
    if not args.skip_sao_paulo:
        results["sao_paulo"] = bench_sao_paulo(args, reference)
    if not args.skip_synthetic:
        results["synthetic"] = bench_synthetic(args, reference)
    results["peak_rss_mb"] = round(peak_rss_mb())
    results["load_average_end"] = os.getloadavg()
    print(
        f"peak RSS {results['peak_rss_mb']:,} MB; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in results['load_average_end'])}"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
