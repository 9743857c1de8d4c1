"""Street-view sample points every ``interval`` metres along a road network.

The method, vectorised with shapely 2 (no Python loop per road):

1. Two-way streets count once: lines that are the same up to direction (the two edges of a
   two-way street in a directed graph) are dropped by comparing normalised geometries.
2. Road pieces that meet end to end with no junction are merged into longer lines
   (``shapely.line_merge``), so a street split into many short OSM edges is one line.
3. The merged lines are walked one after another with a single stride of ``interval``
   metres (the leftover of one line carries into the next): every line gets points exactly
   ``interval`` apart, the network gets one point per ``interval`` of its length, and short
   pieces between junctions are not each given a point of their own. The points are found on
   the merged lines' coordinate arrays (segment, then fraction of it, as GEOS's
   ``line_interpolate_point`` finds them), without making the merged lines.
4. Points closer than ``merge_tolerance`` (default 25 m, about a junction's width) are merged
   into the first of them: these are the near-duplicates where lines meet.
5. Each point gets its ``heading``: the geodesic bearing of the road at that point, in
   degrees clockwise from true north, [0, 360) (the camera heading for a street-view request;
   the opposite view is ``heading + 180``), its lon/lat, and the ``region_id`` of the region
   that contains it (the first by row order when it lies on a shared edge).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Geod, Transformer
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.geo.crs import metric_crs

_GEOD = Geod(ellps="WGS84")
#: Half-length of the road piece whose direction gives a point's heading.
HEADING_STEP_M = 5.0


def first_undirected(lines: np.ndarray) -> np.ndarray:
    """Sorted indices of the lines that do not repeat an earlier one in either direction."""
    if len(lines) == 0:
        return np.zeros(0, dtype=np.int64)
    keep = _unique_undirected_fast(lines)
    if keep is None:
        keys = shapely.to_wkb(shapely.normalize(lines))
        _, first = np.unique(keys, return_index=True)
        keep = np.sort(first)
    return keep


def unique_undirected(lines: np.ndarray) -> np.ndarray:
    """Drop lines that repeat another line, in the same or the opposite direction."""
    return lines[first_undirected(lines)]


def merge_lines(lines: np.ndarray) -> np.ndarray:
    """Merge lines that meet end to end (degree-2 nodes) into longer LineStrings."""
    if len(lines) == 0:
        return lines
    parts = _line_merge_fast(lines)
    if parts is None:
        parts = _geos_merge(lines)
    return parts[shapely.length(parts) > 0]


def _geos_merge(lines: np.ndarray) -> np.ndarray:
    return shapely.get_parts(shapely.line_merge(shapely.multilinestrings(lines)))


class _Paths(NamedTuple):
    """Lines as coordinates: ``xy`` (complex, x + yj) of all lines laid end to end, line ``i``
    being ``xy[start[i]:start[i + 1]]``; ``at[k]``, the distance along the lines laid end to
    end of ``xy[k]`` (none between one line's last point and the next's first); ``lengths``,
    each line's length summed from its start, as GEOS sums it."""

    xy: np.ndarray
    start: np.ndarray
    at: np.ndarray
    lengths: np.ndarray

    def locate(self, line: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x, y of the points ``dist`` along lines ``line``, found as GEOS's
        ``line_interpolate_point`` finds them: the segment, then the fraction of it."""
        first, last = self.start[line], self.start[line + 1] - 1
        where = self.at[first] + dist
        seg = np.clip(np.searchsorted(self.at, where, side="right") - 1, first, last - 1)
        a, b = self.xy[seg], self.xy[seg + 1]
        span = self.at[seg + 1] - self.at[seg]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.clip(np.where(span > 0, (where - self.at[seg]) / span, 0.0), 0.0, 1.0)
        return a.real + frac * (b.real - a.real), a.imag + frac * (b.imag - a.imag)


def _paths(xy: np.ndarray, line: np.ndarray) -> _Paths:
    """:class:`_Paths` of the lines whose (complex) coordinates ``xy`` belong to lines
    ``line`` (each line's coordinates together, in order), lines of zero length dropped."""
    if len(xy) == 0:
        return _Paths(xy, np.zeros(1, dtype=np.int64), np.zeros(0), np.zeros(0))
    start = np.flatnonzero(np.concatenate([[True], line[1:] != line[:-1], [True]]))
    step = np.zeros(len(xy))  # step[k]: from xy[k] to xy[k + 1] on the same line
    step[:-1] = np.abs(np.diff(xy))  # hypot
    step[start[1:] - 1] = 0.0
    lengths = np.add.reduceat(step, start[:-1])
    positive = lengths > 0
    if not positive.all():
        owner, _ = _spans(np.diff(start))
        keep = positive[owner]
        return _paths(xy[keep], owner[keep])
    return _Paths(xy, start, np.concatenate([[0.0], np.cumsum(step[:-1])]), lengths)


def _unique_merged(lines: np.ndarray, plain: tuple[np.ndarray, np.ndarray] | None) -> _Paths:
    """``merge_lines(unique_undirected(lines))`` as :class:`_Paths`, for ``lines`` from
    :func:`_road_lines` (with its ``plain``)."""
    if len(lines) == 0:
        return _paths(np.zeros(0, dtype=np.complex128), np.zeros(0, dtype=np.int64))
    plain = plain or _plain_coords(lines, checked=True)
    keep = None if plain is None else _unique_undirected_fast(lines, plain)
    if keep is None:
        lines = unique_undirected(lines)
    else:
        coords, n = plain
        del plain
        owner, pos = _spans(n[keep])
        coords, n = coords[(np.cumsum(n) - n)[keep][owner] + pos], n[keep]
        del owner, pos
        merged = _walk_strings(coords, n)
        if merged is not None:
            return _paths(*_string_coords(coords, n, *merged))
        lines = lines[keep]
    xy, line = shapely.get_coordinates(_geos_merge(lines), return_index=True)
    return _paths(np.ascontiguousarray(xy).view(np.complex128).reshape(-1), line)


# Fast paths. unique_undirected and merge_lines give exactly what the plain shapely calls give
# (normalised WKB; shapely.line_merge: the same lines, coordinates and order), computed on
# coordinate arrays, which is several times faster on large networks. They take plain 2D
# LineStrings with finite coordinates and return None, for the shapely calls to do the work,
# for anything else or wherever GEOS's result could hang on arithmetic they do not repeat.

_K1 = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's constants
_K2 = np.uint64(0xBF58476D1CE4E5B9)
_K3 = np.uint64(0x94D049BB133111EB)
#: GEOS sorts a node's edges with std::sort, stable (insertion sort) up to 16 elements.
_STABLE_SORT_MAX = 16
#: Lines hashed at a time.
_CHUNK = 1 << 17


def _plain_coords(lines: np.ndarray, checked: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """(coordinates, coordinate counts) of plain 2D LineStrings, finite, else None.

    The coordinates come as one complex number each, x + yj (a view of shapely's array):
    picking them by index is much faster than picking rows of an (n, 2) array. ``checked``:
    the lines are known to be 2D LineStrings (as :func:`_road_lines` returns them).
    """
    if not checked and not (shapely.get_type_id(lines) == 1).all():
        return None
    if not checked and (shapely.has_z(lines).any() or shapely.has_m(lines).any()):
        return None
    coords = shapely.get_coordinates(lines)
    if not np.isfinite(coords).all():
        return None
    points = np.ascontiguousarray(coords).view(np.complex128).reshape(-1)
    return points, shapely.get_num_coordinates(lines).astype(np.int64)


def _spans(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For items of ``counts`` elements laid end to end: each element's item and its place."""
    owner = np.repeat(np.arange(len(counts)), counts)
    offsets = np.cumsum(counts) - counts
    return owner, np.arange(len(owner)) - offsets[owner]


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    h = (h ^ (h >> np.uint64(30))) * _K2
    h = (h ^ (h >> np.uint64(27))) * _K3
    return h ^ (h >> np.uint64(31))


def _unique_undirected_fast(
    lines: np.ndarray, plain: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray | None:
    """The sorted indices that ``np.unique`` of normalised WKB keeps, or None.

    ``normalize`` makes an open LineString start at the smaller end point (x, then y); two
    normalised WKBs are equal when the coordinates are, bit for bit. Closed lines (which GEOS
    rotates) are left to shapely; they equal only closed lines, as empty lines only empty ones.
    ``plain``: the lines' :func:`_plain_coords`, when known.
    """
    plain = plain or _plain_coords(lines)
    if plain is None:
        return None
    coords, n = plain
    starts = np.cumsum(n) - n
    keep = [np.flatnonzero(n == 0)[:1]]
    nonempty = np.flatnonzero(n > 0)
    first, last = coords[starts[nonempty]], coords[starts[nonempty] + n[nonempty] - 1]
    closed = first == last
    if closed.any():
        ring = nonempty[closed]
        _, kept = np.unique(shapely.to_wkb(shapely.normalize(lines[ring])), return_index=True)
        keep.append(ring[kept])
    lines_open = nonempty[~closed]
    if len(lines_open):
        first, last = first[~closed], last[~closed]
        x0, y0, x1, y1 = first.real, first.imag, last.real, last.imag
        flip = (x0 > x1) | ((x0 == x1) & (y0 > y1))
        n_open = n[lines_open]
        if len(lines_open) < len(lines):
            owner, pos = _spans(n_open)
            coords = coords[starts[lines_open][owner] + pos]
        kept = _first_of_equal(coords, n_open, flip)
        if kept is None:
            return None
        keep.append(lines_open[kept])
    return np.sort(np.concatenate(keep))


def _first_of_equal(points: np.ndarray, n: np.ndarray, flip: np.ndarray) -> np.ndarray | None:
    """The first of each set of equal lines, or None after a hash collision.

    ``points``: the lines' coordinates (complex), laid end to end, ``n`` of them each; a line
    with ``flip`` set is compared read backwards. Equal means equal bits.
    """
    bits = points.view(np.uint64).reshape(-1, 2)
    offsets = np.cumsum(n) - n
    h = np.empty(len(n), dtype=np.uint64)
    for i in range(0, len(n), _CHUNK):  # in chunks: small temporary arrays are much cheaper
        j = min(i + _CHUNK, len(n))
        m = n[i:j]
        owner, pos = _spans(m)
        place = np.where(flip[i:j][owner], m[owner] - 1 - pos, pos)  # in the normalised line
        b = bits[offsets[i] : offsets[j - 1] + m[-1]]
        h_xy = _mix(_mix(b[:, 0] + place.astype(np.uint64) * _K1) ^ b[:, 1])
        h[i:j] = np.add.reduceat(h_xy, np.cumsum(m) - m)
    # Group by hash (factorize numbers the hashes in order of first appearance, so a line is
    # the first with its hash where the running maximum of the numbers goes up).
    group, _ = pd.factorize(_mix(h + n.astype(np.uint64) * _K1))
    top = np.maximum.accumulate(group)
    first = np.concatenate([[True], top[1:] > top[:-1]])
    leaders = np.flatnonzero(first)
    # Check that each line equals the first with its hash, coordinate for coordinate.
    same = np.flatnonzero(~first)
    lead = leaders[group[same]]
    if not (n[same] == n[lead]).all():
        return None
    o, q = _spans(n[same])
    nq = n[same][o] - 1 - q
    mine = offsets[same][o] + np.where(flip[same][o], nq, q)
    theirs = offsets[lead][o] + np.where(flip[lead][o], nq, q)
    if not (points[mine].view(np.uint64) == points[theirs].view(np.uint64)).all():
        return None
    return leaders


def _orientation_filter(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """GEOS's orientation of ``r`` to the ray ``p``->``q`` (-1 right, 0, 1 left) as its
    floating-point filter computes it, or 2 where that filter cannot decide (complex points)."""
    left = (p.real - r.real) * (q.imag - r.imag)
    right = (p.imag - r.imag) * (q.real - r.real)
    det = left - right
    both = ((left > 0) & (right > 0)) | ((left < 0) & (right < 0))
    bound = 1e-15 * np.abs(left + right)
    sure = ~both | (det >= bound) | (-det >= bound)
    return np.where(sure, np.sign(det), 2).astype(np.int64)


class _MergeGraph(NamedTuple):
    """GEOS LineMerger's graph. Directed edge d: 2*e runs line ``edge_line[e]`` forwards,
    2*e + 1 backwards (d ^ 1 is its twin); it leaves ``node[d]`` at ``xy[d]`` towards the next
    distinct point, ``toward[d]``. Nodes are numbered in (x, y) order; ``star`` lists the
    directed edges by node, then by GEOS's order round the node; ``rank`` is the inverse."""

    edge_line: np.ndarray
    n_distinct: np.ndarray
    xy: np.ndarray
    toward: np.ndarray
    node: np.ndarray
    degree: np.ndarray
    quadrant: np.ndarray
    star: np.ndarray
    rank: np.ndarray


def _line_merge_fast(
    lines: np.ndarray, plain: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray | None:
    """``get_parts(line_merge(multilinestrings(lines)))``, as GEOS's LineMerger builds it, or
    None where GEOS must decide. ``plain``: as for :func:`_unique_undirected_fast`."""
    plain = plain or _plain_coords(lines)
    if plain is None:
        return None
    merged = _walk_strings(*plain)
    if merged is None:
        return None
    return _merged_lines(lines, *plain, *merged)


def _walk_strings(
    coords: np.ndarray, n: np.ndarray
) -> tuple[_MergeGraph | None, np.ndarray, np.ndarray] | None:
    """GEOS's LineMerger on the lines with ``n`` (complex) ``coords`` each: its graph (None if
    empty), the directed edges walked, string after string, and the string of each; None
    where the order of the edges round a node could differ from GEOS's.

    GEOS makes a graph whose nodes are the lines' end points (after dropping repeated points;
    lines left with one point are skipped), each node's out-edges sorted by angle. Walking the
    nodes in (x, y) order, from each node not of degree 2 it follows each out-edge whose line
    is not used yet through the degree-2 nodes, and makes one line of each such string; then
    it does the same for the loops left (all nodes of degree 2), from the node first in order.
    A string's coordinates are its lines', repeated points dropped, reversed when more of its
    lines were walked backwards than forwards.
    """
    graph = _merge_graph(coords, n)
    if graph is None:
        return None, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    walked, string, check = _merge_walk(graph)
    if not _star_order_holds(graph, check):
        return None
    return graph, walked, string


def _merge_graph(coords: np.ndarray, n: np.ndarray) -> _MergeGraph | None:
    """The graph of the lines with ``n`` (complex) ``coords`` each, None if it is empty."""
    owner, _ = _spans(n)
    repeated = np.zeros(len(coords), dtype=bool)
    repeated[1:] = (coords[1:] == coords[:-1]) & (owner[1:] == owner[:-1])
    distinct = np.flatnonzero(~repeated)
    n_distinct = np.bincount(owner[distinct], minlength=len(n))
    del owner, repeated
    edge_line = np.flatnonzero(n_distinct >= 2)  # the lines in the graph
    if len(edge_line) == 0:
        return None
    k0 = (np.cumsum(n_distinct) - n_distinct)[edge_line]
    k1 = k0 + n_distinct[edge_line] - 1
    n_de = 2 * len(edge_line)
    xy = np.empty(n_de, dtype=np.complex128)
    xy[0::2], xy[1::2] = coords[distinct[k0]], coords[distinct[k1]]
    toward = np.empty(n_de, dtype=np.complex128)
    toward[0::2], toward[1::2] = coords[distinct[k0 + 1]], coords[distinct[k1 - 1]]
    del distinct, k0, k1
    # Nodes, numbered in GEOS's (x, y) order (complex numbers sort by real, then imaginary
    # part; + 0.0 turns -0.0, equal to 0.0, into 0.0).
    codes, node_xy = pd.factorize(xy + 0.0)
    node_order = np.empty(len(node_xy), dtype=np.int64)
    node_order[np.argsort(node_xy)] = np.arange(len(node_xy))
    node = node_order[codes]
    del codes, node_xy, node_order
    # Each node's out-edges in GEOS's order: by quadrant, then counter-clockwise (orientation),
    # ties in the order they were added. The angle from east, in [0, 2 pi), sorts them so (to
    # be checked), ties in the order added.
    dx = toward.real - xy.real
    dy = toward.imag - xy.imag
    quadrant = np.where(dx >= 0, np.where(dy >= 0, 0, 3), np.where(dy >= 0, 1, 2))
    angle = np.arctan2(dy + 0.0, dx + 0.0)
    del dx, dy
    angle[angle < 0] += 2 * np.pi
    key = node * 8.0 + angle
    del angle
    star = np.argsort(key)
    ordered = key[star]
    if (ordered[1:] == ordered[:-1]).any():  # ties: the order added (a stable sort is slower)
        star = np.argsort(key, kind="stable")
    del key, ordered
    rank = np.empty(n_de, dtype=np.int64)
    rank[star] = np.arange(n_de)
    return _MergeGraph(
        edge_line,
        n_distinct,
        xy,
        toward,
        node,
        np.bincount(node),
        quadrant.astype(np.int8),
        star,
        rank,
    )


def _merge_walk(g: _MergeGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The directed edges walked, string after string; the string of each; and the nodes at
    which the order of the out-edges matters (those of degree other than 2, and where a loop
    starts)."""
    n_de = len(g.node)
    de = np.arange(n_de)
    node_first = np.searchsorted(g.node[g.star], np.arange(len(g.degree)))
    # Walking on through degree-2 nodes: nxt[d] (-1 at other nodes), prv[d] its inverse.
    deg2 = g.degree == 2
    other = np.full(n_de, -1, dtype=np.int64)
    a, b = g.star[node_first[deg2]], g.star[node_first[deg2] + 1]
    other[a], other[b] = b, a
    del node_first, a, b
    nxt = np.where(deg2[g.node[de ^ 1]], other[de ^ 1], -1)
    start = ~deg2[g.node]
    prv = np.where(start, -1, other ^ 1)
    del other
    # Each edge's string: its first edge (ptr) and place in it (dist), by pointer jumping;
    # edges left active after that are on loops with no node of another degree.
    ptr = np.where(start, de, prv)
    del prv
    dist = (~start).astype(np.int64)
    active = np.flatnonzero(~start[ptr])
    for _ in range(n_de.bit_length() + 1):
        if len(active) == 0:
            break
        p = ptr[active]
        dist[active] += dist[p]
        ptr[active] = ptr[p]
        active = active[~start[ptr[active]]]
    on_loop = np.zeros(n_de, dtype=bool)
    on_loop[active] = True
    # A string is walked from whichever of its two first edges comes first; the strings in
    # that order (star lists the edges by rank), each from its first edge to its last.
    tails = np.flatnonzero(~on_loop & (nxt < 0))
    twin_first = np.full(n_de, -1, dtype=np.int64)
    twin_first[ptr[tails]] = tails ^ 1
    size = np.zeros(n_de, dtype=np.int64)
    size[ptr[tails]] = dist[tails] + 1
    del tails
    firsts = np.flatnonzero(start)
    chosen = np.zeros(n_de, dtype=bool)
    chosen[firsts] = g.rank[firsts] < g.rank[twin_first[firsts]]
    del firsts, twin_first
    heads = g.star[chosen[g.star]]
    offset = np.zeros(n_de, dtype=np.int64)
    offset[heads] = np.cumsum(size[heads]) - size[heads]
    on_string = np.flatnonzero(~on_loop & chosen[ptr])
    walked = np.empty(len(on_string), dtype=np.int64)
    walked[offset[ptr[on_string]] + dist[on_string]] = on_string
    string = np.repeat(np.arange(len(heads)), size[heads])
    check = g.degree != 2
    # Loops: started at their first node, with its first out-edge (a few; a Python loop).
    loop_edges = np.flatnonzero(on_loop)
    if len(loop_edges):
        nxt_list = nxt.tolist()
        used: set[int] = set()
        walk, walk_string = [], []
        n_strings = len(heads)
        for d in loop_edges[np.argsort(g.rank[loop_edges])].tolist():
            if d >> 1 in used:
                continue
            check[g.node[d]] = True
            c = d
            while True:
                walk.append(c)
                walk_string.append(n_strings)
                used.add(c >> 1)
                c = nxt_list[c]
                if c == d:
                    break
            n_strings += 1
        walked = np.concatenate([walked, walk])
        string = np.concatenate([string, walk_string])
    return walked, string, check


def _star_order_holds(g: _MergeGraph, check: np.ndarray) -> bool:
    """Whether the out-edges of the ``check`` nodes are in GEOS's order: along a node's
    out-edges quadrants never decrease, and in one quadrant each is clockwise of the next as
    GEOS's filter decides, or collinear with it and added before it (std::sort is stable up to
    16 elements)."""
    star_node, star_quadrant = g.node[g.star], g.quadrant[g.star]
    pair = (star_node[1:] == star_node[:-1]) & check[star_node[:-1]]
    if (star_quadrant[:-1][pair] > star_quadrant[1:][pair]).any():
        return False
    pair = np.flatnonzero(pair & (star_quadrant[1:] == star_quadrant[:-1]))
    a, b = g.star[pair], g.star[pair + 1]
    o = _orientation_filter(g.xy[b], g.toward[b], g.toward[a])
    return not ((o > 0) | ((o == 0) & ((a > b) | (g.degree[g.node[a]] > _STABLE_SORT_MAX)))).any()


def _merged_lines(lines, coords, n, g: _MergeGraph | None, walked, string) -> np.ndarray:
    """The strings as LineStrings: a string of one line without repeated points is that line,
    as it is; the others are made from :func:`_string_coords`."""
    if g is None:
        return np.empty(0, dtype=object)
    n_strings = int(string[-1]) + 1
    size = np.bincount(string, minlength=n_strings)
    first_line = g.edge_line[walked[np.cumsum(size) - size] >> 1]
    as_is = (size == 1) & (n[first_line] == g.n_distinct[first_line])
    out = np.empty(n_strings, dtype=object)
    out[as_is] = lines[first_line[as_is]]
    todo = ~as_is[string]
    if todo.any():
        seq, seq_string = _string_coords(coords, n, g, walked[todo], string[todo])
        shapely.linestrings(seq.view(np.float64).reshape(-1, 2), indices=seq_string, out=out)
    return out


def _string_coords(
    coords, n, g: _MergeGraph | None, walked, string
) -> tuple[np.ndarray, np.ndarray]:
    """The (complex) coordinates of the strings, laid end to end, and the string of each: each
    string's lines' coordinates, repeated points dropped, reversed where more lines were
    walked backwards than forwards."""
    if g is None:
        return np.zeros(0, dtype=np.complex128), np.zeros(0, dtype=np.int64)
    n_strings = int(string[-1]) + 1
    line = g.edge_line[walked >> 1]
    forward = (walked & 1) == 0
    e, pos = _spans(n[line])
    starts = (np.cumsum(n) - n)[line]
    seq = coords[starts[e] + np.where(forward[e], pos, n[line][e] - 1 - pos)]
    seq_string = string[e]
    del e, pos, starts
    keep = np.ones(len(seq), dtype=bool)
    keep[1:] = ~((seq[1:] == seq[:-1]) & (seq_string[1:] == seq_string[:-1]))
    seq, seq_string = seq[keep], seq_string[keep]
    backward = np.bincount(string, weights=~forward, minlength=n_strings)
    reverse = 2 * backward > np.bincount(string, minlength=n_strings)
    start_at = np.flatnonzero(np.concatenate([[True], seq_string[1:] != seq_string[:-1]]))
    count = np.diff(np.append(start_at, len(seq)))
    s, pos = _spans(count)
    flipped = reverse[seq_string[start_at]][s]
    return seq[start_at[s] + np.where(flipped, count[s] - 1 - pos, pos)], seq_string


def stride_positions(lengths: np.ndarray, interval: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions every ``interval`` along lines laid end to end: (line index, distance on it)."""
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    starts = np.concatenate([[0.0], np.cumsum(lengths)])
    total = starts[-1]
    # A tiny epsilon so that a network whose length is an exact multiple keeps its end point.
    n = math.floor(total / interval + 1e-9) + 1
    stations = np.arange(n) * interval
    line = np.searchsorted(starts, stations, side="right") - 1
    line = np.minimum(line, len(lengths) - 1)
    dist = np.minimum(stations - starts[line], lengths[line])
    return line, dist


def merge_close_points(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the points to keep: one (the first) per cluster closer than ``tolerance``."""
    n = len(points)
    if n == 0 or tolerance <= 0:
        return np.arange(n)
    tree = shapely.STRtree(points)
    left, right = tree.query(points, predicate="dwithin", distance=tolerance)
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    return np.sort(first)


def bearings(a: np.ndarray, b: np.ndarray, crs: object) -> np.ndarray:
    """Geodesic bearing from points ``a`` to ``b`` (degrees from true north, [0, 360))."""
    to_wgs = Transformer.from_crs(crs, C.WGS84, always_xy=True)
    lon1, lat1 = to_wgs.transform(shapely.get_x(a), shapely.get_y(a))
    lon2, lat2 = to_wgs.transform(shapely.get_x(b), shapely.get_y(b))
    return _azimuths(lon1, lat1, lon2, lat2)


def _azimuths(lon1, lat1, lon2, lat2) -> np.ndarray:
    azimuth, _, _ = _GEOD.inv(lon1, lat1, lon2, lat2)
    return np.mod(np.asarray(azimuth), 360.0)


def assign_regions(points: np.ndarray, regions: gpd.GeoDataFrame) -> np.ndarray:
    """The ``region_id`` of the region containing each point (None outside all regions)."""
    out = np.full(len(points), None, dtype=object)
    if len(points) == 0 or regions.empty:
        return out
    tree = shapely.STRtree(regions.geometry.values)
    pt, reg = tree.query(points, predicate="intersects")
    order = np.lexsort((reg, pt))  # for each point, its lowest-numbered region first
    pt, reg = pt[order], reg[order]
    first = np.concatenate([[True], pt[1:] != pt[:-1]]) if len(pt) else np.zeros(0, bool)
    out[pt[first]] = regions[C.REGION_ID].to_numpy()[reg[first]]
    return out


def _road_lines(geoms: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The LineString parts of the geometries that are there and not empty, in 2D; and their
    :func:`_plain_coords` where they come out on the way.

    The usual case, 2D LineStrings, takes three passes over the geometries; as each pass over
    a large network is bound by memory latency, they are kept few.
    """
    geoms = geoms[~shapely.is_missing(geoms)]
    if not (
        (shapely.get_type_id(geoms) == 1).all()
        and (shapely.get_coordinate_dimension(geoms) == 2).all()
    ):
        return _lines_2d(geoms[~shapely.is_empty(geoms)]), None
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    n = np.bincount(index, minlength=len(geoms))
    del index
    if not (n > 0).all():  # empty LineStrings, those without coordinates
        geoms, n = geoms[n > 0], n[n > 0]
    if not np.isfinite(coords).all():
        return geoms, None
    return geoms, (np.ascontiguousarray(coords).view(np.complex128).reshape(-1), n)


def _lines_2d(geoms: np.ndarray) -> np.ndarray:
    """The LineString parts of ``geoms``, in 2D (no copies where they already are)."""
    if not (shapely.get_type_id(geoms) == 1).all():
        geoms = shapely.get_parts(geoms)
        geoms = geoms[shapely.get_type_id(geoms) == 1]
    if shapely.has_z(geoms).any() or shapely.has_m(geoms).any():
        geoms = shapely.force_2d(geoms)
    return geoms


def check_sampling_settings(*, interval: float, merge_tolerance: float) -> None:
    """Refuse an interval or merge tolerance :func:`sample_points` cannot use (checked before
    any slow work, such as reading roads, by the stages that sample)."""
    if not (math.isfinite(interval) and interval > 0):
        raise InputError(
            f"The sampling interval must be a positive number of metres, not {interval!r}.",
            hint=f"Try the default, --interval {C.DEFAULT_INTERVAL_M:g}.",
        )
    if not (math.isfinite(merge_tolerance) and merge_tolerance >= 0):
        raise InputError(
            f"The merge tolerance must be 0 or more metres, not {merge_tolerance!r}.",
            hint=f"Try the default, --merge-tolerance {C.DEFAULT_MERGE_TOLERANCE_M:g}.",
        )


def sample_points(
    roads: gpd.GeoDataFrame | gpd.GeoSeries,
    *,
    interval: float = C.DEFAULT_INTERVAL_M,
    merge_tolerance: float = C.DEFAULT_MERGE_TOLERANCE_M,
    regions: gpd.GeoDataFrame | None = None,
) -> gpd.GeoDataFrame:
    """Street-view sample points along ``roads`` (see the module docstring for the method).

    ``roads`` in a geographic CRS are reprojected to their UTM zone. Returns a GeoDataFrame in
    the roads' metric CRS with ``point_id``, ``region_id`` (when ``regions`` are given, else
    None), ``heading``, ``lon`` and ``lat``.
    """
    check_sampling_settings(interval=interval, merge_tolerance=merge_tolerance)
    if roads.crs is None:
        raise InputError("The roads have no CRS.", hint="Give the road data a CRS.")
    crs = metric_crs(roads, roads.crs)
    lines, plain = _road_lines(np.asarray(roads.to_crs(crs).geometry.values))
    paths = _unique_merged(lines, plain)
    del lines, plain

    lengths = paths.lengths
    line, dist = stride_positions(lengths, float(interval))
    x, y = paths.locate(line, dist)
    points = shapely.points(x, y)
    keep = merge_close_points(points, float(merge_tolerance))
    line, dist, x, y, points = line[keep], dist[keep], x[keep], y[keep], points[keep]

    lengths = lengths[line]
    step = np.minimum(HEADING_STEP_M, lengths / 2)
    x0, y0 = paths.locate(line, np.clip(dist - step, 0, lengths))
    x1, y1 = paths.locate(line, np.clip(dist + step, 0, lengths))
    to_wgs = Transformer.from_crs(crs, C.WGS84, always_xy=True)
    lon, lat = to_wgs.transform(np.concatenate([x, x0, x1]), np.concatenate([y, y0, y1]))
    lon, lon0, lon1 = np.split(np.asarray(lon), 3)
    lat, lat0, lat1 = np.split(np.asarray(lat), 3)
    heading = _azimuths(lon0, lat0, lon1, lat1)
    region_id = (
        assign_regions(points, regions.to_crs(crs))
        if regions is not None
        else np.full(len(points), None, dtype=object)
    )
    return gpd.GeoDataFrame(
        {
            C.POINT_ID: np.arange(len(points), dtype="int64"),
            C.REGION_ID: region_id,
            C.HEADING: np.round(heading, 3),
            C.LON: np.asarray(lon),
            C.LAT: np.asarray(lat),
        },
        geometry=points,
        crs=crs,
    )
