"""GeoPackage conventions: one file per run, atomic multi-layer writes, clear read errors.

Every stage reads the layers it needs from the run's GeoPackage and adds its own. Writes are
all-or-nothing and cost the size of the layers written, not of the file: GDAL writes the layers
into a small scratch GeoPackage beside the file, and one SQLite transaction moves them in
(:mod:`urbangeo.io.gpkg_tx`); a new file is the scratch file renamed. A crash or Ctrl-C never
leaves a corrupt or half-written file, and the file's other layers survive. Files are GeoPackage
1.3 (what QGIS 3.22's GDAL expects), with a spatial index on every layer and the CRS recorded.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeAlias

import geopandas as gpd
import pandas as pd
import pyogrio

from urbangeo import constants as C
from urbangeo.errors import InputError, MissingLayerError, OutputError
from urbangeo.io import gpkg_tx
from urbangeo.io.files import atomic_path, ensure_writable_file
from urbangeo.io.spool import LayerChunks

#: What a layer write takes: a frame, or an attribute layer's rows in chunks.
Layer: TypeAlias = gpd.GeoDataFrame | pd.DataFrame | LayerChunks

#: The command that writes each layer, for the hint when a layer is missing.
PRODUCER = {
    C.LAYER_BOUNDARY: "urbangeo grid",
    C.LAYER_REGIONS: "urbangeo grid",
    C.LAYER_ROADS: "urbangeo sample",
    C.LAYER_SV_POINTS: "urbangeo sample",
    C.LAYER_IMAGES: "urbangeo tiles (or urbangeo streetview)",
    C.LAYER_CAPTIONS: "urbangeo caption",
    C.LAYER_REGION_EMBEDDINGS: "urbangeo embed",
    C.LAYER_INDICATORS: "urbangeo indicators",
    C.LAYER_PREDICTIONS: "urbangeo predict",
    C.LAYER_CLUSTERS: "urbangeo cluster",
}

#: Declared geometry type of each known layer, so that an empty layer still opens in QGIS
#: as the right kind of vector layer.
GEOMETRY_TYPE = {
    C.LAYER_BOUNDARY: "MultiPolygon",
    C.LAYER_REGIONS: "Polygon",
    C.LAYER_ROADS: "LineString",
    C.LAYER_SV_POINTS: "Point",
    C.LAYER_IMAGES: "Point",
    C.LAYER_REGION_EMBEDDINGS: "Polygon",
    C.LAYER_PREDICTIONS: "Polygon",
    C.LAYER_CLUSTERS: "Polygon",
}


def ensure_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any work, if the GeoPackage ``path`` cannot be written."""
    path = Path(path)
    if path.suffix.lower() != ".gpkg" and not path.is_dir():
        raise OutputError(
            f"Output path {path} does not end in .gpkg.",
            hint="urbangeo writes GeoPackages; name the output like run.gpkg.",
        )
    if path.is_dir():
        raise OutputError(
            f"Output path {path} is a folder.", hint="Give a file name ending in .gpkg."
        )
    return ensure_writable_file(path)


def check_can_write(path: str | os.PathLike, layers: list[str], *, overwrite: bool = False) -> Path:
    """Fail before any work if ``layers`` cannot be written to ``path``.

    The path must be writable, and layers that exist already need ``overwrite``.
    """
    path = ensure_writable(path)
    clashes = sorted(set(list_layers(path)) & set(layers))
    if clashes and not overwrite:
        raise OutputError(
            f"Layer(s) {', '.join(clashes)} already exist in {path}.",
            hint="Pass --overwrite (Python: overwrite=True) to replace them, or choose another "
            "file.",
        )
    return path


def list_layers(path: str | os.PathLike) -> list[str]:
    """Names of the layers (spatial and attribute tables) in a GeoPackage; [] if absent."""
    path = Path(path)
    if not path.exists():
        return []
    gpkg_tx.roll_back_hot_journal(path)  # after a crash in a commit; GDAL cannot
    try:
        return [str(name) for name in pyogrio.list_layers(path)[:, 0]]
    except Exception as exc:
        raise InputError(
            f"{path} is not a readable GeoPackage ({exc}).",
            hint="Pass the GeoPackage written by `urbangeo grid` (-o/--gpkg).",
        ) from exc


def read_layer(path: str | os.PathLike, layer: str) -> gpd.GeoDataFrame:
    """Read one layer; a missing file or layer names the command that writes it."""
    path = Path(path)
    producer = PRODUCER.get(layer, "the stage that writes it")
    if not path.exists():
        raise MissingLayerError(
            f"GeoPackage {path} does not exist.",
            hint=f"Create it first, e.g. `urbangeo grid --city {C.DEFAULT_CITY} -o {path}`.",
        )
    if layer not in list_layers(path):
        raise MissingLayerError(
            f"Layer '{layer}' is not in {path}.",
            hint=f"Run `{producer}` on this GeoPackage first.",
        )
    frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    if layer in (C.LAYER_IMAGES, C.LAYER_CAPTIONS):
        from urbangeo.imagery.kinds import normalize_kinds

        normalize_kinds(frame)  # kinds of runs written by urbangeo 0.1 ("satellite")
    return frame


