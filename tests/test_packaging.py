import tomllib

from tests.helpers import ROOT, modules_loaded_by


def test_every_package_directory_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    dirs = {v: k for k, v in config["package-dir"].items()}  # folder -> package name
    found = set()
    for folder, package in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]))
    assert found == listed


def test_geo_and_cli_do_not_import_torch():
    assert modules_loaded_by("import urbangeo.pipeline, urbangeo_cli.main") == []
