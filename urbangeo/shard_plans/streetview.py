"""``streetview`` in shards: every shard plans the shots of all the run's sample points, as the
unsharded stage does (the ``folder`` provider gives each photo to its nearest point of all of
them, and a point's image id is decided there), and makes those of its regions' points into
its own folder; it keeps the order of all the shots beside them (:data:`SHOTS_JSON`). The
merge puts the shards' rows in that order after the run's other images and moves the files
into place after the commit (rows first, then files, as the stage's own manifest does)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.files import write_text_atomic
from urbangeo.io.gpkg import read_layer
from urbangeo.settings import StageSettings
from urbangeo.shard_plans import common
from urbangeo.shard_plans.common import Merged, Plan, Shard, Share

#: The image ids of every shot the shard planned (all the run's), in the stage's order.
SHOTS_JSON = "shots.json"


def _streetview_settings(run_gpkg: Path, s: StageSettings) -> StageSettings:
    return s  # nothing decided over all points but the plan, which every shard makes whole


def _streetview_work(layers: Mapping[str, pd.DataFrame], s: StageSettings, share: Share) -> bool:
    # Its shots are known only once planned: a shard without any records an empty manifest.
    return True


def _streetview_kwargs(folder: Path, share: Share) -> dict[str, Any]:
    def keep(shots: list[Any]) -> list[Any]:
        ids = [shot.job.image_id for shot in shots]
        write_text_atomic(folder / SHOTS_JSON, json.dumps(ids))
        return [shot for shot in shots if share.keeps(shot.job.region_id)]

    return {"keep": keep}


def _shot_order(shards: Sequence[Shard]) -> Callable[[dict], int]:
    """The position of a row in the shots all the shards planned (the same, or an error)."""
    plans = []
    for sh in shards:
        try:
            plans.append(json.loads((sh.folder / SHOTS_JSON).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            raise InputError(
                f"Street-view shard {sh.spec} has no plan of the shots ({SHOTS_JSON}).",
                hint=f"Rerun it (urbangeo streetview --shard {sh.spec} --overwrite), then merge.",
            ) from None
    for sh, plan in zip(shards[1:], plans[1:], strict=True):
        if plan != plans[0]:
            raise InputError(
                f"Street-view shards {shards[0].spec} and {sh.spec} planned different images "
                "(did the photos folder or the provider's answers change while they ran?).",
                hint="Rerun every shard with --overwrite, then merge.",
            )
    position = {image_id: i for i, image_id in enumerate(plans[0] if plans else ())}
    return lambda row: position.get(row[C.IMAGE_ID], len(position))


def _merge_streetview(
    run_gpkg: Path, s: StageSettings, shards: Sequence[Shard], regions: gpd.GeoDataFrame
) -> Merged:
    from urbangeo.imagery.manifest import status_counts

    params = common.same_params("streetview", shards)
    crs = read_layer(run_gpkg, C.LAYER_SV_POINTS).crs  # the stage's manifest is in the points'
    done = [sh for sh in shards if not sh.empty]
    images, mine, move = common.merge_images(
        run_gpkg, "streetview", C.KIND_STREETVIEW, done, crs, _shot_order(done)
    )
    counts = {**status_counts(mine[C.STATUS]), "pending": 0}
    return {C.LAYER_IMAGES: images}, counts, params, [], move


PLAN = Plan(
    layers=(),
    whole=(C.LAYER_SV_POINTS,),
    settings=_streetview_settings,
    has_work=_streetview_work,
    merge=_merge_streetview,
    outputs=(C.LAYER_IMAGES,),
    kwargs=_streetview_kwargs,
)
