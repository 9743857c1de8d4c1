"""One bounded thread pool for per-item work (downloads, encoding, captioning calls).

Work is submitted in order and settled in the same order in the caller's thread, with at most
``window`` items in flight, so that memory stays bounded however many items there are and the
caller's bookkeeping (a manifest, a progress bar) never needs a lock. An error or Ctrl-C cancels
what is queued, lets what is running finish, and settles every item that finished cleanly
before the error goes on: nothing already paid for is lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Any, Generic, TypeVar

K = TypeVar("K")
R = TypeVar("R")


class BoundedPool(Generic[K, R]):
    """``workers`` threads; ``settle(key, result)`` runs in submission order in this thread.

    Use as a context manager::

        with BoundedPool(4, settle=record) as pool:
            for item in items:
                pool.submit(item, work, item)
    """

    def __init__(
        self,
        workers: int,
        settle: Callable[[K, R], Any],
        *,
        window: int | None = None,
        name: str = "urbangeo",
        executor: Executor | None = None,
    ) -> None:
        self.workers = max(1, int(workers))
        self.window = max(1, window if window is not None else 2 * self.workers)
        self._settle = settle
        self._queue: deque[tuple[K, Future[R] | None, R | None]] = deque()
        # An executor of the caller's (worker processes) outlives the pool: never shut down here.
        self._owned = executor is None
        self._pool = executor or ThreadPoolExecutor(self.workers, thread_name_prefix=name)

    def submit(self, key: K, func: Callable[..., R], *args: Any) -> None:
        """Run ``func(*args)`` in a worker; settles older items while the window is full."""
        self._queue.append((key, self._pool.submit(func, *args), None))
        self._drain(self.window)

    def settled(self, key: K, result: R) -> None:
        """An item whose result is already known, settled in its turn (keeps the order)."""
        self._queue.append((key, None, result))
        self._drain(self.window)

    def drain(self, limit: int) -> None:
        """Settle items, in order, until at most ``limit`` are in flight."""
        self._drain(max(0, limit))

    def _drain(self, limit: int) -> None:
        while len(self._queue) > limit:
            key, future, result = self._queue[0]
            if future is not None:
                # Still queued while waiting: after Ctrl-C here, _salvage settles it if it ends.
                result = future.result()
            self._queue.popleft()
            self._settle(key, result)  # type: ignore[arg-type]

    def __enter__(self) -> BoundedPool[K, R]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self._drain(0)
            finally:
                self._stop()
                self._salvage()
            return
        self._stop()
        self._salvage()

    def _stop(self) -> None:
        """Cancel what is queued and wait for what is running."""
        if self._owned:
            self._pool.shutdown(wait=True, cancel_futures=True)
            return
        futures = [f for _, f, _ in self._queue if f is not None]
        for future in futures:
            future.cancel()
        wait(futures)

    def _salvage(self) -> None:
        """Settle what finished cleanly before an error or an interruption; drop the rest."""
        while self._queue:
            key, future, result = self._queue.popleft()
            if future is None:
                self._settle(key, result)  # type: ignore[arg-type]
            elif not future.cancelled() and future.exception() is None:
                self._settle(key, future.result())
