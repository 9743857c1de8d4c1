"""Captions from any OpenAI-compatible chat-completions endpoint with image input.

vLLM, Ollama, LM Studio and hosted APIs: several models per image, calls through urbangeo's
one HTTP client (:class:`~urbangeo.io.http.HttpClient`: retries with backoff on 408/425/429/5xx
and timeouts, ``Retry-After`` honoured, 401/403 stop at once, the API key masked everywhere).
Several endpoints (replicas of one deployment: ``--base-url URL[#N]`` repeated) share the
calls, each with its own client and concurrency, balanced and failed over as
:mod:`urbangeo.captions.endpoints` describes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from urbangeo.captions.captioners.base import Captioner, CaptionError, ImageItem, data_url
from urbangeo.captions.endpoints import (
    MAX_FAILURES_IN_A_ROW,
    Balancer,
    Endpoint,
    parse_endpoints,
    shown_url,
)
from urbangeo.errors import InputError
from urbangeo.io.http import (
    RETRY_STATUS,
    AccessDeniedError,
    HttpClient,
    HttpError,
    ReplyError,
    RetryPolicy,
    UnreachableError,
    redact_url,
)
from urbangeo.progress import message
from urbangeo.settings.captions import DEFAULT_API_KEY_ENV

#: The captioner's retries: longer first waits than a tile server's, at most a minute each.
DEFAULT_RETRY = RetryPolicy(max_retries=5, backoff=1.0, max_wait=60.0)
#: Statuses that no retry mends: a wrong URL, model or method.
FATAL_STATUS = frozenset({404, 405})
_CHECK_ARGS = (
    "Check --base-url, --model and the API key (environment variable, never a command-line "
    "argument)."
)


class _Down(Exception):
    """A call its endpoint failed (unreachable, or a timeout, a dropped connection or HTTP
    408/425/429/5xx after the retries): another endpoint may answer it."""

    def __init__(self, error: HttpError | UnreachableError) -> None:
        super().__init__(str(error))
        self.error = error


class _Endpoint:
    """One endpoint: its chat-completions URL, its own HTTP client, how messages show it."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        headers: dict[str, str],
        key: str | None,
        timeout: float,
        retry: RetryPolicy,
    ) -> None:
        self.root = endpoint.url.rstrip("/")
        self.url = (
            self.root
            if self.root.endswith("/chat/completions")
            else self.root + "/chat/completions"
        )
        self.concurrency = endpoint.concurrency
        self.client = HttpClient(
            concurrency=endpoint.concurrency,
            rate_limit=0,
            retries=retry.max_retries,
            backoff=retry.backoff,
            max_wait=retry.max_wait,
            timeout=timeout,
            headers=headers,
            secrets=[s for s in (key, urlsplit(self.url).password) if s],
            service=f"The captioning endpoint {shown_url(redact_url(self.url))}",
            key_hint=_CHECK_ARGS,
            unreachable_hint="Is the server running? Check --base-url (e.g. "
            "http://localhost:8000/v1). Captions made before are cached: the same command "
            "continues from there.",
        )
        #: The endpoint as errors show it, and its API root as warnings do (secrets masked).
        self.shown = self.client.scrub(shown_url(redact_url(self.url)))
        self.shown_root = self.client.scrub(shown_url(redact_url(self.root)))


