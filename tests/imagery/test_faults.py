"""Imagery faults (issue #14): a failed ``--overwrite`` keeps what was there, image files and
their rows change together, a reply that is not an image is a failed download, a stage where
every image failed is an error, and out-of-range settings are refused before any work."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import mercantile
import pandas as pd
import pytest
from click.testing import CliRunner
from pyproj import Transformer

from tests.imagery.helpers import (
    UTM35,
    X0,
    Y0,
    coded_raster,
    coded_tile,
    grid,
    jpeg_bytes,
    make_run,
    points,
    read_png,
)
from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery import manifest as manifest_module
from urbangeo.imagery.manifest import STAGING_DIR, ImagesFailedError, Manifest
from urbangeo.imagery.stages import streetview_stage, tiles_stage
from urbangeo.io.files import sha256_file
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.io.runs import read_stage_records
from urbangeo_cli.imagery import streetview, tiles

COLS, ROWS = 6, 5  # 30 regions, as in the issue


def _raster_run(folder: Path, tif_folder: Path) -> tuple[Path, Path]:
    """A run of 30 regions and a raster that covers them (the raster outside ``folder``)."""
    gpkg = make_run(folder, grid(COLS, ROWS))
    tif = coded_raster(
        tif_folder / "coded.tif",
        left=X0,
        top=Y0 + 1000 * ROWS,
        pixel=10,
        width=100 * COLS,
        height=100 * ROWS,
        crs=UTM35,
    )
    return gpkg, tif


def _invoke(command, *args: object) -> object:
    return CliRunner().invoke(command, [str(a) for a in args])


def _snapshot(gpkg: Path, kind: str = C.KIND_OVERHEAD) -> tuple[pd.DataFrame, dict]:
    """The rows of ``kind`` and the bytes of every file in its folder."""
    images = read_layer(gpkg, C.LAYER_IMAGES)
    rows = images[images[C.KIND] == kind].drop(columns="geometry").reset_index(drop=True)
    folder = gpkg.parent / (C.OVERHEAD_DIR if kind == C.KIND_OVERHEAD else C.STREETVIEW_DIR)
    return rows, {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _assert_in_step(gpkg: Path) -> None:
    """Every ok row describes the file on disk: its sha256 and its size."""
    rows, _ = _snapshot(gpkg)
    for row in rows[rows[C.STATUS] == C.STATUS_OK].itertuples():
        file = gpkg.parent / row.path
        assert sha256_file(file) == row.sha256, row.image_id
        assert read_png(file).shape[:2] == (row.height, row.width), row.image_id


# --- 1. a failed --overwrite keeps the earlier layer and files ------------------------------


def test_a_failed_overwrite_keeps_the_old_layer_and_files(tmp_path, header_server):
    gpkg, tif = _raster_run(tmp_path, tmp_path)
    result = _invoke(tiles, "--gpkg", gpkg, "--raster", tif, "--size", 32, "-q")
    assert result.exit_code == 0, result.output
    rows, files = _snapshot(gpkg)
    assert len(rows) == 30 and (rows[C.STATUS] == C.STATUS_OK).all()
    record = read_stage_records(gpkg)["tiles"]
    # A bad extract: the error comes while the tiles are being made.
    bad = tmp_path / "broken.osm.pbf"
    bad.write_bytes(b"this is not an OSM extract")
    result = _invoke(tiles, "--gpkg", gpkg, "--render", "osm", "--osm", bad, "--overwrite", "-q")
    assert result.exit_code == 1 and "Cannot read the OSM extract" in result.output
    # An XYZ server that refuses the key.
    denied = header_server(lambda path, query, headers: (401, {}, b"no"))
    url = denied.url + "/{z}/{x}/{y}.png"
    args = ["--zoom", 14, "--size", 32, "--rate-limit", 0, "--overwrite", "-q"]
    result = _invoke(tiles, "--gpkg", gpkg, "--xyz", url, *args)
    assert result.exit_code == 1 and "HTTP 401" in result.output
    after_rows, after_files = _snapshot(gpkg)
    pd.testing.assert_frame_equal(after_rows, rows)  # 30 rows, not 0
    assert after_files == files
    assert read_stage_records(gpkg)["tiles"] == record
    _assert_in_step(gpkg)


def test_an_interrupted_overwrite_keeps_the_old_images_and_its_rerun_continues(
    tmp_path, count_tiles
):
    gpkg, tif = _raster_run(tmp_path, tmp_path)
    tiles_stage(gpkg, raster=tif, size=32)
    rows, files = _snapshot(gpkg)
    count_tiles.update(calls=0, interrupt_at=8)
    with pytest.raises(KeyboardInterrupt):
        tiles_stage(gpkg, raster=tif, size=48, overwrite=True)
    after_rows, after_files = _snapshot(gpkg)
    pd.testing.assert_frame_equal(after_rows, rows)
    assert after_files == files
    staged = list((tmp_path / STAGING_DIR / C.KIND_OVERHEAD).glob("*.png"))
    assert 1 <= len(staged) <= 7  # made before the interruption, waiting beside the old ones
    # The same command continues: the staged images are reused, not made again.
    count_tiles.update(calls=0, interrupt_at=None)
    result = tiles_stage(gpkg, raster=tif, size=48, overwrite=True)
    assert count_tiles["calls"] == 30 - len(staged)
    assert result.counts == {"ok": 30, "missing": 0, "failed": 0}
    assert set(_snapshot(gpkg)[0][C.WIDTH]) == {48}
    _assert_in_step(gpkg)
    assert not (tmp_path / STAGING_DIR).exists()


def test_a_crash_between_the_commit_and_the_moves_is_finished_by_the_next_run(
    tmp_path, count_tiles, monkeypatch
):
    gpkg, tif = _raster_run(tmp_path, tmp_path)
    tiles_stage(gpkg, raster=tif, size=32)
    original = Manifest._finish_moves

    def crash(self, rows, *, verify=True):
        if not verify:  # the moves right after the commit
            raise KeyboardInterrupt
        return original(self, rows, verify=verify)

    monkeypatch.setattr(Manifest, "_finish_moves", crash)
    with pytest.raises(KeyboardInterrupt):
        tiles_stage(gpkg, raster=tif, size=48, overwrite=True)
    monkeypatch.setattr(Manifest, "_finish_moves", original)
    assert set(_snapshot(gpkg)[0][C.WIDTH]) == {48}  # committed; the files still wait
    count_tiles.update(calls=0)
    result = tiles_stage(gpkg, raster=tif, size=48)
    assert count_tiles["calls"] == 0 and result.counts["ok"] == 30
    _assert_in_step(gpkg)
    assert not (tmp_path / STAGING_DIR).exists()


def test_a_failed_streetview_overwrite_keeps_the_old_rows(tmp_path, header_server, monkeypatch):
    regions = grid(1, 1)
    sv = points([(X0 + 500, Y0 + 500)], [45.0], regions)
    gpkg = make_run(tmp_path, regions, sv)
    photos = tmp_path / "photos"
    photos.mkdir()
    name = f"3_{sv[C.LON][0]:.6f},{sv[C.LAT][0]:.6f}_202305_50.jpg"
    (photos / name).write_bytes(jpeg_bytes())
    streetview_stage(gpkg, folder=photos)
    rows, files = _snapshot(gpkg, C.KIND_STREETVIEW)
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", "k-123")
    denied = header_server(lambda path, query, headers: (401, {}, b"no"))
    args = ["--provider", "google", "--base-url", denied.url, "--overwrite", "-q"]
    result = _invoke(streetview, "--gpkg", gpkg, *args)
    assert result.exit_code == 1 and "HTTP 401" in result.output
    after_rows, after_files = _snapshot(gpkg, C.KIND_STREETVIEW)
    pd.testing.assert_frame_equal(after_rows, rows)
    assert after_files == files


# --- 2. a full disk: image files and their rows change together ------------------------------


class SmallDisk:
    """A run folder on a real 512 KiB file system (tmpfs; the tests run as root). Where
    mounting is refused, the fallback is stated: image writes under the folder raise ENOSPC
    once 200 KiB were written, as a full disk would."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        mount = ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(path)]
        self.mounted = subprocess.run(mount, capture_output=True).returncode == 0
        self.budget: int | None = 200 * 1024
        if not self.mounted and os.environ.get("CI") == "true":
            pytest.fail("CI must mount the tmpfs (it runs as root): the full disk must be real.")
        if not self.mounted:
            written = {"bytes": 0}
            original = manifest_module.write_bytes_atomic

            def write(target, data):
                if self.budget is not None and Path(target).is_relative_to(path):
                    written["bytes"] += len(data)
                    if written["bytes"] > self.budget:
                        raise OSError(errno.ENOSPC, "No space left on device")
                return original(target, data)

            monkeypatch.setattr(manifest_module, "write_bytes_atomic", write)

    def grow(self) -> None:
        """Free space: the file system grows to 4 MiB (or the simulated budget goes)."""
        if self.mounted:
            remount = ["mount", "-o", "remount,size=4m", str(self.path)]
            subprocess.run(remount, check=True, capture_output=True)
        self.budget = None

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    path = tmp_path / "disk"
    path.mkdir()
    disk = SmallDisk(path, monkeypatch)
    yield disk
    disk.close()


