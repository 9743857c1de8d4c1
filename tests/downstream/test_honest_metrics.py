"""Issue #15: k-fold below 100 regions, out-of-fold predictions, below-baseline flags, n and
spread with every metric, and the image baselines computed once."""

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold

from tests.downstream.helpers import embeddings_table, linear_data, make_run
from urbangeo import constants as C
from urbangeo.downstream.heads import RIDGE_ALPHAS, MLPConfig
from urbangeo.downstream.metrics import is_below_baseline
from urbangeo.downstream.predict import evaluate, scheme_for
from urbangeo.downstream.splits import KFOLD_BELOW, block_ids, block_kfold_split, kfold_split
from urbangeo.downstream.stages import predict_stage
from urbangeo.downstream.tables import align, embeddings_frame, indicators_frame
from urbangeo.errors import InputError
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.runs import read_stage_records
from urbangeo.model.encoders.image_stats import image_statistics, image_stats_encoder
from urbangeo.settings import PredictSettings
from urbangeo_cli.downstream import predict

FAST = MLPConfig(hidden=16, max_epochs=40, patience=6)


def small_dataset(n=60, *, missing=0, noise=False, seed=0, coords=False):
    """``n`` regions: ``pop`` linear in the embeddings (``missing`` of them without a value),
    and with ``noise`` a target independent of them."""
    X, y = linear_data(n, 8, seed=seed)
    ids = [f"r{i}" for i in range(n)]
    y = y.copy()
    y[:missing] = np.nan
    table = {C.REGION_ID: ids, "pop": y}
    if noise:
        table["noise"] = np.exp(np.random.default_rng(seed + 7).normal(size=n))
    if coords:
        table["x"] = (np.arange(n) % 10) * 1000.0
        table["y"] = (np.arange(n) // 10) * 1000.0
    frame = indicators_frame(pd.DataFrame(table))
    return align(embeddings_frame(embeddings_table(ids, X)), frame)


# --- the scheme and the folds -----------------------------------------------------------------


def test_auto_switches_to_kfold_below_the_threshold():
    assert KFOLD_BELOW == 100
    assert scheme_for("auto", 99) == "kfold" and scheme_for("auto", 100) == "split"
    assert scheme_for("split", 20) == "split" and scheme_for("kfold", 5000) == "kfold"
    # the threshold the settings explain is the one applied
    cv = next(f for f in PredictSettings.fields() if f.name == "cv")
    assert f"fewer than {KFOLD_BELOW} regions" in cv.spec.help


def test_kfold_split_tests_every_region_once_and_trains_on_the_rest():
    for n, folds in ((60, 5), (23, 4)):
        parts = kfold_split(n, folds, seed=3)
        tested = np.concatenate([test for _, _, test in parts])
        assert sorted(tested) == list(range(n))
        for train, val, test in parts:
            assert sorted(np.concatenate([train, val, test])) == list(range(n))
            rest = n - len(test)
            assert len(val) == math.floor(rest / 4 + 0.5)
    assert [len(t) for _, _, t in kfold_split(60, 5, 0)] == [12] * 5


def test_block_kfold_keeps_blocks_whole():
    xy = np.random.default_rng(2).uniform(0, 10_000, size=(90, 2))
    blocks = block_ids(xy, 2500)
    parts = block_kfold_split(xy, 2500, 4, seed=1)
    assert sorted(np.concatenate([t for _, _, t in parts])) == list(range(90))
    for _, _, test in parts:
        inside = set(blocks[test])
        assert not inside & set(blocks[np.setdiff1d(np.arange(90), test)])


# --- k-fold against an independent computation -------------------------------------------------


def test_kfold_ridge_is_sklearn_kfold_plus_the_same_ridge():
    ds = small_dataset(65, missing=5)
    report = evaluate(ds, ["pop"], seeds=2, mlp=FAST, folds=5)
    result = report.targets["pop"]
    assert result.scheme == "kfold" and result.n_regions == 60
    y_all = np.log1p(ds.indicators["pop"].to_numpy())
    X_all = ds.features.to_numpy()
    valid = np.flatnonzero(np.isfinite(y_all))
    X, y = X_all[valid], y_all[valid]
    alphas = []
    for r, seed in enumerate((0, 1)):
        oof = np.full(len(valid), np.nan)
        for f, (rest, test) in enumerate(
            KFold(5, shuffle=True, random_state=seed).split(np.arange(60))
        ):
            # the documented inner rule: 3:1 of the rest, order default_rng([seed, fold])
            order = np.random.default_rng([seed, f]).permutation(len(rest))
            n_val = math.floor(len(rest) * 0.25 + 0.5)
            train, val = rest[order[: len(rest) - n_val]], rest[order[len(rest) - n_val :]]
            mu, sd = X[train].mean(0), X[train].std(0)
            ymu, ysd = y[train].mean(), y[train].std()

            def model(alpha, train=train, mu=mu, sd=sd, ymu=ymu, ysd=ysd):
                fit = Ridge(alpha=alpha).fit((X[train] - mu) / sd, (y[train] - ymu) / ysd)
                return lambda rows: fit.predict((X[rows] - mu) / sd) * ysd + ymu

            errors = [np.mean((model(a)(val) - y[val]) ** 2) for a in RIDGE_ALPHAS]
            best = RIDGE_ALPHAS[int(np.argmin(errors))]
            alphas.append(best)
            oof[test] = model(best)(test)
        ours = result.predictions["ridge"][r]
        assert np.allclose(ours[valid], oof, atol=1e-8)
        assert result.metrics["ridge"]["r2"]["values"][r] == pytest.approx(r2_score(y, oof))
        assert result.metrics["ridge"]["r2"]["n"][r] == 60
        # each region's fold is the one that tested it
        assert (result.sets[r, valid] >= 0).all() and (result.sets[r, :5] == -1).all()
    assert result.chosen["ridge"] == pytest.approx(alphas)
    values = result.metrics["ridge"]["r2"]["values"]
    assert result.metrics["ridge"]["r2"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert result.n_test() == {"per_fold": [12] * 10, "total": 60}


def test_split_column_and_out_of_fold_predictions():
    ds = small_dataset(150, missing=4, coords=True)
    report = evaluate(ds, ["pop"], seeds=2, mlp=FAST, cv="split")
    r = report.targets["pop"]
    frame = report.prediction_frame(model="ridge")
    in_test = r.sets == 2
    tested = in_test.any(axis=0)
    labels = frame["pop_split"].to_numpy()
    assert set(labels[:4]) == {"no-target"}
    assert (labels[4:][tested[4:]] == "test").all()
    assert (labels[4:][~tested[4:]] == "never-tested").all() and (~tested[4:]).any()
    preds = r.predictions["ridge"]
    for i in np.flatnonzero(tested)[:20]:
        expected = preds[in_test[:, i], i].mean()  # only models that held the region out
        assert np.log1p(frame["pop_predicted"].iloc[i]) == pytest.approx(expected)
    assert r.n_test() == {"per_split": [29, 29], "total": int(tested.sum())}
    one = report.prediction_frame(model="ridge", seed=1)["pop_split"]
    assert one.value_counts().to_dict() == {"train": 88, "val": 29, "test": 29, "no-target": 4}

    kfold = evaluate(ds, ["pop"], seeds=2, mlp=FAST, cv="kfold")
    k = kfold.targets["pop"]
    frame = kfold.prediction_frame(model="ridge")
    i = 10
    assert frame["pop_split"].iloc[i] == f"fold {k.sets[0, i] + 1}/{k.sets[1, i] + 1}"
    assert np.log1p(frame["pop_predicted"].iloc[i]) == pytest.approx(
        k.predictions["ridge"][:, i].mean()
    )
    assert (frame["pop_test_seeds"].iloc[4:] == 2).all()
    single = kfold.prediction_frame(model="ridge", seed=1)["pop_split"]
    assert single.iloc[i] == f"fold {k.sets[1, i] + 1}"


# --- below the mean baseline ----------------------------------------------------------------


def test_below_baseline_rule():
    assert is_below_baseline(-0.01) and not is_below_baseline(0.0)
    assert is_below_baseline(0.05, mean_r2=0.1) and not is_below_baseline(0.2, mean_r2=0.1)


def test_noise_target_is_flagged_below_baseline(tmp_path):
    ds = small_dataset(60, noise=True)
    report = evaluate(ds, seeds=2, mlp=FAST)
    noise, pop = report.targets["noise"], report.targets["pop"]
    assert noise.metrics["mlp"]["r2"]["mean"] < 0
    assert noise.below_baseline["mlp"] and noise.below_baseline["ridge"]
    assert not pop.below_baseline["mlp"] and not pop.below_baseline["ridge"]
    assert "train_mean" not in noise.below_baseline
    assert report.below_baseline("mlp") == ["noise"]
    saved = report.to_dict()["targets"]
    assert saved["noise"]["below_baseline"]["ridge"] is True
    assert saved["pop"]["scheme"] == "kfold" and saved["pop"]["folds"] == 5
    lines = report.table().splitlines()
    flagged = [line for line in lines if line.rstrip().endswith("BELOW MEAN")]
    assert len(flagged) == sum(noise.below_baseline.values())
    assert any(line.startswith("noise") for line in flagged)


def test_stage_records_below_baseline(tmp_path):
    gpkg, _, _ = make_run(tmp_path / "run", cols=6, rows=5)
    table = read_layer(gpkg, "indicators")
    table["noise"] = np.exp(np.random.default_rng(5).normal(size=len(table)))
    write_layers(gpkg, {"indicators": pd.DataFrame(table)}, overwrite=True)
    result = predict_stage(gpkg, seeds=2, mlp=FAST, baselines="coords", model="ridge")
    record = read_stage_records(gpkg)["predict"]
    flagged = result.report.below_baseline("ridge")
    assert "noise" in flagged and "population" not in flagged
    assert record.counts["below_baseline"] == len(flagged)
    assert record.params["schemes"] == {"population": "kfold", "shops": "kfold", "noise": "kfold"}
    saved = json.loads((tmp_path / "run" / C.METRICS_JSON).read_text())
    assert saved["targets"]["noise"]["below_baseline"]["ridge"] is True
    assert saved["targets"]["population"]["n_test"] == {"per_fold": [6] * 10, "total": 30}
    assert set(saved["targets"]["population"]["metrics"]) == {
        "mlp",
        "ridge",
        "coords_knn",
        "train_mean",
    }
    layer = read_layer(gpkg, C.LAYER_PREDICTIONS)
    assert layer["population_split"].str.match(r"^fold [1-5]/[1-5]$").all()


def test_cli_table_shows_protocol_n_and_marker(tmp_path):
    ds = small_dataset(60, noise=True)
    ds.features.reset_index().to_parquet(tmp_path / "e.parquet")
    ds.indicators.reset_index().to_csv(tmp_path / "i.csv", index=False)
    args = ["--embeddings", str(tmp_path / "e.parquet"), "--indicators", str(tmp_path / "i.csv")]
    result = CliRunner().invoke(predict, [*args, "--seeds", "2", "--head", "ridge"])
    assert result.exit_code == 0, result.output
    assert "5-fold × 2" in result.stdout and "12/fold, 60 OOF" in result.stdout
    assert "BELOW MEAN" in result.stdout
    split = CliRunner().invoke(predict, [*args, "--seeds", "2", "--cv", "split", "--head", "ridge"])
    assert split.exit_code == 0, split.output
    assert "6:2:2 × 2" in split.stdout and "12/split" in split.stdout


# --- too few regions --------------------------------------------------------------------------


def test_too_few_regions_are_refused_with_the_reason():
    ds = small_dataset(8)
    with pytest.raises(InputError, match=r"8 region\(s\) with a value; at least 10") as info:
        evaluate(ds, ["pop"], mlp=FAST)
    assert "5-fold" in info.value.hint and "train on 6" in info.value.hint
    with pytest.raises(InputError, match="fewer than 2 test regions per fold") as info:
        evaluate(small_dataset(12), ["pop"], folds=8, mlp=FAST)
    assert "--folds 6" in info.value.hint


def test_settings_of_the_protocol():
    s = PredictSettings(cv="kfold", folds="10", repeats=3, baselines="coords,image-stats")
    assert (s.folds, s.repeats, s.baselines) == (10, 3, ("coords", "image-stats"))
    assert PredictSettings(baselines="none").baseline_names == ()
    for bad in ({"cv": "loo"}, {"folds": 1}, {"baselines": "coords,none"}, {"baselines": "x"}):
        with pytest.raises(InputError):
            PredictSettings(**bad)


# --- image baselines, computed once -----------------------------------------------------------


def _add_images(gpkg, regions):
    """One small PNG per region (its colour varies by region) and the images layer."""
    folder = gpkg.parent / C.OVERHEAD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, region in enumerate(regions):
        pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        pixels[..., 0] = (i * 37) % 256
        path = folder / f"s{i}.png"
        Image.fromarray(pixels).save(path)
        rows.append(
            {
                C.IMAGE_ID: f"s{i}",
                C.KIND: C.KIND_OVERHEAD,
                C.REGION_ID: region,
                C.PATH: f"{C.OVERHEAD_DIR}/s{i}.png",
                C.STATUS: C.STATUS_OK,
                C.SHA256: hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )
    images = pd.DataFrame(rows)
    write_layers(gpkg, {C.LAYER_IMAGES: images}, overwrite=True)
    return images


def test_image_baselines_are_computed_once_and_scored_beside(tmp_path, monkeypatch):
    import urbangeo.model.encoders as encoders

    gpkg, _, _ = make_run(tmp_path / "run", cols=5, rows=4)
    regions = read_layer(gpkg, C.LAYER_REGIONS)[C.REGION_ID].tolist()
    images = _add_images(gpkg, regions)
    built = []

    def counting_builder(name, **kwargs):
        built.append(name)
        return image_stats_encoder()  # fast stand-in for the random ViT

    monkeypatch.setattr(encoders, "build_encoder", counting_builder)
    first = predict_stage(gpkg, targets=["population"], seeds=2, mlp=FAST)
    assert sorted(built) == ["image-stats", "random"]
    saved = json.loads((tmp_path / "run" / C.METRICS_JSON).read_text())
    models = saved["targets"]["population"]["metrics"]
    for model in ("mlp", "ridge", "random:mlp", "image-stats:ridge", "coords_knn"):
        assert "mean" in models[model]["r2"] and model in first.report.protocol["models"]
    assert set(saved["targets"]["population"]["below_baseline"]) >= {"random:ridge", "mlp"}
    info = saved["protocol"]["baselines"]
    assert info["image-stats"]["reused"] is False and info["random"]["reused"] is False

    # the cached image-stats embeddings are the mean statistics of each region's images
    cache = pd.read_parquet(tmp_path / "run" / "baselines" / "embeddings_image-stats.parquet")
    cache = cache.set_index(C.REGION_ID)
    for i in (0, 7):
        expected = image_statistics(Image.open(gpkg.parent / images[C.PATH][i]))
        assert np.allclose(cache.loc[regions[i]].to_numpy(), expected, atol=1e-6)

    second = predict_stage(gpkg, targets=["population"], seeds=2, mlp=FAST, overwrite=True)
    assert len(built) == 2  # read from the cache
    assert second.report.protocol["baselines"]["random"]["reused"] is True
    same = second.report.targets["population"].metrics["image-stats:ridge"]["r2"]["values"]
    assert same == first.report.targets["population"].metrics["image-stats:ridge"]["r2"]["values"]

    images.loc[3, C.SHA256] = "0" * 64  # an image changed: its checksum too
    write_layers(gpkg, {C.LAYER_IMAGES: images}, overwrite=True)
    predict_stage(gpkg, targets=["population"], seeds=1, mlp=FAST, overwrite=True)
    assert len(built) == 4

    # asked for by name without images: refused, not skipped
    bare, _, _ = make_run(tmp_path / "bare", cols=5, rows=4)
    with pytest.raises(InputError, match="embed the run's images"):
        predict_stage(bare, seeds=1, mlp=FAST, baselines="coords,random")
    result = predict_stage(bare, seeds=1, mlp=FAST)  # the default: left out with the reason
    assert result.report.protocol["baselines"]["random"] == {"skipped": f"{bare} has no images"}
    assert len(built) == 4
