"""The whole pipeline on a tiny configuration: every layer and file, caching, --from, resume,
and what each stage did: its record in the GeoPackage (with its fingerprint) and the event log."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
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
from urbangeo.io.gpkg import list_layers, read_layer, write_layers
from urbangeo.io.runs import (
    INTERRUPTED,
    RUN_LOG,
    STAGES_TABLE,
    read_events,
    read_stage_records,
)
from urbangeo.pipeline import (
    OLD_STATE_JSON,
    resolve_config,
    resolve_settings,
    run_pipeline,
    run_status,
)

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
    RUN_LOG,
    "captions.jsonl",
    "embeddings.parquet",
    "metrics.json",
    "train_metrics.csv",
    "maps/map.html",
]


def _finished(run_dir: Path) -> dict[str, str]:
    return {s: r.finished for s, r in read_stage_records(run_dir / C.RUN_GPKG).items()}


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def _keep_records(gpkg: Path, stages: set[str], *, old: bool = False) -> None:
    """Keep only the records of ``stages``; ``old``: as urbangeo 0.x wrote them (run-folder
    format 1: no fingerprint, finish times to the second)."""
    table = read_layer(gpkg, STAGES_TABLE)
    table = table[table["stage"].isin(stages)]
    if old:
        table = table.drop(columns="fingerprint")
        table["finished"] = table["finished"].str.slice(0, 19) + "+00:00"
    write_layers(gpkg, {STAGES_TABLE: pd.DataFrame(table)}, overwrite=True)


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
    assert any((run_dir / "images" / "overhead").glob("*.png"))
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
            assert after.get(stage) == before.get(stage), stage  # streetview: no record
    again = pd.read_parquet(run_dir / "embeddings.parquet")
    pd.testing.assert_frame_equal(again, embeddings)  # deterministic


def test_a_stage_redone_by_hand_is_redone_by_the_next_run(tiny_run, tmp_path):
    """`urbangeo embed --encoder random --overwrite` in a run folder: status says so, and the
    next `urbangeo run` puts back what its settings ask for, from that stage on."""
    from urbangeo.model.stages import embed_stage

    run_dir = _copy(tiny_run[0], tmp_path / "copy")
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


def test_a_record_fingerprint_hashes_the_settings_and_the_records_it_reads(tiny_run):
    """Issue #13: sha256 of (stage, settings without runtime ones, the fingerprints of the
    records of its inputs, "" for one missing), computed here independently."""
    run_dir, _ = tiny_run
    records = read_stage_records(run_dir / C.RUN_GPKG)
    _, settings = resolve_settings(run_dir / C.RUN_TOML)
    assert "streetview" not in records  # not run: caption and embed chain ""
    for stage in C.STAGES:
        if stage == "streetview":
            continue
        inputs = [records[s].fingerprint if s in records else "" for s in C.STAGE_INPUTS[stage]]
        values = settings[stage].to_dict(runtime=False)
        blob = json.dumps([stage, values, inputs], sort_keys=True).encode()
        assert records[stage].fingerprint == hashlib.sha256(blob).hexdigest()[:16], stage
    assert len({r.fingerprint for r in records.values()}) == len(records)


def test_a_stage_command_with_the_runs_settings_is_done_for_the_runner(tiny_run, tmp_path):
    """`urbangeo cluster --k 2` in the run folder records the runner's own fingerprint: the next
    run skips it (and redoes only map, whose record it dropped); with --k 3 the next run redoes
    cluster and map, back to the run's settings."""
    from click.testing import CliRunner

    from urbangeo_cli.main import cli

    run_dir = _copy(tiny_run[0], tmp_path / "copy")
    gpkg = run_dir / C.RUN_GPKG
    before = read_stage_records(gpkg)["cluster"]

    def cluster(k: int) -> None:
        args = ["cluster", "--gpkg", str(gpkg), "--k", str(k), "--overwrite", "-q"]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output

    cluster(2)  # TINY's k
    records = read_stage_records(gpkg)
    assert records["cluster"].finished != before.finished  # done again, by hand
    assert records["cluster"].fingerprint == before.fingerprint
    assert "map" not in records  # map reads the clusters
    status = {row["stage"]: row["status"] for row in run_status(run_dir)}
    assert status["cluster"] == "done" and status["map"] == "pending"
    results = run_pipeline(run_dir, config=TINY)
    assert {r.stage for r in results if not r.skipped} == {"map"}
    assert read_stage_records(gpkg)["cluster"].finished == records["cluster"].finished

    cluster(3)
    assert read_stage_records(gpkg)["cluster"].fingerprint != before.fingerprint
    assert {row["stage"]: row["status"] for row in run_status(run_dir)}["cluster"] == "changed"
    results = run_pipeline(run_dir, config=TINY)
    assert {r.stage for r in results if not r.skipped} == {"cluster", "map"}
    assert read_stage_records(gpkg)["cluster"].fingerprint == before.fingerprint
    assert len(read_layer(gpkg, C.LAYER_CLUSTERS)["cluster"].dropna().unique()) == 2


