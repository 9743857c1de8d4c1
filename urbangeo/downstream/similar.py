"""Regions like a given one: cosine similarity of region embeddings (``urbangeo similar``).

The query is one region's embedding, or the mean of several regions' (each scaled to unit
length first, so that each counts the same). Every region's embedding is scaled to unit length
and compared with the query by cosine similarity. Up to :data:`EXACT_MAX` regions the search is
exact (one matrix-vector product in numpy); above it, a ball tree (scikit-learn's
``NearestNeighbors``) on the unit vectors finds the ``k`` nearest, whose Euclidean order is the
cosine order (``|a - b|² = 2 - 2 cos`` for unit vectors), and their similarities are then
computed exactly. Regions the run excludes (edge cells) are not candidates, and regions whose
embedding is all zeros have no direction to compare.

``similar`` is not a pipeline stage: it writes the layer ``similar`` (region polygons with
``similarity``, ``rank`` and ``selected``: the top ``k``, and the selected regions where they
are not among them) into the run's GeoPackage under the run's lock, replacing an earlier
answer, styled for QGIS (graduated on ``similarity``); nothing is recorded in the run's stage
table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.runs import StageResult
from urbangeo.model.encoders.region_encoder import unit_rows
from urbangeo.progress import message
from urbangeo.settings.downstream import SimilarSettings

#: The answer's layer.
LAYER_SIMILAR = "similar"
#: The most regions searched exactly (numpy); above it a ball tree finds the nearest.
EXACT_MAX = 200_000


def query_vector(unit: np.ndarray, positions: Sequence[int]) -> np.ndarray:
    """The unit-length mean of the rows ``positions`` of ``unit`` (already unit rows)."""
    mean = unit[list(positions)].mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0:
        raise InputError(
            "The selected regions' embeddings cancel out (their mean is zero): nothing to "
            "compare with.",
            hint="Select regions that are alike, or one region.",
        )
    return mean / norm


def nearest(
    unit: np.ndarray, query: np.ndarray, k: int, *, exact_max: int = EXACT_MAX
) -> tuple[np.ndarray, np.ndarray, str]:
    """The positions of the ``k`` rows of ``unit`` most similar to ``query`` (cosine, both
    unit length), their similarities (descending; ties by position) and the method used:
    ``exact`` up to ``exact_max`` rows, else ``ball_tree``."""
    n = len(unit)
    k = min(k, n)
    if n <= exact_max:
        sims = unit @ query
        order = np.lexsort((np.arange(n), -sims))[:k]
        return order, sims[order], "exact"
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k, algorithm="ball_tree").fit(unit)
    found = index.kneighbors(query[None, :], return_distance=False)[0]
    sims = unit[found] @ query
    order = np.lexsort((found, -sims))
    return found[order], sims[order], "ball_tree"


@dataclass
class SimilarResult:
    """The answer: the regions asked about, and the most similar regions."""

    selected: list[str]
    #: region_id-indexed: similarity, rank (1 = most similar; NA for a selected region
    #: outside the top k), selected; sorted by rank.
    frame: pd.DataFrame
    method: str
    candidates: int

    def table(self) -> str:
        """The top k as text: rank, region, similarity, whether selected."""
        what = "the mean of the selected regions" if len(self.selected) > 1 else "the region"
        lines = [
            f"Regions most similar to {what} {', '.join(self.selected)} (cosine similarity of "
            f"embeddings; {self.method} search over {self.candidates:,} regions):",
            f"{'rank':>5}  {'region_id':<16} {'similarity':>10}",
        ]
        for rid, row in self.frame.iterrows():
            rank = "–" if pd.isna(row["rank"]) else str(int(row["rank"]))
            mark = "  (selected)" if row["selected"] else ""
            lines.append(f"{rank:>5}  {rid!s:<16} {row['similarity']:>10.4f}{mark}")
        return "\n".join(lines)


def find_similar(
    features: pd.DataFrame,
    regions: Sequence[str],
    *,
    k: int = 20,
    exact_max: int = EXACT_MAX,
) -> SimilarResult:
    """The ``k`` regions of ``features`` (region_id-indexed vectors) most similar to the
    ``regions`` (their mean when several), with the selected ones flagged."""
    ids = features.index.astype(str)
    chosen = list(dict.fromkeys(str(r) for r in regions))
    missing = [r for r in chosen if r not in set(ids)]
    if missing:
        raise InputError(
            f"No embedding for region(s) {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + ".",
            hint=f"Give region_id values of the embedded regions (e.g. {', '.join(ids[:3])}).",
        )
    unit = unit_rows(features.to_numpy(dtype=np.float64))
    nonzero = np.linalg.norm(unit, axis=1) > 0
    position = {rid: i for i, rid in enumerate(ids)}
    query = query_vector(unit, [position[r] for r in chosen])
    keep = np.flatnonzero(nonzero)
    found, sims, method = nearest(unit[keep], query, k, exact_max=exact_max)
    top = ids[keep[found]]
    frame = pd.DataFrame(
        {"similarity": sims, "rank": pd.array(np.arange(1, len(top) + 1), dtype="Int64")},
        index=pd.Index(top, name=C.REGION_ID),
    )
    outside = [r for r in chosen if r not in set(top)]
    if outside:
        rest = pd.DataFrame(
            {
                "similarity": unit[[position[r] for r in outside]] @ query,
                "rank": pd.array([pd.NA] * len(outside), dtype="Int64"),
            },
            index=pd.Index(outside, name=C.REGION_ID),
        )
        frame = pd.concat([frame, rest])
    frame["selected"] = frame.index.isin(chosen)
    return SimilarResult(chosen, frame, method, int(nonzero.sum()))


def similar_features(gpkg: Path, s: SimilarSettings) -> pd.DataFrame:
    """The embeddings ``s`` names: ``--embeddings``, ``--encoder`` NAME (as ``predict
    --features`` resolves it) or the run's own; without the regions the run excludes."""
    from urbangeo.downstream.features import resolve
    from urbangeo.downstream.tables import gpkg_embeddings, kept, load_embeddings, run_status

    if s.embeddings is not None:
        features = load_embeddings(s.embeddings)
    else:
        source = resolve(s.encoder, gpkg) if s.encoder else None
        path = source.path if source is not None else None
        features = load_embeddings(path) if path is not None else gpkg_embeddings(gpkg)
    features.index = features.index.astype(str)
    keep = kept(features.index, run_status(gpkg)).union(
        features.index.intersection(list(s.regions or ())), sort=False
    )
    return features.loc[features.index.isin(keep)]


