"""A polite HTTP client for tile servers and street-view APIs.

- one ``requests.Session`` with a connection pool sized for ``concurrency`` threads;
- a rate limit shared by all threads (requests per second; 0 turns it off);
- retries with exponential backoff and jitter on 429, 5xx, timeouts and dropped connections,
  waiting at least as long as the server's ``Retry-After`` says;
- 401 and 403 stop the whole client at once (no retry storm): :class:`AccessDeniedError`;
- a server that cannot be reached at all (no name, connection refused, no route) stops the
  whole client after a few quick tries, as long as it never answered:
  :class:`UnreachableError` (offline, a typo in the URL), not a long storm of backoffs;
- a User-Agent naming urbangeo;
- secrets (API keys) never leave it: they are replaced by ``***`` in every error message and
  in urllib3's debug log, and :func:`redact_url` strips key parameters from URLs.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from urbangeo.errors import InputError

DEFAULT_USER_AGENT = "urbangeo/{version} (+https://github.com/urbangeo/urbangeo)"
#: Requests per second, over all threads: the fair-use limit most public tile servers ask for.
DEFAULT_RATE_LIMIT = 10.0
DEFAULT_CONCURRENCY = 4
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT_S = 30.0
#: Tries before giving up on a server that never answered and cannot be connected to.
UNREACHABLE_TRIES = 3
#: Longest wait between two tries, whatever Retry-After says.
MAX_BACKOFF_S = 120.0
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Query parameters that carry credentials (compared lower-case).
SECRET_PARAMS = frozenset(
    {"key", "apikey", "api_key", "access_token", "accesstoken", "token", "ak", "sk", "signature"}
)
REDACTED = "***"


class AccessDeniedError(InputError):
    """The server refused the credentials (HTTP 401/403 or the API's own 'denied' status)."""


class UnreachableError(InputError):
    """The server could not be connected to (and never answered this client)."""


def _cannot_connect(exc: requests.RequestException) -> bool:
    """Whether ``exc`` means no connection was made at all (name, refusal, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    )


class HttpError(Exception):
    """A request that failed for good (after retries); its message holds no secrets."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def redact_url(url: str) -> str:
    """``url`` with the values of credential parameters replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, REDACTED if k.lower() in SECRET_PARAMS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    # Keep template placeholders such as {z} readable.
    text = urlencode(query, safe="{}-,.:/")
    return urlunsplit(parts._replace(query=text))


class _SecretFilter(logging.Filter):
    def __init__(self, client: HttpClient) -> None:
        super().__init__()
        self.client = client

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.client.scrub(record.getMessage())
        record.args = ()
        return True


class HttpClient:
    """GET with retries, backoff, a shared rate limit and secret scrubbing; thread-safe."""

    def __init__(
        self,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate_limit: float | None = DEFAULT_RATE_LIMIT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.5,
        timeout: float = DEFAULT_TIMEOUT_S,
        user_agent: str | None = None,
        secrets: Iterable[str] = (),
        service: str = "The server",
        key_hint: str = "Check the API key or token.",
    ) -> None:
        from urbangeo import __version__

        if concurrency < 1:
            raise InputError("concurrency must be at least 1.", hint="Use --concurrency 1 or more.")
        self.concurrency = concurrency
        self.rate_limit = rate_limit or 0.0
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.service = service
        self.key_hint = key_hint
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = user_agent or DEFAULT_USER_AGENT.format(
            version=__version__
        )
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._denied: AccessDeniedError | None = None
        self._unreachable: UnreachableError | None = None
        self._answered = False  # the server has sent a response (of any status)
        self.requests_sent = 0
        self._filter = _SecretFilter(self)
        self._loggers = [logging.getLogger("urllib3.connectionpool"), logging.getLogger("urllib3")]
        for logger in self._loggers:
            logger.addFilter(self._filter)

    def close(self) -> None:
        """Close the connections and stop filtering the urllib3 log."""
        self.session.close()
        for logger in self._loggers:
            logger.removeFilter(self._filter)

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***`` and key parameters redacted."""
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return re.sub(
            r"(?i)([?&](?:" + "|".join(SECRET_PARAMS) + r")=)[^&\s'\"]*",
            lambda m: m.group(1) + REDACTED,
            text,
        )

    def deny(self, error: AccessDeniedError) -> None:
        """Stop every further request with ``error`` (an API's own 'denied' answer)."""
        with self._lock:
            if self._denied is None:
                self._denied = error
        raise self._denied

    def _wait_for_slot(self) -> None:
        if self.rate_limit <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate_limit
        if slot > now:
            time.sleep(slot - now)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * 2**attempt * (0.5 + random.random() / 2)
        if retry_after:
            seconds: float | None
            try:
                seconds = float(retry_after)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(retry_after)
                    seconds = when.timestamp() - time.time()
                except (TypeError, ValueError):
                    seconds = None
            if seconds is not None:
                delay = max(delay, seconds)
        return min(delay, MAX_BACKOFF_S)

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        ok_statuses: Iterable[int] = (200,),
    ) -> requests.Response:
        """GET ``url``; returns responses whose status is in ``ok_statuses`` or is 404.

        Retries what is worth retrying; raises :class:`AccessDeniedError` on 401/403,
        :class:`UnreachableError` when a server that never answered cannot be connected to,
        and :class:`HttpError` (secret-free message) when the tries are used up or the status
        is another error.
        """
        ok = set(ok_statuses) | {404}
        last = ""
        last_url = url
        status: int | None = None
        no_connection = True  # every try so far failed before connecting
        for attempt in range(self.retries + 1):
            if self._denied is not None:
                raise self._denied
            if self._unreachable is not None:
                raise self._unreachable
            if no_connection and attempt >= UNREACHABLE_TRIES and not self._answered:
                self._give_up_on(url, last)
            self._wait_for_slot()
            retry_after = None
            try:
                with self._lock:
                    self.requests_sent += 1
                response = self.session.get(
                    url, params=params, headers=headers, timeout=self.timeout
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                last = f"{type(exc).__name__}: {self.scrub(str(exc))}"
                status = None
                no_connection = no_connection and _cannot_connect(exc)
            except requests.RequestException as exc:
                raise HttpError(self.scrub(f"{type(exc).__name__}: {exc}")) from None
            else:
                no_connection = False
                self._answered = True
                status = response.status_code
                last_url = response.url
                if status in (401, 403):
                    error = AccessDeniedError(
                        f"{self.service} refused the request (HTTP {status}) for "
                        f"{self.scrub(redact_url(response.url))}.",
                        hint=self.key_hint,
                    )
                    with self._lock:
                        if self._denied is None:
                            self._denied = error
                    raise self._denied
                if status in ok:
                    return response
                last = f"HTTP {status}"
                if status not in RETRY_STATUS:
                    raise HttpError(
                        f"{last} for {self.scrub(redact_url(response.url))}", status=status
                    )
                retry_after = response.headers.get("Retry-After")
                response.close()
            if attempt < self.retries:
                time.sleep(self._delay(attempt, retry_after))
        if no_connection and not self._answered:
            self._give_up_on(url, last)
        target = self.scrub(redact_url(last_url))
        raise HttpError(f"{last} for {target} after {self.retries + 1} tries", status=status)

    def _give_up_on(self, url: str, last: str) -> None:
        """Stop every further request: the server cannot be reached."""
        host = urlsplit(url).netloc or url
        error = UnreachableError(
            f"Cannot reach {self.scrub(host)}: no connection could be made "
            f"({last.split(' (Caused by ')[-1].rstrip(')') if last else 'no answer'}).",
            hint="Check the internet connection (and HTTPS_PROXY if you need a proxy) and the "
            "server address (--xyz, --base-url). Nothing is lost: images fetched before are "
            "kept, and the same command continues from there.",
        )
        with self._lock:
            if self._unreachable is None:
                self._unreachable = error
        raise self._unreachable
