"""Shards of the per-region stages (``--shard I/N``) and their merge give the unsharded run.

The reference is the same stage run without shards on a copy of the same run. Tiles and the
``image-stats`` encoder compute each image alone, so layers, files and vectors are compared
exactly; the stage records (parameters, counts, fingerprint) too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from geopandas.testing import assert_geodataframe_equal

from tests.imagery.helpers import count_tile_calls, edge_column_raster, grid, make_run
from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.stages import tiles_stage
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.io.runs import read_stage_records
from urbangeo.model.stages import embed_stage
from urbangeo.shard import (
    SHARDS_DIR,
    ShardSpec,
    assign_shards,
    merge_shards,
    shard_folder,
    shard_status,
)

COLS, ROWS = 6, 4
TILE = {"size": 32}
EMBED = {"encoder": "image-stats", "kind": "overhead"}


@pytest.fixture(autouse=True)
def _quiet(quiet_progress: None) -> None:
    """No progress bars."""


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    return edge_column_raster(tmp_path / "coded.tif", COLS, ROWS)


def _new_run(folder: Path) -> Path:
    return make_run(folder, grid(COLS, ROWS))


def _plain(folder: Path, raster: Path) -> Path:
    gpkg = _new_run(folder)
    tiles_stage(gpkg, raster=raster, **TILE)
    embed_stage(gpkg, **EMBED)
    return gpkg


@pytest.fixture
def plain(tmp_path: Path, raster: Path) -> Path:
    return _plain(tmp_path / "plain", raster)


def _sharded(folder: Path, raster: Path, n: int, by: str = "id") -> Path:
    gpkg = _new_run(folder)
    for i in range(1, n + 1):
        tiles_stage(gpkg, raster=raster, shard=f"{i}/{n}", shard_by=by, **TILE)
    merge_shards(gpkg, "tiles", n)
    for i in reversed(range(1, n + 1)):  # any order
        embed_stage(gpkg, shard=f"{i}/{n}", shard_by=by, **EMBED)
    merge_shards(gpkg, "embed", n)
    return gpkg


def _assert_same_run(got: Path, want: Path) -> None:
    for layer in (C.LAYER_REGIONS, C.LAYER_IMAGES, C.LAYER_REGION_EMBEDDINGS):
        assert_geodataframe_equal(read_layer(got, layer), read_layer(want, layer))
    records, expected = read_stage_records(got), read_stage_records(want)
    assert set(records) == set(expected) == {"tiles", "embed"}
    for stage, record in expected.items():
        assert records[stage].params == record.params
        assert records[stage].counts == record.counts
        assert records[stage].fingerprint == record.fingerprint != ""
    images = read_layer(want, C.LAYER_IMAGES)
    for path in images[C.PATH].dropna():
        assert (got.parent / path).read_bytes() == (want.parent / path).read_bytes()
    a = pq.read_table(got.parent / C.EMBEDDINGS_PARQUET)
    b = pq.read_table(want.parent / C.EMBEDDINGS_PARQUET)
    assert a.equals(b)
    assert a.schema.metadata == b.schema.metadata
    assert not (got.parent / SHARDS_DIR).exists()  # removed after the merges


@pytest.mark.parametrize("n", [1, 2, 4])
def test_sharded_runs_equal_the_plain_run(tmp_path: Path, raster: Path, plain: Path, n: int):
    got = _sharded(tmp_path / f"sharded{n}", raster, n)
    _assert_same_run(got, plain)
    regions = read_layer(got, C.LAYER_REGIONS)
    assert regions["edge"].sum() == ROWS  # the last column, decided over all regions


def test_shards_by_spatial_block_equal_the_plain_run(tmp_path: Path, raster: Path, plain: Path):
    _assert_same_run(_sharded(tmp_path / "blocks", raster, 3, by="block"), plain)


def test_assignment_is_stable_and_covers_every_region_once() -> None:
    regions = grid(40, 30)
    for by in ("id", "block"):
        shards = assign_shards(regions, 4, by)
        assert shards.min() >= 0 and shards.max() <= 3
        again = assign_shards(regions.iloc[::-1].reset_index(drop=True), 4, by)[::-1]
        np.testing.assert_array_equal(shards, again)  # by the region alone, not its position
    sizes = np.bincount(assign_shards(regions, 4, "id"), minlength=4)
    assert sizes.min() > 0.2 * len(regions)  # roughly even
    # blocks: cells of one 8 x 8 block share a shard
    blocks = regions[C.COL] // 8 * 1000 + regions[C.ROW] // 8
    by_block = pd.Series(assign_shards(regions, 4, "block")).groupby(blocks.to_numpy()).nunique()
    assert (by_block == 1).all()
    assert ShardSpec.parse("2/4") == ShardSpec(2, 4)
    for bad in ("0/4", "5/4", "2", "a/b", "1/0"):
        with pytest.raises(InputError, match="not a shard"):
            ShardSpec.parse(bad)


def test_a_killed_shard_is_redone_alone(tmp_path: Path, raster: Path, plain: Path, monkeypatch):
    count = count_tile_calls(monkeypatch)
    gpkg = _new_run(tmp_path / "killed")
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    sizes = np.bincount(assign_shards(regions, 2), minlength=2)
    tiles_stage(gpkg, raster=raster, shard="1/2", **TILE)
    assert count["calls"] == sizes[0]
    first = shard_folder(gpkg.parent, "tiles", ShardSpec(1, 2)) / C.RUN_GPKG
    stamp = first.stat().st_mtime_ns
    count.update(calls=0, interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        tiles_stage(gpkg, raster=raster, shard="2/2", **TILE)
    assert [s["status"] for s in shard_status(gpkg, "tiles", 2)] == ["done", "unfinished"]
    with pytest.raises(InputError, match=r"shard 2/2 is not finished"):
        merge_shards(gpkg, "tiles", 2)
    saved = len(list((first.parent.parent / "2-of-2" / C.OVERHEAD_DIR).glob("*.png")))
    assert 1 <= saved <= 3  # (threads: up to three were done before the interruption)

    count.update(calls=0, interrupt_at=None)
    for i in (1, 2):  # the array job run again, every task
        tiles_stage(gpkg, raster=raster, shard=f"{i}/2", **TILE)
    assert count["calls"] == sizes[1] - saved  # shard 1 skipped, shard 2 resumed
    assert first.stat().st_mtime_ns == stamp
    merge_shards(gpkg, "tiles", 2)
    for i in (1, 2):
        embed_stage(gpkg, shard=f"{i}/2", **EMBED)
    merge_shards(gpkg, "embed", 2)
    _assert_same_run(gpkg, plain)


def test_merge_refuses_missing_stale_or_mixed_shards(tmp_path: Path, raster: Path) -> None:
    gpkg = _new_run(tmp_path / "run")
    tiles_stage(gpkg, raster=raster, shard="1/2", **TILE)
    with pytest.raises(InputError, match=r"shard 2/2 was never run"):
        merge_shards(gpkg, "tiles", 2)
    tiles_stage(gpkg, raster=raster, shard="2/2", size=48)
    with pytest.raises(InputError, match="other settings"):
        merge_shards(gpkg, "tiles", 2)
    assert C.LAYER_IMAGES not in list_layers(gpkg)  # nothing merged
    tiles_stage(gpkg, raster=raster, shard="2/2", **TILE)  # the same settings: starts over
    merge_shards(gpkg, "tiles", 2, keep=True)
    counts = read_stage_records(gpkg)["tiles"].counts
    assert counts["ok"] + counts["missing"] == COLS * ROWS
    for i in (1, 2):
        embed_stage(gpkg, shard=f"{i}/2", **EMBED)
    tiles_stage(gpkg, raster=raster, size=48, overwrite=True)  # tiles redone: embed inputs change
    with pytest.raises(InputError, match="other inputs"):
        merge_shards(gpkg, "embed", 2)


def test_stages_and_encoders_that_do_not_shard_are_refused(tmp_path: Path, raster: Path):
    gpkg = _new_run(tmp_path / "run")
    tiles_stage(gpkg, raster=raster, **TILE)
    with pytest.raises(InputError, match="not sharded"):
        embed_stage(gpkg, encoder="random", model="RN50", shard="1/2")
    with pytest.raises(InputError, match="does not run in shards"):
        merge_shards(gpkg, "train", 2)


def test_the_command_line(tmp_path: Path, raster: Path, plain: Path) -> None:
    from urbangeo_cli.main import cli

    gpkg = _new_run(tmp_path / "cli")
    runner = CliRunner()
    for i in (1, 2):
        args = ["tiles", "--gpkg", gpkg, "--raster", raster, "--size", 32, "--shard", f"{i}/2"]
        result = runner.invoke(cli, [str(a) for a in args] + ["-q"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["merge", "tiles", "--gpkg", str(gpkg), "--shards", "3", "-q"])
    assert result.exit_code == 1 and "shard 3/3 was never run" in result.output
    result = runner.invoke(cli, ["merge", "tiles", "--gpkg", str(gpkg), "--shards", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert_geodataframe_equal(read_layer(gpkg, C.LAYER_IMAGES), read_layer(plain, C.LAYER_IMAGES))
    assert os.path.isfile(gpkg.parent / read_layer(gpkg, C.LAYER_IMAGES)[C.PATH].iloc[0])
