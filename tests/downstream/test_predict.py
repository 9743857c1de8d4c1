import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from tests.downstream.helpers import embeddings_table, linear_data, make_run, square_regions
from urbangeo import constants as C
from urbangeo.downstream.heads import HeadTask, MLPConfig, fit_mlp_heads, fit_ridge
from urbangeo.downstream.metrics import regression_metrics, summarize
from urbangeo.downstream.predict import evaluate, transfer
from urbangeo.downstream.splits import block_ids, block_split, random_split, split_sizes
from urbangeo.downstream.stages import predict_stage
from urbangeo.downstream.tables import (
    align,
    dataset_from_files,
    embeddings_frame,
    gpkg_embeddings,
    indicators_frame,
    load_embeddings,
)
from urbangeo.errors import InputError, OutputError
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.runs import read_stage_records
from urbangeo_cli.downstream import predict

FAST = MLPConfig(hidden=32, max_epochs=60, patience=8)


def synthetic_dataset(n=150, dim=12, *, shuffle=False, seed=0, coords=True):
    X, y = linear_data(n, dim, seed=seed)
    if shuffle:
        y = np.random.default_rng(99).permutation(y)
    ids = [f"r{i}" for i in range(n)]
    table = {C.REGION_ID: ids, "pop": y}
    if coords:
        table["x"] = (np.arange(n) % 15) * 1000.0
        table["y"] = (np.arange(n) // 15) * 1000.0
    return align(embeddings_frame(embeddings_table(ids, X)), indicators_frame(pd.DataFrame(table)))


# --- metrics and splits --------------------------------------------------------------------


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=50), rng.normal(size=50)
    m = regression_metrics(y, p)
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    s = summarize([1.0, 2.0, 4.0])
    assert s["mean"] == pytest.approx(7 / 3) and s["std"] == pytest.approx(
        np.std([1, 2, 4], ddof=1)
    )


@pytest.mark.parametrize(
    ("n", "sizes"), [(10, (6, 2, 2)), (11, (7, 2, 2)), (13, (7, 3, 3)), (4587, (2753, 917, 917))]
)
def test_split_sizes_are_6_2_2_with_halves_rounded_up(n, sizes):
    assert split_sizes(n) == sizes
    train, val, test = random_split(n, seed=3)
    assert (len(train), len(val), len(test)) == sizes
    assert sorted(np.concatenate([train, val, test])) == list(range(n))


def test_random_split_is_reproducible_per_seed():
    a, b = random_split(100, 7), random_split(100, 7)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert not (random_split(100, 8)[2] == a[2]).all()


def test_block_split_never_shares_a_block():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 20_000, size=(2000, 2))
    blocks = block_ids(xy, 2000)
    for seed in range(3):
        parts = block_split(xy, 2000, seed)
        assert sorted(np.concatenate(parts)) == list(range(2000))
        owner = {}
        for k, rows in enumerate(parts):
            for b in np.unique(blocks[rows]):
                assert owner.setdefault(b, k) == k
        shares = np.array([len(p) for p in parts]) / 2000
        assert np.allclose(shares, [0.6, 0.2, 0.2], atol=0.03)


def test_block_split_needs_three_blocks():
    with pytest.raises(InputError, match="block"):
        block_split(np.zeros((20, 2)), 1000, 0)


# --- heads ---------------------------------------------------------------------------------


def test_ridge_matches_scikit_learn_for_the_chosen_alpha():
    X, y = linear_data(120, 8, noise=0.5)
    train, val, _ = random_split(120, 0)
    fit = fit_ridge(X, HeadTask(y, train, val, 0))
    mu, sd = X[train].mean(0), X[train].std(0)
    ymu, ysd = y[train].mean(), y[train].std()
    ref = Ridge(alpha=fit.chosen).fit((X[train] - mu) / sd, (y[train] - ymu) / ysd)
    assert np.allclose(fit.predictions, ref.predict((X - mu) / sd) * ysd + ymu)


