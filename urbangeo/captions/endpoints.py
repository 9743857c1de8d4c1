"""Several OpenAI-compatible endpoints in one caption run: parsing ``--base-url URL[#N]`` and
balancing the calls between them.

Each endpoint (a vLLM replica, say) takes at most ``N`` requests at once (``#N``; without it,
``--concurrency``). A call goes to the endpoint with the fewest calls in flight relative to
its concurrency (:class:`Balancer`). Which endpoint answered is no part of a caption's
identity: the cache key has no endpoint in it, so a rerun with other replicas reuses every
caption, and the replica list and each ``#N`` are how, not what (the stage's fingerprint sees
only the first URL, the value one ``--base-url`` recorded before: :func:`fingerprint_url`).

Failures (the openai captioner's policy): a call whose endpoint cannot be connected to, or
fails after its own retries with a timeout, a dropped connection or HTTP 408/425/429/5xx, is
passed to another endpoint (each one tried at most once per call). An endpoint that cannot be
reached, or fails :data:`MAX_FAILURES_IN_A_ROW` calls in a row, is set aside for the rest of
the run with a warning naming it. The last endpoint left is never set aside: its failures are
the calls' own, as with a single endpoint (a call that fails is reported and retried by the
next run; an endpoint that cannot be reached stops the stage).

This module imports nothing heavy (the settings check the URLs with it).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from urbangeo.errors import InputError

#: Calls in a row that an endpoint may fail before it is set aside for the run.
MAX_FAILURES_IN_A_ROW = 3
#: The most requests in flight at one endpoint (``#N``), as ``--concurrency``'s bound.
MAX_ENDPOINT_CONCURRENCY = 256

_URL_HINT = (
    "Give the API root, e.g. http://localhost:8000/v1 (vLLM), http://localhost:11434/v1 "
    "(Ollama) or https://api.openai.com/v1; repeat --base-url for replicas, each as URL#N to "
    "let it take N requests at once."
)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint: its API root as given (without ``#N``) and its requests in flight."""

    url: str
    concurrency: int


def shown_url(url: str) -> str:
    """``url`` as messages show it: a password in it masked (key parameters are masked by the
    HTTP client's scrubbing)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    # not parsed as a URL (no scheme): any "user:secret@" is masked as it stands
    return re.sub(r"([^/@:\s]*):[^/@\s]*@", r"\1:***@", url)


def _split(value: str, default: int) -> Endpoint:
    text = value.strip()
    url, sep, count = text.rpartition("#") if "#" in text else (text, "", "")
    if sep:
        n = int(count) if count.strip().isdigit() else None
        if n is None or not 1 <= n <= MAX_ENDPOINT_CONCURRENCY:
            raise InputError(
                f"--base-url {shown_url(text)!r}: what follows its last '#' is not a number "
                f"of requests in flight (1 to {MAX_ENDPOINT_CONCURRENCY}).",
                hint="Write URL#N, e.g. http://gpu1:8000/v1#16, or leave #N out for --concurrency.",
            )
    else:
        n = default
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--base-url {shown_url(url)!r} is not an http(s) URL.", hint=_URL_HINT)
    return Endpoint(url, n)


def parse_endpoints(values: str | Sequence[str] | None, default: int) -> list[Endpoint]:
    """The endpoints of ``--base-url`` values (``URL`` or ``URL#N``; one string is one URL),
    each with ``#N`` or ``default`` requests in flight; :class:`InputError` with a hint for a
    missing or bad URL, a bad ``#N`` or an endpoint given twice."""
    if isinstance(values, str):
        values = [values]
    if not values:
        raise InputError(
            "The openai backend needs --base-url.",
            hint="e.g. --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct",
        )
    endpoints = [_split(v, default) for v in values]
    seen: set[str] = set()
    for e in endpoints:
        key = e.url.rstrip("/")
        if key in seen:
            raise InputError(
                f"--base-url {shown_url(e.url)!r} is given twice.",
                hint="Give each endpoint once; URL#N lets it take N requests at once.",
            )
        seen.add(key)
    return endpoints


def fingerprint_url(values: Sequence[str] | None) -> str | None:
    """What the stage's fingerprint records of ``--base-url``: the first URL without ``#N``,
    exactly the value that a single ``--base-url`` recorded before replicas existed (so such
    runs keep their fingerprint); the other replicas and each ``#N`` are left out."""
    if not values:
        return None
    first = values[0].strip()
    url, sep, _ = first.rpartition("#")
    return url if sep else first


class Balancer:
    """Which endpoint takes the next call: the least loaded (calls in flight over concurrency)
    of those not set aside, never above its own concurrency; thread-safe.

    :meth:`acquire` waits for a free slot; :meth:`release` records how the call went and says
    whether the endpoint is now set aside (see the module's failure policy).
    """

    def __init__(self, capacities: Sequence[int]) -> None:
        if not capacities or min(capacities) < 1:
            raise ValueError("every endpoint needs a concurrency of at least 1")
        self.capacities = tuple(capacities)
        self.in_flight = [0] * len(capacities)
        #: Calls each endpoint answered.
        self.answered = [0] * len(capacities)
        self._failures = [0] * len(capacities)  # in a row
        self.aside: set[int] = set()
        self._cond = threading.Condition()

    def live(self) -> list[int]:
        """The endpoints not set aside."""
        with self._cond:
            return [i for i in range(len(self.capacities)) if i not in self.aside]

    def acquire(self, tried: Collection[int] = ()) -> int | None:
        """A slot at the least-loaded endpoint not set aside and not in ``tried`` (waiting for
        one to free up); None when no such endpoint is left."""
        with self._cond:
            while True:
                live = [
                    i for i in range(len(self.capacities)) if i not in self.aside and i not in tried
                ]
                if not live:
                    return None
                free = [i for i in live if self.in_flight[i] < self.capacities[i]]
                if free:
                    # ties: the larger endpoint, then the first given
                    best = min(
                        free,
                        key=lambda i: (self.in_flight[i] / self.capacities[i], -self.capacities[i]),
                    )
                    self.in_flight[best] += 1
                    return best
                self._cond.wait()

    def release(self, index: int, *, ok: bool, unreachable: bool = False) -> bool:
        """Free ``index``'s slot; ``ok``: the endpoint answered (any answer but a failure of the
        endpoint itself). True when this failure sets the endpoint aside (never the last)."""
        with self._cond:
            self.in_flight[index] -= 1
            if ok:
                self._failures[index] = 0
                self.answered[index] += 1
            else:
                self._failures[index] += 1
            newly = False
            if not ok and index not in self.aside:
                others = [
                    i for i in range(len(self.capacities)) if i not in self.aside and i != index
                ]
                due = unreachable or self._failures[index] >= MAX_FAILURES_IN_A_ROW
                if due and others:
                    self.aside.add(index)
                    newly = True
            self._cond.notify_all()
            return newly
