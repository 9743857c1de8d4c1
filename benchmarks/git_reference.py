"""Load an earlier version of a module from git history, to time it in the same run.

Baselines for "before/after" ratios come from the repository's own history instead of copies
kept beside the benchmarks: ``load_at("e8984cd", "urbangeo/geo/sampling.py")``.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_at(rev: str, path: str, name: str | None = None) -> types.ModuleType:
    """The module at ``path`` as it was at git revision ``rev``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    name = name or f"{Path(path).stem}_at_{rev}"
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module  # dataclasses and typing look the module up by name
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module
