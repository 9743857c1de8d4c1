"""Regions like this one (issue #17): `urbangeo similar` ranks regions by the cosine similarity
of their embeddings, exactly or through a ball tree above a size, and writes the layer
``similar``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.downstream.helpers import embeddings_table, make_run
from urbangeo import constants as C
from urbangeo.downstream.similar import (
    EXACT_MAX,
    LAYER_SIMILAR,
    find_similar,
    similar_stage,
)
from urbangeo.errors import InputError
from urbangeo.imagery.edges import EDGE, EXCLUDED
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.styles import read_styles
from urbangeo_cli.main import cli


def _cosine_top(X: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    """The numpy answer: cosine of every row with ``query``, highest first."""
    sims = X @ query / (np.linalg.norm(X, axis=1) * np.linalg.norm(query))
    return [ids[i] for i in np.argsort(-sims, kind="stable")[:k]]


def test_the_region_itself_ranks_first_and_the_order_is_numpy_cosine():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 24))
    ids = [f"r{i}" for i in range(300)]
    frame = pd.DataFrame(X, index=ids)
    result = find_similar(frame, ["r7"], k=15)
    assert result.method == "exact" and EXACT_MAX == 200_000
    assert list(result.frame.index) == _cosine_top(X, ids, X[7], 15)
    assert result.frame.index[0] == "r7" and result.frame["similarity"].iloc[0] == pytest.approx(1)
    assert list(result.frame["rank"]) == list(range(1, 16))
    assert result.frame["selected"].tolist() == [True] + [False] * 14
    sims = result.frame["similarity"].to_numpy()
    assert (np.diff(sims) <= 0).all()


def test_several_regions_are_compared_by_their_mean_unit_vector():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 8)) * rng.uniform(0.1, 10, size=(200, 1))  # lengths differ
    ids = [f"r{i}" for i in range(200)]
    result = find_similar(pd.DataFrame(X, index=ids), ["r3", "r50", "r120"], k=5)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    query = unit[[3, 50, 120]].mean(axis=0)
    top = _cosine_top(X, ids, query, 5)
    assert list(result.frame.index[:5]) == top
    outside = [r for r in ("r3", "r50", "r120") if r not in top]
    assert list(result.frame.index[5:]) == outside  # selected, beyond the top k: no rank
    assert result.frame.loc[outside, "rank"].isna().all()
    assert result.frame.loc[["r3", "r50", "r120"], "selected"].all()


def test_ball_tree_gives_the_exact_top_k_above_the_threshold():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2500, 32))
    ids = [f"r{i}" for i in range(2500)]
    frame = pd.DataFrame(X, index=ids)
    for query in (["r0"], ["r10", "r11"], ["r2499"]):
        exact = find_similar(frame, query, k=25)
        indexed = find_similar(frame, query, k=25, exact_max=1000)  # a test-lowered threshold
        assert (exact.method, indexed.method) == ("exact", "ball_tree")
        assert list(indexed.frame.index) == list(exact.frame.index)
        np.testing.assert_allclose(indexed.frame["similarity"], exact.frame["similarity"])


def test_unknown_and_zero_regions():
    frame = pd.DataFrame([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]], index=["a", "b", "c"])
    with pytest.raises(InputError, match="No embedding for region"):
        find_similar(frame, ["zzz"])
    result = find_similar(frame, ["a"], k=5)
    assert list(result.frame.index) == ["a", "c"]  # b has no direction: never a candidate
    with pytest.raises(InputError, match="cancel out"):
        find_similar(pd.DataFrame([[1.0], [-1.0]], index=["a", "b"]), ["a", "b"])


@pytest.fixture
def run(tmp_path):
    gpkg, _, X = make_run(tmp_path / "run")
    ids = read_layer(gpkg, C.LAYER_REGIONS)[C.REGION_ID].astype(str).tolist()
    return gpkg, ids, X


def test_stage_writes_the_similar_layer_styled(run):
    gpkg, ids, X = run
    result = similar_stage(gpkg, regions=("3_4",), k=12)
    layer = read_layer(gpkg, LAYER_SIMILAR)
    assert len(layer) == 12 and layer.crs == read_layer(gpkg, C.LAYER_REGIONS).crs
    assert list(layer[C.REGION_ID]) == _cosine_top(X, ids, X[ids.index("3_4")], 12)
    assert list(layer["rank"]) == list(range(1, 13))
    assert layer[C.REGION_ID].iloc[0] == "3_4" and bool(layer["selected"].iloc[0])
    assert not layer["selected"].iloc[1:].any()
    regions = read_layer(gpkg, C.LAYER_REGIONS).set_index(C.REGION_ID)
    assert layer.geometry.iloc[0].equals(regions.geometry["3_4"])
    styles = read_styles(gpkg)
    row = styles[styles["f_table_name"] == LAYER_SIMILAR]
    assert len(row) == 1 and bool(row["useAsDefault"].iloc[0])
    assert 'attr="similarity"' in row["styleQML"].iloc[0]
    assert result.counts == {"regions": 120, "k": 12}
    # a second question replaces the answer
    similar_stage(gpkg, regions=("0_0", "1_0"), k=3)
    layer = read_layer(gpkg, LAYER_SIMILAR)
    assert set(layer.loc[layer["selected"], C.REGION_ID]) == {"0_0", "1_0"}
    assert layer["rank"].notna().sum() == 3


def test_excluded_regions_are_not_candidates(run):
    gpkg, *_ = run
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    edge = regions[C.ROW] == 0
    regions[EDGE] = edge
    regions[EXCLUDED] = np.where(edge, "edge cell", None)
    write_layers(gpkg, {C.LAYER_REGIONS: regions}, overwrite=True)
    result = similar_stage(gpkg, regions=("3_4",), k=200)
    assert result.counts["regions"] == 120 - int(edge.sum())
    layer = read_layer(gpkg, LAYER_SIMILAR)
    assert not layer[C.REGION_ID].str.endswith("_0").any()


def test_cli_encoder_and_embeddings(run, tmp_path):
    gpkg, ids, _ = run
    other = np.random.default_rng(9).normal(size=(len(ids), 6))
    embeddings_table(ids, other).to_parquet(gpkg.parent / "embeddings_text.parquet")
    runner = CliRunner()
    args = ["similar", "--gpkg", str(gpkg), "--region", "5_5", "--k", "4"]
    out = runner.invoke(cli, [*args, "--encoder", "text"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    top = _cosine_top(other, ids, other[ids.index("5_5")], 4)
    lines = [line.split() for line in out.output.splitlines() if line.strip()[:1].isdigit()]
    assert [parts[1] for parts in lines] == top
    assert "(selected)" in out.output and "exact search over 120 regions" in out.output
    file = tmp_path / "other.csv"
    embeddings_table(ids, other).to_csv(file, index=False)
    by_file = runner.invoke(cli, [*args, "--embeddings", str(file)], catch_exceptions=False)
    assert by_file.exit_code == 0 and by_file.output.split("\n")[-5:] == out.output.split("\n")[-5:]
    both = runner.invoke(cli, [*args, "--embeddings", str(file), "--encoder", "text"])
    assert both.exit_code == 1 and "not both" in both.output
    missing = runner.invoke(cli, ["similar", "--gpkg", str(gpkg), "--region", "nope"])
    assert missing.exit_code == 1 and "No embedding for region(s) nope" in missing.output


def test_similar_explains_itself():
    out = CliRunner().invoke(cli, ["similar", "--help"], catch_exceptions=False)
    assert out.exit_code == 0
    for text in ("--region", "--k", "--encoder", "--embeddings", "--quiet", "Examples", "200,000"):
        assert text in out.output
    assert "similar" in CliRunner().invoke(cli, ["--help"]).output
