"""Captions from any OpenAI-compatible chat-completions endpoint with image input.

vLLM, Ollama, LM Studio and hosted APIs: several models per image, calls through urbangeo's
one HTTP client (:class:`~urbangeo.io.http.HttpClient`: retries with backoff on 408/425/429/5xx
and timeouts, ``Retry-After`` honoured, 401/403 stop at once, the API key masked everywhere).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from urbangeo.captions.captioners.base import Captioner, CaptionError, ImageItem, data_url
from urbangeo.errors import InputError
from urbangeo.io.http import (
    AccessDeniedError,
    HttpClient,
    HttpError,
    ReplyError,
    RetryPolicy,
    redact_url,
)
from urbangeo.settings.captions import DEFAULT_API_KEY_ENV

#: The captioner's retries: longer first waits than a tile server's, at most a minute each.
DEFAULT_RETRY = RetryPolicy(max_retries=5, backoff=1.0, max_wait=60.0)
#: Statuses that no retry mends: a wrong URL, model or method.
FATAL_STATUS = frozenset({404, 405})
_CHECK_ARGS = (
    "Check --base-url, --model and the API key (environment variable, never a command-line "
    "argument)."
)


class OpenAICaptioner(Captioner):
    """Captions from an OpenAI-compatible ``/chat/completions`` endpoint with image input.

    The image goes as a base64 ``data:`` URL in an ``image_url`` content part after the text
    prompt. The key is read from the environment variable ``api_key_env`` (default
    ``OPENAI_API_KEY``; local servers need none); it is never logged or stored, and a server
    that echoes it gets it masked in every error, warning and cached caption.
    """

    name = "openai"

    def __init__(
        self,
        models: Sequence[str],
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        max_tokens: int = 512,
        temperature: float | None = None,
        pool_size: int = 8,
    ) -> None:
        if not base_url:
            raise InputError(
                "The openai backend needs --base-url.",
                hint="e.g. --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct",
            )
        super().__init__(models)
        if not base_url.startswith(("http://", "https://")):
            raise InputError(
                f"--base-url {base_url!r} is not an http(s) URL.",
                hint="Give the API root, e.g. http://localhost:8000/v1 (vLLM), "
                "http://localhost:11434/v1 (Ollama) or https://api.openai.com/v1.",
            )
        self.base_url = base_url.rstrip("/")
        self.url = (
            self.base_url
            if self.base_url.endswith("/chat/completions")
            else self.base_url + "/chat/completions"
        )
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
        self.client = HttpClient(
            concurrency=max(1, pool_size),
            rate_limit=0,
            retries=self.retry.max_retries,
            backoff=self.retry.backoff,
            max_wait=self.retry.max_wait,
            timeout=timeout,
            headers=self._headers,
            secrets=[key] if key else (),
            service=f"The captioning endpoint {redact_url(self.url)}",
            key_hint=_CHECK_ARGS,
            unreachable_hint="Is the server running? Check --base-url (e.g. "
            "http://localhost:8000/v1). Captions made before are cached: the same command "
            "continues from there.",
        )
        #: The endpoint as errors show it.
        self.shown_url = self.client.scrub(redact_url(self.url))

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
        try:
            response = self.client.post(self.url, body, ok_statuses=range(200, 300))
            reply = self.client.reply_json(response)
        except AccessDeniedError as exc:
            raise self._refused(AccessDeniedError, model, exc) from None
        except ReplyError as exc:
            raise InputError(
                f"{exc}.",
                hint="Check --base-url: it must be the API root of an OpenAI-compatible server "
                "(usually ending in /v1).",
            ) from None
        except HttpError as exc:
            if exc.status in FATAL_STATUS:
                raise self._refused(InputError, model, exc) from None
            raise CaptionError(_failure(exc)) from None
        return _reply_text(reply, self.shown_url)

    def _refused(
        self, kind: type[InputError], model: str, exc: AccessDeniedError | HttpError
    ) -> InputError:
        """The error that stops the stage: the endpoint refused what every call would ask."""
        return kind(
            f"{self.shown_url} refused the request for model '{model}': HTTP {exc.status}"
            f"{_paren(exc.detail)}.",
            hint=_CHECK_ARGS,
        )

    def close(self) -> None:
        self.client.close()


def _paren(detail: str) -> str:
    return f" ({detail})" if detail else ""


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
