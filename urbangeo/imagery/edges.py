"""Edge cells: regions at the edge of the study area, kept in the grid but left out of the
analysis (issue #15).

A cell only partly inside the boundary gets an image that is mostly blank (the extract or the
raster ends there), and such images would be grouped together by any clustering. A region is
an **edge cell** when

* its image has data on less than ``min_valid_share`` of its area (``valid_share``: the share
  of the square the source covers; rendered OSM tiles are black beyond the extract's coverage,
  rasters and XYZ tiles beyond their footprint or where they hold nodata), or
* less than ``min_inside_share`` of its cell lies inside the boundary (``inside_share``, from
  the grid).

Both thresholds default to 0.5 (:class:`~urbangeo.settings.TilesSettings`): a cell whose image
is mostly blank, or that lies mostly outside the study area. The ``tiles`` stage adds three
columns to the ``regions`` layer: ``valid_share``, ``edge`` (bool) and ``excluded`` (why the
region is left out; empty when it is kept). Unless ``include_edges`` is set, edge cells are
excluded: their pairs are not trained on (nor counted in the image statistics), and they get no
cluster and no prediction (their rows in ``clusters`` and ``predictions`` carry ``edge`` and
``excluded``). A study area with fewer than :data:`MIN_KEPT` interior cells keeps its edge
cells (with a warning): too few regions would be left to predict anything. Runs made before
these columns existed exclude nothing.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import UrbangeoWarning

#: Per image (``images`` layer) and per region (``regions``): the share of the image with data.
VALID_SHARE = "valid_share"
#: Per region: whether it is an edge cell (below either threshold).
EDGE = "edge"
#: Per region: why it is left out of training, clustering and prediction (empty: kept).
EXCLUDED = "excluded"
#: The columns the ``tiles`` stage adds to the ``regions`` layer, in order.
EDGE_COLUMNS = (VALID_SHARE, EDGE, EXCLUDED)
#: Edge cells are left out only when at least this many regions remain: the fewest regions
#: prediction scores (``urbangeo.downstream.tables.MIN_REGIONS``).
MIN_KEPT = 10


def region_valid_share(images: pd.DataFrame) -> pd.Series:
    """The share of image data per region (region_id as text): the mean over the region's
    overhead images with a known share (failed images and older rows have none)."""
    if VALID_SHARE not in images or C.REGION_ID not in images:
        return pd.Series(dtype=np.float64)
    rows = images
    if C.KIND in rows:
        rows = rows[rows[C.KIND] == C.KIND_OVERHEAD]
    shares = pd.to_numeric(rows[VALID_SHARE], errors="coerce")
    known = shares.notna() & rows[C.REGION_ID].notna()
    ids = rows.loc[known, C.REGION_ID].astype(str)
    return shares[known].groupby(ids.to_numpy()).mean().astype(np.float64)


def _reason(inside: float, valid: float, min_inside: float, min_valid: float) -> str | None:
    parts = []
    if np.isfinite(inside) and inside < min_inside:
        parts.append(f"{inside:.0%} of the cell inside the boundary (under {min_inside:.0%})")
    if np.isfinite(valid) and valid < min_valid:
        parts.append(f"image data on {valid:.0%} of it (under {min_valid:.0%})")
    return "edge cell: " + "; ".join(parts) if parts else None


def edge_columns(
    regions: pd.DataFrame,
    valid_share: pd.Series,
    *,
    min_valid_share: float,
    min_inside_share: float,
    include_edges: bool = False,
    min_kept: int = MIN_KEPT,
) -> pd.DataFrame:
    """``valid_share``, ``edge`` and ``excluded`` of each row of ``regions`` (same index).

    ``valid_share`` is indexed by region_id (text); regions without one (no image) are judged
    on ``inside_share`` alone, and regions without ``inside_share`` on their image alone. Edge
    cells are excluded unless ``include_edges``, or fewer than ``min_kept`` regions would be
    left (then a warning says so).
    """
    ids = regions[C.REGION_ID].astype(str)
    valid = valid_share.reindex(ids.to_numpy()).to_numpy(dtype=np.float64)
    if C.INSIDE_SHARE in regions:
        inside = pd.to_numeric(regions[C.INSIDE_SHARE], errors="coerce").to_numpy(np.float64)
    else:
        inside = np.full(len(regions), np.nan)
    reasons = [
        _reason(i, v, min_inside_share, min_valid_share) for i, v in zip(inside, valid, strict=True)
    ]
    edge = np.array([r is not None for r in reasons], dtype=bool)
    interior = len(edge) - int(edge.sum())
    if edge.any() and not include_edges and interior < min_kept:
        warnings.warn(
            f"{int(edge.sum())} of {len(edge)} regions are edge cells; leaving them out would "
            f"leave {interior} (fewer than {min_kept}), so they are kept. A finer grid keeps "
            "more interior cells.",
            UrbangeoWarning,
            stacklevel=2,
        )
        include_edges = True
    excluded = [None if include_edges else r for r in reasons]
    return pd.DataFrame(
        {
            VALID_SHARE: valid,
            EDGE: edge,
            EXCLUDED: pd.Series(excluded, index=regions.index, dtype=object),
        },
        index=regions.index,
    )


def _reasons(values: pd.Series) -> list[str | None]:
    """Reasons as text, None where there is none (NaN of a string column, or empty)."""
    return [
        None if v is None or (not isinstance(v, str) and pd.isna(v)) or v == "" else str(v)
        for v in values
    ]


def region_status(gpkg: str | os.PathLike) -> pd.DataFrame:
    """``edge`` and ``excluded`` of every region of a run, indexed by region_id (text).

    Regions of a run made before the ``tiles`` stage wrote these columns are neither."""
    import pyogrio

    from urbangeo.io.gpkg import list_layers

    if C.LAYER_REGIONS not in list_layers(gpkg):
        return pd.DataFrame({EDGE: [], EXCLUDED: []}, index=pd.Index([], name=C.REGION_ID))
    frame = pd.DataFrame(pyogrio.read_dataframe(gpkg, layer=C.LAYER_REGIONS, read_geometry=False))
    ids = pd.Index(frame[C.REGION_ID].astype(str), name=C.REGION_ID)
    edge = frame[EDGE].fillna(False).astype(bool) if EDGE in frame else False
    excluded = frame.get(EXCLUDED)
    out = pd.DataFrame({EDGE: edge}, index=frame.index)
    reasons = _reasons(excluded) if excluded is not None else [None] * len(frame)
    out[EXCLUDED] = pd.Series(reasons, index=frame.index, dtype=object)
    out.index = ids
    return out.astype({EDGE: bool})


def excluded_regions(gpkg: str | os.PathLike | None) -> pd.Series:
    """Why each excluded region of a run is left out, indexed by region_id (text); empty
    without a GeoPackage or when nothing is excluded."""
    if gpkg is None:
        return pd.Series(dtype=object)
    status = region_status(gpkg)
    return status[EXCLUDED].dropna()


def _same(regions: pd.DataFrame, columns: pd.DataFrame) -> bool:
    """Whether ``regions`` already holds ``columns`` (read back from the layer)."""
    if not set(EDGE_COLUMNS) <= set(regions.columns):
        return False
    old = pd.to_numeric(regions[VALID_SHARE], errors="coerce").to_numpy(np.float64)
    new = columns[VALID_SHARE].to_numpy(np.float64)
    if not np.allclose(old, new, rtol=0, atol=1e-9, equal_nan=True):
        return False
    if not (regions[EDGE].fillna(False).astype(bool) == columns[EDGE]).all():
        return False
    return _reasons(regions[EXCLUDED]) == columns[EXCLUDED].tolist()


def regions_with_edges(
    regions: pd.DataFrame,
    images: pd.DataFrame,
    *,
    min_valid_share: float,
    min_inside_share: float,
    include_edges: bool,
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """The ``regions`` layer with its edge columns, from the ``images`` layer (empty when the
    layer already holds them), and the counts of edge cells and of regions excluded."""
    columns = edge_columns(
        regions,
        region_valid_share(images),
        min_valid_share=min_valid_share,
        min_inside_share=min_inside_share,
        include_edges=include_edges,
    )
    counts = {"edge": int(columns[EDGE].sum()), "excluded": int(columns[EXCLUDED].notna().sum())}
    if _same(regions, columns):
        return {}, counts
    out = regions.copy()
    for name in EDGE_COLUMNS:
        out[name] = columns[name]
    return {C.LAYER_REGIONS: out}, counts
