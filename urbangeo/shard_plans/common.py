"""What every stage's shard plan is made of: :class:`Plan`, the shard's :class:`Share` of the
regions, a finished :class:`Shard` as the merge reads it, and the merge's shared pieces."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.settings import StageSettings

if TYPE_CHECKING:
    from urbangeo.shard import ShardSpec

#: What a plan's merge returns: the layers to commit, the record's counts and parameters, the
#: files written, and what to do once the commit is done (move files into place...).
Merged = tuple[dict, dict, dict, list[Path], Callable[[], None]]


@dataclass(frozen=True)
class Share:
    """The regions of one shard (``ids``); the first shard also takes the rows without a
    region (``first``). ``index`` of ``count`` and the run's GeoPackage (``run_gpkg``) place
    the shard: a plan that splits other work than regions (``predict``'s fits) takes its share
    by them."""

    ids: frozenset[str]
    first: bool
    index: int = 1
    count: int = 1
    run_gpkg: Path | None = None

    def keeps(self, region_id: object) -> bool:
        """Whether a row of region ``region_id`` (None or NaN: no region) is this shard's."""
        if region_id is None or (not isinstance(region_id, str) and pd.isna(region_id)):
            return self.first
        return str(region_id) in self.ids

    def rows(self, frame: pd.DataFrame) -> pd.Series:
        """Which rows of ``frame`` (by its ``region_id`` column) are this shard's."""
        if C.REGION_ID not in frame:
            return pd.Series(self.first, index=frame.index)
        region = frame[C.REGION_ID]
        known = region.notna()
        mine = known & region.astype(str).isin(self.ids)
        return mine | ~known if self.first else mine


@dataclass(frozen=True)
class Shard:
    """One finished shard, as the merge reads it."""

    spec: ShardSpec
    folder: Path
    meta: dict[str, Any]
    record_params: dict
    record_counts: dict

    @property
    def gpkg(self) -> Path:
        return self.folder / C.RUN_GPKG

    @property
    def empty(self) -> bool:
        return bool(self.meta.get("empty"))


def _no_kwargs(folder: Path, share: Share) -> dict[str, Any]:
    return {}


def _nothing_to_seed(run_dir: Path, folder: Path, share: Share, layers: Mapping) -> None:
    return None


@dataclass(frozen=True)
class Plan:
    """How one stage is sharded: the settings its shards run with, its inputs, whether a
    shard has work, what its body is given, and the merge."""

    #: The layers of the run a shard reads, cut to its regions (``whole``: copied whole).
    layers: tuple[str, ...]
    whole: tuple[str, ...]
    #: The settings the shards run with (or an InputError: the settings do not shard).
    settings: Callable[[Path, StageSettings], StageSettings]
    #: Whether the shard (its layers, settings and share) has anything to do.
    has_work: Callable[[Mapping[str, pd.DataFrame], StageSettings, Share], bool]
    #: ``merge(run_gpkg, settings, shards, regions)``.
    merge: Callable[..., Merged]
    outputs: tuple[str, ...]
    #: Keyword arguments of the stage's body in the shard's folder (e.g. which of the planned
    #: images are the shard's when it plans over all of them).
    kwargs: Callable[[Path, Share], dict[str, Any]] = _no_kwargs
    #: Fill a new shard's folder from the run's (``seed(run_dir, folder, share, layers)``).
    seed: Callable[[Path, Path, Share, Mapping[str, pd.DataFrame]], None] = _nothing_to_seed
    #: Files of a shard's folder that survive its being started over (paid-for caches).
    kept: tuple[str, ...] = ()
    #: What the shards split: "regions" (a shard has its regions' rows of ``layers``) or
    #: "fits" (``predict``: every shard reads the run's inputs whole and makes 1/N of the fits).
    splits: str = "regions"


def same_params(stage: str, shards: Sequence[Shard]) -> dict:
    """The parameters the shards recorded (all the same, or an error)."""
    params = [sh.record_params for sh in shards if not sh.empty]
    for p in params[1:]:
        if p != params[0]:
            raise InputError(
                f"The shards of {stage} recorded different parameters ({params[0]} and {p}).",
                hint=f"Rerun every shard with the same settings (urbangeo {stage} --shard "
                "I/N --overwrite), then merge.",
            )
    return params[0] if params else {}


def sum_counts(shards: Sequence[Shard]) -> dict[str, int]:
    """The shards' counts added up, in the order the stage records them."""
    counts: dict[str, int] = {}
    for sh in shards:
        if sh.empty:
            continue
        for key, value in sh.record_counts.items():
            counts[key] = counts.get(key, 0) + int(value)
    return counts


def image_rows(frame: pd.DataFrame) -> list[dict]:
    """The rows of an ``images`` layer as the manifest's row dicts."""
    from urbangeo.imagery.manifest import _row_dict

    return [_row_dict(series) for _, series in frame.iterrows()]


def merge_images(
    run_gpkg: Path,
    stage: str,
    kind: str,
    shards: Sequence[Shard],
    crs: Any,
    position: Callable[[dict], Any],
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, Callable[[], None]]:
    """The ``images`` layer after merging the shards' rows of ``kind``: the run's rows of the
    other kinds first, then the shards' in the order ``position(row)`` gives (as the stage's
    manifest writes them). Also the merged rows alone, and the moves of the shards' image
    files into the run's folder, to call after the commit (rows first, then files, as the
    manifest does)."""
    from urbangeo.imagery.manifest import images_frame, in_crs

    moves: list[tuple[Path, Path]] = []
    rows: list[dict] = []
    root = run_gpkg.parent
    for sh in shards:
        if sh.empty or C.LAYER_IMAGES not in list_layers(sh.gpkg):
            continue
        images = read_layer(sh.gpkg, C.LAYER_IMAGES)
        images = in_crs(images[images[C.KIND] == kind], crs)
        rows += image_rows(images)
        for row in images[images[C.STATUS] == C.STATUS_OK].itertuples():
            src, dst = sh.folder / row.path, root / row.path
            if not src.is_file() and not dst.is_file():
                raise InputError(
                    f"Image {row.path} of {stage} shard {sh.spec} is missing from {sh.folder}.",
                    hint=f"Rerun the shard (urbangeo {stage} --gpkg {run_gpkg} --shard "
                    f"{sh.spec} --overwrite), then merge.",
                )
            if src.is_file():
                moves.append((src, dst))
    rows.sort(key=position)
    mine = images_frame(rows, crs)
    images = mine
    if C.LAYER_IMAGES in list_layers(run_gpkg):
        existing = in_crs(read_layer(run_gpkg, C.LAYER_IMAGES), crs)
        others = existing[existing[C.KIND] != kind]
        if not others.empty:
            images = pd.concat([images_frame(image_rows(others), crs), mine], ignore_index=True)

    def move() -> None:
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)

    return images, mine, move
