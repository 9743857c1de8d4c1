"""What each urbangeo stage takes and writes, as plain data shared by the panel and Processing.

Pure Python (no QGIS import). A stage is one ``urbangeo`` subcommand; its parameters map to
command-line flags, and the layers it adds to the run's GeoPackage are loaded into QGIS after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """A stage parameter: a Processing parameter and the flag it becomes."""

    name: str
    flag: str
    kind: str  # number | int | enum | string | file | output | vector | extent | bool
    label: str
    default: object = None
    options: tuple[str, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class Stage:
    """One urbangeo subcommand."""

    name: str
    title: str
    help: str
    params: tuple[Param, ...]
    layers: tuple[str, ...]


GPKG = Param("GPKG", "--gpkg", "file", "Run GeoPackage")
NETWORKS = ("drive", "walk", "all")

STAGES: dict[str, Stage] = {
    "grid": Stage(
        "grid",
        "Region grid",
        "Square regions over a boundary (a bundled city, a polygon file or a bounding box), "
        "in the local UTM zone, with region ids stable across runs.",
        (
            Param("CITY", "--city", "string", "Bundled city", optional=True),
            Param("BOUNDARY", "--boundary", "vector", "Boundary polygon layer", optional=True),
            Param("EXTENT", "--bbox", "extent", "Extent", optional=True),
            Param("PLACE", "--place", "string", "Place name (online)", optional=True),
            Param("CELL_SIZE", "--cell-size", "number", "Cell size (m)", 1000.0),
            Param("GPKG", "--gpkg", "output", "Run GeoPackage"),
            Param("OVERWRITE", "--overwrite", "bool", "Replace existing layers", False),
        ),
        ("boundary", "regions"),
    ),
    "sample": Stage(
        "sample",
        "Street-view sample points",
        "A point every interval metres along the roads of the run's boundary, with the road's "
        "heading and the region that contains it.",
        (
            GPKG,
            Param("ROADS", "--roads", "file", "Road file (.osm.pbf, .osm, lines)", optional=True),
            Param("NETWORK", "--network", "enum", "Road network", "drive", NETWORKS),
            Param("INTERVAL", "--interval", "number", "Interval (m)", 500.0),
            Param("OVERWRITE", "--overwrite", "bool", "Replace existing layers", False),
        ),
        ("roads", "sv_points"),
    ),
}


def build_args(stage: Stage, values: Mapping[str, object]) -> list[str]:
    """The command-line arguments of ``stage`` for parameter ``values`` (by parameter name).

    Values are already plain: a file path for ``vector`` parameters, ``"W,S,E,N"`` in WGS84
    for ``extent`` ones (the QGIS side converts layers and extents before calling this).
    """
    args = [stage.name]
    for param in stage.params:
        value = values.get(param.name, param.default)
        if value is None or value == "":
            if not param.optional and param.kind != "bool":
                raise ValueError(f"{param.label} is required for {stage.title}.")
            continue
        if param.kind == "bool":
            if value:
                args.append(param.flag)
            continue
        if param.kind == "enum" and isinstance(value, int):
            value = param.options[value]
        if param.kind == "number":
            value = f"{float(value):g}"
        args += [param.flag, str(value)]
    return args


def run_args(
    *,
    city: str,
    run_dir: str,
    cell_size: float = 1000.0,
    interval: float = 500.0,
    network: str = "drive",
) -> list[str]:
    """Arguments of ``urbangeo run`` (the whole pipeline for a bundled city)."""
    return [
        "run",
        "--city",
        city,
        "-o",
        run_dir,
        "--cell-size",
        f"{float(cell_size):g}",
        "--interval",
        f"{float(interval):g}",
        "--network",
        network,
    ]
