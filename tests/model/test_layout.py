"""The layout of ``urbangeo.model``: every module imports on its own (no import cycle), and
the settings' declarations import without torch."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import urbangeo.model
from tests.helpers import package_modules

MODULES = list(package_modules(Path(urbangeo.model.__file__).parent))


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module: str) -> None:
    done = _python(f"import {module}")
    assert done.returncode == 0, done.stderr[-2000:]


def test_settings_and_encoder_names_import_without_torch() -> None:
    done = _python(
        "import sys\n"
        "import urbangeo.model.training.config\n"
        "from urbangeo.model.encoders import ENCODERS\n"
        "print(','.join(ENCODERS.names()))\n"
        "heavy = sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [
        "trained,frozen-clip,random,resnet18,image-stats,raster,patches,geoclip-location,"
        "caption-text"
    ]


@pytest.mark.parametrize(
    "package", ["urbangeo.model", "urbangeo.model.training", "urbangeo.model.encoders"]
)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing
