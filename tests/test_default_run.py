"""The main job of the README (`make run`): the default city with the default settings, and
what a newcomer gets from it: a pre-trained model that learned something, and embeddings that
tell regions apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from urbangeo import constants as C
from urbangeo.io.runs import read_stage_records
from urbangeo.pipeline import run_pipeline, run_status
from urbangeo.progress import set_mode
from urbangeo.settings import DEFAULT_PROFILE, PROFILES


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    set_mode("none")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `make run` on this 2-core machine: the same numbers
    try:
        run_dir = tmp_path_factory.mktemp("default") / C.DEFAULT_CITY
        run_pipeline(run_dir)  # no configuration: exactly the defaults
    finally:
        torch.set_num_threads(threads)
    return run_dir


def test_default_run_finishes_every_offline_stage(default_run: Path) -> None:
    records = read_stage_records(default_run / C.RUN_GPKG)
    offline = [s for s in C.STAGES if s != "streetview"]  # no provider works offline
    assert all(records[s].finished and records[s].fingerprint for s in offline), records
    statuses = {row["stage"]: row["status"] for row in run_status(default_run)}
    assert statuses == {s: "done" if s in offline else "not run" for s in C.STAGES}
    assert PROFILES[DEFAULT_PROFILE]["grid"]["city"] == C.DEFAULT_CITY == "sao-paulo"
    assert records["grid"].counts["regions"] == records["embed"].counts["regions"] == 615


def test_default_run_learns_held_out_retrieval(default_run: Path) -> None:
    """A few epochs of the tiny model, from scratch on the CPU: held-out image<->text retrieval
    clearly above chance. (Under CLIP's image statistics, the pre-fix behaviour, the random
    encoder mapped every near-white map tile to one feature and R@1 stayed at chance.)"""
    counts = read_stage_records(default_run / C.RUN_GPKG)["train"].counts
    chance = counts["chance_r1"]
    assert counts["pairs_val"] >= 50 and chance == pytest.approx(1 / counts["pairs_val"], abs=5e-5)
    r1 = (counts["i2t_r1"] + counts["t2i_r1"]) / 2
    r5 = (counts["i2t_r5"] + counts["t2i_r5"]) / 2
    assert r1 >= 1.5 * chance, counts  # about 0.07 here, chance 0.016
    assert r5 >= 1.4 * min(1.0, 5 * chance), counts  # about 0.18 here, chance 0.08


def test_default_run_embeddings_tell_regions_apart(default_run: Path) -> None:
    frame = pd.read_parquet(default_run / C.EMBEDDINGS_PARQUET)
    columns = [c for c in frame.columns if c != C.REGION_ID]
    x = frame[columns].to_numpy(dtype=np.float64, copy=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    mean_off_diagonal = (sims.sum() - len(x)) / (len(x) ** 2 - len(x))
    assert mean_off_diagonal < 0.8  # collapsed embeddings (the pre-fix run) gave 0.993


def test_default_run_scores_real_indicators_beside_its_baselines(default_run: Path) -> None:
    """The default city has real targets, and every score stands beside the baselines of the
    same run, with its n and spread: "did pre-training help" is answered."""
    metrics = json.loads((default_run / C.METRICS_JSON).read_text())
    assert {"population", "jobs"} <= set(metrics["targets"])
    for result in metrics["targets"].values():
        models = result["metrics"]
        assert {"mlp", "coords_knn", "random:mlp", "image-stats:mlp"} <= set(models)
        r2 = models["mlp"]["r2"]
        assert {"mean", "std", "n"} <= set(r2)
        assert set(result["below_baseline"]) >= {"mlp"}


def test_default_run_clusters_are_not_edge_cells(default_run: Path) -> None:
    """Issue #15: cells mostly outside São Paulo's boundary (or its extract) rendered mostly
    blank tiles that KMeans grouped together. They stay in the grid, marked, but get no
    cluster; every cluster is made of interior cells."""
    from urbangeo.imagery.edges import EDGE, EXCLUDED, VALID_SHARE
    from urbangeo.io.gpkg import read_layer

    gpkg = default_run / C.RUN_GPKG
    regions = read_layer(gpkg, C.LAYER_REGIONS).set_index(C.REGION_ID)
    edge = (regions[C.INSIDE_SHARE] < 0.5) | (regions[VALID_SHARE] < 0.5)
    assert (regions[EDGE] == edge).all()
    assert 50 <= int(edge.sum()) <= 100  # 76 of 615 cells at 250 m
    assert regions.loc[edge, EXCLUDED].notna().all() and regions.loc[~edge, EXCLUDED].isna().all()
    clusters = read_layer(gpkg, C.LAYER_CLUSTERS).set_index(C.REGION_ID)
    assert len(clusters) == 615 and clusters.loc[edge[edge].index, "cluster"].isna().all()
    members = clusters[clusters["cluster"].notna()]
    shares = edge.reindex(members.index).groupby(members["cluster"]).mean()
    assert len(shares) >= 2 and (shares < 0.5).all(), shares
    records = read_stage_records(gpkg)
    assert records["train"].counts["pairs"] == 615 - int(edge.sum())
    assert records["cluster"].counts["excluded"] == records["predict"].counts["excluded"]
