"""The `tiles` and `streetview` commands (registered in cli/main.py by its owner)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.imagery.helpers import UTM35, X0, Y0, coded_raster, grid, jpeg_bytes, make_run, points
from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.stages import tiles_stage
from urbangeo.io.gpkg import read_layer
from urbangeo.io.runs import read_stage_records
from urbangeo.settings import TilesSettings
from urbangeo_cli.imagery import streetview, tiles


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("command", [tiles, streetview])
def test_commands_explain_themselves(runner, command):
    result = runner.invoke(command, ["--help"])
    assert result.exit_code == 0
    out = result.output
    assert "Examples:" in out and "Output:" in out and "default" in out
    assert "--quiet" in out and "--progress" in out and "--overwrite" in out
    assert "--concurrency" in out and "--rate-limit" in out and "--retries" in out
    assert "--timeout" in out and "--gpkg" in out


def test_tiles_from_a_raster(runner, tmp_path):
    gpkg = make_run(tmp_path, grid(2, 1))
    tif = coded_raster(
        tmp_path / "c.tif", left=X0, top=Y0 + 1000, pixel=10, width=200, height=100, crs=UTM35
    )
    args = ["--gpkg", gpkg, "--raster", tif, "--size", "64", "--bands", "3,2,1"]
    result = runner.invoke(tiles, [str(a) for a in args] + ["-q"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    images = read_layer(gpkg, C.LAYER_IMAGES)
    assert list(images[C.STATUS]) == ["ok", "ok"] and set(images[C.WIDTH]) == {64}
    # Rerun: nothing to do, one JSON line per event in --progress json.
    result = runner.invoke(
        tiles, [str(a) for a in args] + ["--progress", "json"], catch_exceptions=False
    )
    events = [json.loads(line) for line in result.output.splitlines()]
    assert any(e["event"] == "message" and "2 done before" in e["text"] for e in events)


def test_tiles_errors_are_clear(runner, tmp_path):
    gpkg = make_run(tmp_path, grid(1, 1))
    result = runner.invoke(tiles, ["--gpkg", str(gpkg), "--xyz", "https://x.org/tiles/{z}.png"])
    assert result.exit_code == 1
    assert "lacks {x}, {y}" in result.output and "{z}/{x}/{y}" in result.output
    result = runner.invoke(
        tiles, ["--gpkg", str(gpkg), "--raster", "r.tif", "--xyz", "Esri.WorldImagery"]
    )
    assert result.exit_code == 1 and "exactly one tile source" in result.output
    result = runner.invoke(tiles, ["--gpkg", str(tmp_path / "nope.gpkg")])
    assert result.exit_code == 1 and "urbangeo grid" in result.output


def test_streetview_from_a_folder(runner, tmp_path):
    regions = grid(1, 1)
    sv = points([(X0 + 500, Y0 + 500)], [45.0], regions)
    gpkg = make_run(tmp_path, regions, sv)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / f"3_{sv[C.LON][0]:.6f},{sv[C.LAT][0]:.6f}_202305_50.jpg").write_bytes(jpeg_bytes())
    result = runner.invoke(streetview, ["--gpkg", str(gpkg), "--folder", str(folder)])
    assert result.exit_code == 0, result.output
    assert "1 ok, 0 missing, 0 failed" in result.output
    row = read_layer(gpkg, C.LAYER_IMAGES).iloc[0]
    assert row[C.IMAGE_ID] == "sv_0_50" and (tmp_path / row[C.PATH]).is_file()
    result = runner.invoke(
        streetview, ["--gpkg", str(gpkg), "--folder", str(folder), "--size", "9"]
    )
    # Checked by the settings: urbangeo's error (exit 1), before any work.
    assert result.exit_code == 1 and "WIDTHxHEIGHT" in result.output


def test_o_is_a_deprecated_spelling_of_gpkg(runner, tmp_path):
    gpkg = make_run(tmp_path, grid(1, 1))
    tif = coded_raster(
        tmp_path / "c.tif", left=X0, top=Y0 + 1000, pixel=10, width=100, height=100, crs=UTM35
    )
    result = runner.invoke(tiles, ["-o", str(gpkg), "--raster", str(tif), "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "-o for the run's GeoPackage is deprecated; use --gpkg" in result.output
    assert list(read_layer(gpkg, C.LAYER_IMAGES)[C.STATUS]) == ["ok"]
    result = runner.invoke(tiles, ["--raster", str(tif)])
    assert result.exit_code == 2 and "Missing option '--gpkg'" in result.output


def test_the_runner_passes_a_settings_object(tmp_path):
    gpkg = make_run(tmp_path, grid(2, 1))
    tif = coded_raster(
        tmp_path / "c.tif", left=X0, top=Y0 + 1000, pixel=10, width=200, height=100, crs=UTM35
    )
    settings = TilesSettings(raster=tif, size=32, resampling="nearest")
    result = tiles_stage(gpkg, settings, overwrite=True)
    assert result.stage == "tiles" and result.counts == {"ok": 2, "missing": 0, "failed": 0}
    record = read_stage_records(gpkg)["tiles"]
    assert record.params["size"] == 32 and record.counts["pending"] == 0
    # Settings by keyword go on top of the object, checked before any work.
    with pytest.raises(InputError, match=r"size \(--size\) must be at least 16"):
        tiles_stage(gpkg, settings, size=8)
