"""Check the geo fast paths (linemerge, sampling, grid) against shapely and their old versions.

``urbangeo.geo.linemerge`` dedupes and merges lines on coordinate arrays, repeating what
``shapely.normalize`` + WKB and ``shapely.line_merge`` (GEOS's LineMerger) give, and falls back
to those calls where it cannot be sure; ``urbangeo.geo.grid`` runs its spatial predicates only on
cells near the boundary's rings. This script compares, on random inputs:

1. ``_unique_undirected_fast`` with ``np.unique`` of normalised WKB, and ``_line_merge_fast``
   with ``shapely.line_merge`` (the same lines, coordinates and order), on lines sharing end
   points on a small integer grid (ties, collinear edges, loops, repeated points) and on random
   float coordinates, with duplicated and reversed lines;
2. ``sample_points`` with ``urbangeo/geo/sampling.py`` at ``--reference-rev`` (from git, with
   the working tree's ``linemerge.py`` where that version imports it; mixed geometry types, 3D,
   empty and missing geometries, regions), column for column (points to a micrometre: they are
   found on coordinate arrays, no longer by GEOS);
3. ``make_grid`` with ``urbangeo/geo/grid.py`` at that revision (discs, grid-aligned boxes, holes,
   multipolygons, star polygons, diamonds with corners on grid lines).

It prints how often the fast merge fell back to GEOS (expected on the integer grid: collinear
out-edges the floating-point filter cannot order, or ties at nodes of degree > 16). Run from the
repository root (not part of the test suite)::

    .venv/bin/python benchmarks/check_fast_paths.py --cases 300 --seed 0
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings

import geopandas as gpd
import numpy as np
import shapely
from git_reference import load_at  # the script's folder is on sys.path

from urbangeo.geo import linemerge as LM
from urbangeo.geo import sampling as S
from urbangeo.geo.grid import make_grid

CRS = "EPSG:32723"


def geos_unique(lines):
    _, first = np.unique(shapely.to_wkb(shapely.normalize(lines)), return_index=True)
    return np.sort(first)


def geos_merge(lines):
    return shapely.get_parts(shapely.line_merge(shapely.multilinestrings(lines)))


def same_geoms(a, b) -> bool:
    return len(a) == len(b) and bool((shapely.to_wkb(a) == shapely.to_wkb(b)).all())


def grid_lines(rng) -> np.ndarray:
    """Lines on a small integer grid, pieces of polylines and loops, some reversed."""
    out = []
    for _ in range(rng.integers(1, 15)):
        c = np.cumsum(rng.integers(-3, 4, size=(rng.integers(3, 12), 2)), axis=0).astype(float)
        if rng.random() < 0.3:
            c = np.vstack([c, c[:1]])
        if rng.random() < 0.1:
            c = np.vstack([c[:1], c])  # a repeated point
        cuts = rng.choice(np.arange(1, len(c) - 1), size=min(len(c) - 2, 4), replace=False)
        bounds = [0, *sorted(cuts[: rng.integers(0, 5)]), len(c) - 1]
        for a, b in itertools.pairwise(bounds):
            piece = c[a : b + 1]
            out.append(shapely.LineString(piece[::-1] if rng.random() < 0.5 else piece))
    return np.array(out, dtype=object)


def float_lines(rng) -> np.ndarray:
    """Lines between random nodes with random middle points, float coordinates."""
    n_nodes = rng.integers(2, 40) if rng.random() < 0.6 else rng.integers(40, 200)
    nodes = rng.uniform(-50, 50, size=(n_nodes, 2)) + rng.choice([0, 3e5, 7e6])
    out = []
    for _ in range(rng.integers(1, 80)):
        a, b = rng.integers(0, n_nodes, 2)
        c = np.vstack(
            [nodes[a], rng.uniform(-50, 50, (rng.integers(0, 3), 2)) + nodes[a], nodes[b]]
        )
        if len(c) > 2 or a != b:
            out.append(shapely.LineString(c))
    return np.array(out or [shapely.LineString([(0, 0), (1, 1)])], dtype=object)


def check_merge(rng, cases: int) -> None:
    fallbacks = n = 0
    for i in range(cases):
        lines = grid_lines(rng) if i % 2 else float_lines(rng)
        dup = rng.random(len(lines)) < 0.3
        lines = np.concatenate(
            [lines, shapely.reverse(lines[dup]), lines[rng.random(len(lines)) < 0.1]]
        )
        lines = lines[rng.permutation(len(lines))]
        keep = LM._unique_undirected_fast(lines)
        assert keep is not None and np.array_equal(keep, geos_unique(lines)), ("unique", i)
        for subset in (lines, lines[keep]):
            n += 1
            merged = LM._line_merge_fast(subset)
            if merged is None:
                fallbacks += 1
            elif not same_geoms(merged, geos_merge(subset)):
                raise AssertionError(f"line merge differs, case {i}: {shapely.to_wkt(subset)}")
    print(
        f"dedupe and merge: {n} inputs equal to GEOS; the merge fell back to GEOS for {fallbacks}"
    )


def check_sampling(rng, cases: int, before) -> None:
    x0, y0 = 300_000.0, 7_400_000.0
    regions = make_grid(
        gpd.GeoDataFrame(geometry=[shapely.box(x0, y0, x0 + 3000, y0 + 3000)], crs=CRS),
        cell_size=500,
    )
    exact, worst = 0, 0.0
    for i in range(cases):
        n_nodes = rng.integers(2, 60)
        nodes = rng.uniform(0, 3000, (n_nodes, 2)) + np.array([x0, y0])
        if rng.random() < 0.3:
            nodes = np.round(nodes / 100) * 100
        geoms = []
        for _ in range(rng.integers(1, 80)):
            a, b = rng.integers(0, n_nodes, 2)
            c = np.vstack(
                [nodes[a], rng.uniform(-300, 300, (rng.integers(0, 3), 2)) + nodes[a], nodes[b]]
            )
            if len(c) == 2 and a == b:
                continue
            g, r = shapely.LineString(c), rng.random()
            if r < 0.05:
                g = shapely.force_3d(g, 5.0)
            elif r < 0.08:
                g = shapely.MultiLineString([g, shapely.LineString(c[::-1] + 7)])
            elif r < 0.1:
                g = None
            elif r < 0.12:
                g = shapely.Point(c[0])
            elif r < 0.13:
                g = shapely.LineString()
            geoms.append(g)
            if g is not None and rng.random() < 0.3:
                geoms.append(shapely.reverse(g))
        roads = gpd.GeoDataFrame(geometry=geoms, crs=CRS)
        kw = dict(
            interval=float(rng.choice([50, 137.5, 500])),
            merge_tolerance=float(rng.choice([0, 10, 25])),
        )
        if rng.random() < 0.3:
            kw["regions"] = regions
        a, b = S.sample_points(roads, **kw), before.sample_points(roads, **kw)
        exact += same_geoms(a.geometry.values, b.geometry.values)
        worst = max(worst, same_sample(a, b, regions.boundary.union_all(), i))
    print(
        f"sample_points: {cases} road sets as the version before ({exact} bit for bit; "
        f"largest distance between the same point {worst:.2g} m)"
    )


def same_sample(a, b, edges, i) -> float:
    """Check that two sample_points frames are the same sample: the same points within a
    micrometre (the points are found on coordinate arrays since 2026-11-22, no longer with
    GEOS's line_interpolate_point), headings within their 0.001 degree rounding, the same
    ids and regions (but for points within a micrometre of a region's edge). Returns the
    largest distance between the same point."""
    assert list(a.columns) == list(b.columns) and len(a) == len(b), ("sample_points", i)
    xy_a, xy_b = shapely.get_coordinates(a.geometry.values), shapely.get_coordinates(b.geometry)
    far = float(np.abs(xy_a - xy_b).max(initial=0.0))
    assert far < 1e-6, ("sample_points geometry", i, far)
    turn = (a["heading"].to_numpy() - b["heading"].to_numpy() + 180) % 360 - 180
    assert np.abs(turn).max(initial=0) <= 0.0011, ("heading", i)
    for col in ("lon", "lat"):
        assert np.allclose(a[col], b[col], rtol=0, atol=1e-11), (col, i)
    assert a["point_id"].equals(b["point_id"]), ("point_id", i)
    on_edge = shapely.dwithin(a.geometry.values, edges, 1e-6)
    assert a["region_id"][~on_edge].equals(b["region_id"][~on_edge]), ("region_id", i)
    return far


def check_grid(rng, cases: int, before) -> None:
    for i in range(cases):
        x, y = 333_000 + rng.uniform(-5e3, 5e3), 7_395_000 + rng.uniform(-5e3, 5e3)
        kind = i % 6
        if kind == 0:
            geom = shapely.Point(x, y).buffer(
                rng.uniform(100, 5000), quad_segs=int(rng.integers(1, 32))
            )
        elif kind == 1:  # on the lattice: cells touching the boundary along edges
            a = np.round(np.array([x, y]) / 500) * 500
            geom = shapely.box(*a, a[0] + 500 * rng.integers(1, 8), a[1] + 250 * rng.integers(1, 8))
        elif kind == 2:
            geom = (
                shapely.Point(x, y).buffer(3000).difference(shapely.Point(x + 500, y).buffer(1000))
            )
        elif kind == 3:
            discs = rng.uniform(-4e3, 4e3, (5, 2)) + np.array([x, y])
            geom = shapely.union_all(
                [shapely.Point(p).buffer(rng.uniform(50, 1500)) for p in discs]
            )
        elif kind == 4:
            k = rng.integers(3, 40)
            t, r = np.sort(rng.uniform(0, 2 * np.pi, k)), rng.uniform(200, 4000, k)
            geom = shapely.make_valid(
                shapely.Polygon(np.column_stack([x + r * np.cos(t), y + r * np.sin(t)]))
            )
        else:  # corners on grid lines
            a, d = np.round(np.array([x, y]) / 1000) * 1000, 1000 * rng.integers(1, 4)
            geom = shapely.Polygon(
                [(a[0] - d, a[1]), (a[0], a[1] + d), (a[0] + d, a[1]), (a[0], a[1] - d)]
            )
        boundary = gpd.GeoDataFrame(geometry=[geom], crs=CRS)
        size = float(rng.choice([50, 100, 250, 333.3, 500, 1000]))
        a = make_grid(boundary, cell_size=size, force=True)
        b = before.make_grid(boundary, cell_size=size, force=True)
        assert list(a.columns) == list(b.columns) and list(a.dtypes) == list(b.dtypes), i
        assert same_geoms(a.geometry.values, b.geometry.values), ("grid geometry", i)
        for col in a.columns.drop("geometry"):
            assert np.array_equal(a[col].to_numpy(), b[col].to_numpy()), ("grid", col, i)
    print(f"make_grid: {cases} boundaries equal to the version before")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference-rev",
        default="e8984cd",
        help="git revision of sampling.py/grid.py before the fast paths (default: e8984cd)",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(args.seed)
    check_merge(rng, args.cases)
    check_sampling(rng, args.cases, load_at(args.reference_rev, "urbangeo/geo/sampling.py"))
    check_grid(rng, args.cases, load_at(args.reference_rev, "urbangeo/geo/grid.py"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
