"""The captions package's layout: every module imports alone, one registry of captioners."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import urbangeo.captions
from urbangeo.captions.captioners import BACKENDS, CAPTIONERS, Captioner, make_captioner
from urbangeo.errors import InputError


def _modules() -> list[str]:
    found = pkgutil.walk_packages(urbangeo.captions.__path__, "urbangeo.captions.")
    return ["urbangeo.captions", *sorted(m.name for m in found)]


@pytest.mark.parametrize("module", _modules())
def test_every_module_imports_alone(module):
    """In a fresh interpreter, so that an import cycle cannot hide behind an earlier import."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_registry_names_what_make_captioner_accepts(tmp_path):
    assert BACKENDS == CAPTIONERS.names() == ("osm", "openai", "transformers")
    options = {
        "osm": {"osm_path": tmp_path / "city.osm.pbf"},
        "openai": {"base_url": "http://127.0.0.1:9/v1"},
        "transformers": {},
    }
    assert set(options) == set(CAPTIONERS)
    for name in CAPTIONERS:
        captioner = make_captioner(name, ["planner"] if name == "osm" else ["m"], **options[name])
        try:
            assert isinstance(captioner, Captioner)
            assert captioner.name == name  # the cache and the captions table record this name
        finally:
            captioner.close()


def test_an_unknown_backend_lists_the_choices():
    with pytest.raises(InputError, match="Unknown caption backend 'llava'") as info:
        make_captioner("llava", ["m"])
    for name in BACKENDS:
        assert name in info.value.hint


def test_the_backend_names_are_declared_once():
    """Only the registry spells out the choice list; everything else asks it."""
    root = Path(urbangeo.captions.__file__).parent
    for path in root.rglob("*.py"):
        if path.name != "__init__.py" or path.parent.name != "captioners":
            assert '"osm", "openai", "transformers"' not in path.read_text(), path
