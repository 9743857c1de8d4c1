"""Square region grids with ids that are stable across runs and boundaries."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import shapely

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.geo.crs import grid_crs, utm_crs


def make_grid(
    boundary: gpd.GeoDataFrame | gpd.GeoSeries,
    *,
    cell_size: float = C.DEFAULT_CELL_SIZE_M,
    crs: object | None = None,
    max_cells: int = C.MAX_CELLS,
    force: bool = False,
) -> gpd.GeoDataFrame:
    """Square cells of ``cell_size`` metres covering ``boundary``.

    Cells live in ``crs`` (default: the boundary's local UTM zone) on a lattice whose origin is
    a multiple of ``cell_size``: cell ``(col, row)`` spans ``[col*s, (col+1)*s) x
    [row*s, (row+1)*s)``, so ``region_id = "{col}_{row}"`` names the same square in every run
    whatever the boundary. Cells whose interior meets the boundary are kept, with
    ``inside_share``, the part of the cell inside it (0-1].

    Raises :class:`InputError` for a non-positive cell size, for a ``crs`` that is unknown, not
    projected or not in metres, without ``crs`` for an area no single UTM zone holds (see
    :func:`urbangeo.geo.crs.utm_crs`) or, unless ``force``, for a grid whose bounding box holds
    more than ``max_cells`` cells.
    """
    if not (isinstance(cell_size, int | float) and math.isfinite(cell_size) and cell_size > 0):
        raise InputError(
            f"Cell size must be a positive number of metres, not {cell_size!r}.",
            hint=f"Try the default, --cell-size {C.DEFAULT_CELL_SIZE_M:g}.",
        )
    if boundary.crs is None:
        raise InputError("The boundary has no CRS.", hint="Give the boundary file a CRS.")
    target = grid_crs(crs) if crs is not None else utm_crs(boundary)
    geom = shapely.union_all(boundary.to_crs(target).geometry.values)
    if geom.is_empty:
        raise InputError("The boundary is empty.", hint="Check the boundary's geometry.")

    s = float(cell_size)
    minx, miny, maxx, maxy = geom.bounds
    c0, r0 = math.floor(minx / s), math.floor(miny / s)
    c1, r1 = max(math.ceil(maxx / s), c0 + 1), max(math.ceil(maxy / s), r0 + 1)
    n_total = (c1 - c0) * (r1 - r0)
    if n_total > max_cells and not force:
        raise InputError(
            f"A {s:g} m grid over this boundary has {n_total:,} cells in its bounding box, "
            f"more than the limit of {max_cells:,}.",
            hint="Use a larger --cell-size, a smaller boundary, or --force to build it anyway.",
        )

    rows, cols = np.mgrid[r0:r1, c0:c1]
    cols, rows = cols.ravel(), rows.ravel()
    share = _inside_share(geom, cols, rows, s)
    keep = share > 0  # cells that only touch the boundary along an edge are not in it

    cols, rows = cols[keep], rows[keep]
    return gpd.GeoDataFrame(
        {
            C.REGION_ID: _region_ids(cols, rows, c0, c1, r0, r1),
            C.COL: cols.astype("int64"),
            C.ROW: rows.astype("int64"),
            C.AREA_M2: np.full(len(cols), s * s),
            C.INSIDE_SHARE: np.minimum(share[keep], 1.0),
        },
        geometry=_cells(cols, rows, s),
        crs=target,
    )


def _cells(cols: np.ndarray, rows: np.ndarray, s: float) -> np.ndarray:
    """The squares of lattice cells (col, row), as ``shapely.box`` makes them (same vertices,
    same order), built from one coordinate array, which is faster."""
    x0, y0 = cols * s, rows * s
    x1, y1 = x0 + s, y0 + s
    ring = np.stack(
        [np.stack(xy, axis=-1) for xy in ((x1, y0), (x1, y1), (x0, y1), (x0, y0), (x1, y0))],
        axis=1,
    )
    n = len(cols)
    offsets = (np.arange(n + 1) * 5, np.arange(n + 1))
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, ring.reshape(-1, 2), offsets)


def _inside_share(geom, cols: np.ndarray, rows: np.ndarray, s: float) -> np.ndarray:
    """The part of each cell inside ``geom`` (0-1).

    A cell inside the boundary (``contains_properly``) has 1; a cell that meets it otherwise
    has the area of its intersection with it, over ``s * s``. Only cells near the boundary's
    rings need those predicates and overlays: a cell that does not touch the rings lies wholly
    inside or wholly outside, which its centre tells.
    """
    share = np.zeros(len(cols))
    near = _near_rings(geom, cols, rows, s)
    shapely.prepare(geom)
    idx = np.flatnonzero(near)
    cells = _cells(cols[idx], rows[idx], s)
    inside = shapely.contains_properly(geom, cells)
    share[idx[inside]] = 1.0
    edge = np.flatnonzero(~inside & shapely.intersects(geom, cells))
    if len(edge):
        share[idx[edge]] = shapely.area(shapely.intersection(cells[edge], geom)) / (s * s)
    far = np.flatnonzero(~near)
    if len(far):
        centre_in = shapely.contains_xy(geom, (cols[far] + 0.5) * s, (rows[far] + 0.5) * s)
        share[far[centre_in]] = 1.0
    return share


def _near_rings(geom, cols: np.ndarray, rows: np.ndarray, s: float) -> np.ndarray:
    """Cells that touch, or come within a small margin of, the rings of ``geom``.

    Every cell, where ``geom`` is not a valid (Multi)Polygon. The rings are cut into pieces of
    at most s/2 (``segmentize``) and each piece marks the cells its bounding box, grown by the
    margin, overlaps: the cells touching the rings and a few more.
    """
    if shapely.get_type_id(geom) not in (3, 6) or not shapely.is_valid(geom):
        return np.ones(len(cols), dtype=bool)
    rings = shapely.get_parts(shapely.segmentize(shapely.boundary(geom), s / 2))
    xy, part = shapely.get_coordinates(rings, return_index=True)
    same = part[1:] == part[:-1]
    a, b = xy[:-1][same], xy[1:][same]
    if len(cols) == 0 or len(a) == 0:
        return np.zeros(len(cols), dtype=bool)
    margin = s / 1024 + 1e-9 * float(np.abs(xy).max())  # far above rounding errors
    lo = np.floor((np.minimum(a, b) - margin) / s).astype(np.int64)
    hi = np.floor((np.maximum(a, b) + margin) / s).astype(np.int64)
    c0, r0 = cols[0], rows[0]
    width, height = cols[-1] - c0 + 1, rows[-1] - r0 + 1
    near = np.zeros((height, width), dtype=bool)
    span = hi - lo
    for dc in range(int(span[:, 0].max()) + 1):
        for dr in range(int(span[:, 1].max()) + 1):
            ok = (dc <= span[:, 0]) & (dr <= span[:, 1])
            c, r = lo[ok, 0] + dc - c0, lo[ok, 1] + dr - r0
            inside = (c >= 0) & (c < width) & (r >= 0) & (r < height)
            near[r[inside], c[inside]] = True
    return near.ravel()


def _region_ids(cols, rows, c0: int, c1: int, r0: int, r1: int) -> np.ndarray:
    """``"{col}_{row}"`` for each cell, as an object array of str."""
    col_part = np.array([f"{c}_" for c in range(c0, c1)] or [""], dtype=object)
    row_part = np.array([str(r) for r in range(r0, r1)] or [""], dtype=object)
    if len(cols) == 0:
        return np.empty(0, dtype=object)
    return col_part[cols - c0] + row_part[rows - r0]
