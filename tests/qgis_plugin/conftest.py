"""Fixtures for the plugin tests, which run inside a real QGIS (Debian's python3-qgis 3.22).

They run under QGIS's own Python (the `.venv-qgis` environment that `make test` creates with
Debian's python3 and pytest-qgis), separately from the rest of the suite, because that is how
users run the plugin: QGIS's Python drives the `urbangeo` command of another environment.
`URBANGEO_EXECUTABLE` names that command (make test sets it to .venv/bin/urbangeo).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition, timeout: float = 120.0) -> None:
    """Spin QGIS's event loop until ``condition()`` is true."""
    from qgis.core import QgsApplication

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        QgsApplication.processEvents()
        time.sleep(0.02)


@pytest.fixture(scope="session")
def executable() -> str:
    exe = os.environ.get("URBANGEO_EXECUTABLE") or str(ROOT / ".venv" / "bin" / "urbangeo")
    assert Path(exe).exists(), f"urbangeo command not found at {exe}; run `make install`"
    return exe


@pytest.fixture(scope="session")
def installed_plugin(executable, tmp_path_factory):
    """The plugin installed into a fresh QGIS profile by `urbangeo qgis-plugin install`."""
    profile = tmp_path_factory.mktemp("profile")
    subprocess.run(
        [executable, "qgis-plugin", "install", "--profile", str(profile), "-q"], check=True
    )
    plugins = profile / "python" / "plugins"
    assert (plugins / "urbangeo_qgis" / "executable.txt").read_text().strip() == executable
    return plugins


@pytest.fixture(scope="session")
def plugin(installed_plugin, qgis_iface, qgis_processing):
    """The plugin loaded and started through QGIS's own plugin loader."""
    import qgis.utils

    sys.path.insert(0, str(installed_plugin))
    qgis.utils.plugin_paths.insert(0, str(installed_plugin))
    qgis.utils.updateAvailablePlugins()
    assert "urbangeo_qgis" in qgis.utils.available_plugins
    assert qgis.utils.loadPlugin("urbangeo_qgis")
    assert qgis.utils.startPlugin("urbangeo_qgis")
    yield qgis.utils.plugins["urbangeo_qgis"]


@pytest.fixture
def dock(plugin, tmp_path):
    dock = plugin.show_dock()
    dock.out_dir.setFilePath(str(tmp_path / "runs"))
    dock.executable.setFilePath("")
    dock.log.clear()
    yield dock
    if dock.task is not None:
        dock.cancel()
        wait_until(lambda: dock.task is None, 30)


@pytest.fixture(autouse=True)
def _no_saved_executable():
    """QGIS settings persist between runs: start every test without a saved command path."""
    from qgis.core import QgsSettings

    QgsSettings().setValue("urbangeo/executable", "")
    yield
    QgsSettings().setValue("urbangeo/executable", "")
