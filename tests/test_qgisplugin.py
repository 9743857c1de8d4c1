import configparser
import importlib.util
import json
import sys
import zipfile

import pytest
from click.testing import CliRunner

from urbangeo.qgisplugin import build_plugin_zip, install_plugin, plugin_source
from urbangeo_cli.main import cli


def test_metadata_targets_qgis_3_22():
    meta = configparser.ConfigParser()
    meta.read(plugin_source() / "metadata.txt")
    general = meta["general"]
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert (plugin_source() / general["icon"]).is_file()
    assert "def classFactory(iface)" in (plugin_source() / "__init__.py").read_text()


def test_build_zip(tmp_path):
    result = CliRunner().invoke(cli, ["qgis-plugin", "build", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("urbangeo_qgis-*.zip")
    assert path == build_plugin_zip(tmp_path)
    names = zipfile.ZipFile(path).namelist()
    assert "urbangeo_qgis/__init__.py" in names and "urbangeo_qgis/metadata.txt" in names
    assert "urbangeo_qgis/LICENSE" in names
    assert all(n.startswith("urbangeo_qgis/") for n in names)
    assert not any("__pycache__" in n or n.endswith("executable.txt") for n in names)


def test_install_records_the_command(tmp_path):
    target = install_plugin(tmp_path / "profile", executable="/opt/venv/bin/urbangeo")
    assert target == tmp_path / "profile" / "python" / "plugins" / "urbangeo_qgis"
    assert (target / "executable.txt").read_text().strip() == "/opt/venv/bin/urbangeo"
    assert (target / "plugin.py").is_file()
    # reinstalling replaces the old copy
    (target / "stale.py").write_text("")
    install_plugin(tmp_path / "profile", executable="/x/urbangeo")
    assert not (target / "stale.py").exists()
    assert (target / "executable.txt").read_text().strip() == "/x/urbangeo"


def test_install_into_an_unwritable_place(tmp_path):
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(
        cli, ["qgis-plugin", "install", "--profile", str(tmp_path / "file" / "p")]
    )
    assert result.exit_code == 1
    assert "Cannot create" in result.output and "--profile" in result.output


@pytest.fixture(scope="module")
def plugin_stages(tmp_path_factory):
    """The plugin's ``stages`` module as installed (its stages.json is written at install)."""
    target = install_plugin(tmp_path_factory.mktemp("profile"), executable="/x/urbangeo")
    spec = importlib.util.spec_from_file_location("installed_stages", target / "stages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["installed_stages"] = module
    spec.loader.exec_module(module)
    return module


def test_the_zip_carries_the_generated_parameters(tmp_path):
    from urbangeo.qgisplugin import plugin_stages

    path = build_plugin_zip(tmp_path)
    data = json.loads(zipfile.ZipFile(path).read("urbangeo_qgis/stages.json"))
    assert data == json.loads(json.dumps(plugin_stages()))


def test_plugin_stages_use_only_flags_the_cli_has(plugin_stages):
    import click

    from urbangeo.settings import STAGE_SETTINGS

    STAGES, build_args = plugin_stages.STAGES, plugin_stages.build_args
    for name, stage in STAGES.items():
        command = cli.commands[name]
        flags = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}
        for param in stage.params:
            assert param.flag in flags, f"{name}: {param.flag}"
            if param.kind == "enum":  # the command checks them against the same declaration
                declared = STAGE_SETTINGS[name].fields()
                field = next(f for f in declared if f.flag == param.flag)
                assert tuple(param.options) == field.spec.choice_list(), f"{name}: {param.flag}"
        assert build_args(stage, {"GPKG": "run.gpkg", "CITY": "kotka"})[0] == name


def test_list_parameters_repeat_their_flag(plugin_stages):
    STAGES, build_args = plugin_stages.STAGES, plugin_stages.build_args

    args = build_args(STAGES["caption"], {"GPKG": "r.gpkg", "MODELS": "a, b"})
    assert args == [
        "caption",
        "--gpkg",
        "r.gpkg",
        "--backend",
        "osm",
        "--model",
        "a",
        "--model",
        "b",
    ]