def test_a_full_disk_during_an_overwrite_leaves_files_and_rows_in_step(small_disk, tmp_path):
    gpkg, tif = _raster_run(small_disk.path, tmp_path)
    result = _invoke(tiles, "--gpkg", gpkg, "--raster", tif, "--size", 32, "-q")
    assert result.exit_code == 0, result.output
    rows, files = _snapshot(gpkg)
    # 30 images of 256 px (about 14 KB each) do not fit beside the rest.
    args = ["--gpkg", gpkg, "--raster", tif, "--size", 256, "--overwrite", "-q"]
    result = _invoke(tiles, *args)
    assert result.exit_code == 1
    assert "No space left on device" in result.output and "rerun" in result.output
    after_rows, after_files = _snapshot(gpkg)
    pd.testing.assert_frame_equal(after_rows, rows)
    assert after_files == files
    _assert_in_step(gpkg)
    # Space freed: the same command finishes, the images made before the disk filled reused.
    small_disk.grow()
    result = _invoke(tiles, *args)
    assert result.exit_code == 0, result.output
    assert set(_snapshot(gpkg)[0][C.WIDTH]) == {256}
    _assert_in_step(gpkg)
    assert not (small_disk.path / STAGING_DIR).exists()


# --- 3. replies that are not images; a stage where every image failed ----------------------


