"""Worker processes for CPU-bound Python work that threads cannot spread (the GIL holds it).

:func:`ordered_map` runs a function over items in ``workers`` processes and yields the results
in the items' order, with at most ``window`` items in flight, so that memory stays bounded
however many items there are. Each worker runs one BLAS/OpenMP/torch thread
(:func:`~urbangeo.model.threads.one_thread`), so N workers use N cores, and ignores Ctrl-C:
the parent decides what stops. The workers are spawned, not forked: the parent may hold
threads, and a fork server (which the caption stage starts with its own preloaded modules,
:mod:`urbangeo.captions.workers`) keeps the modules it was started with for the whole process.

An exception in a worker comes back as a :class:`Failure` (exceptions do not always pickle)
and is raised in the parent as the :class:`~urbangeo.errors.InputError` it was, or as a
:class:`WorkerError`, once every result before it has been yielded; a worker that dies (killed,
out of memory) gives a :class:`WorkerError` too. When the caller stops early (an error of its
own, Ctrl-C), queued items are dropped and the running ones finish before it goes on.
"""

from __future__ import annotations

import signal
import sys
import traceback
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from urbangeo.errors import InputError, UrbangeoError

T = TypeVar("T")
R = TypeVar("R")


class WorkerError(UrbangeoError):
    """A worker process failed or died; what finished before it was kept."""


@dataclass(frozen=True)
class Failure:
    """An exception raised in a worker, as plain data (exceptions do not always pickle)."""

    kind: str
    message: str
    hint: str | None
    trace: str
    input_error: bool


def guarded(func: Callable[..., R], *args: Any) -> R | Failure:
    """``func(*args)`` in a worker, its exception returned as a :class:`Failure`."""
    try:
        result = func(*args)
    except Exception as exc:
        return Failure(
            type(exc).__name__,
            getattr(exc, "message", None) or str(exc),
            getattr(exc, "hint", None),
            traceback.format_exc(),
            isinstance(exc, InputError),
        )
    if "torch" in sys.modules:  # imported by the work (spaCy's first parse): one thread
        sys.modules["torch"].set_num_threads(1)
    return result


def failure_error(failure: Failure, what: str, *, hint: str | None = None) -> UrbangeoError:
    """The error for ``failure`` (from the work on ``what``): the input error it was, or a
    :class:`WorkerError` with the worker's traceback (and ``hint``, or the default one)."""
    if failure.input_error:
        return InputError(failure.message, hint=failure.hint)
    return WorkerError(
        f"A worker failed on {what}: {failure.kind}: {failure.message}\n"
        f"Worker traceback:\n{failure.trace.rstrip()}",
        hint=hint
        or "What finished before the error was kept: once the cause is fixed, the same "
        "command continues from there; --workers 1 runs the work in this process.",
    )


def raise_failure(failure: Failure, what: str) -> NoReturn:
    """Raise ``failure`` (from the work on ``what``) in the parent."""
    raise failure_error(failure, what)


def broken_pool_error() -> WorkerError:
    """The error for a worker process that stopped unexpectedly."""
    return WorkerError(
        "A worker process stopped unexpectedly (killed, or out of memory?); what the others "
        "finished was kept.",
        hint="Run the same command again to continue; --workers 1 does the work in this "
        "process (slower, with less memory).",
    )


def choose_workers(workers: int | str | None, *, tasks: int | None = None) -> int:
    """The worker processes for ``workers`` (a number, or ``"auto"``: one per core this
    process may run on), never more than ``tasks``, at least one."""
    from urbangeo.model.threads import available_cores

    n = available_cores() if workers is None or workers == "auto" else int(workers)
    if tasks is not None:
        n = min(n, tasks)
    return max(1, n)


def worker_setup() -> None:
    """What every worker process does first: one thread, and Ctrl-C left to the parent."""
    from urbangeo.model.threads import one_thread

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    one_thread()


def _ready() -> None:
    """Nothing: submitted once per worker to start them all at once."""


def start_all(executor: ProcessPoolExecutor, workers: int) -> ProcessPoolExecutor:
    """``executor`` with its ``workers`` processes started now (not on first use)."""
    # A new process imports the caller's __main__ script again, which runs the whole script
    # once more when it lacks `if __name__ == "__main__":`. The workers need nothing from it
    # (their work lives in urbangeo), so they start without it: each submit below starts one
    # process, all of them now.
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        for _ in range(workers):
            executor.submit(_ready)
    finally:
        if main is not None:
            sys.modules["__main__"] = main
    return executor


def spawn_executor(workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes, all started now, each with one thread and Ctrl-C
    ignored (the caller shuts the executor down)."""
    import multiprocessing

    executor = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=worker_setup
    )
    return start_all(executor, workers)


def ordered_map(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    window: int | None = None,
    what: Callable[[T], str] = str,
) -> Iterator[R]:
    """``func(item)`` for each item, run in ``workers`` processes, yielded in order.

    ``items`` is read as the workers free up (at most ``window`` items in flight, default
    ``workers + 1``). ``func`` must be importable by reference (a module-level function of an
    importable module) and so must the items and results be picklable. ``what(item)`` names an
    item in errors.
    """
    window = max(1, window if window is not None else workers + 1)
    pool = spawn_executor(workers)
    queue: deque[tuple[T, Future[R | Failure]]] = deque()

    def take() -> R:
        item, future = queue.popleft()
        result = future.result()
        if isinstance(result, Failure):
            raise_failure(result, what(item))
        return result

    try:
        for item in items:
            queue.append((item, pool.submit(guarded, func, item)))
            while len(queue) >= window:
                yield take()
        while queue:
            yield take()
    except BrokenProcessPool:
        raise broken_pool_error() from None
    finally:
        for _, future in queue:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