def test_mlp_heads_alone_or_together_agree_and_repeat():
    X, y = linear_data(200, 10)
    y2 = np.log1p(y) ** 2
    tasks = [
        HeadTask(t, *random_split(200, s)[:2], s, key=k)
        for k, t in enumerate((y, y2))
        for s in (0, 1)
    ]
    together = fit_mlp_heads(X, tasks, FAST)
    alone = fit_mlp_heads(X, tasks[2:3], FAST)[0]
    # Heads fitted alone or stacked run GEMMs of other shapes, so other kernels (MKL's AVX-512
    # ones on Intel pick by shape and alignment): float32 rounding differs in the last bits and
    # grows over a few hundred optimizer steps, to about 2e-5 of the range here.
    scale = np.ptp(together[2].predictions)
    np.testing.assert_allclose(
        alone.predictions, together[2].predictions, rtol=0, atol=1e-4 * scale
    )
    again = fit_mlp_heads(X, tasks, FAST)
    assert all(
        np.array_equal(a.predictions, b.predictions) for a, b in zip(together, again, strict=True)
    )


# --- the protocol ----------------------------------------------------------------------------


def test_evaluate_metrics_are_the_test_metrics_of_its_predictions():
    report = evaluate(synthetic_dataset(), seeds=2, mlp=FAST)
    result = report.targets["pop"]
    y = np.log1p(report.observed["pop"].to_numpy())
    for model in ("mlp", "ridge", "coords_knn"):
        for s in range(2):
            test = result.sets[s] == 2
            pred = result.predictions[model][s][test]
            assert result.metrics[model]["r2"]["values"][s] == pytest.approx(
                r2_score(y[test], pred)
            )
            assert result.metrics[model]["mae"]["values"][s] == pytest.approx(
                mean_absolute_error(y[test], pred)
            )
    assert result.sizes == [(90, 30, 30), (90, 30, 30)]


def test_known_linear_signal_is_found_and_shuffled_targets_are_not():
    good = evaluate(synthetic_dataset(), seeds=2, mlp=FAST).targets["pop"].metrics
    assert good["ridge"]["r2"]["mean"] > 0.95
    assert good["mlp"]["r2"]["mean"] > 0.8
    bad = evaluate(synthetic_dataset(shuffle=True), seeds=2, mlp=FAST).targets["pop"].metrics
    assert bad["ridge"]["r2"]["mean"] < 0.1
    assert bad["mlp"]["r2"]["mean"] < 0.1


def test_same_seeds_same_numbers():
    a = evaluate(synthetic_dataset(), seeds=[4], mlp=FAST).to_dict()
    b = evaluate(synthetic_dataset(), seeds=[4], mlp=FAST).to_dict()
    assert a["targets"] == b["targets"]


def test_block_split_in_evaluate_and_missing_targets_dropped():
    ds = synthetic_dataset()
    ds.indicators.iloc[:7, 0] = np.nan
    report = evaluate(ds, seeds=2, split="block", block_size=3000, mlp=FAST)
    result = report.targets["pop"]
    assert result.n_regions == 143
    assert (result.sets[:, :7] == -1).all()
    blocks = block_ids(ds.coords.to_numpy(), 3000)
    for row in result.sets:
        for b in np.unique(blocks):
            assert len(set(row[(blocks == b) & (row >= 0)])) <= 1


def test_block_split_without_coordinates_is_explained():
    with pytest.raises(InputError, match="coordinates"):
        evaluate(synthetic_dataset(coords=False), split="block", block_size=1000, mlp=FAST)


# --- bad input -------------------------------------------------------------------------------


