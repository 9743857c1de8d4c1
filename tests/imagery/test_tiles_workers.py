"""``tiles --workers``: rendered OSM tiles drawn in worker processes are the tiles one process
draws (same PNG bytes, same rows in the same order), bad values are refused, and an
interruption keeps what was saved."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery import stages as imagery_stages
from urbangeo.imagery.manifest import Manifest
from urbangeo.imagery.sources import render_workers
from urbangeo.imagery.stages import tiles_stage
from urbangeo.io.gpkg import read_layer
from urbangeo.io.processes import WorkerError, ordered_map
from urbangeo.io.runs import read_stage_records
from urbangeo.settings import TilesSettings
from urbangeo.stage import run_stage
from urbangeo_cli.imagery import tiles

#: Small tiles over Kotka's 100 m grid (529 regions): four blocks of 16 × 16 regions.
SIZE = 32


@pytest.fixture(scope="module")
def kotka_grid(tmp_path_factory) -> Path:
    """A run of the bundled Kotka extract with 100 m regions (grid stage only)."""
    gpkg = tmp_path_factory.mktemp("kotka") / "run.gpkg"
    run_stage("grid", gpkg, city="kotka", cell_size=100.0)
    return gpkg


def _copy(gpkg: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy2(gpkg, folder / "run.gpkg")
    return folder / "run.gpkg"


def _files(gpkg: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((gpkg.parent / C.OVERHEAD_DIR).glob("*.png"))}


@pytest.fixture
def in_processes(monkeypatch) -> dict:
    """Workers draw however little there is to draw; counts the runs drawn in processes and
    the tiles this process encoded."""
    seen = {"parallel": 0, "encoded_here": 0}
    monkeypatch.setattr(render_workers, "PARALLEL_MIN_SECONDS", 0.0)
    drawn_in_workers = render_workers.render_in_workers

    def spy(*args, **kwargs):
        seen["parallel"] += 1
        return drawn_in_workers(*args, **kwargs)

    monkeypatch.setattr(render_workers, "render_in_workers", spy)
    encode = imagery_stages.encode_png

    def encode_here(*args, **kwargs):
        seen["encoded_here"] += 1
        return encode(*args, **kwargs)

    monkeypatch.setattr(imagery_stages, "encode_png", encode_here)
    return seen


def test_two_workers_draw_what_one_does(kotka_grid, tmp_path, in_processes):
    one = _copy(kotka_grid, tmp_path / "w1")
    two = _copy(kotka_grid, tmp_path / "w2")
    first = tiles_stage(one, size=SIZE, workers=1)
    assert in_processes == {"parallel": 0, "encoded_here": 529}
    second = tiles_stage(two, size=SIZE, workers=2)
    # Drawn and encoded in the workers: this process encoded nothing more.
    assert in_processes == {"parallel": 1, "encoded_here": 529}
    assert first.counts == second.counts
    assert first.counts["ok"] == 529
    files = _files(one)
    assert len(files) == 529 and files == _files(two)
    for layer in (C.LAYER_IMAGES, C.LAYER_REGIONS):
        pd.testing.assert_frame_equal(read_layer(one, layer), read_layer(two, layer))
    # The stage's settings and record do not depend on the workers (a runtime setting).
    records = read_stage_records(one)["tiles"], read_stage_records(two)["tiles"]
    assert records[0].params == records[1].params
    assert records[0].fingerprint == records[1].fingerprint


def test_little_to_draw_stays_in_this_process(kotka_grid, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(render_workers, "render_in_workers", lambda *a, **k: calls.append(1))
    result = tiles_stage(_copy(kotka_grid, tmp_path / "w"), size=SIZE, workers=2)
    assert result.counts["ok"] == 529 and calls == []  # well under PARALLEL_MIN_SECONDS


def test_an_interruption_keeps_what_was_saved_and_a_rerun_resumes(
    kotka_grid, tmp_path, in_processes, monkeypatch
):
    reference = _copy(kotka_grid, tmp_path / "reference")
    tiles_stage(reference, size=SIZE, workers=1)
    gpkg = _copy(kotka_grid, tmp_path / "run")
    write = Manifest.write
    calls = itertools.count()  # next() is atomic: the saving threads share it

    def interrupted(self, *args, **kwargs):
        if next(calls) >= 300:
            raise KeyboardInterrupt  # Ctrl-C while the workers draw the later blocks
        return write(self, *args, **kwargs)

    monkeypatch.setattr(Manifest, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tiles_stage(gpkg, size=SIZE, workers=2)
    saved = _files(gpkg)
    assert len(saved) == 300
    assert read_stage_records(gpkg)["tiles"].counts["pending"] == 529 - 300
    assert not [p for p in (gpkg.parent / C.OVERHEAD_DIR).iterdir() if p.suffix == ".part"]
    monkeypatch.setattr(Manifest, "write", write)
    result = tiles_stage(gpkg, size=SIZE, workers=2)
    assert result.counts["ok"] == 529
    assert read_stage_records(gpkg)["tiles"].counts["pending"] == 0
    assert _files(gpkg) == _files(reference)
    assert {k: v for k, v in _files(gpkg).items() if k in saved} == saved  # kept, not redone
    assert in_processes["parallel"] == 2  # the interrupted run and the rerun
    pd.testing.assert_frame_equal(
        read_layer(gpkg, C.LAYER_IMAGES), read_layer(reference, C.LAYER_IMAGES)
    )


def fail_on_three(n: int) -> int:
    """A worker's task (importable by the spawned workers): fails on 3, refuses 5."""
    if n == 3:
        raise ValueError("three")
    if n == 5:
        raise InputError("five is refused", hint="use four")
    return n * n


def test_a_failure_in_a_worker_comes_after_the_results_before_it():
    got = []
    with pytest.raises(WorkerError, match="item 3: ValueError: three") as info:
        for result in ordered_map(fail_on_three, range(10), workers=2, what=lambda n: f"item {n}"):
            got.append(result)
    assert got == [0, 1, 4]
    assert "--workers 1" in (info.value.hint or "")
    with pytest.raises(InputError, match="five is refused") as refused:
        list(ordered_map(fail_on_three, [4, 5], workers=2))
    assert refused.value.hint == "use four"


@pytest.mark.parametrize("value", [0, -1, "abc", "1.5", True])
def test_bad_workers_are_refused(kotka_grid, tmp_path, value):
    with pytest.raises(InputError, match=r"\[tiles\] workers \(--workers\)"):
        tiles_stage(_copy(kotka_grid, tmp_path / "w"), workers=value)
    assert not (tmp_path / "w" / C.OVERHEAD_DIR).exists()  # refused before any work


def test_workers_is_the_shared_runtime_setting():
    assert TilesSettings().workers == "auto"
    assert TilesSettings(workers=2).workers == 2  # an old run.toml's `workers = 2`
    assert TilesSettings.from_mapping({"workers": "3"}).workers == 3
    workers = next(f for f in TilesSettings.fields() if f.name == "workers")
    assert workers.spec.runtime
    assert TilesSettings(workers=1).to_dict(runtime=False) == TilesSettings().to_dict(runtime=False)


def test_the_command_takes_workers(kotka_grid, tmp_path):
    runner = CliRunner()
    result = runner.invoke(tiles, ["--help"])
    assert result.exit_code == 0
    assert "--workers" in result.output and "N|auto" in result.output
    gpkg = _copy(kotka_grid, tmp_path / "w")
    for value in ("0", "abc"):
        result = runner.invoke(tiles, ["--gpkg", str(gpkg), "--workers", value])
        assert result.exit_code != 0
        assert "workers" in result.output and "'auto'" in result.output, result.output
