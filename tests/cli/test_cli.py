import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import require
from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.geo.limits import SECONDS_PER_REGION
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo_cli.main import cli

#: Every stage is a command, and so are these.
COMMANDS = ["cities", *C.STAGES, "run", "status"]


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_console_script_is_installed_and_helps():
    exe = shutil.which("urbangeo", path=str(Path(sys.executable).parent))
    assert exe, "the urbangeo console script is not installed beside this Python"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(runner, command):
    result = invoke(runner, command, "--help")
    assert result.exit_code == 0
    assert "--quiet" in result.output
    if command != "cities":
        assert "Example" in result.output
        assert "--progress" in result.output
        assert "default" in result.output


def test_cities(runner):
    result = invoke(runner, "cities")
    assert result.exit_code == 0
    assert "kotka" in result.output and "helsinki" in result.output and "(default)" in result.output
    quiet = invoke(runner, "cities", "--quiet")
    assert quiet.exit_code == 0 and quiet.output.split() == ["kotka", "helsinki", "sao-paulo"]


def test_grid_for_a_bundled_city(runner, tmp_path):
    out = tmp_path / "k.gpkg"
    result = invoke(runner, "grid", "--city", "kotka", "-o", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output == ""  # --quiet: nothing but errors
    assert {C.LAYER_BOUNDARY, C.LAYER_REGIONS} <= set(list_layers(out))
    regions = read_layer(out, C.LAYER_REGIONS)
    bundled = read_layer(Path(__file__).parents[2] / "sample_grids" / "kotka.gpkg", "regions")
    assert list(regions[C.REGION_ID]) == list(bundled[C.REGION_ID])


def test_grid_default_output_is_a_run_folder(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(runner, "grid", "--city", "helsinki", "--cell-size", "250")
    assert result.exit_code == 0, result.output
    assert "regions of 250 m" in result.output
    assert len(read_layer(tmp_path / "helsinki" / "run.gpkg", C.LAYER_REGIONS)) > 20


def test_grid_refuses_to_overwrite_without_the_flag(runner, tmp_path):
    out = tmp_path / "k.gpkg"
    invoke(runner, "grid", "--city", "kotka", "-o", out, "-q")
    before = out.read_bytes()
    result = invoke(runner, "grid", "--city", "kotka", "-o", out, "--cell-size", "500")
    assert result.exit_code == 1
    assert "already exist" in result.output and "--overwrite" in result.output
    assert out.read_bytes() == before
    result = invoke(
        runner, "grid", "--city", "kotka", "-o", out, "--cell-size", "500", "--overwrite"
    )
    assert result.exit_code == 0
    assert len(read_layer(out, C.LAYER_REGIONS)) > 9


def test_unknown_city_fails_clearly_and_writes_nothing(runner, tmp_path):
    out = tmp_path / "x" / "run.gpkg"
    result = invoke(runner, "grid", "--city", "atlantis", "-o", out)
    assert result.exit_code == 1
    assert "Error: 'atlantis' is not a bundled city." in result.output
    assert "kotka, helsinki" in result.output and "--place" in result.output
    assert not out.exists()
    assert "Traceback" not in result.output


def test_bad_values(runner, tmp_path):
    result = invoke(
        runner, "grid", "--city", "kotka", "--cell-size", "0", "-o", tmp_path / "a.gpkg"
    )
    assert result.exit_code == 1
    assert "cell_size (--cell-size) must be more than 0, not 0" in result.output
    result = invoke(runner, "grid", "--bbox", "1,2", "-o", tmp_path / "a.gpkg")
    assert result.exit_code == 1 and "bbox needs 4 numbers W,S,E,N, not 2" in result.output
    result = invoke(runner, "grid", "--bbox", "1,2,x,4", "-o", tmp_path / "a.gpkg")
    assert result.exit_code == 1 and "must be a number, not 'x'" in result.output
    result = invoke(
        runner, "grid", "--city", "kotka", "--bbox", "1,2,3,4", "-o", tmp_path / "a.gpkg"
    )
    assert result.exit_code == 1 and "exactly one boundary source" in result.output
    result = invoke(
        runner, "grid", "--city", "kotka", "--cell-size", "1", "-o", tmp_path / "a.gpkg"
    )
    assert result.exit_code == 1 and "--force" in result.output
    (tmp_path / "file").write_text("")
    result = invoke(runner, "grid", "--city", "kotka", "-o", tmp_path / "file" / "a.gpkg")
    assert result.exit_code == 1 and "Cannot create the folder" in result.output


def test_sample_after_grid(runner, tmp_path):
    out = tmp_path / "run.gpkg"
    invoke(runner, "grid", "--city", "kotka", "-o", out, "-q")
    result = invoke(runner, "sample", "--gpkg", out, "--interval", "250")
    assert result.exit_code == 0, result.output
    assert "street-view points every 250 m" in result.output
    points = read_layer(out, C.LAYER_SV_POINTS)
    roads = read_layer(out, C.LAYER_ROADS)
    assert len(points) == pytest.approx(roads[C.LENGTH_M].sum() / 250, rel=0.1)
    regions = set(read_layer(out, C.LAYER_REGIONS)[C.REGION_ID])
    assert set(points[C.REGION_ID]) <= regions
    assert points[C.REGION_ID].notna().all()


def test_sample_needs_a_grid_first(runner, tmp_path):
    result = invoke(runner, "sample", "--gpkg", tmp_path / "run.gpkg")
    assert result.exit_code == 1
    assert "does not exist" in result.output and "urbangeo grid" in result.output


def test_sample_checks_its_settings_before_reading_anything(runner, tmp_path, monkeypatch):
    from urbangeo.geo import stages

    def no_roads(*args, **kwargs):
        raise AssertionError("roads were read before the interval was checked")

    monkeypatch.setattr(stages, "load_roads", no_roads)
    out = tmp_path / "k.gpkg"
    assert invoke(runner, "grid", "--city", "kotka", "-o", out, "--quiet").exit_code == 0
    result = invoke(runner, "sample", "--gpkg", out, "--interval", "-100")
    assert result.exit_code == 1
    assert "interval (--interval) must be more than 0" in result.output
    assert "--interval 500" in result.output


def test_a_missing_boundary_file_is_named_before_a_clash_of_outputs(runner, tmp_path):
    out = tmp_path / "run.gpkg"
    assert invoke(runner, "grid", "--city", "kotka", "-o", out, "--quiet").exit_code == 0
    result = invoke(runner, "grid", "--boundary", tmp_path / "district.gpkg", "-o", out)
    assert result.exit_code == 1
    assert "district.gpkg does not exist" in result.output and "already exist" not in result.output


def test_sample_from_a_roads_file_with_a_bbox_grid(runner, tmp_path):
    from tests.geo.test_roads import osm_xml

    (tmp_path / "map.osm").write_text(osm_xml())
    out = tmp_path / "run.gpkg"
    assert (
        invoke(runner, "grid", "--bbox", "26.93,60.52,26.97,60.54", "-o", out, "-q").exit_code == 0
    )
    result = invoke(runner, "sample", "--gpkg", out, "--roads", tmp_path / "map.osm", "-q")
    assert result.exit_code == 0, result.output
    assert len(read_layer(out, C.LAYER_SV_POINTS)) == 4  # 1.65 km of residential street


def test_json_progress_for_programs(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run.gpkg"
    result = runner.invoke(cli, ["grid", "--city", "kotka", "-o", str(out), "--progress", "json"])
    assert result.exit_code == 0
    events = [json.loads(line) for line in result.stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 3
    assert any(e["event"] == "message" and "regions" in e["text"] for e in events)
    result = runner.invoke(cli, ["grid", "--city", "nowhere", "--progress", "json"])
    errors = [json.loads(x) for x in result.stdout.splitlines() if '"error"' in x]
    assert errors and "not a bundled city" in errors[0]["text"] and "kotka" in errors[0]["hint"]
    assert not (tmp_path / "nowhere").exists()  # the default output folder was not left behind


def test_library_warnings_reach_the_user(runner, tmp_path):
    far = tmp_path / "far.gpkg"
    assert invoke(runner, "grid", "--bbox", "27.5,61.0,27.6,61.1", "-o", far, "-q").exit_code == 0
    result = invoke(runner, "sample", "--gpkg", far, "--city", "kotka")
    assert result.exit_code == 0
    assert "warning: No drive roads" in result.output
    assert len(read_layer(far, C.LAYER_SV_POINTS)) == 0


def test_run_and_status(runner, tmp_path):
    from tests.test_pipeline import TINY
    from urbangeo.pipeline import dump_config, resolve_config

    config = tmp_path / "tiny.toml"
    config.write_text(dump_config(resolve_config(TINY)))
    result = invoke(runner, "run", "--config", config, "-o", tmp_path / "h", "-q")
    assert result.exit_code == 0, result.output
    result = invoke(runner, "status", tmp_path / "h")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["stage", "status", "seconds", "counts"]
    assert {line.split()[0]: line.split()[1] for line in lines[1:]}["map"] == "done"
    rows = json.loads(invoke(runner, "status", tmp_path / "h", "--json").output)
    assert [r["stage"] for r in rows] == list(C.STAGES)
    result = invoke(runner, "run", "--config", config, "-o", tmp_path / "h")
    assert result.output.count("already done with these settings") == len(C.STAGES) - 1


def test_status_of_a_folder_that_is_not_a_run(runner, tmp_path):
    result = invoke(runner, "status", tmp_path)
    assert result.exit_code == 1 and "not an urbangeo run folder" in result.output


def test_ctrl_c_keeps_finished_stages(runner, tmp_path, monkeypatch):
    import functools

    import urbangeo.geo.stages as geo_stages
    import urbangeo.pipeline as pipeline

    @functools.wraps(geo_stages.sample_stage)  # same settings as the real stage
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C were pressed while sampling

    monkeypatch.setattr(geo_stages, "sample_stage", interrupted)
    result = invoke(runner, "run", "-o", tmp_path / "k")
    assert result.exit_code == 130
    assert "Interrupted" in result.output and "rerun the same command" in result.output
    stages = {row["stage"]: row["status"] for row in pipeline.run_status(tmp_path / "k")}
    assert stages["grid"] == "done" and stages["sample"] == "interrupted"
    assert set(list_layers(tmp_path / "k" / "run.gpkg")) >= {"boundary", "regions"}
    assert not (tmp_path / "k" / ".urbangeo.lock").exists()


def test_run_bad_input(runner, tmp_path):
    result = invoke(runner, "run", "--from", "fly", "-o", tmp_path / "k")
    assert result.exit_code == 2 and "'fly' is not one of" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepoks = 3\n")
    result = invoke(runner, "run", "--config", bad, "-o", tmp_path / "k")
    assert result.exit_code == 1 and "Unknown setting(s) in [train]: epoks" in result.output


# ---- issue #14, geo: limits and clear errors before any work --------------------------------


def test_sample_refuses_an_interval_that_makes_millions_of_points(runner, tmp_path, monkeypatch):
    import urbangeo.geo.stages as geo_stages

    gpkg = tmp_path / "k" / "run.gpkg"
    assert invoke(runner, "grid", "--city", "kotka", "--gpkg", gpkg, "-q").exit_code == 0

    def never(*args, **kwargs):
        raise AssertionError("sampled before the estimate refused the interval")

    monkeypatch.setattr(geo_stages, "sample_points", never)
    args = ("sample", "--gpkg", gpkg, "--interval", "0.01", "--merge-tolerance", "0.001")
    result = invoke(runner, *args)
    assert result.exit_code == 1, result.output
    assert "every 0.01 m makes about 4,46" in result.output
    assert "more than the limit of 1,000,000" in result.output
    assert "Use --interval 0.045 or more" in result.output and "--force" in result.output
    assert C.LAYER_SV_POINTS not in list_layers(gpkg)


def test_grid_warns_about_the_cost_of_many_regions(runner, tmp_path):
    result = invoke(
        runner, "grid", "--city", "kotka", "--cell-size", "10", "--gpkg", tmp_path / "g.gpkg"
    )
    assert result.exit_code == 0, result.output
    assert "warning: The grid has 49,504 regions" in result.output
    assert f"{SECONDS_PER_REGION:g} s per region" in result.output and "rough" in result.output
    quiet = invoke(
        runner, "grid", "--city", "kotka", "--cell-size", "250", "--gpkg", tmp_path / "s.gpkg"
    )
    assert "warning" not in quiet.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bbox", "-180,-90,180,90"), "beyond UTM's latitudes"),
        (("--bbox", "-180,-80,180,80"), "too wide for one UTM zone"),
        (("--bbox", "-33.9,151.2,-33.8,151.3"), "Did you mean --bbox 151.2,-33.9,151.3,-33.8"),
        (("--city", "kotka", "--crs", "EPSG:99999"), "Unknown CRS 'EPSG:99999'"),
        (("--city", "kotka", "--crs", "EPSG:4326"), "not a projected CRS"),
    ],
)
def test_grid_refuses_before_any_work(runner, tmp_path, args, message):
    out = tmp_path / "new" / "run.gpkg"
    result = invoke(runner, "grid", *args, "--gpkg", out)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.parent.exists()


def test_grid_boundary_files_that_need_a_word_more(runner, tmp_path):
    import geopandas as gpd
    import shapely

    geojson = tmp_path / "utm.geojson"
    ring = [[500_000, 6_700_000], [502_000, 6_700_000], [502_000, 6_702_000], [500_000, 6_700_000]]
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    result = invoke(runner, "grid", "--boundary", geojson, "--gpkg", tmp_path / "a.gpkg")
    assert result.exit_code == 1 and "no CRS of its own" in result.output
    assert "--boundary-crs" in result.output and "ogr2ogr -a_srs" in result.output
    args = ("grid", "--boundary", geojson, "--boundary-crs", "EPSG:32635", "-q")
    assert invoke(runner, *args, "--gpkg", tmp_path / "b.gpkg").exit_code == 0

    city = tmp_path / "city.gpkg"
    for name, size in (("districts", 1000), ("parks", 3000)):
        frame = gpd.GeoDataFrame(
            geometry=[shapely.box(500_000, 6_700_000, 500_000 + size, 6_700_000 + size)], crs=32635
        )
        frame.to_file(city, layer=name)
    result = invoke(runner, "grid", "--boundary", city, "--gpkg", tmp_path / "c.gpkg")
    assert result.exit_code == 1 and "has 2 layers" in result.output
    assert "--layer" in result.output and "districts (Polygon), parks (Polygon)" in result.output
    assert not (tmp_path / "c.gpkg").exists()
    result = invoke(
        runner, "grid", "--boundary", city, "--layer", "parks", "--gpkg", tmp_path / "c.gpkg", "-q"
    )
    assert result.exit_code == 0, result.output
    assert len(read_layer(tmp_path / "c.gpkg", C.LAYER_REGIONS)) == 9


@pytest.fixture
def read_only_mount(tmp_path):
    """A tmpfs at tmp_path/"ro" whose ``remount()`` makes it read-only (root's permissions do
    not stop a write, a read-only file system does). Skipped where mounting is not allowed."""
    import os

    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    require(
        mounted.returncode == 0,
        "mounting a tmpfs",
        f"run as root or with CAP_SYS_ADMIN ({mounted.stderr.strip()})",
    )

    def remount() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        assert os.statvfs(folder).f_flag & os.ST_RDONLY

    try:
        yield folder, remount
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_rerun_on_read_only_storage_is_a_clear_error(runner, read_only_mount):
    import socket

    folder, remount = read_only_mount
    gpkg = folder / "k" / "run.gpkg"
    assert invoke(runner, "grid", "--city", "kotka", "--gpkg", gpkg, "-q").exit_code == 0
    # a lock left behind by a process that is gone (a crash before the storage went read-only)
    stale = {"pid": 2**22 + 7, "host": socket.gethostname(), "since": 0, "command": "urbangeo"}
    (folder / "k" / ".urbangeo.lock").write_text(json.dumps(stale))
    remount()
    for args in (
        ("grid", "--city", "kotka", "--gpkg", gpkg, "--overwrite"),
        ("sample", "--gpkg", gpkg),
    ):
        result = invoke(runner, *args)
        assert result.exit_code == 1, result.output
        assert "is on read-only storage" in result.output
        assert "Copy the run folder to writable storage" in result.output
    assert {C.LAYER_BOUNDARY, C.LAYER_REGIONS} <= set(list_layers(gpkg))  # still readable


def test_run_takes_the_area_options_of_grid_and_a_roads_file(runner, tmp_path, monkeypatch):
    """`urbangeo run --bbox/--boundary/--place/--roads` reach the stages as grid's and
    sample's own settings (the whole run for a bbox inside Kotka is tests/geo's offline test)."""
    import urbangeo.pipeline as pipeline

    seen = {}

    def capture(run_dir, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr("urbangeo_cli.run.run_pipeline", capture)
    roads = tmp_path / "city.osm.pbf"
    roads.write_bytes(b"")
    result = invoke(
        runner, "run", "--bbox", "26.93,60.52,26.97,60.54", "--roads", roads, "-o", tmp_path / "r"
    )
    assert result.exit_code == 0, result.output
    assert seen["grid__bbox"] == "26.93,60.52,26.97,60.54" and seen["sample__roads"] == roads
    config = pipeline.resolve_config(
        None, **{k: v for k, v in seen.items() if "__" in k and v is not None}
    )
    assert "city" not in config["grid"]  # the area given replaces the default city
    assert config["sample"]["roads"] == roads
    with pytest.raises(InputError, match="Did you mean"):  # checked before any work
        pipeline.resolve_config(None, grid__bbox="-33.9,151.2,-33.8,151.3")
