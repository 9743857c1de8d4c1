"""The one HTTP client of urbangeo: tile servers, street-view APIs and captioning endpoints.

- one ``requests.Session`` with a connection pool sized for ``concurrency`` threads;
- a rate limit shared by all threads (requests per second; 0 turns it off);
- GET (images, API answers) and POST with a JSON body (captioning endpoints), both with
  retries with exponential backoff and jitter on 408, 425, 429, 5xx, timeouts and dropped
  connections, waiting at least as long as the server's ``Retry-After`` says
  (:class:`RetryPolicy`);
- 401 and 403 stop the whole client at once (no retry storm): :class:`AccessDeniedError`;
- a server that cannot be reached at all (no name, connection refused, no route) stops the
  whole client after a few quick tries, as long as it never answered:
  :class:`UnreachableError` (offline, a typo in the URL), not a long storm of backoffs;
- a User-Agent naming urbangeo;
- secrets never leave it: the client is given the secrets it must mask (``secrets``, and the
  values of credential headers such as ``Authorization: Bearer KEY``), and replaces them by
  ``***`` in every error message, in the server's error text it passes on, in the JSON replies
  it decodes (:meth:`HttpClient.reply_json`) and in urllib3's debug log; :func:`redact_url`
  strips key parameters from URLs.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from urbangeo.errors import InputError

DEFAULT_USER_AGENT = "urbangeo/{version} (+https://github.com/urbangeo/urbangeo)"
#: Requests per second, over all threads: the fair-use limit most public tile servers ask for.
DEFAULT_RATE_LIMIT = 10.0
DEFAULT_CONCURRENCY = 4
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF_S = 0.5
DEFAULT_TIMEOUT_S = 30.0
#: Tries before giving up on a server that never answered and cannot be connected to.
UNREACHABLE_TRIES = 3
#: Longest wait between two tries, whatever Retry-After says.
MAX_BACKOFF_S = 120.0
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Query parameters that carry credentials (compared lower-case).
SECRET_PARAMS = frozenset(
    {"key", "apikey", "api_key", "access_token", "accesstoken", "token", "ak", "sk", "signature"}
)
#: Query parameters of a GET: values are sent as text (None leaves the parameter out).
QueryParams = Mapping[str, str | int | float | None]
#: Request headers whose values are credentials (compared lower-case).
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key"}
)
REDACTED = "***"
#: Characters of the server's error text passed on in an error.
DETAIL_CHARS = 200
UNREACHABLE_HINT = (
    "Check the internet connection (and HTTPS_PROXY if you need a proxy) and the server "
    "address (--xyz, --base-url). Nothing is lost: images fetched before are kept, and the "
    "same command continues from there."
)


class AccessDeniedError(InputError):
    """The server refused the credentials (HTTP 401/403 or the API's own 'denied' status).

    ``status`` is the HTTP status and ``detail`` the server's own words (secrets masked), when
    they are known.
    """

    def __init__(
        self, message: str, *, hint: str | None = None, status: int | None = None, detail: str = ""
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.detail = detail


class UnreachableError(InputError):
    """The server could not be connected to (and never answered this client)."""


class HttpError(Exception):
    """A request that failed for good (after retries); its message holds no secrets.

    ``status`` is the last HTTP status (None after timeouts and dropped connections),
    ``detail`` the server's error text (secrets masked, at most :data:`DETAIL_CHARS`) and
    ``tries`` the number of requests made.
    """

    def __init__(
        self, message: str, *, status: int | None = None, detail: str = "", tries: int = 1
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.tries = tries


class ReplyError(HttpError):
    """A successful response whose body is not what was asked for (not JSON)."""


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """How failed tries are retried: at most ``max_retries`` more tries, waiting
    ``backoff * 2**attempt`` seconds (jittered down to half) or at least what the server's
    ``Retry-After`` asks, and never more than ``max_wait``."""

    max_retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF_S
    max_wait: float = MAX_BACKOFF_S

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based), given the server's
        ``Retry-After`` header if it sent one."""
        delay = self.backoff * 2**attempt * (0.5 + random.random() / 2)
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            delay = max(delay, asked)
        return min(delay, self.max_wait)


def _cannot_connect(exc: requests.RequestException) -> bool:
    """Whether ``exc`` means no connection was made at all (name, refusal, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    )


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


def header_secrets(headers: Mapping[str, str] | None) -> list[str]:
    """The credentials in request headers: each credential header's value and, for
    ``Authorization: Bearer KEY`` and the like, the ``KEY`` alone."""
    found = []
    for name, value in (headers or {}).items():
        if name.lower() not in SECRET_HEADERS or not value:
            continue
        found.append(str(value))
        _scheme, _, token = str(value).strip().partition(" ")
        if token.strip():
            found.append(token.strip())
    return found


def _error_detail(response: requests.Response) -> str:
    """The server's own words about an error: its JSON ``error`` (message) or its body."""
    try:
        error = response.json().get("error")
        text = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        text = response.text
    return " ".join(str(text or "").split())


class _SecretFilter(logging.Filter):
    def __init__(self, client: HttpClient) -> None:
        super().__init__()
        self.client = client

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.client.scrub(record.getMessage())
        record.args = ()
        return True


class HttpClient:
    """GET and JSON POST with retries, backoff, a shared rate limit and secret masking;
    thread-safe.

    ``headers`` go with every request; the values of credential headers among them (and in
    each request's ``headers``) are masked like ``secrets``. ``unreachable_hint`` is the hint
    of the :class:`UnreachableError` raised when the server cannot be reached.
    """

    def __init__(
        self,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate_limit: float | None = DEFAULT_RATE_LIMIT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF_S,
        max_wait: float = MAX_BACKOFF_S,
        timeout: float = DEFAULT_TIMEOUT_S,
        user_agent: str | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        service: str = "The server",
        key_hint: str = "Check the API key or token.",
        unreachable_hint: str = UNREACHABLE_HINT,
    ) -> None:
        from urbangeo import __version__

        if concurrency < 1:
            raise InputError("concurrency must be at least 1.", hint="Use --concurrency 1 or more.")
        self.concurrency = concurrency
        self.rate_limit = rate_limit or 0.0
        self.retry = RetryPolicy(max_retries=retries, backoff=backoff, max_wait=max_wait)
        self.timeout = timeout
        self.service = service
        self.key_hint = key_hint
        self.unreachable_hint = unreachable_hint
        self._lock = threading.Lock()
        self.secrets: list[str] = []
        self.add_secrets(*secrets, *header_secrets(headers))
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = user_agent or DEFAULT_USER_AGENT.format(
            version=__version__
        )
        self.session.headers.update(headers or {})
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

    # --- secrets ---------------------------------------------------------------------------
    def add_secrets(self, *values: str) -> None:
        """Mask these values too, from now on."""
        with self._lock:
            # A new list, swapped in whole: threads scrubbing meanwhile see the old or the new.
            self.secrets = sorted({*self.secrets, *(v for v in values if v)}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***`` and key parameters redacted."""
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
            quoted = quote(secret, safe="")
            if quoted != secret:  # as it appears in a URL
                text = text.replace(quoted, REDACTED)
        return re.sub(
            r"(?i)([?&](?:" + "|".join(SECRET_PARAMS) + r")=)[^&\s'\"]*",
            lambda m: m.group(1) + REDACTED,
            text,
        )

    def scrub_json(self, value: Any) -> Any:
        """A decoded JSON value with every string (keys too) scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, list):
            return [self.scrub_json(v) for v in value]
        if isinstance(value, dict):
            return {self.scrub(str(k)): self.scrub_json(v) for k, v in value.items()}
        return value

    def detail(self, response: requests.Response) -> str:
        """The server's error text of ``response``: one line, scrubbed, shortened."""
        return self.scrub(_error_detail(response))[:DETAIL_CHARS]

    def reply_json(self, response: requests.Response) -> Any:
        """The decoded JSON body of ``response``, every string scrubbed; :class:`ReplyError`
        (with a scrubbed excerpt) when the body is not JSON."""
        try:
            value = response.json()
        except ValueError:
            excerpt = self.scrub(response.text[:120])
            ctype = self.scrub(response.headers.get("Content-Type", "?"))
            raise ReplyError(
                f"{self.scrub(redact_url(response.url))} replied with something that is not "
                f"JSON ({ctype}: {excerpt!r})",
                status=response.status_code,
                detail=excerpt,
            ) from None
        return self.scrub_json(value)

    # --- requests --------------------------------------------------------------------------
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

    def get(
        self,
        url: str,
        *,
        params: QueryParams | None = None,
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
        return self._request("GET", url, ok, params=params, headers=headers)

    def post(
        self,
        url: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        ok_statuses: Iterable[int] = (200,),
    ) -> requests.Response:
        """POST ``payload`` as a JSON body (encoded once) to ``url``; returns responses whose
        status is in ``ok_statuses``.

        The same retries and errors as :meth:`get`, except that a 404 is an error too (an API
        endpoint or model that does not exist, not a missing tile). Decode the reply with
        :meth:`reply_json` so that secrets echoed in it are masked.
        """
        body = json.dumps(payload, allow_nan=False).encode("utf-8")
        headers = {"Content-Type": "application/json", **(headers or {})}
        return self._request("POST", url, set(ok_statuses), data=body, headers=headers)

    def _request(
        self,
        method: str,
        url: str,
        ok: set[int],
        *,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> requests.Response:
        """The retry loop of :meth:`get` and :meth:`post`."""
        if headers:
            new = [s for s in header_secrets(headers) if s not in self.secrets]
            if new:
                self.add_secrets(*new)
        last = ""
        last_url = url
        status: int | None = None
        detail = ""
        no_connection = True  # every try so far failed before connecting
        tries = 0
        for attempt in range(self.retry.max_retries + 1):
            if self._denied is not None:
                raise self._denied
            if self._unreachable is not None:
                raise self._unreachable
            if no_connection and attempt >= UNREACHABLE_TRIES and not self._answered:
                self._give_up_on(url, last)
            self._wait_for_slot()
            retry_after = None
            tries += 1
            try:
                with self._lock:
                    self.requests_sent += 1
                response = self.session.request(
                    method, url, params=params, data=data, headers=headers, timeout=self.timeout
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                last = f"{type(exc).__name__}: {self.scrub(str(exc))}"
                status, detail = None, ""
                no_connection = no_connection and _cannot_connect(exc)
            except requests.RequestException as exc:
                raise HttpError(self.scrub(f"{type(exc).__name__}: {exc}"), tries=tries) from None
            else:
                no_connection = False
                self._answered = True
                status = response.status_code
                last_url = response.url
                if status in (401, 403):
                    detail = self.detail(response)
                    error = AccessDeniedError(
                        f"{self.service} refused the request (HTTP {status}) for "
                        f"{self.scrub(redact_url(response.url))}.",
                        hint=self.key_hint,
                        status=status,
                        detail=detail,
                    )
                    with self._lock:
                        if self._denied is None:
                            self._denied = error
                    raise self._denied
                if status in ok:
                    return response
                detail = self.detail(response)
                last = f"HTTP {status}"
                if status not in RETRY_STATUS:
                    raise HttpError(
                        f"{last} for {self.scrub(redact_url(response.url))}",
                        status=status,
                        detail=detail,
                        tries=tries,
                    )
                retry_after = response.headers.get("Retry-After")
                response.close()
            if attempt < self.retry.max_retries:
                time.sleep(self.retry.delay(attempt, retry_after))
        if no_connection and not self._answered:
            self._give_up_on(url, last)
        target = self.scrub(redact_url(last_url))
        raise HttpError(
            f"{last} for {target} after {tries} tries", status=status, detail=detail, tries=tries
        )

    def _give_up_on(self, url: str, last: str) -> None:
        """Stop every further request: the server cannot be reached."""
        host = urlsplit(url).netloc or url
        error = UnreachableError(
            f"Cannot reach {self.scrub(host)}: no connection could be made "
            f"({last.split(' (Caused by ')[-1].rstrip(')') if last else 'no answer'}).",
            hint=self.unreachable_hint,
        )
        with self._lock:
            if self._unreachable is None:
                self._unreachable = error
        raise self._unreachable
