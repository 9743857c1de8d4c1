"""Square region grids with ids that are stable across runs and boundaries."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.geo.crs import metric_crs


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

    Raises :class:`InputError` for a non-positive cell size or, unless ``force``, for a grid
    whose bounding box holds more than ``max_cells`` cells.
    """
    if not (isinstance(cell_size, int | float) and math.isfinite(cell_size) and cell_size > 0):
        raise InputError(
            f"Cell size must be a positive number of metres, not {cell_size!r}.",
            hint=f"Try the default, --cell-size {C.DEFAULT_CELL_SIZE_M:g}.",
        )
    if boundary.crs is None:
        raise InputError("The boundary has no CRS.", hint="Give the boundary file a CRS.")
    target = metric_crs(boundary, crs)
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
    x0, y0 = cols * s, rows * s
    cells = shapely.box(x0, y0, x0 + s, y0 + s)

    shapely.prepare(geom)
    share = np.zeros(len(cells))
    inside = shapely.contains_properly(geom, cells)
    share[inside] = 1.0
    edge = np.flatnonzero(~inside & shapely.intersects(geom, cells))
    if len(edge):
        share[edge] = shapely.area(shapely.intersection(cells[edge], geom)) / (s * s)
    keep = share > 0  # cells that only touch the boundary along an edge are not in it

    cols, rows = cols[keep], rows[keep]
    region_id = pd.Series(cols).astype(str).str.cat(pd.Series(rows).astype(str), sep="_")
    return gpd.GeoDataFrame(
        {
            C.REGION_ID: region_id.to_numpy(),
            C.COL: cols.astype("int64"),
            C.ROW: rows.astype("int64"),
            C.AREA_M2: np.full(len(cols), s * s),
            C.INSIDE_SHARE: np.minimum(share[keep], 1.0),
        },
        geometry=cells[keep],
        crs=target,
    )
