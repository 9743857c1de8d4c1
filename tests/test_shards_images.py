"""Shards of ``streetview`` and ``caption`` (``--shard I/N``) and their merge give the unsharded
run: the same ``images`` rows and files, the same ``captions`` table, the same stage records
and the same cache records (see tests/test_shards.py for tiles and embed).

The run: the 6 x 4 grid of tests/test_shards.py over Kotka's bundled extract, tiles from a
coded raster, sample points in most regions (one outside the grid, without a region), a
folder of photos named by their location (one photo near two points of different regions: it
goes to the nearer, whichever shard that point is in), and captions from the offline ``osm``
captioner chosen by CAPTURE consensus (rule-based parses).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from geopandas.testing import assert_geodataframe_equal
from pyproj import Transformer

from tests.imagery.helpers import X0, Y0, edge_column_raster, grid, jpeg_bytes, make_run, points
from urbangeo import constants as C
from urbangeo.captions import calls as caption_calls
from urbangeo.captions.captioners.osm import OSMCaptioner
from urbangeo.captions.stages import PARSES_JSONL, caption_stage
from urbangeo.errors import InputError, MissingLayerError
from urbangeo.geo.boundary import get_city
from urbangeo.imagery.stages import streetview_stage, tiles_stage
from urbangeo.imagery.streetview.folder import FolderProvider
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.io.runs import read_stage_records
from urbangeo.shard import SHARDS_DIR, ShardSpec, assign_shards, merge_shards, shard_folder
from urbangeo.shard import shard_status as status

COLS, ROWS = 6, 4
TILE = {"size": 32}
RADIUS = 30.0


def _caption_settings(osm: Path) -> dict:
    # captions made in this process (workers 1): the tests patch its captioner
    return {"osm": osm, "select": "capture", "parser": "rule", "workers": 1}


@pytest.fixture(autouse=True)
def _quiet(quiet_progress: None) -> None:
    """No progress bars."""


def _points(regions):
    """Sample points: most regions one, two close points on either side of a border between
    two regions, and one point west of the grid."""
    xy, headings = [], []
    for c in range(COLS):
        for r in range(ROWS):
            if (c + 2 * r) % 5 == 4:
                continue  # regions without a point
            xy.append((X0 + c * 1000 + 300 + 37 * r, Y0 + r * 1000 + 400 + 53 * c))
            headings.append(float((c * 40 + r * 15) % 360))
    xy += [(X0 + 1990, Y0 + 1500), (X0 + 2010, Y0 + 1500), (X0 - 300, Y0 + 500)]
    headings += [90.0, 270.0, 10.0]
    return points(xy, headings, grid(COLS, ROWS))


def _photos(folder: Path, sv) -> None:
    """A photo near two of every three points, named so that their order is not the regions';
    one between the two points at the border of two regions, nearer the eastern one (2 m; 22 m
    from the western one, which has none of its own); one near the point outside the grid."""
    folder.mkdir(parents=True)
    n = len(sv)
    for i in [*range(n - 3), n - 1]:
        if i % 3 == 2 and i < n - 3:
            continue
        lon, lat = sv[C.LON][i] + 5e-5, sv[C.LAT][i] + 3e-5  # a few metres off
        name = f"{n - i:03d}_{lon:.7f},{lat:.7f}_202201_{(37 * i) % 360}.jpg"
        (folder / name).write_bytes(jpeg_bytes((20 * i % 256, 90, 160)))
    east = sv.geometry[n - 2]
    to_wgs84 = Transformer.from_crs(sv.crs, C.WGS84, always_xy=True)
    lon, lat = to_wgs84.transform(east.x + 2.0, east.y)
    (folder / f"500_{lon:.7f},{lat:.7f}_202201_45.jpg").write_bytes(jpeg_bytes((1, 2, 3)))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """The raster, the photos and the OSM extract every run of this module uses."""
    root = tmp_path_factory.mktemp("inputs")
    raster = edge_column_raster(root / "coded.tif", COLS, ROWS)
    _photos(root / "photos", _points(grid(COLS, ROWS)))
    return {"raster": raster, "photos": root / "photos", "osm": get_city("kotka").osm_path()}


def _new_run(folder: Path) -> Path:
    return make_run(folder, grid(COLS, ROWS), _points(grid(COLS, ROWS)))


def _streetview(inputs: dict) -> dict:
    return {"folder": inputs["photos"], "radius": RADIUS}


@pytest.fixture(scope="module")
def plain(tmp_path_factory, inputs) -> Path:
    """The unsharded run."""
    from urbangeo.progress import get_mode, set_mode

    mode = get_mode()
    set_mode("none")
    try:
        gpkg = _new_run(tmp_path_factory.mktemp("plain"))
        tiles_stage(gpkg, raster=inputs["raster"], **TILE)
        streetview_stage(gpkg, **_streetview(inputs))
        caption_stage(gpkg, **_caption_settings(inputs["osm"]))
    finally:
        set_mode(mode)
    return gpkg


def _sharded(gpkg: Path, stage: str, n: int, **settings) -> None:
    function = {"tiles": tiles_stage, "streetview": streetview_stage, "caption": caption_stage}
    for i in reversed(range(1, n + 1)):  # any order
        function[stage](gpkg, shard=f"{i}/{n}", **settings)
    merge_shards(gpkg, stage, n)


def _cache(path: Path, key: str) -> dict:
    """A JSONL cache's records by ``key``, without the fields that say when and how fast."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        out[record[key]] = {k: v for k, v in record.items() if k not in ("time", "seconds")}
    return out


