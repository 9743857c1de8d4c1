"""What each urbangeo stage takes and writes, as plain data shared by the panel and Processing.

Pure Python (no QGIS import). A stage is one ``urbangeo`` subcommand; its parameters map to
command-line flags, and the layers it adds to the run's GeoPackage are loaded into QGIS after it.
They are read from ``stages.json``, which urbangeo writes from its stage settings when it
builds or installs the plugin.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Param:
    """A stage parameter: a Processing parameter and the flag it becomes."""

    name: str
    flag: str
    kind: str  # number | int | enum | string | list | file | output | vector | extent | bool
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


#: Written by `urbangeo qgis-plugin build|install` from urbangeo's own stage settings, so that
#: the plugin offers exactly the command's flags, choices and defaults (the plugin cannot
#: import urbangeo: it runs in QGIS's Python, urbangeo in the user's environment).
STAGES_JSON = Path(__file__).with_name("stages.json")


def _load() -> tuple[dict[str, Stage], dict]:
    try:
        data = json.loads(STAGES_JSON.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RuntimeError(
            f"{STAGES_JSON} is missing: install the plugin with `urbangeo qgis-plugin install` "
            "(or build its zip with `urbangeo qgis-plugin build`)."
        ) from None
    stages = {
        name: Stage(
            name,
            entry["title"],
            entry["help"],
            tuple(
                Param(
                    p["name"],
                    p["flag"],
                    p["kind"],
                    p["label"],
                    p["default"],
                    tuple(p["options"]),
                    p["optional"],
                )
                for p in entry["params"]
            ),
            tuple(entry["layers"]),
        )
        for name, entry in data["stages"].items()
    }
    return stages, data["run"]


STAGES, RUN_DEFAULTS = _load()


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
        if param.kind == "list":
            for item in str(value).split(","):
                if item.strip():
                    args += [param.flag, item.strip()]
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
    cell_size: float | None = None,
    interval: float | None = None,
    network: str | None = None,
) -> list[str]:
    """Arguments of ``urbangeo run`` (the whole pipeline for a bundled city); settings left
    out take the default profile's values."""
    cell_size = RUN_DEFAULTS["cell_size"] if cell_size is None else cell_size
    interval = RUN_DEFAULTS["interval"] if interval is None else interval
    network = RUN_DEFAULTS["network"] if network is None else network
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
