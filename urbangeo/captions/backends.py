"""Captioner backends behind one interface.

- :class:`OpenAICaptioner`: any OpenAI-compatible chat-completions endpoint with image input
  (vLLM, Ollama, LM Studio, hosted APIs); several models per image, a bounded thread pool,
  retries with exponential backoff on 429/5xx/timeouts (``Retry-After`` honoured).
- :class:`TransformersCaptioner`: a local vision-language model through Hugging Face
  transformers, by hub name (already downloaded) or local path; GPU when present.
- :class:`~urbangeo.captions.osm.OSMCaptioner`: an offline captioner that describes the place
  from its OpenStreetMap features (the default city's captioner).

A captioner turns (image bytes, prompt, model) into a caption. Errors that concern one image
raise :class:`CaptionError` (the stage records them and goes on); errors that every call would
hit (an unreachable endpoint, a reply that is not JSON, a rejected key) raise
:class:`~urbangeo.errors.InputError`, which stops the stage.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from urbangeo.errors import InputError
from urbangeo.io.files import sha256_bytes

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
BACKENDS = ("osm", "openai", "transformers")


class CaptionError(Exception):
    """A call that failed for this image only (undecodable image, empty caption...)."""


@dataclass(frozen=True)
class ImageItem:
    """One image to caption, as the ``images`` layer describes it.

    ``path`` is absolute (or None when the file is missing). ``place`` is the region polygon
    or the street-view point, in ``crs`` (projected metres), for captioners that describe the
    place rather than the pixels.
    """

    image_id: str
    kind: str
    path: Path | None = None
    region_id: str | None = None
    point_id: str | None = None
    place: Any = None
    crs: Any = None
    heading: float | None = None


class Captioner:
    """The interface of every backend."""

    name: ClassVar[str] = "base"
    #: False for captioners that describe the place, not the pixels (they also caption
    #: images whose file is missing).
    needs_image: ClassVar[bool] = True
    #: Several threads may call :meth:`caption` at once.
    thread_safe: ClassVar[bool] = True

    def __init__(self, models: Sequence[str]) -> None:
        if not models:
            raise InputError(f"The {self.name} backend needs at least one --model.")
        self.models = tuple(models)

    def options(self) -> dict:
        """Generation settings that change the output (part of the cache key)."""
        return {}

    def input_sha256(self, item: ImageItem, image: bytes | None) -> str:
        """What identifies the input of a call: by default the image's sha256."""
        if image is None:
            raise CaptionError(f"image {item.image_id} has no file")
        return sha256_bytes(image)

    def caption(self, image: bytes | None, prompt: str, model: str, item: ImageItem) -> str:
        """One caption of ``image`` by ``model`` for ``prompt``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release sessions and models."""


def check_image(image: bytes) -> str:
    """The MIME type of an image that Pillow can decode; CaptionError otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image)) as img:
            fmt = img.format
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CaptionError(f"the image cannot be decoded ({exc})") from exc
    return Image.MIME.get(fmt or "", "image/png")


def data_url(image: bytes) -> str:
    """A base64 ``data:`` URL of an image (checked to decode)."""
    return f"data:{check_image(image)};base64,{base64.b64encode(image).decode('ascii')}"


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
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


@dataclass
class RetryPolicy:
    """Exponential backoff: ``backoff * 2**attempt`` seconds (jittered, capped), or what the
    server's ``Retry-After`` asks, capped at ``max_wait``."""

    max_retries: int = 5
    backoff: float = 1.0
    max_wait: float = 60.0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        base = self.backoff * (2**attempt)
        return min(base * (0.5 + self._rng.random() / 2), self.max_wait)


class OpenAICaptioner(Captioner):
    """Captions from an OpenAI-compatible ``/chat/completions`` endpoint with image input.

    The image goes as a base64 ``data:`` URL in an ``image_url`` content part after the text
    prompt. The key is read from the environment variable ``api_key_env`` (default
    ``OPENAI_API_KEY``; local servers need none) and is never logged or stored.
    """

    name = "openai"
    RETRY_STATUS: ClassVar[frozenset[int]] = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
    FATAL_STATUS: ClassVar[frozenset[int]] = frozenset({401, 403, 404, 405})

    def __init__(
        self,
        models: Sequence[str],
        *,
        base_url: str,
        api_key_env: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        max_tokens: int = 512,
        temperature: float | None = None,
        pool_size: int = 8,
    ) -> None:
        super().__init__(models)
        if not base_url or not base_url.startswith(("http://", "https://")):
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
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.pool_size = pool_size
        self._local = threading.local()
        self._sessions: list = []
        self._sessions_lock = threading.Lock()

    def options(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature}

    def _session(self):
        import requests
        from requests.adapters import HTTPAdapter

        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_maxsize=self.pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

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
        payload = json.dumps(self.request_body(image, prompt, model)).encode()
        reply = self._post(payload, model)
        return _reply_text(reply, self.url)

    def _post(self, payload: bytes, model: str) -> dict:
        import requests

        last = ""
        for attempt in range(self.retry.max_retries + 1):
            retry_after = None
            try:
                response = self._session().post(
                    self.url, data=payload, headers=self._headers, timeout=self.timeout
                )
            except requests.ConnectionError as exc:  # refused, DNS, connect timeout
                last = f"cannot connect ({type(exc).__name__})"
            except requests.Timeout:  # a read timeout: a slow model
                last = f"no reply within {self.timeout:g} s"
            except requests.RequestException as exc:  # a broken reply
                last = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status < 300:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise InputError(
                            f"{self.url} replied with something that is not JSON "
                            f"({response.headers.get('Content-Type', '?')}: "
                            f"{response.text[:120]!r}).",
                            hint="Check --base-url: it must be the API root of an "
                            "OpenAI-compatible server (usually ending in /v1).",
                        ) from exc
                detail = _error_detail(response)
                if status in self.FATAL_STATUS:
                    raise InputError(
                        f"{self.url} refused the request for model '{model}': HTTP {status}"
                        f"{detail}.",
                        hint="Check --base-url, --model and the API key "
                        "(environment variable, never a command-line argument).",
                    )
                if status not in self.RETRY_STATUS:
                    raise CaptionError(f"HTTP {status}{detail}")
                last = f"HTTP {status}{detail}"
                retry_after = _retry_after(response.headers.get("Retry-After"))
            if attempt < self.retry.max_retries:
                time.sleep(self.retry.delay(attempt, retry_after))
        if last.startswith("cannot connect"):
            raise InputError(
                f"Cannot reach {self.url}: {last} after {self.retry.max_retries + 1} tries.",
                hint="Is the server running? Check --base-url (e.g. http://localhost:8000/v1).",
            )
        raise CaptionError(f"{last} after {self.retry.max_retries + 1} tries")

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