def _assert_same_run(got: Path, want: Path, *, caches: bool = True) -> None:
    assert_geodataframe_equal(read_layer(got, C.LAYER_IMAGES), read_layer(want, C.LAYER_IMAGES))
    for path in read_layer(want, C.LAYER_IMAGES)[C.PATH].dropna():
        assert (got.parent / path).read_bytes() == (want.parent / path).read_bytes()
    pd.testing.assert_frame_equal(
        read_layer(got, C.LAYER_CAPTIONS), read_layer(want, C.LAYER_CAPTIONS)
    )
    records, expected = read_stage_records(got), read_stage_records(want)
    assert set(records) == set(expected) == {"tiles", "streetview", "caption"}
    for stage, record in expected.items():
        assert records[stage].params == record.params
        if caches or stage != "caption":  # a resumed shard counts its calls cached
            assert records[stage].counts == record.counts
        assert records[stage].fingerprint == record.fingerprint != ""
    if caches:
        for name, key in ((C.CAPTIONS_JSONL, "key"), (PARSES_JSONL, "text")):
            assert _cache(got.parent / name, key) == _cache(want.parent / name, key)
    assert not (got.parent / SHARDS_DIR).exists()  # removed after the merges


def test_the_plain_run_exercises_what_shards_must_get_right(plain: Path) -> None:
    images = read_layer(plain, C.LAYER_IMAGES)
    sv = images[images[C.KIND] == C.KIND_STREETVIEW]
    assert (sv[C.STATUS] == C.STATUS_OK).sum() >= 10 and (sv[C.STATUS] == C.STATUS_MISSING).any()
    assert sv[C.REGION_ID].isna().sum() == 1  # the point outside the grid
    # the photo between two points went to the nearer one only: the other is missing
    points = read_layer(plain, C.LAYER_SV_POINTS)
    west, east = (int(p) for p in points[C.POINT_ID].iloc[-3:-1])
    by_point = sv.set_index(C.POINT_ID)
    assert by_point.loc[east, C.SOURCE].startswith("folder:500_")
    assert by_point.loc[west, C.STATUS] == C.STATUS_MISSING
    assert points[C.REGION_ID].iloc[-3] != points[C.REGION_ID].iloc[-2]
    # the photos' order (file names) is not the regions'
    assert list(sv[C.REGION_ID].dropna()) != sorted(sv[C.REGION_ID].dropna())
    captions = read_layer(plain, C.LAYER_CAPTIONS)
    assert captions[C.SCORE].notna().all() and captions[C.SELECTED].sum() > 30


@pytest.mark.parametrize("n", [1, 2, 4])
def test_sharded_runs_equal_the_plain_run(tmp_path: Path, inputs: dict, plain: Path, n: int):
    gpkg = _new_run(tmp_path / f"sharded{n}")
    _sharded(gpkg, "tiles", n, raster=inputs["raster"], **TILE)
    _sharded(gpkg, "streetview", n, **_streetview(inputs))
    _sharded(gpkg, "caption", n, **_caption_settings(inputs["osm"]))
    _assert_same_run(gpkg, plain)


