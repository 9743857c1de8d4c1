"""Packaging and installing the QGIS plugin that ships with urbangeo.

The plugin's files live in the repository's ``qgis_plugin/`` and install with urbangeo as the
package ``urbangeo_qgis``; in a QGIS profile the plugin folder is ``urbangeo_qgis``.
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from importlib import resources
from pathlib import Path

from urbangeo.errors import InputError, OutputError

PLUGIN_DIR_NAME = "urbangeo_qgis"
_SKIP = {"__pycache__", "executable.txt"}


def plugin_source() -> Path:
    """The folder holding the plugin's files."""
    return Path(str(resources.files(PLUGIN_DIR_NAME)))


def plugin_version() -> str:
    """The version in the plugin's metadata.txt."""
    for line in (plugin_source() / "metadata.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    raise InputError("The plugin's metadata.txt has no version.")


def _plugin_files() -> list[Path]:
    root = plugin_source()
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not (_SKIP & set(p.relative_to(root).parts)) and p.suffix != ".pyc"
    )


def build_plugin_zip(out_dir: str | os.PathLike = "dist") -> Path:
    """Write ``urbangeo_qgis-VERSION.zip``, installable with QGIS's "Install from ZIP"."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN_DIR_NAME}-{plugin_version()}.zip"
    tmp = target.with_suffix(".zip.tmp")
    root = plugin_source()
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in _plugin_files():
            archive.write(path, f"{PLUGIN_DIR_NAME}/{path.relative_to(root).as_posix()}")
    os.replace(tmp, target)
    return target


def default_profile_dir() -> Path:
    """QGIS's default user profile folder on this operating system."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "QGIS" / "QGIS3" / "profiles" / "default"


def current_executable() -> str | None:
    """The ``urbangeo`` command of this Python environment, if installed."""
    candidate = Path(sys.executable).with_name("urbangeo.exe" if os.name == "nt" else "urbangeo")
    return str(candidate) if candidate.exists() else shutil.which("urbangeo")


def install_plugin(
    profile_dir: str | os.PathLike | None = None, *, executable: str | None = None
) -> Path:
    """Copy the plugin into a QGIS profile and record which urbangeo command it should run.

    Replaces an older copy. Returns the installed plugin folder.
    """
    profile = Path(profile_dir) if profile_dir else default_profile_dir()
    plugins = profile / "python" / "plugins"
    try:
        plugins.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot create {plugins}: {exc.strerror}.",
            hint="Pass --profile with the folder of a QGIS profile you can write to.",
        ) from exc
    target = plugins / PLUGIN_DIR_NAME
    staging = plugins / f".{PLUGIN_DIR_NAME}.new"
    shutil.rmtree(staging, ignore_errors=True)
    root = plugin_source()
    for path in _plugin_files():
        dest = staging / path.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    exe = executable or current_executable()
    if exe:
        (staging / "executable.txt").write_text(exe + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target