def _tiles_of(handler_for_bad):
    cache: dict = {}

    def handler(path, query, headers):
        z, x, y = (int(v) for v in path.removesuffix(".png").strip("/").split("/"))
        bad = handler_for_bad(z, x, y)
        if bad is not None:
            return bad
        if (z, x, y) not in cache:
            cache[(z, x, y)] = coded_tile(z, x, y)
        return 200, {"Content-Type": "image/png"}, cache[(z, x, y)]

    return handler


HTML = (200, {"Content-Type": "text/html; charset=utf-8"}, b"<html><body>Sorry</body></html>")
BROKEN_PNG = (200, {"Content-Type": "image/png"}, coded_tile(0, 0, 0)[:300])


@pytest.mark.parametrize(
    ("reply", "words"),
    [(HTML, "with text/html, not an image"), (BROKEN_PNG, "with a broken image (image/png")],
    ids=["html", "broken-png"],
)
def test_a_reply_that_is_not_an_image_is_a_failed_download(tmp_path, header_server, reply, words):
    state = {"bad": True}
    server = header_server(_tiles_of(lambda z, x, y: reply if state["bad"] else None))
    gpkg = make_run(tmp_path, grid(2, 1))
    url = server.url + "/{z}/{x}/{y}.png"
    with pytest.raises(ImagesFailedError, match="No overhead image could be made") as err:
        tiles_stage(gpkg, xyz=url, zoom=14, size=32, rate_limit=0)
    assert words in err.value.message
    images = read_layer(gpkg, C.LAYER_IMAGES)
    assert (images[C.STATUS] == C.STATUS_FAILED).all()  # not "missing": retried next time
    assert all(words in reason for reason in images[C.REASON])
    assert not list((tmp_path / "images/.tilecache").rglob("*.*"))  # not cached
    state["bad"] = False
    result = tiles_stage(gpkg, xyz=url, zoom=14, size=32, rate_limit=0)
    assert result.counts == {"ok": 2, "missing": 0, "failed": 0}


