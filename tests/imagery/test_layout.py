"""The imagery package's layout: no import cycles, registries that name what the factories take."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import urbangeo.imagery
from tests.helpers import modules_loaded_by, package_modules
from urbangeo.errors import InputError
from urbangeo.imagery.sources import TILE_SOURCES, TileOptions, TileSource, make_tile_source
from urbangeo.imagery.streetview import (
    ENV_URLS,
    PROVIDERS,
    ProviderOptions,
    StreetViewProvider,
    make_provider,
)

MODULES = list(package_modules(Path(urbangeo.imagery.__file__).parent))


def test_every_module_is_found():
    assert {"urbangeo.imagery.sources.xyz", "urbangeo.imagery.streetview.baidu"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module):
    # A fresh interpreter per module: an import cycle shows only when its module comes first.
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_names_are_known_without_importing_the_implementations():
    code = (
        "import sys, urbangeo.imagery.sources as s, urbangeo.imagery.streetview as v; "
        "print(list(s.TILE_SOURCES), list(v.PROVIDERS)); "
        "print(sorted(m for m in sys.modules if m.rpartition('.')[2] in "
        "('raster', 'xyz', 'render', 'folder', 'web', 'google', 'mapillary', 'baidu')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, imported = out.stdout.splitlines()
    assert names == "['osm', 'raster', 'xyz'] ['folder', 'google', 'mapillary', 'baidu']"
    assert imported == "[]"


@pytest.mark.parametrize("name", list(TILE_SOURCES))
def test_every_tile_source_name_reaches_its_source(name):
    assert issubclass(TILE_SOURCES.get(name), TileSource)
    # Past the registry: the source itself refuses options without a location.
    with pytest.raises(InputError) as error:
        make_tile_source(name.upper(), TileOptions())
    assert "Unknown" not in str(error.value)


def test_an_unknown_tile_source_lists_the_choices():
    with pytest.raises(InputError, match="Unknown tile source 'wms'") as error:
        make_tile_source("wms", TileOptions(location="x"))
    assert error.value.hint == "Choose one of: osm, raster, xyz."


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_every_provider_name_reaches_its_provider(name, monkeypatch):
    cls = PROVIDERS.get(name)
    assert issubclass(cls, StreetViewProvider)
    assert cls.name == name
    for env in ("GOOGLE_MAPS_API_KEY", "MAPILLARY_TOKEN", "BAIDU_MAP_AK"):
        monkeypatch.delenv(env, raising=False)
    # Past the registry: the provider itself asks for its folder or its key.
    with pytest.raises(InputError, match=r"needs a (folder|key)"):
        make_provider(f" {name.title()} ", ProviderOptions())


def test_an_unknown_provider_lists_the_choices():
    with pytest.raises(InputError, match="Unknown street-view provider 'bing'") as error:
        make_provider("bing")
    assert error.value.hint == "Choose one of: folder, google, mapillary, baidu."


def test_web_providers_can_be_pointed_elsewhere():
    assert ENV_URLS == {
        "google": "URBANGEO_GOOGLE_URL",
        "mapillary": "URBANGEO_MAPILLARY_URL",
        "baidu": "URBANGEO_BAIDU_URL",
    }


def test_the_settings_list_sources_and_providers_without_heavy_imports():
    code = (
        "from urbangeo.settings import StreetviewSettings, TilesSettings; "
        "StreetviewSettings(provider='google'); TilesSettings(render='osm'); "
        "assert StreetviewSettings.fields()[0].spec.choice_list() is None"
    )
    assert modules_loaded_by(code, ("numpy", "geopandas", "PIL", "requests", "rasterio")) == []
    assert TILE_SOURCES.names()[0] == "osm"