def test_embeddings_without_region_id(tmp_path):
    path = tmp_path / "e.csv"
    pd.DataFrame({"id": ["a"], "f": [1.0]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="no 'region_id' column") as info:
        load_embeddings(path)
    assert "region_id" in info.value.hint


def test_non_numeric_features():
    frame = pd.DataFrame({C.REGION_ID: ["a", "b"], "f": [1.0, 2.0], "label": ["x", "y"]})
    with pytest.raises(InputError, match=r"non-numeric column.*label"):
        embeddings_frame(frame)


def test_vector_column_is_expanded():
    frame = pd.DataFrame({C.REGION_ID: ["a", "b"], "embedding": [[1.0, 2.0], [3.0, 4.0]]})
    out = embeddings_frame(frame)
    assert list(out.columns) == ["e0", "e1"] and out.loc["b", "e1"] == 4.0


def test_indicators_that_match_no_region(tmp_path):
    e, i = tmp_path / "e.csv", tmp_path / "i.csv"
    embeddings_table(["a", "b"], np.ones((2, 3))).to_csv(e, index=False)
    pd.DataFrame({C.REGION_ID: ["x", "y"], "pop": [1, 2]}).to_csv(i, index=False)
    with pytest.raises(InputError, match="No indicator row matches"):
        dataset_from_files(e, i)


def test_target_with_fewer_than_10_regions():
    ds = synthetic_dataset()
    ds.indicators.loc[ds.indicators.index[9:], "pop"] = np.nan
    with pytest.raises(InputError, match=r"9 region.*at least 10"):
        evaluate(ds, ["pop"], mlp=FAST)


def test_constant_target_and_unknown_target():
    ds = synthetic_dataset()
    ds.indicators["pop"] = 5.0
    with pytest.raises(InputError, match="constant"):
        evaluate(ds, ["pop"], mlp=FAST)
    with pytest.raises(InputError, match="not found: gdp") as info:
        evaluate(ds, ["gdp"], mlp=FAST)
    assert "pop" in info.value.hint


def test_bad_columns_are_skipped_when_not_asked_for():
    ds = synthetic_dataset()
    ds.indicators["flat"] = 1.0
    with pytest.warns(UserWarning, match="Skipping indicator 'flat'"):
        report = evaluate(ds, seeds=1, mlp=FAST)
    assert list(report.targets) == ["pop"]


# --- transfer, stage, CLI --------------------------------------------------------------------


def test_transfer_between_cities():
    a, b = synthetic_dataset(seed=0), synthetic_dataset(seed=0)
    b.features = b.features.iloc[::-1]  # other order, same regions: transfer is exact
    b.indicators = b.indicators.loc[b.features.index]
    report = transfer(a, b, seeds=2, mlp=FAST)
    metrics = report.targets["pop"].metrics
    assert metrics["ridge"]["r2"]["mean"] > 0.95
    assert metrics["train_mean"]["r2"]["mean"] < 0.05
    assert report.targets["pop"].sizes[0] == (112, 38, 150)  # val = floor(150 / 4 + 0.5)


def test_predict_stage_writes_the_layer_and_record(tmp_path):
    gpkg, indicators, _ = make_run(tmp_path / "run")
    result = predict_stage(gpkg, seeds=2, output=tmp_path / "m.json", mlp=FAST)
    layer = read_layer(gpkg, C.LAYER_PREDICTIONS)
    assert len(layer) == 120 and layer.crs == "EPSG:32635"
    obs = layer.set_index(C.REGION_ID)["population_observed"]
    assert np.allclose(obs.loc[indicators[C.REGION_ID]], indicators["population"])
    resid = layer["population_residual"]
    assert np.allclose(
        resid, np.log1p(layer["population_predicted"]) - np.log1p(layer["population_observed"])
    )
    assert set(layer["population_test_seeds"]) <= {0, 1, 2}
    record = read_stage_records(gpkg)["predict"]
    assert record.params["seeds"] == [0, 1] and record.counts["targets"] == 2
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["targets"]["population"]["metrics"]["ridge"]["r2"]["mean"] == pytest.approx(
        result.report.targets["population"].metrics["ridge"]["r2"]["mean"]
    )
    with pytest.raises(OutputError, match="already exist"):
        predict_stage(gpkg, seeds=1, mlp=FAST)
    predict_stage(gpkg, seeds=4, predictions_from=3, overwrite=True, mlp=FAST)
    layer = read_layer(gpkg, C.LAYER_PREDICTIONS)
    assert layer["population_split"].value_counts().to_dict() == {
        "train": 72,
        "val": 24,
        "test": 24,
    }


def test_regions_columns_serve_as_indicators(tmp_path):
    gpkg, _, _ = make_run(tmp_path / "run", indicators_layer=False)
    result = predict_stage(gpkg, targets=["population"], seeds=1, mlp=FAST)
    assert list(result.report.targets) == ["population"]
    assert result.report.protocol["regions"] == 120


def test_cli_predict_on_files(tmp_path):
    X, y = linear_data(60, 6)
    ids = square_regions(6, 10)[C.REGION_ID].tolist()
    embeddings_table(ids, X).to_parquet(tmp_path / "e.parquet")
    pd.DataFrame({C.REGION_ID: ids, "pop": y}).to_csv(tmp_path / "i.csv", index=False)
    args = [
        "--embeddings",
        tmp_path / "e.parquet",
        "--indicators",
        tmp_path / "i.csv",
        "--seeds",
        "2",
        "-o",
        tmp_path / "out" / "m.json",
    ]
    result = CliRunner().invoke(predict, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "ridge (embedding)" in result.stdout and "± " in result.stdout
    saved = json.loads((tmp_path / "out" / "m.json").read_text())
    assert saved["protocol"]["seeds"] == [0, 1]
    assert saved["targets"]["pop"]["sizes"][0] == {"train": 36, "val": 12, "test": 12}


def test_cli_predict_explains_bad_input(tmp_path):
    pd.DataFrame({"id": ["a"], "f": [1.0]}).to_csv(tmp_path / "e.csv", index=False)
    pd.DataFrame({C.REGION_ID: ["a"], "pop": [1.0]}).to_csv(tmp_path / "i.csv", index=False)
    result = CliRunner().invoke(
        predict, ["--embeddings", str(tmp_path / "e.csv"), "--indicators", str(tmp_path / "i.csv")]
    )
    assert result.exit_code == 1
    assert "no 'region_id' column" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(predict, ["--seeds", "1"])
    assert result.exit_code == 1 and "--gpkg" in result.output


def test_cli_predict_help_teaches():
    out = CliRunner().invoke(predict, ["--help"]).output
    for word in ("Example", "6:2:2", "--block-size", "--quiet", "default", "predictions"):
        assert word in out


def test_cli_transfer_on_file_pairs(tmp_path):
    for name, seed in (("a", 0), ("b", 0)):
        X, y = linear_data(80, 6, seed=seed)
        ids = [f"{name}{i}" for i in range(80)]
        embeddings_table(ids, X).to_parquet(tmp_path / f"{name}.parquet")
        pd.DataFrame({C.REGION_ID: ids, "pop": y}).to_csv(tmp_path / f"{name}.csv", index=False)
    pair = lambda n: f"{tmp_path / n}.parquet,{tmp_path / n}.csv"  # noqa: E731
    args = [
        "--train-on",
        pair("a"),
        "--test-on",
        pair("b"),
        "--seeds",
        "1",
        "-o",
        str(tmp_path / "t.json"),
    ]
    result = CliRunner().invoke(predict, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["protocol"]["kind"] == "transfer"
    assert saved["targets"]["pop"]["metrics"]["ridge"]["r2"]["mean"] > 0.9
    assert "training mean" in result.stdout


def test_run_layer_embeddings_and_default_metrics_file(tmp_path):
    gpkg, _, X = make_run(tmp_path / "run")
    (tmp_path / "run" / C.EMBEDDINGS_PARQUET).unlink()
    regions = read_layer(gpkg, C.LAYER_REGIONS)[[C.REGION_ID, "geometry"]]
    # As the embed stage writes it: n_images beside the vector, JSON text when wide.
    layer = regions.assign(n_images=3, embedding=[json.dumps(list(row)) for row in X])
    write_layers(gpkg, {C.LAYER_REGION_EMBEDDINGS: layer})
    features = gpkg_embeddings(gpkg)
    assert features.shape == X.shape and np.allclose(features.to_numpy(), X)
    predict_stage(gpkg, targets=["population"], seeds=1, mlp=FAST)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["protocol"]["features"] == X.shape[1]


def test_cli_predict_head_and_the_deprecated_model_flag(tmp_path):
    X, y = linear_data(60, 6)
    ids = square_regions(6, 10)[C.REGION_ID].tolist()
    embeddings_table(ids, X).to_parquet(tmp_path / "e.parquet")
    pd.DataFrame({C.REGION_ID: ids, "pop": y}).to_csv(tmp_path / "i.csv", index=False)
    files = ["--embeddings", str(tmp_path / "e.parquet"), "--indicators", str(tmp_path / "i.csv")]
    for flag in ("--head", "--model"):
        result = CliRunner().invoke(predict, [*files, "--seeds", "1", flag, "ridge", "--no-log"])
        assert result.exit_code == 0, result.output
        assert ("--model is deprecated; use --head" in result.output) == (flag == "--model")
    bad = CliRunner().invoke(predict, [*files, "--predictions-from", "best"])
    assert bad.exit_code == 1 and "--predictions-from" in bad.output
