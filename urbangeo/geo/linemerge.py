"""Dedupe and merge road lines on coordinate arrays, with GEOS's results.

Steps 1 and 2 of the street-view sampler (:mod:`urbangeo.geo.sampling`), several times faster
on large networks than the plain shapely calls, by working on the lines' coordinate arrays
with numpy:

- :func:`first_undirected`, :func:`unique_undirected`: drop the lines that repeat an earlier
  one, in the same or the opposite direction (the two edges of a two-way street);
- :func:`merge_lines`: merge the lines that meet end to end at nodes of degree 2;
- :func:`unique_merged_coords`: both, giving the merged lines' coordinates only (the sampler
  never needs the merged LineStrings).

Contract. Each public function returns what the plain shapely calls return on the same input:

- dedupe: the indices :func:`numpy.unique` keeps of ``shapely.to_wkb(shapely.normalize(lines))``
  (the first line with each key), sorted;
- merge: ``shapely.get_parts(shapely.line_merge(shapely.multilinestrings(lines)))``, GEOS's
  undirected LineMerger: the same lines in the same order with the same coordinates, bit for
  bit (:func:`merge_lines` then drops the lines of zero length).

Each tries a fast path, :func:`_unique_undirected_fast` for the dedupe, :func:`_walk_strings`
for the merge (under :func:`_line_merge_fast` and :func:`unique_merged_coords`), that returns
exactly that result or None where it cannot prove it, and calls shapely (GEOS) on None. A fast
path returns None for

- input other than 2D LineStrings with finite coordinates (other types, Z or M, NaN or inf);
- dedupe: two different lines with the same 64-bit hash (each line is compared coordinate for
  coordinate, bits included, with the first line of its hash before it is dropped);
- merge: a node where the order of the out-edges matters (a node of degree other than 2, or
  where a loop starts) and the angle sort used here may differ from GEOS's comparator: GEOS's
  floating-point orientation filter cannot decide between two edges (nearly collinear), two
  edges are collinear at a node of more than 16 out-edges (std::sort is not stable there), or
  the angles and GEOS's orientation disagree.

Closed lines (which ``normalize`` rotates) are deduped by shapely, among themselves, while the
open ones stay on the fast path. The fast merge mirrors the LineMerger of the GEOS that shapely
2.x ships (written against GEOS 3.x, checked with shapely 2.2 / GEOS 3.14);
``tests/geo/test_sampling_fast_paths.py`` and ``benchmarks/check_fast_paths.py`` compare it with
GEOS, line for line and bit for bit, on random integer-grid networks (shared nodes, ties,
loops, repeated points) and float networks: where a GEOS release changed LineMerger, they fail.
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias

import numpy as np
import pandas as pd
import shapely

#: Lines as coordinate arrays: the coordinates of all lines laid end to end, one complex number
#: x + yj each, and the number of coordinates of each line.
PlainCoords: TypeAlias = tuple[np.ndarray, np.ndarray]

_K1 = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's constants
_K2 = np.uint64(0xBF58476D1CE4E5B9)
_K3 = np.uint64(0x94D049BB133111EB)
#: GEOS sorts a node's edges with std::sort, stable (insertion sort) up to 16 elements.
_STABLE_SORT_MAX = 16
#: Lines hashed at a time.
_CHUNK = 1 << 17


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


def unique_merged_coords(
    lines: np.ndarray, plain: PlainCoords | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The coordinates of ``merge_lines(unique_undirected(lines))``, as complex numbers x + yj
    laid end to end, and the merged line each belongs to (what ``shapely.get_coordinates(...,
    return_index=True)`` gives, but for lines of zero length, which may be left in).

    ``lines``: 2D LineStrings, none missing; ``plain``: their :data:`PlainCoords` when known.
    """
    if len(lines) == 0:
        return np.zeros(0, dtype=np.complex128), np.zeros(0, dtype=np.int64)
    plain = plain or _plain_coords(lines, checked=True)
    keep = None if plain is None else _unique_undirected_fast(lines, plain)
    if plain is None or keep is None:
        lines = unique_undirected(lines)
    else:
        coords, n = plain
        del plain
        owner, pos = _spans(n[keep])
        coords, n = coords[(np.cumsum(n) - n)[keep][owner] + pos], n[keep]
        del owner, pos
        merged = _walk_strings(coords, n)
        if merged is not None:
            return _string_coords(coords, n, *merged)
        lines = lines[keep]
    xy, line = shapely.get_coordinates(_geos_merge(lines), return_index=True)
    return np.ascontiguousarray(xy).view(np.complex128).reshape(-1), line


def _geos_merge(lines: np.ndarray) -> np.ndarray:
    return shapely.get_parts(shapely.line_merge(shapely.multilinestrings(lines)))


def _plain_coords(lines: np.ndarray, checked: bool = False) -> PlainCoords | None:
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
    lines: np.ndarray, plain: PlainCoords | None = None
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
        leaders = _first_of_equal(coords, n_open, flip)
        if leaders is None:
            return None
        keep.append(lines_open[leaders])
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


def _line_merge_fast(lines: np.ndarray, plain: PlainCoords | None = None) -> np.ndarray | None:
    """``get_parts(line_merge(multilinestrings(lines)))``, as GEOS's LineMerger builds it, or
    None where GEOS must decide. ``plain``: as for :func:`_unique_undirected_fast`."""
    plain = plain or _plain_coords(lines)
    if plain is None:
        return None
    coords, n = plain
    merged = _walk_strings(coords, n)
    if merged is None:
        return None
    graph, walked, string = merged
    return _merged_lines(lines, coords, n, graph, walked, string)


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


def _merged_lines(
    lines: np.ndarray,
    coords: np.ndarray,
    n: np.ndarray,
    g: _MergeGraph | None,
    walked: np.ndarray,
    string: np.ndarray,
) -> np.ndarray:
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
    coords: np.ndarray, n: np.ndarray, g: _MergeGraph | None, walked: np.ndarray, string: np.ndarray
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
