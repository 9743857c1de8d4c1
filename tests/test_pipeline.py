"""The whole pipeline on a tiny configuration: every layer and file, caching, --from, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from urbangeo import constants as C
from urbangeo.errors import InputError, OutputError
from urbangeo.geo.boundary import city_boundary
from urbangeo.geo.grid import make_grid
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.pipeline import STATE_JSON, read_state, resolve_config, run_pipeline, run_status

#: Small enough for CI (about a minute a run on 2 cores), big enough for every stage to work:
#: helsinki at 400 m gives 20 regions, more than the 10 a prediction target needs.
TINY = {
    "grid": {"city": "helsinki", "cell_size": 400.0},
    "tiles": {"size": 32},
    "caption": {"models": ["planner", "observer"]},
    "train": {"epochs": 3, "batch_size": 8, "checkpoint_every": 1, "queue_size": 16},
    "predict": {"seeds": 1},
    "cluster": {"k": 2},
}
LAYERS = {
    "boundary",
    "regions",
    "roads",
    "sv_points",
    "images",
    "captions",
    "region_embeddings",
    "indicators",
    "predictions",
    "clusters",
}
FILES = [
    "run.gpkg",
    "run.toml",
    STATE_JSON,
    "captions.jsonl",
    "embeddings.parquet",
    "metrics.json",
    "train_metrics.csv",
    "maps/map.html",
]


def _finished(run_dir: Path) -> dict[str, str]:
    return {s: e.get("finished") for s, e in read_state(run_dir)["stages"].items()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pipeline") / "helsinki"
    results = run_pipeline(run_dir, config=TINY)
    return run_dir, results


def test_every_layer_and_file_of_the_run_folder(tiny_run):
    run_dir, results = tiny_run
    assert [r.stage for r in results] == list(C.STAGES)
    assert set(list_layers(run_dir / "run.gpkg")) >= LAYERS
    for name in FILES:
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "images" / "satellite").glob("*.png"))
    assert any((run_dir / "checkpoints").rglob("model.pt"))
    regions = read_layer(run_dir / "run.gpkg", C.LAYER_REGIONS)
    assert len(regions) == len(make_grid(city_boundary("helsinki"), cell_size=400))
    embeddings = pd.read_parquet(run_dir / "embeddings.parquet")
    assert set(embeddings[C.REGION_ID]) <= set(regions[C.REGION_ID])
    assert len(read_layer(run_dir / "run.gpkg", C.LAYER_CLUSTERS)) == len(embeddings)
    statuses = {row["stage"]: row["status"] for row in run_status(run_dir)}
    assert statuses == {s: ("not run" if s == "streetview" else "done") for s in C.STAGES}
    # run.toml is the resolved configuration and reproduces it
    assert resolve_config(run_dir / C.RUN_TOML) == resolve_config(TINY)
    html = (run_dir / "maps" / "map.html").read_text()
    assert "unpkg.com" not in html and "cdn.jsdelivr" not in html  # works offline


def test_second_run_does_no_work(tiny_run):
    run_dir, _ = tiny_run
    before = _finished(run_dir)
    gpkg_mtime = (run_dir / "run.gpkg").stat().st_mtime_ns
    results = run_pipeline(run_dir, config=run_dir / C.RUN_TOML)
    assert all(r.skipped for r in results)
    assert _finished(run_dir) == before
    assert (run_dir / "run.gpkg").stat().st_mtime_ns == gpkg_mtime


def test_from_embed_redoes_only_what_follows(tiny_run):
    run_dir, _ = tiny_run
    before = _finished(run_dir)
    embeddings = pd.read_parquet(run_dir / "embeddings.parquet")
    time.sleep(1.1)  # finished times have one-second resolution
    results = run_pipeline(run_dir, config=TINY, from_stage="embed")
    redone = {r.stage for r in results if not r.skipped}
    assert redone == {"embed", "predict", "cluster", "map"}  # indicators do not read embed
    after = _finished(run_dir)
    for stage in C.STAGES:
        if stage in redone:
            assert after[stage] != before[stage], stage
        else:
            assert after[stage] == before[stage], stage
    again = pd.read_parquet(run_dir / "embeddings.parquet")
    pd.testing.assert_frame_equal(again, embeddings)  # deterministic


def test_a_stage_redone_by_hand_is_redone_by_the_next_run(tiny_run, tmp_path):
    """`urbangeo embed --encoder random --overwrite` in a run folder: status says so, and the
    next `urbangeo run` puts back what its settings ask for, from that stage on."""
    import shutil

    from urbangeo.io.runs import read_stage_records
    from urbangeo.model.stages import embed_stage

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run[0], run_dir)
    gpkg = run_dir / C.RUN_GPKG
    assert {row["status"] for row in run_status(run_dir)} <= {"done", "not run"}
    embed_stage(gpkg, encoder="random", model="urbangeo-tiny-vit", overwrite=True)
    status = {row["stage"]: row for row in run_status(run_dir)}
    assert status["embed"]["status"] == "changed" and "next run" in status["embed"]["reason"]
    assert status["train"]["status"] == "done"
    assert read_stage_records(gpkg)["embed"].params["encoder"] == "random"

    results = run_pipeline(run_dir, config=TINY)
    redone = {r.stage for r in results if not r.skipped}
    assert redone == {"embed", "predict", "cluster", "map"}  # indicators do not read embed
    assert read_stage_records(gpkg)["embed"].params["encoder"] == "trained"
    assert {row["status"] for row in run_status(run_dir)} <= {"done", "not run"}
    assert all(r.skipped for r in run_pipeline(run_dir, config=TINY))


def test_a_changed_setting_redoes_that_stage_and_later(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    config = json.loads(json.dumps(TINY))
    config["cluster"] = {"k": 3}
    results = run_pipeline(run_dir, config=config)
    assert {r.stage for r in results if not r.skipped} == {"cluster", "map"}
    run_pipeline(run_dir, config=TINY)  # back as it was


def test_killed_during_training_resumes_to_the_same_outputs(tiny_run, tmp_path):
    reference_dir, _ = tiny_run
    run_dir = tmp_path / "killed"
    config = tmp_path / "tiny.toml"
    config.write_text((reference_dir / C.RUN_TOML).read_text())
    exe = Path(sys.executable).with_name("urbangeo")
    cmd = [str(exe), "run", "--config", str(config), "-o", str(run_dir), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state_file = run_dir / STATE_JSON
    checkpoints = run_dir / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        train = state.get("stages", {}).get("train", {})
        if train.get("status") == "running" and any(checkpoints.rglob("last.pt")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed during training"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_state(run_dir)["stages"]["train"]["status"] == "running"
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert all(row["status"] in ("done", "not run") for row in run_status(run_dir))
    ours = pd.read_parquet(run_dir / "embeddings.parquet").drop(columns=C.REGION_ID)
    reference = pd.read_parquet(reference_dir / "embeddings.parquet").drop(columns=C.REGION_ID)
    if os.environ.get("MKL_CBWR", "").endswith("STRICT"):
        # one fixed kernel path (tests/conftest.py pins it): the resumed run is bit-identical
        np.testing.assert_array_equal(ours.to_numpy(), reference.to_numpy())
    else:
        # MKL's AVX-512 kernels pick by memory alignment, which differs between the two
        # processes: float32 rounding in the last bits (1.5e-7 seen on an Intel Xeon)
        np.testing.assert_allclose(ours.to_numpy(), reference.to_numpy(), rtol=1e-5, atol=1e-6)
    ours_clusters = read_layer(run_dir / "run.gpkg", C.LAYER_CLUSTERS)
    ref_clusters = read_layer(reference_dir / "run.gpkg", C.LAYER_CLUSTERS)
    assert list(ours_clusters["cluster"]) == list(ref_clusters["cluster"])


def test_unknown_stage_and_unknown_keys(tmp_path):
    with pytest.raises(InputError, match="Unknown stage 'fly'"):
        run_pipeline(tmp_path / "r", from_stage="fly")
    with pytest.raises(InputError, match=r"Unknown setting\(s\) in \[train\]: epoks") as info:
        resolve_config({"train": {"epoks": 3}})
    assert "epochs" in info.value.hint
    with pytest.raises(InputError, match=r"Unknown section\(s\) in the configuration: trian"):
        resolve_config({"trian": {}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid\ncity = 1")
    with pytest.raises(InputError, match="not valid TOML"):
        resolve_config(bad)
    with pytest.raises(InputError, match="not a bundled city"):
        resolve_config({"grid": {"city": "atlantis"}})


def test_bad_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match=r"interval \(--interval\) must be more than 0"):
        run_pipeline(tmp_path / "neg", config=TINY, sample__interval=-5)
    assert not (tmp_path / "neg").exists()  # not even the grid was made
    with pytest.raises(InputError, match=r"merge_tolerance .* must be at least 0"):
        resolve_config({"sample": {"merge_tolerance": -1}})
    with pytest.raises(InputError, match="must be a number, not 'far'"):
        resolve_config({"sample": {"interval": "far"}})
    with pytest.raises(InputError, match="must be less than the interval"):
        resolve_config({"sample": {"interval": 1, "merge_tolerance": 25}})


def test_a_new_run_that_fails_at_once_leaves_no_folder(tmp_path):
    config = {"grid": {"boundary_file": str(tmp_path / "no-such-boundary.gpkg")}}
    with pytest.raises(InputError, match="does not exist") as info:
        run_pipeline(tmp_path / "runs" / "new", config=config)
    assert "current folder" in info.value.hint
    assert not (tmp_path / "runs").exists()
    # a folder that was there before keeps what it holds, and the run's settings
    old = tmp_path / "old"
    old.mkdir()
    (old / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="does not exist"):
        run_pipeline(old, config=config)
    assert (old / "notes.txt").read_text() == "mine" and (old / C.RUN_TOML).exists()


def test_run_folder_from_an_incompatible_version(tmp_path):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / STATE_JSON).write_text(json.dumps({"format": 99, "urbangeo": "9.0", "stages": {}}))
    with pytest.raises(InputError, match="incompatible urbangeo") as info:
        run_pipeline(run_dir, config=TINY)
    assert "new run folder" in info.value.hint


def test_two_runs_in_one_folder(tmp_path):
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / ".urbangeo.lock").write_text(
            json.dumps({"pid": other.pid, "host": os.uname().nodename, "since": 0})
        )
        busy = f"Another urbangeo process \\(urbangeo, pid {other.pid}"
        with pytest.raises(OutputError, match=busy):
            run_pipeline(run_dir, config=TINY)
    finally:
        other.kill()
        other.wait()
    # a lock left by a run that no longer exists is taken over
    assert not (run_dir / STATE_JSON).exists()


def test_examples_are_valid_configurations():
    examples = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))
    assert len(examples) >= 5
    for path in examples:
        resolve_config(path)


def test_a_given_area_or_image_source_replaces_the_defaults():
    config = resolve_config({"grid": {"bbox": "1,2,3,4"}, "tiles": {"raster": "x.tif"}})
    assert "city" not in config["grid"] and config["grid"]["bbox"] == "1,2,3,4"
    assert "render" not in config["tiles"]
    with pytest.raises(InputError, match="one tile source"):
        resolve_config({"tiles": {"raster": "x.tif", "render": "osm"}})
    config = resolve_config(None, grid__place="Kotka, Finland")
    assert "city" not in config["grid"]
    assert resolve_config({})["grid"]["city"] == C.DEFAULT_CITY


def test_modes_without_teacher_drop_the_default_queue():
    assert "queue_size" not in resolve_config({"train": {"mode": "urbanclip"}})["train"]
    assert resolve_config({})["train"]["queue_size"] == 64
    with pytest.raises(InputError, match="queue_size does not apply"):
        from urbangeo.model.training.config import TrainConfig

        TrainConfig(mode="urbanclip", queue_size=64).resolved()


def test_embed_uses_the_model_this_run_trains():
    assert resolve_config({"train": {"mode": "no-ipsi"}})["embed"]["name"] == "no-ipsi"
    assert resolve_config({"train": {"name": "mine"}})["embed"]["name"] == "mine"
    assert resolve_config({"embed": {"name": "other"}})["embed"]["name"] == "other"