class OpenAICaptioner(Captioner):
    """Captions from OpenAI-compatible ``/chat/completions`` endpoints with image input.

    The image goes as a base64 ``data:`` URL in an ``image_url`` content part after the text
    prompt. The key is read from the environment variable ``api_key_env`` (default
    ``OPENAI_API_KEY``; local servers need none); it is never logged or stored, and a server
    that echoes it gets it masked in every error, warning and cached caption.

    ``base_url``: one API root or several (replicas serving the same models), each ``URL`` or
    ``URL#N`` (N requests in flight there; without ``#N``, ``pool_size``).
    :attr:`concurrency`, the calls the stage makes at once, is their sum.
    """

    name = "openai"

    def __init__(
        self,
        models: Sequence[str],
        *,
        base_url: str | Sequence[str] | None = None,
        api_key_env: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        max_tokens: int = 512,
        temperature: float | None = None,
        pool_size: int = 8,
    ) -> None:
        endpoints = parse_endpoints(base_url, max(1, pool_size))
        super().__init__(models)
        env = api_key_env or DEFAULT_API_KEY_ENV
        key = os.environ.get(env)
        if api_key_env and not key:
            raise InputError(
                f"The environment variable {api_key_env} (--api-key-env) is not set.",
                hint=f"export {api_key_env}=... with your API key, or leave out --api-key-env "
                f"(then {DEFAULT_API_KEY_ENV} is used if set).",
            )
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = timeout
        self.retry = retry or DEFAULT_RETRY
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.pool_size = pool_size
        self.endpoints = [
            _Endpoint(e, headers=self._headers, key=key, timeout=timeout, retry=self.retry)
            for e in endpoints
        ]
        self.balancer = Balancer([e.concurrency for e in self.endpoints])
        self.concurrency = sum(e.concurrency for e in self.endpoints)
        first = self.endpoints[0]
        #: The first endpoint's API root, chat-completions URL and client.
        self.base_url, self.url, self.client = first.root, first.url, first.client
        #: The first endpoint as errors show it.
        self.shown_url = first.shown

    def options(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature}

    def request_body(self, image: bytes, prompt: str, model: str) -> dict:
        """The JSON body of one chat-completions request."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {"type": "image_url", "image_url": {"url": data_url(image)}},
                    ],
                }
            ],
            "max_tokens": self.max_tokens,
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def caption(self, image: bytes | None, prompt: str, model: str, item: ImageItem) -> str:
        if image is None:
            raise CaptionError(f"image {item.image_id} has no file")
        body = self.request_body(image, prompt, model)
        tried: list[int] = []
        failure: CaptionError | None = None
        while (index := self.balancer.acquire(tried)) is not None:
            tried.append(index)
            endpoint = self.endpoints[index]
            try:
                reply = self._ask(endpoint, body, model)
            except _Down as down:
                failure = self._endpoint_failed(index, down.error)
                continue
            except BaseException:
                self.balancer.release(index, ok=True)  # it answered: the call's own error
                raise
            self.balancer.release(index, ok=True)
            return _reply_text(reply, endpoint.shown)
        assert failure is not None  # None comes only once every endpoint left was tried
        raise failure

    def _ask(self, endpoint: _Endpoint, body: dict, model: str) -> Any:
        """The decoded reply of ``endpoint`` to ``body``; :class:`_Down` when another endpoint
        may answer instead, else the call's error (:class:`CaptionError`) or the stage's."""
        try:
            response = endpoint.client.post(endpoint.url, body, ok_statuses=range(200, 300))
            return endpoint.client.reply_json(response)
        except UnreachableError as exc:
            raise _Down(exc) from None
        except AccessDeniedError as exc:
            raise self._refused(AccessDeniedError, model, exc, endpoint.shown) from None
        except ReplyError as exc:
            raise InputError(
                f"{exc}.",
                hint="Check --base-url: it must be the API root of an OpenAI-compatible server "
                "(usually ending in /v1).",
            ) from None
        except HttpError as exc:
            if exc.status in FATAL_STATUS:
                raise self._refused(InputError, model, exc, endpoint.shown) from None
            if exc.status is None or exc.status in RETRY_STATUS:
                raise _Down(exc) from None
            raise CaptionError(self._where(endpoint) + _failure(exc)) from None

    def _endpoint_failed(self, index: int, error: HttpError | UnreachableError) -> CaptionError:
        """The call's error once endpoint ``index`` failed it; sets the endpoint aside (with a
        warning) when due, and stops the stage when the last one left cannot be reached."""
        endpoint = self.endpoints[index]
        unreachable = isinstance(error, UnreachableError)
        if self.balancer.release(index, ok=False, unreachable=unreachable):
            why = (
                "it cannot be reached"
                if unreachable
                else f"{MAX_FAILURES_IN_A_ROW} calls in a row failed there"
            )
            message(
                f"Captioning endpoint {endpoint.shown_root} set aside for this run: {why} "
                f"({_reason(error)}); its calls go to the other endpoints.",
                level="warning",
            )
        if isinstance(error, UnreachableError) and index not in self.balancer.aside:
            raise self._unreachable(error)  # the last endpoint left
        return CaptionError(self._where(endpoint) + _reason(error))

    def _unreachable(self, error: UnreachableError) -> UnreachableError:
        """The stage's error when the last endpoint left cannot be reached."""
        aside = [e.shown_root for i, e in enumerate(self.endpoints) if i in self.balancer.aside]
        if not aside:
            return error
        return UnreachableError(
            f"{error.message} The other captioning endpoints were set aside before: "
            f"{', '.join(aside)}.",
            hint=error.hint,
        )

    def _where(self, endpoint: _Endpoint) -> str:
        """Which endpoint a call's error came from, when there are several."""
        return f"{endpoint.shown_root}: " if len(self.endpoints) > 1 else ""

    def _refused(
        self,
        kind: type[InputError],
        model: str,
        exc: AccessDeniedError | HttpError,
        shown: str,
    ) -> InputError:
        """The error that stops the stage: the endpoint refused what every call would ask."""
        return kind(
            f"{shown} refused the request for model '{model}': HTTP {exc.status}"
            f"{_paren(exc.detail)}.",
            hint=_CHECK_ARGS,
        )

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.client.close()


def _paren(detail: str) -> str:
    return f" ({detail})" if detail else ""


def _reason(error: HttpError | UnreachableError) -> str:
    """Why an endpoint failed a call, in one line (free of secrets)."""
    if isinstance(error, UnreachableError):
        return error.message.rstrip(".")
    return _failure(error)


def _failure(exc: HttpError) -> str:
    """What a failed call says in the stage's warnings (already free of secrets)."""
    if exc.status is None:  # timeouts, dropped connections: the client's own words
        return str(exc)
    tries = f" after {exc.tries} tries" if exc.tries > 1 else ""
    return f"HTTP {exc.status}{_paren(exc.detail)}{tries}"


def _reply_text(reply: Any, url: str) -> str:
    """The caption in a chat-completions reply (whose strings are already scrubbed)."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise InputError(
            f"The reply of {url} has no choices[0].message.content: {str(reply)[:200]}",
            hint="The endpoint must speak the OpenAI chat-completions format.",
        ) from exc
    if isinstance(content, list):  # content parts
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    text = " ".join(str(content or "").split())
    if not text:
        raise CaptionError("the model returned an empty caption")
    return text
