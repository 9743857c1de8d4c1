"""Helpers shared by the tests of several areas and by the benchmarks: the package's modules,
what an import loads, GeoTIFFs, loopback HTTP servers (no network)."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: What the light parts of the package (settings, geo, imagery, the CLI) never load.
TORCH = ("torch", "open_clip", "torchvision")


def package_modules(folder: Path) -> dict[str, Path]:
    """The dotted name of every module under ``folder`` (a package of the repository), with
    its file, in file order."""
    modules = {}
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def modules_loaded_by(code: str, modules: Iterable[str] = TORCH) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded once it ran ``code`` (which fails
    the test if it raises)."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {tuple(modules)!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.splitlines()[-1])


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    left: float,
    top: float,
    pixel: float,
    crs: object | None,
    **options: Any,
) -> Path:
    """``data`` (rows × cols, or bands × rows × cols) as a GeoTIFF of square ``pixel`` s whose
    top-left corner is (``left``, ``top``); ``options``: more creation options (nodata...)."""
    import rasterio
    from rasterio.transform import from_origin

    bands = data[np.newaxis] if data.ndim == 2 else data
    profile = {
        "driver": "GTiff",
        "width": bands.shape[2],
        "height": bands.shape[1],
        "count": bands.shape[0],
        "dtype": bands.dtype.name,
        "transform": from_origin(left, top, pixel, pixel),
        **({} if crs is None else {"crs": crs}),
        **options,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
    return path


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and sends whole replies (:meth:`reply`)."""

    def reply(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        """``status`` with ``headers`` and ``body`` (its Content-Length added)."""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Loopback:
    """A threaded HTTP server on 127.0.0.1 that serves ``handler`` from now on, at ``url``
    (``path`` appended); :meth:`close` stops it."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], path: str = "") -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def qgis_metadata_document(gpkg: Path, layer: str) -> str:
    """The QGIS metadata document that urbangeo wrote for ``layer`` (licence, attribution)."""
    import sqlite3

    from urbangeo.model.encoders.region_encoder import QGIS_METADATA_URI

    with sqlite3.connect(gpkg) as con:
        (xml,) = con.execute(
            "SELECT metadata FROM gpkg_metadata m JOIN gpkg_metadata_reference r ON "
            "r.md_file_id = m.id WHERE r.table_name = ? AND m.md_standard_uri = ?",
            (layer, QGIS_METADATA_URI),
        ).fetchone()
    return str(xml)


#: The environment of a child process run under a memory limit: one thread per library, few
#: malloc arenas, and a fixed mmap threshold, so that freed blocks of rows go back to the system
#: at once (glibc otherwise raises it and keeps them in its heap: address space, not live memory).
LIMITED_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "1048576",
    "PATH": "/usr/bin:/bin",
    "URBANGEO_PROGRESS": "none",
}


#: What every child of :func:`run_limited` starts with: ``vm_mb()``, its address space in MB.
LIMITED_PRELUDE = """
import resource

def vm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) / 1024
"""


def run_limited(code: str, *args: object, timeout: float = 300) -> str:
    """Run ``code`` (which sets its own memory limit) in a fresh Python from the repository
    with ``args``; its standard output, once it exited 0 having printed a ``RESULT`` line."""
    proc = subprocess.run(
        [sys.executable, "-c", LIMITED_PRELUDE + code, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=LIMITED_ENV,
        timeout=timeout,
    )
    assert proc.returncode == 0 and "RESULT " in proc.stdout, proc.stderr[-3000:]
    return proc.stdout