def test_some_html_tiles_fail_their_regions_with_a_warning_naming_the_type(tmp_path, header_server):
    regions = grid(3, 1)
    gpkg = make_run(tmp_path, regions)
    # HTML for every tile east of the middle region's centre: the first region is all good,
    # the last all HTML.
    lon, lat = Transformer.from_crs(UTM35, C.WGS84, always_xy=True).transform(X0 + 1500, Y0 + 500)
    middle = mercantile.tile(lon, lat, 16).x
    server = header_server(_tiles_of(lambda z, x, y: HTML if x >= middle else None))
    url = server.url + "/{z}/{x}/{y}.png"
    with pytest.warns(UserWarning, match="text/html, not an image"):
        tiles_stage(gpkg, xyz=url, zoom=16, size=32, rate_limit=0)
    images = read_layer(gpkg, C.LAYER_IMAGES).set_index(C.REGION_ID)
    first, last = regions[C.REGION_ID].iloc[0], regions[C.REGION_ID].iloc[2]
    assert images.loc[first, C.STATUS] == C.STATUS_OK
    assert images.loc[last, C.STATUS] == C.STATUS_FAILED
    assert "text/html" in images.loc[last, C.REASON]


def test_a_server_that_fails_every_image_makes_the_command_fail(tmp_path, header_server):
    server = header_server(lambda path, query, headers: (500, {}, b"down"))
    gpkg = make_run(tmp_path, grid(2, 1))
    args = ["--zoom", 14, "--size", 32, "--retries", 0, "--rate-limit", 0, "-q"]
    result = _invoke(tiles, "--gpkg", gpkg, "--xyz", server.url + "/{z}/{x}/{y}.png", *args)
    assert result.exit_code == 1
    assert "No overhead image could be made: 2 failed" in result.output
    assert "HTTP 500" in result.output and "Rerun the same command" in result.output


# --- 4. settings out of range are refused before any work ----------------------------------


@pytest.mark.parametrize(
    ("command", "args", "words"),
    [
        (streetview, ["--radius", "nan"], "must be a finite number"),
        (streetview, ["--radius", "-5"], "must be more than 0"),
        (streetview, ["--timeout", "-1"], "must be more than 0"),
        (streetview, ["--fov", "0"], "must be more than 0"),
        (streetview, ["--headings", "0,nan"], "must be a finite number"),
        (streetview, ["--pitch", "120"], "must be at most 90"),
        (streetview, ["--max-angle", "-1"], "must be at least 0"),
        (tiles, ["--timeout", "-1"], "must be more than 0"),
        (tiles, ["--timeout", "nan"], "must be a finite number"),
        (tiles, ["--rate-limit", "-1"], "must be at least 0"),
        (tiles, ["--rate-limit", "inf"], "must be a finite number"),
        (tiles, ["--min-valid", "1.5"], "must be at most 1"),
        (tiles, ["--size", "0"], "must be at least 16"),
        (tiles, ["--zoom", "99"], "must be at most 23"),
        (tiles, ["--concurrency", "0"], "must be at least 1"),
        (tiles, ["--retries", "-1"], "must be at least 0"),
    ],
)
def test_out_of_range_settings_are_refused_before_any_work(tmp_path, command, args, words):
    regions = grid(1, 1)
    gpkg = make_run(tmp_path, regions, points([(X0 + 500, Y0 + 500)], [0.0], regions))
    before = gpkg.read_bytes()
    source = ["--folder", tmp_path] if command is streetview else ["--raster", tmp_path / "r.tif"]
    result = _invoke(command, "--gpkg", gpkg, *source, *args)
    assert result.exit_code == 1 and words in result.output, result.output
    assert gpkg.read_bytes() == before and not (tmp_path / "images").exists()


def test_the_python_api_refuses_them_too(tmp_path):
    regions = grid(1, 1)
    gpkg = make_run(tmp_path, regions, points([(X0 + 500, Y0 + 500)], [0.0], regions))
    with pytest.raises(InputError, match=r"radius \(--radius\) must be a finite number"):
        streetview_stage(gpkg, radius=float("nan"), folder=tmp_path)
    with pytest.raises(InputError, match=r"timeout \(--timeout\) must be more than 0"):
        tiles_stage(gpkg, timeout=-1)
    assert C.LAYER_IMAGES not in list_layers(gpkg)
