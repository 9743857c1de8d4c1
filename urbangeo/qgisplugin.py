"""Packaging and installing the QGIS plugin that ships with urbangeo.

The plugin's files live in the repository's ``qgis_plugin/`` and install with urbangeo as the
package ``urbangeo_qgis``; in a QGIS profile the plugin folder is ``urbangeo_qgis``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

from urbangeo.errors import InputError
from urbangeo.io.files import atomic_path, make_folder, write_text_atomic
from urbangeo.settings.profiles import DEFAULT_PROFILE as DEFAULT_PROFILE_NAME

PLUGIN_DIR_NAME = "urbangeo_qgis"
_SKIP = {"__pycache__", "executable.txt", "stages.json"}


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
    root = plugin_source()
    stages = json.dumps(plugin_stages(), indent=1, ensure_ascii=False) + "\n"
    with (
        atomic_path(target, suffix=".zip") as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for path in _plugin_files():
            archive.write(path, f"{PLUGIN_DIR_NAME}/{path.relative_to(root).as_posix()}")
        archive.writestr(f"{PLUGIN_DIR_NAME}/{STAGES_JSON}", stages)
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
    make_folder(
        plugins,
        name=str(plugins),
        hint="Pass --profile with the folder of a QGIS profile you can write to.",
    )
    target = plugins / PLUGIN_DIR_NAME
    staging = plugins / f".{PLUGIN_DIR_NAME}.new"
    shutil.rmtree(staging, ignore_errors=True)
    root = plugin_source()
    for path in _plugin_files():
        dest = staging / path.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    write_plugin_stages(staging)
    exe = executable or current_executable()
    if exe:
        (staging / "executable.txt").write_text(exe + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)  # a folder: atomic_path is for files
    return target


# ---- the plugin's parameters, made from the stage settings ---------------------------------

#: The plugin's description of its stages (loaded by ``qgis_plugin/stages.py``).
STAGES_JSON = "stages.json"

#: Stages the plugin offers: title, help and the layers loaded into QGIS after the stage.
PLUGIN_STAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "grid": (
        "Region grid",
        "Square regions over a boundary (a bundled city, a polygon file or a bounding box), "
        "in the local UTM zone, with region ids stable across runs.",
        ("boundary", "regions"),
    ),
    "sample": (
        "Street-view sample points",
        "A point every interval metres along the roads of the run's boundary, with the road's "
        "heading and the region that contains it.",
        ("roads", "sv_points"),
    ),
    "tiles": (
        "Overhead tiles",
        "One overhead image per region: a map rendered offline from the run's OpenStreetMap data "
        "(default), a window of a GeoTIFF, or XYZ tiles mosaicked and cut to the region; regions "
        "with too little image data or too little of their cell inside the boundary are marked "
        "as edge cells.",
        ("images", "regions"),
    ),
    "caption": (
        "Captions",
        "Captions for every image from one or several captioners (offline OSM-grounded, any "
        "OpenAI-compatible endpoint, or a local transformers model), the consensus caption "
        "chosen by CAPTURE.",
        (),
    ),
    "train": (
        "Pre-train CLIP (UrbanLN)",
        "Pre-trains CLIP on the run's image–caption pairs with 248-token text (IPSI) and "
        "momentum self-distillation; checkpoints beside the GeoPackage.",
        (),
    ),
    "embed": (
        "Region embeddings",
        "One vector per region from the frozen image encoder (mean of its images).",
        ("region_embeddings",),
    ),
    "predict": (
        "Predict indicators",
        "Prediction heads per indicator on the frozen embeddings: R², RMSE, MAE over seeds, "
        "beside a coordinates-only baseline; predictions and residuals as a layer.",
        ("predictions",),
    ),
    "cluster": (
        "Clusters",
        "PCA + KMeans of the region embeddings, with a per-cluster indicator density plot.",
        ("clusters",),
    ),
}


def _param(row: dict[str, Any]) -> dict[str, Any]:
    kinds = {"int": "int", "float": "number", "bool": "bool", "file": "file", "str": "string"}
    kind = row["plugin_kind"] or ("enum" if row["choices"] else None)
    if kind is None:
        kind = "list" if row["multiple"] else kinds.get(row["type"], "string")
    default = row["default"]
    if isinstance(default, list):
        default = ",".join(map(str, default))
    return {
        "name": row["name"].upper(),
        "flag": row["flag"],
        "kind": kind,
        "label": row["plugin"],
        "default": default,
        "options": row["choices"] or [],
        "optional": row["optional"],
    }


def plugin_stages() -> dict[str, Any]:
    """The plugin's stages and parameters, from each stage's settings declaration."""
    from urbangeo import constants as C
    from urbangeo.settings import PROFILES, STAGE_SETTINGS

    gpkg = {"name": "GPKG", "flag": "--gpkg", "kind": "file", "label": "Run GeoPackage"}
    overwrite = {
        "name": "OVERWRITE",
        "flag": "--overwrite",
        "kind": "bool",
        "label": "Replace existing layers",
        "default": False,
    }
    stages = {}
    for name, (title, help_text, layers) in PLUGIN_STAGES.items():
        rows = [r for r in STAGE_SETTINGS[name].describe() if r["plugin"] and r["cli"]]
        params = [_param(r) for r in rows]
        first = {**gpkg, "kind": "output"} if name == "grid" else gpkg
        extra = []
        if name == "train":
            extra.append(
                {
                    **overwrite,
                    "name": "RESUME",
                    "flag": "--resume",
                    "label": "Resume an interrupted run",
                }
            )
        all_params = [first, *params, *extra, overwrite]
        if name == "grid":  # the output goes last, as QGIS lays out destinations
            all_params = [*params, first, overwrite]
        stages[name] = {
            "name": name,
            "title": title,
            "help": help_text,
            "params": [
                {"default": None, "options": [], "optional": False, **p} for p in all_params
            ],
            "layers": list(layers),
        }
    demo = PROFILES[DEFAULT_PROFILE_NAME]
    run = {
        "cell_size": demo["grid"]["cell_size"],
        "interval": demo.get("sample", {}).get("interval", C.DEFAULT_INTERVAL_M),
        "network": demo.get("sample", {}).get("network", C.DEFAULT_NETWORK),
        "networks": list(C.NETWORK_TYPES),
        "profile": DEFAULT_PROFILE_NAME,
    }
    return {"stages": stages, "run": run}


def write_plugin_stages(folder: str | os.PathLike) -> Path:
    """Write :func:`plugin_stages` as ``stages.json`` into the plugin folder ``folder``."""
    path = Path(folder) / STAGES_JSON
    write_text_atomic(path, json.dumps(plugin_stages(), indent=1, ensure_ascii=False) + "\n")
    return path