def _copy_until_captions(plain: Path, folder: Path) -> Path:
    """A copy of the plain run with its images and without its captions."""
    shutil.copytree(plain.parent, folder)
    gpkg = folder / C.RUN_GPKG
    for name in (C.CAPTIONS_JSONL, PARSES_JSONL):
        (folder / name).unlink()
    return gpkg


def _count_captions(monkeypatch) -> dict:
    """Count (and optionally interrupt) the osm captioner's images: ``images`` so far, a
    KeyboardInterrupt at image ``interrupt_at``."""
    state = {"images": 0, "interrupt_at": None}
    original = OSMCaptioner.caption_many

    def caption_many(self, image, item, requests):
        state["images"] += 1
        if state["images"] == state["interrupt_at"]:
            raise KeyboardInterrupt
        return original(self, image, item, requests)

    monkeypatch.setattr(OSMCaptioner, "caption_many", caption_many)
    return state


def _per_shard(gpkg: Path, n: int, images: pd.DataFrame) -> np.ndarray:
    """How many of ``images`` each of ``n`` shards has (rows without a region: shard 1)."""
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    shard = dict(zip(regions[C.REGION_ID], assign_shards(regions, n), strict=True))
    return np.bincount([shard.get(r, 0) for r in images[C.REGION_ID]], minlength=n)


def _stop_second_shard(gpkg: Path, stage: str, run: Callable[..., object]) -> tuple[Path, int]:
    """With shard 1 of 2 done and an interruption armed, ``run`` shard 2 into it (Ctrl-C): the
    first shard's GeoPackage and its modification time, to show a rerun leaves it alone."""
    first = shard_folder(gpkg.parent, stage, ShardSpec(1, 2)) / C.RUN_GPKG
    stamp = first.stat().st_mtime_ns
    with pytest.raises(KeyboardInterrupt):
        run(gpkg, shard="2/2")
    assert [s["status"] for s in status(gpkg, stage, 2)] == ["done", "unfinished"]
    return first, stamp


def test_a_killed_caption_shard_is_redone_alone(
    tmp_path: Path, inputs: dict, plain: Path, monkeypatch
):
    gpkg = _copy_until_captions(plain, tmp_path / "killed")
    images = read_layer(gpkg, C.LAYER_IMAGES)
    sizes = _per_shard(gpkg, 2, images[images[C.STATUS] == C.STATUS_OK])  # those with a file
    assert sizes[1] > 12  # shard 2 is stopped in its second chunk of 8 images
    monkeypatch.setattr(caption_calls, "CHUNK_IMAGES", 8)
    count = _count_captions(monkeypatch)
    settings = _caption_settings(inputs["osm"])
    caption_stage(gpkg, shard="1/2", **settings)
    assert count["images"] == sizes[0]
    count.update(images=0, interrupt_at=12)
    first, stamp = _stop_second_shard(gpkg, "caption", partial(caption_stage, **settings))
    with pytest.raises(InputError, match=r"shard 2/2 is not finished"):
        merge_shards(gpkg, "caption", 2)

    count.update(images=0, interrupt_at=None)
    for i in (1, 2):  # the array job run again, every task
        caption_stage(gpkg, shard=f"{i}/2", **settings)
    # shard 1 skipped; shard 2 captioned only the images after its first chunk (of 8), cached
    assert first.stat().st_mtime_ns == stamp
    assert count["images"] == sizes[1] - 8
    counts = read_stage_records(first.parent.parent / "2-of-2" / C.RUN_GPKG)["caption"].counts
    assert counts["cached"] == 8 * 3  # three styles
    merge_shards(gpkg, "caption", 2)
    _assert_same_run(gpkg, plain, caches=False)
    calls = _cache(gpkg.parent / C.CAPTIONS_JSONL, "key")
    assert calls == _cache(plain.parent / C.CAPTIONS_JSONL, "key")


