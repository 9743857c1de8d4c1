"""Worker processes for the caption stage's CPU-bound work: OSM captions and caption parsing.

Threads do not help there (the work is Python, held by the GIL), so :class:`WorkerPool` runs
chunks of it in ``--workers`` processes, started on first use, each with one BLAS/OpenMP/torch
thread so that N workers use N cores. They are forked from a fork server (never from the
parent, which may hold torch threads), which imports what they need (geopandas, spaCy's
pipeline when captions will be parsed) once for all of them; where there is no fork server
(Windows) they are spawned and load it each. Each worker gets a pickled copy of what the stage
prepared (the captioner with its OSM layers) once, when it starts. Results come back to the
parent in submission order and the parent alone writes the caches, so a run with N workers
writes what a run with one does, in the same order. While the parent has work of its own in
another thread (:attr:`WorkerPool.busy`: loading WordNet and MiniLM for scoring), one worker
fewer runs, so that the processes never outnumber the cores.

A worker never takes Ctrl-C itself: the parent stops submitting, lets the running chunks
finish and keeps their results. An exception in a worker comes back as a
:class:`WorkerError` (or the :class:`~urbangeo.errors.InputError` it was) naming the chunk,
after everything finished before it has been kept; a worker that dies (killed, out of memory)
gives a :class:`WorkerError` too.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

# The generic parts, shared with the tiles stage's workers (re-exported: this module's API).
from urbangeo.io.processes import (
    Failure,
    WorkerError,
    broken_pool_error,
    choose_workers,
    raise_failure,
    start_all,
    worker_setup,
)
from urbangeo.io.processes import guarded as _guarded

__all__ = [
    "Failure",
    "WorkerError",
    "WorkerPool",
    "choose_workers",
    "picklable_by_reference",
    "state",
]

T = TypeVar("T")
R = TypeVar("R")

#: What a worker holds: the objects the pool was started with (``captioner``...).
_STATE: dict[str, Any] = {}


def _init(payload: bytes) -> None:
    worker_setup()
    _STATE.update(pickle.loads(payload))


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
        #: While this returns True, this process needs a core of its own (work in another
        #: thread): at most ``workers - 1`` chunks run.
        self.busy: Callable[[], bool] | None = None
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
        return start_all(executor, self.workers)

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
                    if self.busy is not None and self.busy():
                        # One core for this process: three busy processes on two cores would
                        # slow this one, which the end of the stage waits for.
                        pool.drain(self.workers - 2)
                    pool.submit(chunk, _guarded, func, chunk, *args)
        except BrokenProcessPool:
            self.close()
            raise broken_pool_error() from None
        if failed:
            chunk, failure = failed[0]
            raise_failure(failure, what(chunk))

    def close(self) -> None:
        """Stop the worker processes (queued work is dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def picklable_by_reference(obj: object) -> bool:
    """Whether a worker can rebuild ``obj``: its class lives in an importable module (not in
    the caller's ``__main__`` script, which the workers do not import)."""
    return type(obj).__module__ != "__main__"
