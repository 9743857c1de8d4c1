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


def test_package_data_ships_every_asset():
    """Every non-Python file of the package (the map's JavaScript, the OSM vocabulary...) is
    matched by a ``package-data`` pattern, so that a wheel holds it."""
    from fnmatch import fnmatch

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["urbangeo"]
    assets = [
        p.relative_to(ROOT / "urbangeo").as_posix()
        for p in (ROOT / "urbangeo").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert "viz/assets/regions.js" in assets
    assert [a for a in assets if not any(fnmatch(a, pat) for pat in patterns)] == []
