"""Edge cells a run excludes (issue #15) get no cluster and no prediction: they keep their row
in the layers, with ``edge`` and the reason in ``excluded``; kept edge cells are scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.downstream.helpers import make_run
from urbangeo import constants as C
from urbangeo.downstream.heads import MLPConfig
from urbangeo.downstream.stages import cluster_stage, predict_stage
from urbangeo.imagery.edges import EDGE, EXCLUDED
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.runs import read_stage_records

FAST = MLPConfig(hidden=16, max_epochs=30, patience=5)
REASON = "edge cell: 20% of the cell inside the boundary (under 50%)"


def _run(folder: Path, *, excluded: bool = True) -> tuple[Path, list[str]]:
    """A 12 × 10 run whose first row of regions are edge cells (excluded, or kept)."""
    gpkg, _, _ = make_run(folder)
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    edge = regions[C.ROW] == 0
    regions[EDGE] = edge
    regions[EXCLUDED] = np.where(edge & excluded, REASON, None)
    write_layers(gpkg, {C.LAYER_REGIONS: regions}, overwrite=True)
    return gpkg, regions.loc[edge, C.REGION_ID].tolist()


def test_excluded_regions_are_not_clustered(tmp_path):
    gpkg, edges = _run(tmp_path / "run")
    result = cluster_stage(gpkg, k=3)
    assert result.counts["regions"] == 108 and result.counts["excluded"] == 12
    assert set(result.report.region_ids).isdisjoint(edges)
    layer = read_layer(gpkg, C.LAYER_CLUSTERS).set_index(C.REGION_ID)
    assert len(layer) == 120  # every region keeps its row...
    out = layer.loc[edges]
    assert out["cluster"].isna().all() and out["pc1"].isna().all()  # ...without a cluster
    assert out[EDGE].all() and (out[EXCLUDED] == REASON).all()
    inside = layer.drop(index=edges)
    assert inside["cluster"].notna().all() and not inside[EDGE].any()
    assert inside[EXCLUDED].isna().all()
    assert read_stage_records(gpkg)["cluster"].counts["excluded"] == 12


def test_excluded_regions_are_not_scored(tmp_path):
    gpkg, edges = _run(tmp_path / "run")
    result = predict_stage(gpkg, seeds=1, mlp=FAST, baselines=("none",))
    assert result.report.protocol["regions"] == 108
    assert set(result.report.region_ids).isdisjoint(edges)
    assert result.counts["excluded"] == 12
    layer = read_layer(gpkg, C.LAYER_PREDICTIONS).set_index(C.REGION_ID)
    assert len(layer) == 120
    out = layer.loc[edges]
    assert out["population_predicted"].isna().all() and (out[EXCLUDED] == REASON).all()
    assert layer.drop(index=edges)["population_predicted"].notna().all()


def test_kept_edge_cells_are_clustered_and_scored(tmp_path):
    gpkg, edges = _run(tmp_path / "run", excluded=False)  # as with --include-edges
    clusters = cluster_stage(gpkg, k=3)
    assert clusters.counts["excluded"] == 0 and clusters.counts["regions"] == 120
    layer = read_layer(gpkg, C.LAYER_CLUSTERS).set_index(C.REGION_ID)
    assert layer.loc[edges, "cluster"].notna().all() and layer.loc[edges, EDGE].all()
    predicted = predict_stage(gpkg, seeds=1, mlp=FAST, baselines=("none",))
    assert predicted.report.protocol["regions"] == 120


def test_kotka_clusters_are_not_edge_cells(tmp_path):
    """The case of issue #15: in Kotka at 250 m, 30 of the 34 cells of cluster 1 were cells
    partly outside the extract. Now the 28 edge cells (under half inside) get no cluster and
    no cluster is mostly edge cells."""
    import torch

    from urbangeo.imagery.edges import VALID_SHARE
    from urbangeo.pipeline import run_pipeline
    from urbangeo.progress import set_mode

    set_mode("none")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # a few epochs: the exclusion, not the model, is under test
        run_pipeline(tmp_path / "kotka", grid__city="kotka", train__epochs=3)
    finally:
        torch.set_num_threads(threads)
    gpkg = tmp_path / "kotka" / C.RUN_GPKG
    regions = read_layer(gpkg, C.LAYER_REGIONS).set_index(C.REGION_ID)
    assert len(regions) == 100 and int(regions[EDGE].sum()) == 28
    assert ((regions[C.INSIDE_SHARE] < 0.5) == regions[EDGE]).all()
    assert (regions.loc[regions[EDGE], VALID_SHARE] < 0.5).all()  # their tiles are mostly black
    clusters = read_layer(gpkg, C.LAYER_CLUSTERS).set_index(C.REGION_ID)
    members = clusters[clusters["cluster"].notna()]
    assert len(members) == 72
    shares = regions[EDGE].reindex(members.index).groupby(members["cluster"]).mean()
    assert (shares < 0.5).all(), shares
    predictions = read_layer(gpkg, C.LAYER_PREDICTIONS).set_index(C.REGION_ID)
    scored = [c for c in predictions if c.endswith("_predicted")]
    assert predictions.loc[regions[EDGE], scored].isna().all(axis=None)