def test_a_killed_streetview_shard_is_redone_alone(
    tmp_path: Path, inputs: dict, plain: Path, monkeypatch
):
    shutil.copytree(plain.parent, tmp_path / "killed")
    gpkg = tmp_path / "killed" / C.RUN_GPKG
    state = {"calls": 0, "interrupt_at": None}
    original = FolderProvider.fetch

    def fetch(self, shot):
        state["calls"] += 1
        if state["calls"] == state["interrupt_at"]:
            raise KeyboardInterrupt
        return original(self, shot)

    monkeypatch.setattr(FolderProvider, "fetch", fetch)
    images = read_layer(gpkg, C.LAYER_IMAGES)
    sizes = _per_shard(gpkg, 2, images[images[C.KIND] == C.KIND_STREETVIEW])  # every shot
    settings = _streetview(inputs)
    streetview_stage(gpkg, shard="1/2", overwrite=True, **settings)
    assert state["calls"] == sizes[0]
    state.update(calls=0, interrupt_at=5)
    first, stamp = _stop_second_shard(gpkg, "streetview", partial(streetview_stage, **settings))
    # what shard 2 made before it was stopped: image files, and rows of shots with no photo
    second = first.parent.parent / "2-of-2"
    saved = {p.stem for p in (second / C.STREETVIEW_DIR).glob("*.jpg")}
    rows = read_layer(second / C.RUN_GPKG, C.LAYER_IMAGES)
    saved |= set(rows[C.IMAGE_ID][rows[C.STATUS] == C.STATUS_MISSING])
    assert 1 <= len(saved) < sizes[1]

    state.update(calls=0, interrupt_at=None)
    for i in (1, 2):
        streetview_stage(gpkg, shard=f"{i}/2", **settings)
    assert first.stat().st_mtime_ns == stamp  # shard 1 skipped
    assert state["calls"] == sizes[1] - len(saved)  # shard 2 resumed
    merge_shards(gpkg, "streetview", 2)
    assert_geodataframe_equal(read_layer(gpkg, C.LAYER_IMAGES), read_layer(plain, C.LAYER_IMAGES))
    # streetview redone: the captions are stale, and the stage records say so
    assert "caption" not in read_stage_records(gpkg)


def test_caption_shards_use_and_feed_the_run_cache(
    tmp_path: Path, inputs: dict, plain: Path, monkeypatch
):
    gpkg = tmp_path / "cached" / C.RUN_GPKG
    shutil.copytree(plain.parent, gpkg.parent)
    count = _count_captions(monkeypatch)
    settings = {**_caption_settings(inputs["osm"]), "select": "first"}
    _sharded(gpkg, "caption", 3, **settings)
    assert count["images"] == 0  # every call from the run's cache, through the shards'
    counts = read_stage_records(gpkg)["caption"].counts
    assert counts["cached"] == counts["captions"] > 0
    assert _cache(gpkg.parent / C.CAPTIONS_JSONL, "key") == _cache(
        plain.parent / C.CAPTIONS_JSONL, "key"
    )
    for name in (C.CAPTIONS_JSONL, PARSES_JSONL):  # nothing new: nothing appended
        assert (gpkg.parent / name).read_bytes() == (plain.parent / name).read_bytes()
    # --limit chooses the first images of the whole run, as the unsharded stage does
    limited = {**settings, "limit": 17}
    _sharded(gpkg, "caption", 3, **limited)
    sharded = read_layer(gpkg, C.LAYER_CAPTIONS)
    caption_stage(gpkg, overwrite=True, **limited)
    pd.testing.assert_frame_equal(sharded, read_layer(gpkg, C.LAYER_CAPTIONS))
    assert read_stage_records(gpkg)["caption"].counts["images"] == 17

    # new calls made in the shards reach the run's cache: a plain run after them pays nothing
    fresh = _copy_until_captions(plain, tmp_path / "fresh")
    _sharded(fresh, "caption", 2, **settings)
    count.update(images=0)
    again = caption_stage(fresh, overwrite=True, **settings)
    assert count["images"] == 0 and again.counts["cached"] == again.counts["captions"]


