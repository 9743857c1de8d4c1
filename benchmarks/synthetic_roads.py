"""A synthetic street network for the sampling benchmark (numpy + shapely, no data files).

A jittered lattice of streets with ~``block`` m blocks, in UTM zone 23S (EPSG:32723, the São
Paulo zone). Each block side is one directed edge (a 3-vertex LineString, its middle vertex
pushed sideways a little so that streets are not straight); 10 % of the edges are split in
two at that middle vertex (a degree-2 node, as OSM ways often have) so that line merging has
work to do. Streets (whole lattice rows/columns) are two-way for a random half (both
directions present as separate, reversed LineStrings, as in a directed graph) and one-way,
in a random direction, for the rest. Edges come in a random order. Deterministic for a seed.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import shapely

CRS = "EPSG:32723"
ORIGIN = (250_000.0, 7_300_000.0)


def lattice_size(km: float, block: float) -> int:
    """Blocks per side of a square lattice with at least ``km`` km of (undirected) street."""
    # 2 * n * (n + 1) block sides of ~block m (a bit more with the jitter).
    return max(1, math.ceil((-1 + math.sqrt(1 + 2 * km * 1000 / block)) / 2))


def synthetic_network(
    km: float = 100_000, *, block: float = 100.0, seed: int = 0, scattered: bool = False
) -> gpd.GeoDataFrame:
    """Directed edges of a jittered street lattice with at least ``km`` km of street.

    The geometries are created in row order, as when roads are read from a file or
    reprojected; ``scattered=True`` creates them in lattice order and then shuffles the rows,
    so that consecutive rows lie far apart in memory (the same rows and geometries, slower to
    read for anything that goes through them all).

    Returns a GeoDataFrame (EPSG:32723) with ``street`` (int), ``two_way`` (bool) and
    ``reverse_copy`` (bool: the second, reversed edge of a two-way street) columns.
    """
    rng = np.random.default_rng(seed)
    n = lattice_size(km, block)
    # Node positions, jittered by up to 20 % of a block.
    ii, jj = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    x = ORIGIN[0] + ii * block + rng.uniform(-0.2, 0.2, ii.shape) * block
    y = ORIGIN[1] + jj * block + rng.uniform(-0.2, 0.2, ii.shape) * block
    # Horizontal edges (i, j) -> (i + 1, j), street j; vertical (i, j) -> (i, j + 1), street
    # n + 1 + i.
    hx0, hy0, hx1, hy1 = x[:-1, :], y[:-1, :], x[1:, :], y[1:, :]
    vx0, vy0, vx1, vy1 = x[:, :-1], y[:, :-1], x[:, 1:], y[:, 1:]
    hstreet = np.broadcast_to(np.arange(n + 1)[None, :], hx0.shape)
    vstreet = np.broadcast_to((n + 1 + np.arange(n + 1))[:, None], vx0.shape)
    x0 = np.concatenate([hx0.ravel(), vx0.ravel()])
    y0 = np.concatenate([hy0.ravel(), vy0.ravel()])
    x1 = np.concatenate([hx1.ravel(), vx1.ravel()])
    y1 = np.concatenate([hy1.ravel(), vy1.ravel()])
    street = np.concatenate([hstreet.ravel(), vstreet.ravel()])
    m = len(x0)
    # Middle vertex: the midpoint pushed sideways by up to 10 % of the edge length.
    dx, dy = x1 - x0, y1 - y0
    off = rng.uniform(-0.1, 0.1, m)
    mx, my = (x0 + x1) / 2 - dy * off, (y0 + y1) / 2 + dx * off
    n_streets = 2 * (n + 1)
    two_way_street = rng.random(n_streets) < 0.5
    flip_street = rng.random(n_streets) < 0.5  # direction of the one-way streets
    flip = flip_street[street] & ~two_way_street[street]
    coords = np.stack(
        [np.stack([x0, y0], -1), np.stack([mx, my], -1), np.stack([x1, y1], -1)], axis=1
    )
    coords[flip] = coords[flip, ::-1]
    split = rng.random(m) < 0.1
    # Each edge as up to 3 points (a split edge's halves have 2): whole edges, first halves,
    # second halves, then the reversed copies of the two-way streets' edges.
    pieces = np.concatenate([coords[~split], coords[split], coords[split]])
    n_points = np.concatenate([np.full((~split).sum(), 3), np.full(2 * split.sum(), 2)])
    second = np.zeros(len(pieces), dtype=bool)
    second[len(pieces) - split.sum() :] = True
    pieces[second, :2] = pieces[second, 1:]  # the second half: points 1 and 2
    st = np.concatenate([street[~split], street[split], street[split]])
    two = two_way_street[st]
    rev = pieces[two].copy()
    for k in (2, 3):  # reverse the first k points
        sel = n_points[two] == k
        rev[sel, :k] = rev[sel, k - 1 :: -1]
    pieces = np.concatenate([pieces, rev])
    n_points = np.concatenate([n_points, n_points[two]])
    copy = np.concatenate([np.zeros(len(st), dtype=bool), np.ones(two.sum(), dtype=bool)])
    st = np.concatenate([st, st[two]])
    order = rng.permutation(len(pieces))

    def lines(rows):  # the LineStrings of these rows, made in this order
        counts = n_points[rows]
        flat = pieces[rows][np.arange(3) < counts[:, None]]
        return shapely.linestrings(flat, indices=np.repeat(np.arange(len(rows)), counts))

    # In row order, or made in lattice order and then shuffled.
    geoms = lines(np.arange(len(pieces)))[order] if scattered else lines(order)
    return gpd.GeoDataFrame(
        {"street": st[order], "two_way": two_way_street[st[order]], "reverse_copy": copy[order]},
        geometry=geoms,
        crs=CRS,
    )
