"""Helpers of the io tests: checks in the system Python, where Debian's QGIS and GDAL bindings
are installed (a subprocess, as they do not import into the virtual environment)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import require

SYSTEM_PYTHON = "/usr/bin/python3"


def require_system_python(statement: str, what: str, how: str) -> None:
    """:func:`~tests.conftest.require` the system Python, able to run ``statement`` (e.g.
    ``import qgis.core``)."""
    found = Path(SYSTEM_PYTHON).exists() and (
        subprocess.run([SYSTEM_PYTHON, "-c", statement], capture_output=True).returncode == 0
    )
    require(found, what, how)


def require_qgis() -> None:
    """QGIS's Python bindings (python3-qgis)."""
    require_system_python(
        "import qgis.core", "QGIS (python3-qgis)", "apt-get install python3-qgis qgis-providers"
    )


def system_python_json(script: str, *args: str | Path, timeout: float = 120) -> Any:
    """Run the code ``script`` in the system Python with ``args``; the last line it prints,
    read as JSON (the script must succeed)."""
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
