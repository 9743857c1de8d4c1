"""Worker processes for the caption stage's CPU-bound work: OSM captions and caption parsing.

Threads do not help there (the work is Python, held by the GIL), so :class:`WorkerPool` runs
chunks of it in ``--workers`` processes, started on first use, each with one BLAS/OpenMP/torch
thread so that N workers use N cores. They are forked from a fork server (never from the
parent, which may hold torch threads), which imports what they need (geopandas, spaCy's
pipeline when captions will be parsed) once for all of them; where there is no fork server
(Windows) they are spawned and load it each. Each worker gets a pickled copy of what the stage
prepared (the captioner with its OSM layers) once, when it starts. Results come back to the
parent in submission order and the parent alone writes the caches, so a run with N workers
writes what a run with one does, in the same order.

A worker never takes Ctrl-C itself: the parent stops submitting, lets the running chunks
finish and keeps their results. An exception in a worker comes back as a
:class:`WorkerError` (or the :class:`~urbangeo.errors.InputError` it was) naming the chunk,
after everything finished before it has been kept; a worker that dies (killed, out of memory)
gives a :class:`WorkerError` too.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from urbangeo.errors import InputError, UrbangeoError
from urbangeo.model.threads import one_thread

T = TypeVar("T")
R = TypeVar("R")

#: What a worker holds: the objects the pool was started with (``captioner``...).
_STATE: dict[str, Any] = {}


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


def _init(payload: bytes) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    one_thread()
    _STATE.update(pickle.loads(payload))


def _ready() -> int:
    return os.getpid()


def _guarded(func: Callable[..., R], *args: Any) -> R | Failure:
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
    if "torch" in sys.modules:  # spaCy's first parse imports torch (thinc): one thread
        sys.modules["torch"].set_num_threads(1)
    return result


def state(name: str) -> Any:
    """An object the pool was started with, in a worker."""
    return _STATE[name]


class WorkerPool:
    """``workers`` processes (started on first use) that run chunks of work in order.

    ``context`` gives the objects every worker needs (pickled once per worker; a callable, so
    that nothing is pickled when no worker is ever started). With ``workers`` 1 the work runs
    in this process.
    """

    def __init__(
        self,
        workers: int,
        context: Callable[[], dict[str, Any]] | None = None,
        *,
        parses: bool = False,
    ) -> None:
        self.workers = max(1, int(workers))
        self._context = context or dict
        #: The workers will parse captions: the fork server loads spaCy for them.
        self.parses = parses
        self._executor: ProcessPoolExecutor | None = None

    @property
    def parallel(self) -> bool:
        """Whether work goes to worker processes."""
        return self.workers > 1

    def _start(self) -> ProcessPoolExecutor:
        if self._executor is not None:
            return self._executor
        import multiprocessing

        payload = pickle.dumps(self._context(), protocol=pickle.HIGHEST_PROTOCOL)
        context: Any
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            # Takes effect when this process first starts its fork server (not the caller's
            # __main__, which the default list holds: see below).
            preload = ["urbangeo.captions._preload"]
            if self.parses:
                preload.append("urbangeo.captions._preload_spacy")
            context.set_forkserver_preload(preload)
        else:
            context = multiprocessing.get_context("spawn")
        executor = self._executor = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_init, initargs=(payload,)
        )
        # A new process imports the caller's __main__ script again, which runs the whole
        # script once more when it lacks `if __name__ == "__main__":`. The workers need nothing
        # from it (their work lives in urbangeo), so they start without it: each submit below
        # starts one process, all of them now.
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            for _ in range(self.workers):
                executor.submit(_ready)
        finally:
            if main is not None:
                sys.modules["__main__"] = main
        return executor

    def run(
        self,
        func: Callable[..., R],
        chunks: Sequence[T],
        settle: Callable[[T, R], Any],
        *,
        args: tuple = (),
        what: Callable[[T], str] = str,
        local_args: tuple | None = None,
    ) -> None:
        """``settle(chunk, func(chunk, *args))`` for each chunk, in order, in this thread.

        ``func`` runs in the workers (``local_args`` replace ``args`` when it runs here: with
        one worker, or a single chunk). ``what(chunk)`` names a chunk in errors. After an
        error, the chunks already running finish and are settled; the rest are dropped.
        """
        if not chunks:
            return
        if not self.parallel or len(chunks) == 1:  # one chunk: not worth starting processes
            for chunk in chunks:
                settle(chunk, func(chunk, *(args if local_args is None else local_args)))
            return
        from urbangeo.io.pool import BoundedPool

        failed: list[tuple[T, Failure]] = []

        def take(chunk: T, result: R | Failure) -> None:
            if isinstance(result, Failure):
                failed.append((chunk, result))
            else:  # also after a failure: what finished is kept
                settle(chunk, result)

        executor = self._start()
        try:
            with BoundedPool(self.workers, settle=take, executor=executor) as pool:
                for chunk in chunks:
                    if failed:
                        break
                    pool.submit(chunk, _guarded, func, chunk, *args)
        except BrokenProcessPool:
            self.close()
            raise WorkerError(
                "A worker process stopped unexpectedly (killed, or out of memory?); what the "
                "others finished was kept.",
                hint="Run the same command again to continue; --workers 1 does the work in "
                "this process (slower, with less memory).",
            ) from None
        if failed:
            chunk, failure = failed[0]
            if failure.input_error:
                raise InputError(failure.message, hint=failure.hint)
            raise WorkerError(
                f"A worker failed on {what(chunk)}: {failure.kind}: {failure.message}\n"
                f"Worker traceback:\n{failure.trace.rstrip()}",
                hint="What finished before the error was kept: once the cause is fixed, the "
                "same command continues from there; --workers 1 runs the work in this process.",
            )

    def close(self) -> None:
        """Stop the worker processes (queued work is dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def choose_workers(workers: int | str | None, *, tasks: int | None = None) -> int:
    """The worker processes for ``workers`` (a number, or ``"auto"``: one per core this
    process may run on), never more than ``tasks``, at least one."""
    from urbangeo.model.threads import available_cores

    n = available_cores() if workers is None or workers == "auto" else int(workers)
    if tasks is not None:
        n = min(n, tasks)
    return max(1, n)


def picklable_by_reference(obj: object) -> bool:
    """Whether a worker can rebuild ``obj``: its class lives in an importable module (not in
    the caller's ``__main__`` script, which the workers do not import)."""
    return type(obj).__module__ != "__main__"
