"""A run of the default city up to some stage, shared by the worker benchmarks.

The scripts import it as ``from _runs import ...``: run as ``python benchmarks/x.py``, their own
folder is first on ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path

from urbangeo.settings import profile
from urbangeo.stage import run_stage

#: The settings the benchmarks measure: those of `urbangeo run`.
PROFILE = "offline-demo"


def prepared_run(root: Path, given: Path | None, stages: tuple[str, ...]) -> Path:
    """The folder of a run of the default city with ``stages`` done: ``given`` as it is, or one
    made now in ``root/inputs``."""
    if given is not None:
        return given
    folder = root / "inputs"
    folder.mkdir()
    steps = profile(PROFILE)
    for name in stages:
        run_stage(name, folder / "run.gpkg", **steps.get(name, {}))
    return folder
