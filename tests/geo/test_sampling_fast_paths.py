"""The numpy fast paths of linemerge.py and sampling.py agree with GEOS on random networks.

``unique_undirected`` and ``merge_lines`` avoid GEOS's slow paths on large networks, and
``sample_points`` finds its points on coordinate arrays instead of with
``shapely.line_interpolate_point``; here they are checked against the straightforward shapely
computations they replace, on integer-grid networks (shared nodes, ties, loops, duplicated and
reversed lines) and random float lines.
"""

import geopandas as gpd
import numpy as np
import pytest
import shapely

from tests.conftest import UTM35
from urbangeo.geo import linemerge
from urbangeo.geo.linemerge import merge_lines, unique_undirected
from urbangeo.geo.sampling import (
    HEADING_STEP_M,
    bearings,
    merge_close_points,
    sample_points,
    stride_positions,
)


def _grid_network(rng, n_lines):
    lines = []
    for _ in range(n_lines):
        k = rng.integers(2, 5)
        steps = rng.choice([(0, 1), (1, 0), (0, -1), (-1, 0)], size=k - 1)
        start = rng.integers(0, 6, size=2)
        coords = np.vstack([start, start + np.cumsum(steps, axis=0)])
        if len({tuple(c) for c in coords}) == len(coords):
            lines.append(shapely.LineString(coords.astype(float)))
    extra = [lines[i] for i in rng.integers(0, len(lines), size=len(lines) // 3)]
    reversed_ = [shapely.reverse(g) for g in extra[: len(extra) // 2]]
    out = np.array(lines + extra + reversed_, dtype=object)
    return out[rng.permutation(len(out))]


def _float_network(rng, n_lines):
    nodes = rng.uniform(0, 1000, size=(n_lines, 2))
    lines = [
        shapely.LineString([nodes[i], nodes[j]])
        for i, j in rng.integers(0, n_lines, size=(n_lines, 2))
        if i != j
    ]
    return np.array(lines + [shapely.reverse(g) for g in lines[:5]], dtype=object)


def _keys(geoms):
    return sorted(shapely.to_wkb(shapely.normalize(np.asarray(geoms, dtype=object))))


@pytest.mark.parametrize("seed", range(40))
def test_unique_undirected_matches_normalised_wkb(seed):
    rng = np.random.default_rng(seed)
    lines = _grid_network(rng, 30) if seed % 2 else _float_network(rng, 30)
    expected_keys = shapely.to_wkb(shapely.normalize(lines))
    _, first = np.unique(expected_keys, return_index=True)
    expected = lines[np.sort(first)]
    got = unique_undirected(lines)
    assert len(got) == len(expected)
    assert all(shapely.equals_exact(a, b, 0) for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize("seed", range(40))
def test_merge_lines_matches_geos(seed):
    rng = np.random.default_rng(1000 + seed)
    lines = unique_undirected(_grid_network(rng, 40) if seed % 2 else _float_network(rng, 40))
    expected = shapely.get_parts(shapely.line_merge(shapely.multilinestrings(lines)))
    got = merge_lines(lines)
    assert _keys(got) == _keys(expected[shapely.length(expected) > 0])
    assert shapely.length(got).sum() == pytest.approx(shapely.length(lines).sum())


def _in_metres(lines, rng):
    """The network scaled to a few km and moved onto UTM 35N, with some bends added."""
    scale = rng.uniform(80, 400)
    moved = shapely.transform(lines, lambda xy: xy * scale + [500_000.0, 6_700_000.0])
    return gpd.GeoDataFrame(geometry=moved, crs=UTM35)


def _shapely_sample(roads, interval, tolerance):
    """sample_points' points and headings the plain way: GEOS's merge, lengths and
    line_interpolate_point, then the same stride, merge and bearings."""
    lines = merge_lines(unique_undirected(np.asarray(roads.geometry.values)))
    lengths = shapely.length(lines)
    line, dist = stride_positions(lengths, interval)
    points = shapely.line_interpolate_point(lines[line], dist)
    keep = merge_close_points(points, tolerance)
    line, dist, points = line[keep], dist[keep], points[keep]
    length = lengths[line]
    step = np.minimum(HEADING_STEP_M, length / 2)
    behind = shapely.line_interpolate_point(lines[line], np.clip(dist - step, 0, length))
    ahead = shapely.line_interpolate_point(lines[line], np.clip(dist + step, 0, length))
    return shapely.get_coordinates(points), bearings(behind, ahead, UTM35)


def _assert_same_sample(got, xy, heading):
    assert len(got) == len(xy)
    np.testing.assert_allclose(shapely.get_coordinates(got.geometry.values), xy, rtol=0, atol=1e-6)
    turn = (got["heading"].to_numpy() - heading + 180) % 360 - 180
    np.testing.assert_allclose(turn, 0, atol=2e-3)  # headings are rounded to 0.001 degrees


@pytest.mark.parametrize("seed", range(16))
def test_sample_points_match_shapely_interpolation(seed):
    rng = np.random.default_rng(2000 + seed)
    roads = _in_metres(_grid_network(rng, 40) if seed % 2 else _float_network(rng, 40), rng)
    interval, tolerance = rng.choice([50.0, 120.0, 500.0]), rng.choice([0.0, 25.0])
    xy, heading = _shapely_sample(roads, interval, tolerance)
    got = sample_points(roads, interval=interval, merge_tolerance=tolerance)
    assert len(got) > 3
    _assert_same_sample(got, xy, heading)


@pytest.mark.parametrize("slow_path", ["geos_merge", "wkb_dedup"])
def test_sample_points_through_geos_give_the_same_points(slow_path, monkeypatch):
    """Where the fast merge or dedup cannot be sure of GEOS's result, GEOS's own calls are
    used: forced here, the points are the same."""
    rng = np.random.default_rng(7)
    roads = _in_metres(_float_network(rng, 60), rng)
    fast = sample_points(roads, interval=100.0)
    if slow_path == "geos_merge":
        monkeypatch.setattr(linemerge, "_star_order_holds", lambda *a: False)
    else:
        monkeypatch.setattr(linemerge, "_unique_undirected_fast", lambda *a: None)
    slow = sample_points(roads, interval=100.0)
    _assert_same_sample(slow, shapely.get_coordinates(fast.geometry.values), fast["heading"])