def write_layers(
    path: str | os.PathLike,
    layers: Mapping[str, Layer],
    *,
    overwrite: bool = False,
    styles: bool = False,
) -> Path:
    """Write several layers into ``path`` atomically: all of them land, or none.

    ``styles``: store each layer's default style (``layer_styles``, as QGIS saves it) in the
    same write, so that the file opens styled in QGIS.

    Layers that already exist are replaced only with ``overwrite=True``; the file's other
    layers are kept. Returns the path.
    """
    path = check_can_write(path, list(layers), overwrite=overwrite)
    if not layers:
        return path
    if not path.exists():
        return _write_by_copy(path, layers, styles=styles)  # nothing to copy: a new file
    chosen = _styles(layers) if styles else {}
    with gpkg_tx.scratch_path(path) as scratch:
        with gpkg_tx.unsynced():
            gpkg_tx.seed(scratch, path)
            for name, frame in layers.items():
                _write_one(scratch, name, frame)
        try:
            gpkg_tx.move_layers(scratch, path, list(layers), then=_add_styles(chosen))
            return path
        except gpkg_tx.Unsupported:
            # The file holds something the transaction cannot move safely (a tile table,
            # related tables, a CRS record of the same id with another meaning, tables a
            # newer GDAL writes): copy the whole file as before, the slow, sure way.
            pass
    return _write_by_copy(path, layers, styles=styles)


def _write_by_copy(path: Path, layers: Mapping[str, Layer], *, styles: bool) -> Path:
    """Write ``layers`` into a copy of ``path`` that replaces it (costs the file's size): a new
    file, and the fallback of :func:`write_layers`."""
    # Also on KeyboardInterrupt: the original file is untouched until the final os.replace.
    with atomic_path(path, suffix=".gpkg") as tmp:
        if path.exists():
            shutil.copyfile(path, tmp)
        for name, frame in layers.items():
            _write_one(tmp, name, frame)
        if styles:
            from urbangeo.io.styles import write_styles

            write_styles(tmp, _styles(layers))
    return path


def _styles(layers: Mapping[str, Layer]) -> dict:
    from urbangeo.io.styles import styles_for

    return styles_for(layers)


def _add_styles(chosen: dict) -> Callable[[sqlite3.Connection], object] | None:
    if not chosen:
        return None
    from urbangeo.io.styles import add_styles

    return lambda con: add_styles(con, chosen)


def _write_one(path: Path, layer: str, frame: Layer) -> None:
    if isinstance(frame, LayerChunks):
        written = False
        for part in frame:
            if len(part):
                _write_frame(path, layer, part, append=written)
                written = True
        if not written:
            _write_frame(path, layer, frame.empty, append=False)
        return
    _write_frame(path, layer, frame, append=False)


def _write_frame(
    path: Path, layer: str, frame: gpd.GeoDataFrame | pd.DataFrame, *, append: bool
) -> None:
    if append:  # more rows of an attribute layer written by the call before
        pyogrio.write_dataframe(pd.DataFrame(frame), path, layer=layer, driver="GPKG", append=True)
        return
    is_spatial = isinstance(frame, gpd.GeoDataFrame) and frame.geometry.name in frame
    if is_spatial and frame.crs is None:
        raise OutputError(f"Layer '{layer}' has no CRS; refusing to write it without one.")
    new_file = not path.exists()
    kwargs: dict = {
        "layer": layer,
        "driver": "GPKG",
        "layer_options": {"SPATIAL_INDEX": "YES", "OVERWRITE": "YES"},
    }
    if new_file:
        kwargs["dataset_options"] = {"VERSION": C.GPKG_VERSION}
    if is_spatial:
        declared = GEOMETRY_TYPE.get(layer)
        types = set(frame.geometry.geom_type.dropna())
        if declared is not None:
            kwargs["geometry_type"] = declared
            kwargs["promote_to_multi"] = declared.startswith("Multi")
        elif not types:
            kwargs["geometry_type"] = "Unknown"
        elif len(types) > 1:
            kwargs["promote_to_multi"] = True
        pyogrio.write_dataframe(frame, path, **kwargs)
    else:
        pyogrio.write_dataframe(pd.DataFrame(frame), path, **kwargs)


def gpkg_version(path: str | os.PathLike) -> str:
    """The GeoPackage version recorded in a file's header, e.g. ``"1.3"``."""
    with sqlite3.connect(path) as con:
        (user_version,) = con.execute("PRAGMA user_version").fetchone()
    major, rest = divmod(int(user_version), 10000)
    minor = rest // 100
    return f"{major}.{minor}"