def test_a_caption_shard_started_over_keeps_its_calls_and_merges_append_once(
    tmp_path: Path, inputs: dict, monkeypatch, plain: Path
):
    gpkg = _copy_until_captions(plain, tmp_path / "run")
    count = _count_captions(monkeypatch)
    settings = {**_caption_settings(inputs["osm"]), "select": "first"}
    caption_stage(gpkg, shard="2/2", **settings)
    made = count["images"]
    assert made > 0
    # other settings that change no caption (requests in flight) start the shard over: the
    # calls it paid for and has not merged yet are kept, not made again
    count.update(images=0)
    again = caption_stage(gpkg, shard="2/2", **{**settings, "concurrency": 3})
    assert not again.skipped and count["images"] == 0
    assert again.counts["cached"] == again.counts["captions"] > 0
    caption_stage(gpkg, shard="1/2", **{**settings, "concurrency": 3})
    merge_shards(gpkg, "caption", 2, keep=True)
    caches = [gpkg.parent / n for n in (C.CAPTIONS_JSONL, PARSES_JSONL)]
    once = {path: path.read_bytes() for path in caches if path.exists()}
    merge_shards(gpkg, "caption", 2, keep=True)  # a second merge appends nothing again
    for path, data in once.items():
        assert path.read_bytes() == data
    assert (
        _cache(gpkg.parent / C.CAPTIONS_JSONL, "key").keys()
        == _cache(plain.parent / C.CAPTIONS_JSONL, "key").keys()
    )
    assert len((gpkg.parent / C.CAPTIONS_JSONL).read_text().splitlines()) == len(
        (plain.parent / C.CAPTIONS_JSONL).read_text().splitlines()
    )


def test_merge_refuses_stale_or_inconsistent_shards(tmp_path: Path, inputs: dict, plain: Path):
    gpkg = _copy_until_captions(plain, tmp_path / "run")
    settings = {**_caption_settings(inputs["osm"]), "select": "first"}
    for i in (1, 2):
        caption_stage(gpkg, shard=f"{i}/2", **settings)
    streetview_stage(gpkg, overwrite=True, **{**_streetview(inputs), "radius": 20.0})
    with pytest.raises(InputError, match="other inputs"):
        merge_shards(gpkg, "caption", 2)

    # the photos changed between two shards: they planned different images
    photos = tmp_path / "photos"
    shutil.copytree(inputs["photos"], photos)
    settings = {"folder": photos, "radius": RADIUS}
    streetview_stage(gpkg, shard="1/2", **settings)
    next(photos.glob("500_*")).unlink()
    streetview_stage(gpkg, shard="2/2", **settings)
    with pytest.raises(InputError, match="planned different images"):
        merge_shards(gpkg, "streetview", 2)

    # captions need images
    bare = _new_run(tmp_path / "bare")
    with pytest.raises(MissingLayerError, match="Layer 'images' is not in") as caught:
        caption_stage(bare, shard="1/2", **_caption_settings(inputs["osm"]))
    assert "Fetch images first" in caught.value.hint
    assert C.LAYER_CAPTIONS not in list_layers(bare)


def test_the_command_line(tmp_path: Path, inputs: dict, plain: Path) -> None:
    from click.testing import CliRunner

    from urbangeo_cli.main import cli

    gpkg = _copy_until_captions(plain, tmp_path / "cli")
    runner = CliRunner()
    for i in (1, 2):
        args = ["caption", "--gpkg", gpkg, "--osm", inputs["osm"], "--parser", "rule"]
        args += ["--workers", 1, "--shard", f"{i}/2", "-q"]
        result = runner.invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["merge", "caption", "--gpkg", str(gpkg), "--shards", "2", "-q"])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(
        read_layer(gpkg, C.LAYER_CAPTIONS), read_layer(plain, C.LAYER_CAPTIONS)
    )


def test_osm_captions_of_small_shards_are_the_whole_runs(tmp_path: Path) -> None:
    """The osm captioner reads the features of the whole run's box in every shard: pyrosm cuts
    ways at the box, and a small shard's box words some captions differently."""
    from tests.captions.helpers import make_run as caption_run

    plain = caption_run(tmp_path / "plain", n_regions=9, n_points=0)
    caption_stage(plain, select="first", workers=1)
    gpkg = caption_run(tmp_path / "sharded", n_regions=9, n_points=0)
    _sharded(gpkg, "caption", 9, select="first", workers=1)  # one or two regions each
    pd.testing.assert_frame_equal(
        read_layer(gpkg, C.LAYER_CAPTIONS), read_layer(plain, C.LAYER_CAPTIONS)
    )
