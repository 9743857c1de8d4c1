"""Feature combinations (issue #17): ``predict --features`` joins embeddings tables by region_id,
standardises each block and scores every set side by side on the same regions and splits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.downstream.helpers import embeddings_table, make_run
from urbangeo import constants as C
from urbangeo.downstream.features import (
    comparison_table,
    named_files,
    plan,
    predict_dataset,
    resolve,
    standardise_blocks,
)
from urbangeo.downstream.heads import MLPConfig
from urbangeo.downstream.stages import predict_stage
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.io.gpkg import read_layer
from urbangeo.settings import PredictSettings
from urbangeo_cli.downstream import predict

FAST = MLPConfig(hidden=16, max_epochs=30, patience=5)


def _block_numpy(values: np.ndarray, total: int | None = None, blocks: int = 1) -> np.ndarray:
    """The block standardisation, computed independently: z-score per column (population
    std), then the block times sqrt(total / (blocks * its width)) (a set of ``total`` columns
    in ``blocks`` blocks; by default this block alone)."""
    centred = values - values.mean(axis=0, keepdims=True)
    std = np.sqrt((centred**2).sum(axis=0) / len(values))
    std[std == 0] = 1.0
    width = values.shape[1]
    return centred / std * np.sqrt((total or width) / (blocks * width))


@pytest.fixture
def run(tmp_path):
    """A run (120 regions, 16-dim embeddings) and a 3-column 'text' block in its folder, and a
    wide 40-column block file lacking 7 regions."""
    gpkg, _, X = make_run(tmp_path / "run")
    ids = read_layer(gpkg, C.LAYER_REGIONS)[C.REGION_ID].astype(str).tolist()
    rng = np.random.default_rng(5)
    text = rng.normal(size=(len(ids), 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -3.0]
    embeddings_table(ids, text).to_parquet(gpkg.parent / "embeddings_text.parquet")
    wide = rng.normal(size=(len(ids) - 7, 40))
    wide[:, 0] = 2.0  # a constant column
    wide_path = tmp_path / "wide.parquet"
    embeddings_table(ids[7:], wide).to_parquet(wide_path)
    return gpkg, ids, X, text, wide, wide_path


def test_block_standardisation_matches_numpy(run):
    gpkg, ids, X, text, _, _ = run
    s = PredictSettings(features=("run,text",))
    dataset, n_all, sets = predict_dataset(gpkg, s, None)
    expected = np.hstack([_block_numpy(X, 19, 2), _block_numpy(text, 19, 2)])
    assert sets.main == "run+text" and n_all == len(ids)
    assert list(dataset.features.index) == ids
    np.testing.assert_allclose(dataset.features.to_numpy(), expected, atol=1e-12)
    assert list(dataset.features.columns[:2]) == ["run:e0", "run:e1"]
    assert dataset.features.columns[-1] == "text:e2"
    # every block carries the same total variance, whatever its width, and the set that of
    # its 19 columns standardised
    values = dataset.features.to_numpy()
    assert values[:, :16].var(axis=0).sum() == pytest.approx(9.5)
    assert values[:, 16:].var(axis=0).sum() == pytest.approx(9.5)
    # the heads get the same weights, to apply after their own standardisation
    weights = sets.column_weights()[""]
    np.testing.assert_allclose(weights, [np.sqrt(19 / 32)] * 16 + [np.sqrt(19 / 6)] * 3)
    # a block alone is a plain z-score
    direct = standardise_blocks({"a": pd.DataFrame(text, index=ids)})
    np.testing.assert_allclose(direct.to_numpy(), _block_numpy(text), atol=1e-12)


def test_regions_missing_from_a_block_are_dropped_with_a_warning(run):
    gpkg, ids, X, text, wide, wide_path = run
    s = PredictSettings(features=(f"text,{wide_path}", "run"))
    lacks = r"^7 region\(s\) are missing from a feature source \(wide lacks 7\)"
    with pytest.warns(UrbangeoWarning, match=lacks):
        dataset, n_all, sets = predict_dataset(gpkg, s, None)
    assert n_all == len(ids) - 7
    assert list(dataset.features.index) == ids[7:]
    # standardised over the regions kept, the constant column at 0
    expected = np.hstack([_block_numpy(text[7:], 43, 2), _block_numpy(wide, 43, 2)])
    np.testing.assert_allclose(dataset.features.to_numpy(), expected, atol=1e-12)
    assert (dataset.features["wide:e0"] == 0).all()
    # the other set is scored on the same regions
    np.testing.assert_allclose(sets.extra["run"].to_numpy(), _block_numpy(X[7:]), atol=1e-12)
    assert sets.dropped == 7


def test_each_set_is_scored_side_by_side(run):
    gpkg, _, _, _, _, wide_path = run
    result = predict_stage(
        gpkg,
        features=("run", f"text,{wide_path}"),
        compare=True,
        seeds=2,
        baselines=("coords",),
        targets=("population",),
        mlp=FAST,
    )
    metrics = json.loads((gpkg.parent / C.METRICS_JSON).read_text())
    block = metrics["protocol"]["feature_sets"]
    assert block["main"] == "run"
    assert list(block["sets"]) == ["run", "text+wide", "text", "wide", "run+text+wide"]
    assert block["sets"]["text+wide"]["blocks"] == {"text": 3, "wide": 40}
    assert block["dropped_regions"] == 7
    assert block["sets"]["run"]["models"] == ["mlp", "ridge"]
    assert block["sets"]["text"]["models"] == ["text:mlp", "text:ridge"]
    model_keys = metrics["targets"]["population"]["metrics"]
    for name, entry in block["sets"].items():
        prefix = "" if name == "run" else f"{name}:"
        for head in ("mlp", "ridge"):
            r2 = model_keys[prefix + head]["r2"]
            assert entry["r2"]["population"][head]["mean"] == pytest.approx(r2["mean"])
    # the same splits for every set: the same test sizes
    sizes = metrics["targets"]["population"]["sizes"]
    assert all(s["train"] + s["val"] + s["test"] == 113 for s in sizes)
    # the run's embeddings predict population (it is linear in them), the random blocks not
    run_r2 = block["sets"]["run"]["r2"]["population"]["ridge"]["mean"]
    assert run_r2 > 0.8 > block["sets"]["text"]["r2"]["population"]["ridge"]["mean"]
    table = comparison_table(result.report)  # type: ignore[arg-type]
    for name in block["sets"]:
        assert name in table
    assert "run *" in table  # the set in the predictions layer
    layer = read_layer(gpkg, C.LAYER_PREDICTIONS)
    assert layer["population_predicted"].notna().sum() == 113
    records = read_layer(gpkg, "urbangeo_stages")
    assert "features" in records.loc[records["stage"] == "predict", "params"].iloc[0]


def test_cli_prints_the_feature_sets_table(run):
    gpkg, *_ = run
    result = CliRunner().invoke(
        predict,
        [
            "--gpkg",
            str(gpkg),
            "--features",
            "run",
            "--features",
            "run,text",
            "--seeds",
            "2",
            "--baselines",
            "coords",
            "--head",
            "ridge",
            "--target",
            "population",
            "--overwrite",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "Feature sets: test R²" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("run *", "run+text"))]
    assert len(lines) == 2 and all("ridge" in line for line in lines)


def test_names_resolve_in_the_run_folder(run, tmp_path):
    gpkg, *_ = run
    cached = gpkg.parent / "baselines"
    cached.mkdir()
    embeddings_table(["a"], np.ones((1, 2))).to_parquet(cached / "embeddings_random.parquet")
    embeddings_table(["a"], np.ones((1, 2))).to_parquet(cached / "embeddings_text.parquet")
    files = named_files(gpkg)
    assert files["text"] == gpkg.parent / "embeddings_text.parquet"  # the run's folder first
    assert files["random"] == cached / "embeddings_random.parquet"
    assert resolve("run", gpkg).path is None and resolve("embeddings", gpkg).path is None
    with pytest.raises(InputError, match="No feature source named 'nope'") as error:
        resolve("nope", gpkg)
    assert "run, text, random" in (error.value.hint or "")
    with pytest.raises(InputError, match="names are looked up in a run's folder"):
        resolve("text", None)
    with pytest.raises(InputError, match="does not exist"):
        resolve(str(tmp_path / "missing.parquet"), gpkg)


def test_plan_and_compare():
    assert plan(["a,b"]) == [["a", "b"]]
    assert plan(["a,b"], compare=True) == [["a", "b"], ["a"], ["b"]]
    assert plan(["a", "b"], compare=True) == [["a"], ["b"], ["a", "b"]]
    assert plan(["a", "a, b,a"]) == [["a"], ["a", "b"]]
    with pytest.raises(InputError, match=r"scores the sources of --features"):
        PredictSettings(compare=True)


def test_features_without_a_gpkg(run, tmp_path):
    gpkg, ids, X, *_ = run
    indicators = pd.DataFrame(read_layer(gpkg, "indicators"))
    table = tmp_path / "ind.csv"
    indicators.to_csv(table, index=False)
    run_file = tmp_path / "run_emb.parquet"
    embeddings_table(ids, X).to_parquet(run_file)
    result = predict_stage(
        None,
        features=(f"{run_file},{gpkg.parent / 'embeddings_text.parquet'}",),
        indicators=table,
        seeds=1,
        baselines=("coords",),
        model="ridge",
        targets=("population",),
    )
    assert result.report.protocol["feature_sets"]["main"] == "run_emb+embeddings_text"
