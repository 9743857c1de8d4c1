"""The numpy fast paths of sampling.py agree with GEOS on random networks.

``unique_undirected`` and ``merge_lines`` avoid GEOS's slow paths on large networks; here they
are checked against the straightforward shapely computations they replace, on integer-grid
networks (shared nodes, ties, loops, duplicated and reversed lines) and random float lines.
"""

import numpy as np
import pytest
import shapely

from urbangeo.geo.sampling import merge_lines, unique_undirected


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
