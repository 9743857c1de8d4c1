"""``predict --shard I/N`` and ``urbangeo merge predict``: each shard makes a fixed share of the
fits, the merge writes what the plain stage writes (metrics.json, the predictions layer, the
record and its fingerprint). Ridge, k-NN, the mean baseline, the splits and sizes are compared
exactly; the MLP heads to float tolerance (they are trained as one batched model of a shard's
heads, whose matrix kernels change with the number of heads: see
tests/downstream/test_predict.py::test_mlp_heads_alone_or_together_agree_and_repeat)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.downstream.helpers import make_run
from urbangeo import constants as C
from urbangeo.downstream import fits as fits_module
from urbangeo.downstream.fits import share_of
from urbangeo.downstream.heads import MLPConfig
from urbangeo.downstream.stages import PredictInputs, predict_stage
from urbangeo.errors import InputError
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.io.runs import read_stage_records
from urbangeo.settings import PredictSettings
from urbangeo.shard import ShardSpec, merge_shards, shard_folder, shard_status
from urbangeo.shard_plans.predict import FITS_NPZ
from urbangeo.stage import StageRun

FAST = MLPConfig(hidden=32, max_epochs=60, patience=8)
#: 80 regions: k-fold (5 folds x 3 repeats) for --cv auto; the k-NN baseline, no images
SETTINGS: dict[str, Any] = {"seeds": 3, "baselines": ["coords"]}
#: Relative tolerance of the MLP heads' numbers (float32 rounding over a few hundred steps)
MLP_RTOL = 1e-4


@pytest.fixture(autouse=True)
def _quiet(quiet_progress: None) -> None:
    """No progress bars."""


def _run(folder: Path) -> Path:
    return make_run(folder, cols=10, rows=8, dim=8)[0]


def _plain(folder: Path, mlp: MLPConfig | None = FAST, **settings: Any) -> Path:
    gpkg = _run(folder)
    predict_stage(gpkg, mlp=mlp, **{**SETTINGS, **settings})
    return gpkg


def _sharded(gpkg: Path, n: int, **settings: Any) -> None:
    for i in range(1, n + 1):
        result = predict_stage(gpkg, shard=f"{i}/{n}", mlp=FAST, **{**SETTINGS, **settings})
        assert result.report is None  # a shard reports nothing: the merge does
    assert C.LAYER_PREDICTIONS not in list_layers(gpkg)
    merge_shards(gpkg, "predict", n)


def _is_mlp(path: str) -> bool:
    """Whether a value of metrics.json (by its path) comes from an MLP head."""
    parts = path.split("/")
    return any(p == "mlp" or p.endswith(":mlp") for p in parts)


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _flat(item, f"{path}/{key}").items()
        }
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{path}/{i}").items()}
    return {path: value}


def _assert_same_predict(got: Path, want: Path) -> None:
    """The merged run's metrics.json, layer and record are the plain run's."""
    a = _flat(json.loads((want.parent / C.METRICS_JSON).read_text()))
    b = _flat(json.loads((got.parent / C.METRICS_JSON).read_text()))
    assert a.keys() == b.keys()
    a.pop("/protocol/dataset"), b.pop("/protocol/dataset")  # the runs' own paths
    exact = {k: v for k, v in a.items() if not _is_mlp(k)}
    assert exact == {k: b[k] for k in exact}  # ridge, k-NN, mean, sizes, protocol: exactly
    mlp = [k for k in a if _is_mlp(k) and isinstance(a[k], float) and "/chosen/" not in k]
    assert mlp  # the MLP heads' metrics are there, and close
    np.testing.assert_allclose([b[k] for k in mlp], [a[k] for k in mlp], rtol=MLP_RTOL, atol=1e-9)

    wl, gl = read_layer(want, C.LAYER_PREDICTIONS), read_layer(got, C.LAYER_PREDICTIONS)
    assert list(gl.columns) == list(wl.columns) and len(gl) == len(wl) == 80
    close = [c for c in wl.columns if c.endswith(("_predicted", "_residual"))]
    pd.testing.assert_frame_equal(gl.drop(columns=close), wl.drop(columns=close))
    for column in close:  # the layer shows the MLP head's (ensemble) predictions
        np.testing.assert_allclose(gl[column], wl[column], rtol=MLP_RTOL, atol=1e-6)

    rw, rg = read_stage_records(want)["predict"], read_stage_records(got)["predict"]
    assert rg.fingerprint == rw.fingerprint and rg.params == rw.params
    r2 = [k for k in rw.counts if k.startswith("r2_mlp_")]
    assert {k: v for k, v in rg.counts.items() if k not in r2} == {
        k: v for k, v in rw.counts.items() if k not in r2
    }
    assert [rg.counts[k] for k in r2] == pytest.approx([rw.counts[k] for k in r2], abs=2e-4)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from urbangeo.progress import set_mode

    set_mode("none")
    return _plain(tmp_path_factory.mktemp("plain") / "run")


@pytest.mark.parametrize("n", [1, 2, 4])
def test_sharded_predict_equals_the_plain_predict(tmp_path: Path, plain: Path, n: int) -> None:
    gpkg = _run(tmp_path / "run")
    _sharded(gpkg, n)
    _assert_same_predict(gpkg, plain)
    assert not (gpkg.parent / "shards").exists()  # the shard folders are removed after
    # the merged record is the plain one: the stage is done with these settings (run skips it)
    settings = PredictSettings.from_mapping(SETTINGS)
    assert (
        StageRun("predict", gpkg, settings).fingerprint()
        == read_stage_records(gpkg)["predict"].fingerprint
    )


def test_split_scheme_and_a_second_head_shard_too(tmp_path: Path) -> None:
    settings = {"cv": "split", "model": "ridge"}  # the ridge head fills the layer: exact
    want = _plain(tmp_path / "plain", **settings)
    gpkg = _run(tmp_path / "run")
    _sharded(gpkg, 3, **settings)
    _assert_same_predict(gpkg, want)
    pd.testing.assert_frame_equal(
        read_layer(gpkg, C.LAYER_PREDICTIONS), read_layer(want, C.LAYER_PREDICTIONS)
    )


def test_jobs_are_shared_round_robin_once_each(tmp_path: Path) -> None:
    gpkg = _run(tmp_path / "run")
    s = PredictSettings.from_mapping(SETTINGS)
    plan = PredictInputs.read(gpkg, s).plan(s)
    jobs = plan.jobs()
    # (embeddings, coords + mean) x 2 targets x 3 repeats, each of 5 folds
    assert len(jobs) == 12 and all(len(j.tasks) == 5 for j in jobs)
    shares = [share_of(jobs, i, 4) for i in range(1, 5)]
    assert sorted(j.key for share in shares for j in share) == sorted(j.key for j in jobs)
    assert [len(s) for s in shares] == [3, 3, 3, 3]
    # every shard gets its share of the costly group (the MLP heads on the embeddings)
    assert [sum(j.group == "" for j in share) for share in shares] == [2, 2, 1, 1]
    assert plan.jobs_digest() == PredictInputs.read(gpkg, s).plan(s).jobs_digest()


def test_a_killed_shard_is_redone_alone(tmp_path: Path, plain: Path, monkeypatch) -> None:
    gpkg = _run(tmp_path / "run")
    predict_stage(gpkg, shard="1/2", mlp=FAST, **SETTINGS)
    first = shard_folder(gpkg.parent, "predict", ShardSpec(1, 2)) / FITS_NPZ
    stamp = first.stat().st_mtime_ns
    with pytest.raises(InputError, match=r"shard 2/2 was never run") as caught:
        merge_shards(gpkg, "predict", 2)
    assert "--shard I/2" in caught.value.hint

    calls = {"n": 0}
    ridge = fits_module.fit_ridge

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return ridge(*args, **kwargs)

    monkeypatch.setattr(fits_module, "fit_ridge", dying)
    with pytest.raises(KeyboardInterrupt):
        predict_stage(gpkg, shard="2/2", mlp=FAST, **SETTINGS)
    assert [s["status"] for s in shard_status(gpkg, "predict", 2)] == ["done", "unfinished"]
    with pytest.raises(InputError, match=r"shard 2/2 is not finished"):
        merge_shards(gpkg, "predict", 2)
    assert C.LAYER_PREDICTIONS not in list_layers(gpkg)

    calls["n"] = -1000  # the rerun of the array job: every shard again
    skipped = [predict_stage(gpkg, shard=f"{i}/2", mlp=FAST, **SETTINGS).skipped for i in (1, 2)]
    assert skipped == [True, False]  # shard 1 done already, shard 2 redone
    assert first.stat().st_mtime_ns == stamp
    merge_shards(gpkg, "predict", 2)
    _assert_same_predict(gpkg, plain)


def test_merge_refuses_mixed_or_stale_shards(tmp_path: Path) -> None:
    gpkg = _run(tmp_path / "run")
    predict_stage(gpkg, shard="1/2", mlp=FAST, **SETTINGS)
    predict_stage(gpkg, shard="2/2", mlp=FAST, **{**SETTINGS, "seeds": 2})
    with pytest.raises(InputError, match="other settings"):
        merge_shards(gpkg, "predict", 2)
    predict_stage(gpkg, shard="2/2", mlp=MLPConfig(hidden=8, max_epochs=5), **SETTINGS)
    with pytest.raises(InputError, match="another MLP head") as caught:
        merge_shards(gpkg, "predict", 2)
    assert "--overwrite" in caught.value.hint
    assert C.LAYER_PREDICTIONS not in list_layers(gpkg)  # nothing merged
    predict_stage(gpkg, shard="2/2", mlp=FAST, overwrite=True, **SETTINGS)
    # the inputs change under the shards (a file beside the run, not a stage record)
    embeddings = pd.read_parquet(gpkg.parent / C.EMBEDDINGS_PARQUET)
    embeddings["e0"] += 1.0
    embeddings.to_parquet(gpkg.parent / C.EMBEDDINGS_PARQUET)
    with pytest.raises(InputError, match="planned other fits"):
        merge_shards(gpkg, "predict", 2)


def test_the_command_line(tmp_path: Path, plain: Path) -> None:
    from click.testing import CliRunner

    from urbangeo_cli.main import cli

    gpkg = _run(tmp_path / "run")
    args = ["--gpkg", str(gpkg), "--seeds", "3", "--baselines", "coords"]
    runner = CliRunner()
    for i in (1, 2):
        done = runner.invoke(cli, ["predict", *args, "--shard", f"{i}/2"])
        assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["merge", "predict", "--gpkg", str(gpkg), "--shards", "2"])
    assert done.exit_code == 0, done.output
    record = read_stage_records(gpkg)["predict"]
    assert record.params == read_stage_records(plain)["predict"].params
    assert len(read_layer(gpkg, C.LAYER_PREDICTIONS)) == 80


def test_a_baseline_embedded_by_any_shard_is_not_reused() -> None:
    from urbangeo.shard_plans import Shard
    from urbangeo.shard_plans.predict import _baselines

    own = {"random": {"file": "f", "reused": True, "dim": 4}, "location": {"skipped": "why"}}
    shards = [
        Shard(ShardSpec(i, 2), Path("."), {}, {"baselines": {"random": {"reused": r}}}, {})
        for i, r in ((1, True), (2, False))
    ]
    assert _baselines(shards, own) == {
        "random": {"file": "f", "reused": False, "dim": 4},
        "location": {"skipped": "why"},
    }
    assert _baselines(shards[:1], own)["random"]["reused"] is True
