"""One writer at a time for a run folder: stage commands and `urbangeo run` take the same lock.

Real processes throughout: a holder process started by the test, and the `urbangeo` command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from urbangeo import constants as C
from urbangeo.errors import OutputError
from urbangeo.geo.stages import grid_stage
from urbangeo.io.gpkg import read_layer
from urbangeo.io.lock import LOCK_FILE, run_lock
from urbangeo.io.runs import RUN_LOG, STARTED, log_event
from urbangeo.pipeline import run_status

HOLD = """
import sys, time
from urbangeo.io.lock import run_lock
with run_lock(sys.argv[1], command="urbangeo run"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _urbangeo(*args: object) -> subprocess.CompletedProcess:
    code = "from urbangeo_cli.main import cli; cli()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def run_gpkg(tmp_path: Path) -> Path:
    gpkg = tmp_path / "r" / "run.gpkg"
    grid_stage(gpkg, city="kotka", cell_size=1000.0)
    return gpkg


def _tables(tmp_path: Path, gpkg: Path) -> tuple[Path, Path]:
    ids = read_layer(gpkg, C.LAYER_REGIONS)[C.REGION_ID]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame({C.REGION_ID: ids, "alpha": range(len(ids))}).to_csv(a, index=False)
    pd.DataFrame({C.REGION_ID: ids, "beta": range(len(ids))}).to_csv(b, index=False)
    return a, b


def _hold(folder: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_stage_command_is_refused_while_a_run_writes_the_folder(tmp_path, run_gpkg):
    a, _ = _tables(tmp_path, run_gpkg)
    holder = _hold(run_gpkg.parent, 60)
    try:
        result = _urbangeo("indicators", "--gpkg", run_gpkg, "--table", a)
        assert result.returncode == 1, result.stderr
        assert f"Another urbangeo process (urbangeo run, pid {holder.pid}" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed (as kill -9 would): its lock is stale and the command goes on
    result = _urbangeo("indicators", "--gpkg", run_gpkg, "--table", a, "-q")
    assert result.returncode == 0, result.stderr
    assert "alpha" in read_layer(run_gpkg, C.LAYER_INDICATORS)


def test_two_concurrent_writers_never_lose_a_change(tmp_path, run_gpkg):
    """The issue's case: two `indicators` at once lost a column 4 times out of 4."""
    a, b = _tables(tmp_path, run_gpkg)
    for _ in range(3):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        code = "from urbangeo_cli.main import cli; cli()"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, "indicators", "--gpkg", str(run_gpkg),
                 "--table", str(table), "--overwrite", "-q"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )
            for table in (a, b)
        ]  # fmt: skip
        outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        columns = set(read_layer(run_gpkg, C.LAYER_INDICATORS).columns)
        for (code_, err), name in zip(outcomes, ("alpha", "beta"), strict=True):
            if code_ == 0:
                assert name in columns  # what succeeded is in the file
            else:
                assert "Another urbangeo process" in err  # refused, never silently lost


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    with run_lock(tmp_path), run_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / LOCK_FILE).exists()


def test_an_empty_lock_is_recovered_once_it_is_old(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text("")  # a writer that could not write its lock (a full disk)
    with pytest.raises(OutputError, match="Another urbangeo process"), run_lock(tmp_path):
        pass  # a fresh empty lock may be one being written right now
    old = time.time() - 60
    os.utime(lock, (old, old))
    with run_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_lock_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")  # json.dump into the lock fails

    monkeypatch.setattr("urbangeo.io.lock.json.dump", full)
    with pytest.raises(OSError, match="No space left"), run_lock(tmp_path):
        pass
    assert not (tmp_path / LOCK_FILE).exists()


def _state(run_dir: Path, status: str, **extra: str) -> None:
    """The run's event log: sampling started, then (unless still running) ``status``."""
    (run_dir / RUN_LOG).unlink(missing_ok=True)
    log_event(run_dir, "sample", STARTED, fingerprint="y")
    if status != "running":
        log_event(run_dir, "sample", status, fingerprint="y", **extra)


def test_status_tells_a_live_run_from_a_dead_one(tmp_path):
    _state(tmp_path, "running")
    rows = {r["stage"]: r for r in run_status(tmp_path)}
    assert rows["sample"]["status"] == "interrupted"  # no process holds the folder
    holder = _hold(tmp_path, 60)
    try:
        rows = {r["stage"]: r for r in run_status(tmp_path)}
        assert rows["sample"]["status"] == "running"
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / LOCK_FILE).write_text(
        json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": 0})
    )
    rows = {r["stage"]: r for r in run_status(tmp_path)}
    assert rows["sample"]["status"] == "interrupted"  # the lock names a dead process
    _state(tmp_path, "failed", error="Cannot read roads.osm.pbf")
    rows = {r["stage"]: r for r in run_status(tmp_path)}
    assert rows["sample"]["status"] == "failed"
    assert rows["sample"]["reason"] == "Cannot read roads.osm.pbf"