def similar_layer(gpkg: Path, result: SimilarResult) -> gpd.GeoDataFrame:
    """The region polygons of the answer, sorted by rank (selected regions outside the top
    k last)."""
    from urbangeo.io.gpkg import read_layer

    regions = read_layer(gpkg, C.LAYER_REGIONS)
    regions[C.REGION_ID] = regions[C.REGION_ID].astype(str)
    geometry = regions.geometry.name
    table = result.frame.reset_index()
    merged = table.merge(regions[[C.REGION_ID, geometry]], on=C.REGION_ID, how="inner")
    return gpd.GeoDataFrame(merged, geometry=geometry, crs=regions.crs)


def similar_styles(layer: gpd.GeoDataFrame) -> Mapping[str, list[Any]]:
    """The layer's QGIS style: graduated on ``similarity`` (quantile classes, viridis)."""
    from urbangeo.io.styles import LayerStyle, value_ranges
    from urbangeo.viz.colors import SEQUENTIAL
    from urbangeo.viz.qml import Renderer, Symbol

    renderer = Renderer(
        "graduatedSymbol",
        Symbol("fill", SEQUENTIAL[0], outline="#ffffff", width=0.1, opacity=0.8),
        "similarity",
        ranges=value_ranges(layer["similarity"].to_numpy(np.float64)),
        ramp=SEQUENTIAL,
    )
    text = "urbangeo: cosine similarity to the selected region(s)"
    return {LAYER_SIMILAR: [LayerStyle("urbangeo", renderer, text)]}


def similar_stage(
    gpkg: str | os.PathLike,
    settings: SimilarSettings | Mapping[str, Any] | None = None,
    *,
    exact_max: int = EXACT_MAX,
    **values: Any,
) -> StageResult:
    """Find the regions most like ``settings.regions`` and write the layer ``similar``.

    Settings: the fields of :class:`~urbangeo.settings.downstream.SimilarSettings` (as keyword
    arguments or ``settings``). The answer replaces an earlier ``similar`` layer; it is not a
    stage of the run's record. ``exact_max``: the most regions searched exactly.
    """
    from urbangeo.io.gpkg import write_layers
    from urbangeo.io.lock import run_lock
    from urbangeo.io.styles import write_styles
    from urbangeo.stage import check_inputs, settings_of

    s = settings_of(SimilarSettings, settings, values)
    check_inputs(s)
    path = Path(gpkg)
    if not path.is_file():
        raise InputError(f"GeoPackage {path} does not exist.", hint="Give a run's --gpkg.")
    with run_lock(path.parent, command="urbangeo similar"):
        features = similar_features(path, s)
        result = find_similar(features, s.regions or (), k=s.k, exact_max=exact_max)
        layer = similar_layer(path, result)
        write_layers(path, {LAYER_SIMILAR: layer}, overwrite=True, styles=True)
        write_styles(path, similar_styles(layer))
    counts = {"regions": result.candidates, "k": int(result.frame["rank"].notna().sum())}
    message(
        f"Wrote the {counts['k']} regions most similar to {', '.join(result.selected)} to "
        f"{path} (layer {LAYER_SIMILAR})."
    )
    return StageResult("similar", path, counts, report=result)


def map_embeddings(gpkg: str | os.PathLike) -> pd.DataFrame | None:
    """The run's embeddings for the map's similar-region highlighting, without the regions
    the run excludes (None when the run has none)."""
    from urbangeo.downstream.tables import gpkg_embeddings, kept, run_status

    try:
        features = gpkg_embeddings(gpkg)
    except InputError:
        return None
    features.index = features.index.astype(str)
    return features.loc[kept(features.index, run_status(gpkg))]