def _error_detail(response) -> str:
    try:
        error = response.json().get("error")
        text = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        text = response.text
    text = " ".join(str(text or "").split())[:200]
    return f" ({text})" if text else ""


def _reply_text(reply: Any, url: str) -> str:
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


class TransformersCaptioner(Captioner):
    """A local vision-language model through Hugging Face transformers.

    ``models`` are hub names (loaded from the local cache only: nothing is downloaded at run
    time unless ``local_files_only=False``) or folders written by ``save_pretrained``. Chat
    models (with a chat template) get the prompt with the image; plain captioning models
    (BLIP, GIT) caption without it. Calls run one at a time, on the GPU when there is one.
    """

    name = "transformers"
    thread_safe = False

    def __init__(
        self,
        models: Sequence[str],
        *,
        device: str | None = None,
        max_new_tokens: int = 256,
        local_files_only: bool = True,
        use_prompt: bool | None = None,
    ) -> None:
        super().__init__(models)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.local_files_only = local_files_only
        self.use_prompt = use_prompt
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def options(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "use_prompt": self.use_prompt}

    def _load(self, model: str) -> tuple[Any, Any]:
        if model in self._loaded:
            return self._loaded[model]
        from urbangeo._optional import import_optional

        transformers = import_optional(
            "transformers", extra="captions", purpose="The transformers caption backend"
        )
        torch = import_optional("torch", extra="captions", purpose="transformers")
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            processor = transformers.AutoProcessor.from_pretrained(
                model, local_files_only=self.local_files_only
            )
            net = transformers.AutoModelForImageTextToText.from_pretrained(
                model, local_files_only=self.local_files_only
            )
        except (OSError, ValueError) as exc:
            raise InputError(
                f"Cannot load the vision-language model '{model}': {exc}",
                hint="Give a local folder (save_pretrained) or a hub name already in the "
                "Hugging Face cache (huggingface-cli download NAME while online).",
            ) from exc
        net = net.to(device).eval()
        self._loaded[model] = (processor, net)
        return processor, net

    def caption(self, image: bytes | None, prompt: str, model: str, item: ImageItem) -> str:
        if image is None:
            raise CaptionError(f"image {item.image_id} has no file")
        check_image(image)
        from PIL import Image

        with self._lock:
            processor, net = self._load(model)
            import torch

            rgb = Image.open(io.BytesIO(image)).convert("RGB")
            template = getattr(processor, "chat_template", None)
            use_prompt = self.use_prompt if self.use_prompt is not None else bool(template)
            if use_prompt and template:
                messages = [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": prompt}],
                    }
                ]
                text = processor.apply_chat_template(messages, add_generation_prompt=True)
                inputs = processor(images=rgb, text=text, return_tensors="pt")
            elif use_prompt:
                inputs = processor(images=rgb, text=prompt, return_tensors="pt")
            else:
                inputs = processor(images=rgb, return_tensors="pt")
            inputs = {k: v.to(net.device) for k, v in inputs.items()}
            with torch.no_grad():
                out = net.generate(**inputs, max_new_tokens=self.max_new_tokens)
            if not net.config.is_encoder_decoder and "input_ids" in inputs:
                # Decoder-only models return the prompt tokens too.
                out = out[:, inputs["input_ids"].shape[1] :]
            tokenizer = getattr(processor, "tokenizer", processor)
            text = tokenizer.batch_decode(out, skip_special_tokens=True)[0]
        text = " ".join(text.split())
        if not text:
            raise CaptionError("the model returned an empty caption")
        return text

    def close(self) -> None:
        self._loaded.clear()


def make_captioner(backend: str, models: Sequence[str] | None = None, **options: Any) -> Captioner:
    """A captioner by backend name (``osm``, ``openai``, ``transformers``) and its options."""
    models = list(models or [])
    if backend == "openai":
        if not options.get("base_url"):
            raise InputError(
                "The openai backend needs --base-url.",
                hint="e.g. --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct",
            )
        if not models:
            raise InputError("The openai backend needs at least one --model.")
        return OpenAICaptioner(models, **options)
    if backend == "transformers":
        if not models:
            raise InputError(
                "The transformers backend needs --model (a hub name or a local folder)."
            )
        return TransformersCaptioner(models, **options)
    if backend == "osm":
        from urbangeo.captions.osm import OSMCaptioner

        return OSMCaptioner(models or None, **options)
    raise InputError(
        f"Unknown caption backend '{backend}'.", hint=f"Choose one of {', '.join(BACKENDS)}."
    )
