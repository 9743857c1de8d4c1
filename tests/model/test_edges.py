"""Edge cells a run excludes (issue #15) are not trained on, nor counted in the image
statistics; with ``include_edges`` (no ``excluded`` reason) they are."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.model.synthetic import BOTH, make_run
from urbangeo import constants as C
from urbangeo.imagery.edges import EDGE, EXCLUDED
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.model.data import drop_excluded, load_pairs
from urbangeo.model.training.pairs import load_training_pairs
from urbangeo.settings import TrainSettings

TINY = "urbangeo-tiny-vit"


def _mark(gpkg: Path, excluded: dict[str, str | None]) -> None:
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    regions[EDGE] = regions[C.REGION_ID].isin(list(excluded))
    regions[EXCLUDED] = regions[C.REGION_ID].map(excluded).astype(object)
    write_layers(gpkg, {C.LAYER_REGIONS: regions}, overwrite=True)


def test_excluded_regions_are_not_in_the_pairs(tmp_path: Path) -> None:
    gpkg = make_run(tmp_path / "run", n=16, per_region=2, kinds=BOTH)
    everything = load_pairs(gpkg)
    _mark(gpkg, {"r1": "edge cell: 20% of the cell inside the boundary", "r5": "edge cell"})
    cfg = TrainSettings(model=TINY, val_fraction=0.25).resolved()
    pairs = load_training_pairs(gpkg, cfg, main=True)
    kept = pd.concat([pairs.train, pairs.val])
    assert not kept[C.REGION_ID].isin(["r1", "r5"]).any()
    assert pairs.n_excluded == 8  # two regions, two images each, both kinds
    assert len(kept) == pairs.n_pairs == len(everything) - 8
    # The image statistics of a from-scratch run are computed on the training paths alone.
    excluded_paths = everything.loc[everything[C.REGION_ID].isin(["r1", "r5"]), C.PATH]
    assert not set(pairs.train[C.PATH]) & set(excluded_paths)


def test_edges_kept_with_include_edges_and_pairs_files_keep_everything(tmp_path: Path) -> None:
    gpkg = make_run(tmp_path / "run", n=8, per_region=2)
    pairs = load_pairs(gpkg)
    _mark(gpkg, {"r1": None})  # an edge cell the run keeps (include_edges)
    assert drop_excluded(pairs, gpkg)[1:] == (0, 0)
    _mark(gpkg, {"r1": "edge cell"})
    kept, dropped, regions = drop_excluded(pairs, gpkg)
    assert (dropped, regions) == (2, 1) and len(kept) == len(pairs) - 2
    table = tmp_path / "pairs.csv"
    pairs.to_csv(table, index=False)
    assert drop_excluded(pairs, table)[1] == 0
