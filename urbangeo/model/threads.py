"""How many threads torch may use, chosen from the model's size and the machine.

PyTorch starts as many intra-op threads as there are cores. For a small model each operation is
too short to split, so the threads mostly wait for each other; on a machine that is busy with
other work they also wait for the cores, and OpenMP's spinning makes it worse: the default run's
training took 258 s with two threads and 31 s with one on a busy 2-core machine
(benchmarks/RESULTS.md). So: one thread for small models; for large ones, the cores that are
free (the load average tells), never more than the cores this process may run on. An explicit
choice always wins: ``OMP_NUM_THREADS`` or the caller's ``threads``.
"""

from __future__ import annotations

import os
import sys

#: Below this many parameters a model runs on one thread (the tiny CLIP has about 0.5 M).
SMALL_MODEL_PARAMS = 20_000_000


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def free_cores(cores: int | None = None) -> int:
    """Cores not busy with other work, from the 1-minute load average (at least one)."""
    cores = cores or available_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, round(cores - load + 1)))  # + 1: this process's own share


def choose_threads(n_params: int, *, threads: int | None = None) -> int:
    """The intra-op threads for a model of ``n_params`` parameters."""
    if threads:
        return threads
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    if n_params < SMALL_MODEL_PARAMS:
        return 1
    return free_cores()


def count_parameters(module: object) -> int:
    """Parameters of a torch module (0 for anything else: colour statistics...)."""
    parameters = getattr(module, "parameters", None)
    return sum(p.numel() for p in parameters()) if callable(parameters) else 0


def use_threads(module: object, *, threads: int | None = None) -> int:
    """Set torch's intra-op threads for ``module`` (a torch model); returns them."""
    import torch

    chosen = choose_threads(count_parameters(module), threads=threads)
    torch.set_num_threads(chosen)
    return chosen


#: The variables by which BLAS, OpenMP and numexpr libraries read their thread count.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def one_thread_env() -> dict[str, str]:
    """Environment variables that keep a process to one thread of numpy/torch arithmetic."""
    return {name: "1" for name in THREAD_VARIABLES}


def one_thread() -> None:
    """Make this process use one thread for BLAS, OpenMP and torch (set before they start;
    threadpoolctl and torch adjust the ones already loaded)."""
    os.environ.update(one_thread_env())
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