def _sample_stopped(monkeypatch, error: BaseException) -> None:
    import urbangeo.geo.stages as geo_stages

    @functools.wraps(geo_stages.sample_stage)  # the runner passes it the same arguments
    def stopped(*args, **kwargs):
        raise error

    monkeypatch.setattr(geo_stages, "sample_stage", stopped)


def test_a_failed_stage_is_an_event_of_the_log_not_a_record(tmp_path, monkeypatch):
    run_dir = tmp_path / "kotka"
    _sample_stopped(monkeypatch, RuntimeError("roads.osm.pbf is truncated"))
    with pytest.raises(RuntimeError, match="truncated"):
        run_pipeline(run_dir, config={"grid": {"city": "kotka", "cell_size": 1000.0}})
    events = [(e["stage"], e["event"]) for e in read_events(run_dir)]
    assert events == [("grid", "started"), ("sample", "started"), ("sample", "failed")]
    failed = read_events(run_dir)[-1]
    assert failed["error"] == "roads.osm.pbf is truncated" and failed["fingerprint"]
    assert set(read_stage_records(run_dir / C.RUN_GPKG)) == {"grid"}
    rows = {row["stage"]: row for row in run_status(run_dir)}
    assert rows["grid"]["status"] == "done" and rows["grid"]["counts"]["regions"] > 0
    assert rows["sample"]["status"] == "failed"
    assert rows["sample"]["reason"] == "roads.osm.pbf is truncated"
    assert {rows[s]["status"] for s in C.STAGES[2:]} == {"pending"}
    # Ctrl-C in the next run: the grid is done (skipped), sampling interrupted
    _sample_stopped(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(run_dir, config=run_dir / C.RUN_TOML)
    assert [e["event"] for e in read_events(run_dir)][3:] == ["started", INTERRUPTED]
    rows = {row["stage"]: row for row in run_status(run_dir)}
    assert rows["sample"]["status"] == "interrupted" and rows["grid"]["status"] == "done"


def test_the_event_log_is_appended_and_survives_a_line_cut_short(tmp_path):
    from urbangeo.io.runs import log_event

    log_event(tmp_path, "grid", "started", fingerprint="a")
    log_event(tmp_path, "grid", "failed", fingerprint="a", error="no roads")
    with open(tmp_path / RUN_LOG, "a") as f:
        f.write('{"time": "2030-01-01T00:00:00+00:00", "stage": "sam')  # killed mid-write
    events = read_events(tmp_path)
    assert [(e["stage"], e["event"], e.get("error")) for e in events] == [
        ("grid", "started", None),
        ("grid", "failed", "no roads"),
    ]
    assert events[0]["time"] < events[1]["time"]
    rows = {row["stage"]: row for row in run_status(tmp_path)}  # the log marks a run folder
    assert rows["grid"]["status"] == "failed" and rows["grid"]["reason"] == "no roads"
    assert rows["sample"]["status"] == "pending"


def test_training_resumes_when_the_log_says_it_stopped_with_these_settings(
    tiny_run, tmp_path, monkeypatch
):
    """The resume decision comes from the log's last train event (newer than its record)."""
    import urbangeo.model.stages as model_stages
    from urbangeo.io.runs import log_event

    run_dir = _copy(tiny_run[0], tmp_path / "copy")
    gpkg = run_dir / C.RUN_GPKG
    fingerprint = read_stage_records(gpkg)["train"].fingerprint
    _keep_records(gpkg, {"grid", "sample", "tiles", "caption", "indicators"})
    calls: list[dict] = []

    @functools.wraps(model_stages.train_stage)
    def train(*args, **kwargs):
        calls.append(kwargs)
        raise KeyboardInterrupt  # stop there: only the decision is tested

    monkeypatch.setattr(model_stages, "train_stage", train)
    for event, print_, resume in [
        ("interrupted", fingerprint, True),
        ("failed", fingerprint, True),
        ("interrupted", "other settings", False),
    ]:
        log_event(run_dir, "train", event, fingerprint=print_)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(run_dir, config=TINY)
        assert calls[-1]["resume"] is resume and calls[-1]["overwrite"] is not resume
    # the runner's own events: started then interrupted, with the run's fingerprint
    last = read_events(run_dir)[-1]
    assert (last["stage"], last["event"]) == ("train", INTERRUPTED)
    assert last["fingerprint"] == fingerprint
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(run_dir, config=TINY, from_stage="train")  # forced: starts afresh
    assert calls[-1]["resume"] is False


def test_an_old_run_folder_is_redone_from_its_first_stage_without_a_fingerprint(
    tiny_run, tmp_path, monkeypatch
):
    """Run-folder format 1 (stages.json, records without fingerprint): status reads it, and the
    next run says why and redoes it; the log replaces stages.json."""
    import urbangeo.pipeline as pipeline

    run_dir = _copy(tiny_run[0], tmp_path / "old")
    gpkg = run_dir / C.RUN_GPKG
    _keep_records(gpkg, set(C.STAGES), old=True)
    (run_dir / RUN_LOG).unlink()
    (run_dir / OLD_STATE_JSON).write_text(json.dumps({"format": 1, "stages": {}}))
    toml = run_dir / C.RUN_TOML
    toml.write_text(toml.read_text().replace("format = 2", "format = 1"))
    assert read_stage_records(gpkg)["grid"].fingerprint == ""
    rows = {row["stage"]: row for row in run_status(run_dir)}
    assert rows["grid"]["status"] == "changed" and "no fingerprint" in rows["grid"]["reason"]
    assert rows["grid"]["counts"]["regions"] == 20

    said: list[str] = []
    monkeypatch.setattr(pipeline, "message", lambda text, **kw: said.append(text))
    _sample_stopped(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(run_dir, config=toml)
    redoing = [line for line in said if "redoing" in line]
    assert len(redoing) == 1 and "grid" in redoing[0] and "no fingerprint" in redoing[0]
    assert not (run_dir / OLD_STATE_JSON).exists()
    assert "format = 2" in toml.read_text()
    records = read_stage_records(gpkg)
    assert set(records) == {"grid"} and records["grid"].fingerprint  # the rest were dropped
    rows = {row["stage"]: row["status"] for row in run_status(run_dir)}
    assert rows["grid"] == "done" and rows["sample"] == "interrupted"


def test_an_old_run_folders_finished_stages_are_kept_when_its_settings_are_the_same(
    tiny_run, tmp_path, monkeypatch
):
    """Format 1 with stages.json saying which stages finished: their records get the
    fingerprint of the settings they were made with; an unchanged rerun redoes nothing but
    the stage stages.json did not call done (and what reads it)."""
    import urbangeo.pipeline as pipeline

    run_dir = _copy(tiny_run[0], tmp_path / "old")
    gpkg = run_dir / C.RUN_GPKG
    new_prints = {name: r.fingerprint for name, r in read_stage_records(gpkg).items()}
    _keep_records(gpkg, set(C.STAGES), old=True)
    (run_dir / RUN_LOG).unlink()
    toml = run_dir / C.RUN_TOML
    toml.write_text(toml.read_text().replace("format = 2", "format = 1"))
    # stages.json as urbangeo 0.1 wrote it: sha256 of [stage, settings, the input stages'
    # fingerprints joined], its first 16 hex digits
    _, settings = resolve_settings(toml)
    prints: dict[str, str] = {}
    for stage in C.STAGES:
        inputs = "".join(prints[name] for name in C.STAGE_INPUTS[stage])
        blob = json.dumps([stage, settings[stage].to_dict(runtime=False), inputs], sort_keys=True)
        prints[stage] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    done = [s for s in C.STAGES if s not in ("streetview", "map")]
    state = {"format": 1, "stages": {s: {"status": "done", "fingerprint": prints[s]} for s in done}}
    state["stages"]["map"] = {"status": "running", "fingerprint": prints["map"]}
    state["stages"]["cluster"]["fingerprint"] = "0" * 16  # done with other settings: redone
    (run_dir / OLD_STATE_JSON).write_text(json.dumps(state))

    said: list[str] = []
    monkeypatch.setattr(pipeline, "message", lambda text, **kw: said.append(text))
    results = run_pipeline(run_dir, config=toml)
    ran = [r.stage for r in results if not r.skipped]
    assert ran == ["cluster", "map"]
    assert any("older urbangeo" in line and "predict" in line for line in said)
    records = read_stage_records(gpkg)
    assert {s: records[s].fingerprint for s in C.STAGES if s in records} == {
        s: new_prints[s] for s in C.STAGES if s in new_prints
    }
    assert not (run_dir / OLD_STATE_JSON).exists()


def test_killed_during_training_resumes_to_the_same_outputs(tiny_run, tmp_path):
    reference_dir, _ = tiny_run
    run_dir = tmp_path / "killed"
    config = tmp_path / "tiny.toml"
    config.write_text((reference_dir / C.RUN_TOML).read_text())
    exe = Path(sys.executable).with_name("urbangeo")
    cmd = [str(exe), "run", "--config", str(config), "-o", str(run_dir), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = run_dir / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        training = [e for e in read_events(run_dir) if e["stage"] == "train"]
        if training and training[-1]["event"] == "started" and any(checkpoints.rglob("last.pt")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed during training"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    train = {row["stage"]: row for row in run_status(run_dir)}["train"]
    assert train["status"] == "interrupted"  # started, and no process holds the run
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
    (run_dir / C.RUN_TOML).write_text('format = 99\nurbangeo = "9.0"\n')
    with pytest.raises(InputError, match="incompatible urbangeo") as info:
        run_pipeline(run_dir, config=TINY)
    assert "new run folder" in info.value.hint
    assert "format = 99" in (run_dir / C.RUN_TOML).read_text()  # left as it was


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
    # the refused run wrote nothing
    assert not (run_dir / RUN_LOG).exists() and not (run_dir / C.RUN_TOML).exists()


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
