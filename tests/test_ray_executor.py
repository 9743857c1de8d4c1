"""``urbangeo run --executor ray``: the per-region stages as shards on a real local Ray
(started by the test on this machine, loopback only, two CPUs), merged in the driver, give
the plain run's layers, files, embeddings and captions (exactly: see tests/test_shards.py and
tests/test_shards_images.py). The image stages go through Ray Data (an actor pool over a
dataset of shards), the others as Ray tasks."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.test_shards import EMBED, TILE, _assert_same_run, _new_run, _plain, raster  # noqa: F401
from urbangeo import constants as C
from urbangeo.executors import make_executor, one_thread_env
from urbangeo.io.gpkg import read_layer
from urbangeo.io.runs import read_stage_records
from urbangeo.settings import CaptionSettings, EmbedSettings, TilesSettings


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A Ray of two CPUs on this machine, on the loopback interface, for this module."""
    require(
        importlib.util.find_spec("ray") is not None,
        "Ray",
        "pip install 'urbangeo[ray]' (the dev extra includes it)",
    )
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": one_thread_env()},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _quiet(quiet_progress: None) -> None:
    """No progress bars."""


def test_ray_shards_equal_the_plain_run(
    tmp_path: Path,
    raster: Path,  # noqa: F811
    local_ray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from urbangeo.executors.ray_executor import RayExecutor

    def no_tasks(*args: Any) -> None:
        raise AssertionError("an image stage ran as Ray tasks, not through Ray Data")

    monkeypatch.setattr(RayExecutor, "_run_tasks", no_tasks)
    plain = _plain(tmp_path / "plain", raster)
    gpkg = _new_run(tmp_path / "ray")
    executor = make_executor("ray", shards=3)
    tiles = TilesSettings.from_mapping({"raster": raster, **TILE})
    executor.run_stage("tiles", gpkg, tiles, overwrite=True)
    assert executor.count() == 3
    executor.run_stage("embed", gpkg, EmbedSettings.from_mapping(EMBED), overwrite=True)
    _assert_same_run(gpkg, plain)
    # the cluster's CPUs by default; a rerun with the same settings redoes the shards and
    # gives the same record
    fingerprint = read_stage_records(gpkg)["embed"].fingerprint
    default = make_executor("ray")
    assert default.count() == 2
    default.run_stage("embed", gpkg, EmbedSettings.from_mapping(EMBED), overwrite=True)
    assert read_stage_records(gpkg)["embed"].fingerprint == fingerprint
    _assert_same_run(gpkg, plain)


def test_a_failed_shard_is_reported_as_the_stage_error(
    tmp_path: Path,
    raster: Path,  # noqa: F811
    local_ray,
) -> None:
    from urbangeo.errors import InputError
    from urbangeo.imagery.stages import tiles_stage

    gpkg = _new_run(tmp_path / "run")
    tiles_stage(gpkg, raster=raster, **TILE)
    executor = make_executor("ray", shards=2)
    embed = EmbedSettings.from_mapping({"encoder": "trained", "kind": "overhead"})
    with pytest.raises(InputError, match="does not exist") as caught:  # raised in a worker
        executor.run_stage("embed", gpkg, embed, overwrite=True)
    assert "Ray" not in type(caught.value).__name__
    assert "embed" not in read_stage_records(gpkg)


def test_ray_caption_shards_equal_the_plain_run(tmp_path: Path, local_ray) -> None:
    import pandas as pd

    from tests.captions.helpers import make_run
    from tests.test_shards_images import _cache
    from urbangeo.captions.stages import caption_stage
    from urbangeo.shard import shard_refusal

    settings = {"select": "first", "workers": 1}
    plain = make_run(tmp_path / "plain", n_regions=9, n_points=3)
    caption_stage(plain, **settings)
    gpkg = make_run(tmp_path / "ray", n_regions=9, n_points=3)
    caption = CaptionSettings.from_mapping(settings)
    assert shard_refusal(gpkg, caption) is None  # so it runs as Ray tasks
    make_executor("ray", shards=2).run_stage("caption", gpkg, caption, overwrite=True)
    pd.testing.assert_frame_equal(
        read_layer(gpkg, C.LAYER_CAPTIONS), read_layer(plain, C.LAYER_CAPTIONS)
    )
    want, got = read_stage_records(plain)["caption"], read_stage_records(gpkg)["caption"]
    assert (got.params, got.counts, got.fingerprint) == (want.params, want.counts, want.fingerprint)
    calls = _cache(gpkg.parent / C.CAPTIONS_JSONL, "key")
    assert calls == _cache(plain.parent / C.CAPTIONS_JSONL, "key")


def test_ray_predict_shards_equal_the_plain_predict(tmp_path: Path, local_ray) -> None:
    from tests.downstream.test_predict_shards import SETTINGS, _assert_same_predict, _plain, _run
    from urbangeo.settings import PredictSettings

    plain = _plain(tmp_path / "plain", mlp=None)  # the Ray tasks train the default head
    gpkg = _run(tmp_path / "ray")
    make_executor("ray", shards=2).run_stage(
        "predict", gpkg, PredictSettings.from_mapping(SETTINGS), overwrite=True
    )
    _assert_same_predict(gpkg, plain)


def test_a_shard_failure_becomes_the_stage_error() -> None:
    # What the driver raises for a shard that failed in a Ray Data actor (its exception comes
    # back as data): no Ray needed here.
    from urbangeo.errors import InputError, UrbangeoError
    from urbangeo.executors.ray_executor import shard_failure
    from urbangeo.io.processes import guarded

    def bad_input() -> None:
        raise InputError("no such raster", hint="give --raster")

    def broken() -> None:
        raise RuntimeError("disk on fire")

    error = shard_failure(guarded(bad_input), "2/3", "tiles")
    assert type(error) is InputError and (error.message, error.hint) == (
        "no such raster",
        "give --raster",
    )
    error = shard_failure(guarded(broken), "3/3", "embed")
    assert isinstance(error, UrbangeoError) and not isinstance(error, InputError)
    assert error.message.startswith(
        "A worker failed on shard 3/3 of stage embed: RuntimeError: disk on fire"
    )
    assert "in broken" in error.message and "--executor local" in (error.hint or "")
