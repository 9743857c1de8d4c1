"""``tiles`` in shards: a shard renders its regions' images into its own folder and leaves the
edge cells to the merge, which decides them over all regions and moves the images into place
after the commit (rows first, then files, as the stage's own manifest does)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.settings import StageSettings
from urbangeo.shard_plans.common import (
    Merged,
    Plan,
    Shard,
    Share,
    merge_images,
    same_params,
)


def _tiles_settings(run_gpkg: Path, s: StageSettings) -> StageSettings:
    if (run_gpkg.parent / C.LEGACY_OVERHEAD_DIR).is_dir():
        raise InputError(
            f"{run_gpkg.parent} was started by urbangeo 0.1 (images/satellite/): its tiles "
            "are not sharded.",
            hint="Run `urbangeo tiles` without --shard, or start a new run folder.",
        )
    if getattr(s, "source", None) == "xyz" and getattr(s, "zoom", None) is None:
        raise InputError(
            "Tiles from an XYZ service choose their zoom from all regions' sizes; a shard "
            "would choose it from its own.",
            hint="Give the zoom level (--zoom Z; an unsharded run prints the one it chose).",
        )
    # edge cells are decided by the merge, over all regions: a shard marks none excluded
    return s.replace(include_edges=True)


def _tiles_work(layers: Mapping[str, pd.DataFrame], s: StageSettings, share: Share) -> bool:
    return len(layers.get(C.LAYER_REGIONS, ())) > 0


def _merge_tiles(
    run_gpkg: Path, s: StageSettings, shards: Sequence[Shard], regions: gpd.GeoDataFrame
) -> Merged:
    from urbangeo.imagery.edges import regions_with_edges
    from urbangeo.imagery.manifest import status_counts

    params = same_params("tiles", shards)
    position = {str(r): i for i, r in enumerate(regions[C.REGION_ID])}
    images, mine, move = merge_images(
        run_gpkg,
        "tiles",
        C.KIND_OVERHEAD,
        shards,
        regions.crs,
        lambda row: position.get(str(row[C.REGION_ID]), len(position)),
    )
    layers, edge_counts = regions_with_edges(
        regions,
        images,
        min_valid_share=s.min_valid_share,  # type: ignore[attr-defined]
        min_inside_share=s.min_inside_share,  # type: ignore[attr-defined]
        include_edges=s.include_edges,  # type: ignore[attr-defined]
    )
    counts = {**status_counts(mine[C.STATUS]), "pending": 0, **edge_counts}
    return {C.LAYER_IMAGES: images, **layers}, counts, params, [], move


PLAN = Plan(
    layers=(C.LAYER_REGIONS,),
    whole=(C.LAYER_BOUNDARY,),
    settings=_tiles_settings,
    has_work=_tiles_work,
    merge=_merge_tiles,
    outputs=(C.LAYER_IMAGES,),
)
