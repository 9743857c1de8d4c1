"""Providers behind an HTTP API: the key from the environment, the polite HTTP client.

Keys are read from the environment only and never written anywhere: not to the manifest
(which records ids such as ``google:PANO_ID``), not to logs, not to error messages.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import ClassVar, TypeVar, cast

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.streetview.base import (
    Fetched,
    ProviderOptions,
    Shot,
    StreetViewProvider,
    check_image,
)
from urbangeo.io.http import HttpError, QueryParams

T = TypeVar("T")


class WebProvider(StreetViewProvider):
    """A provider behind an HTTP API with a key from the environment."""

    #: The environment variable that holds the API key (keys are read from there only).
    key_env: ClassVar[str]
    #: The environment variable that points the provider at another server (a proxy, a test).
    url_env: ClassVar[str]
    #: The API's address.
    default_url: ClassVar[str]

    def __init__(self, options: ProviderOptions) -> None:
        super().__init__(options)
        env = self.key_env
        self.key = os.environ.get(env, "").strip()
        if not self.key:
            raise InputError(
                f"The {self.name} provider needs a key in the environment variable {env}.",
                hint=f"export {env}=... (keys are read from the environment only, never from "
                "options, so they stay out of shell history and logs).",
            )
        self.base_url = (
            options.base_url or os.environ.get(self.url_env) or self.default_url
        ).rstrip("/")
        hint = f"Check the key in {env}: that it is valid and enabled for this API."
        if options.client is not None:
            self.client = options.client
            self.client.secrets = sorted({*self.client.secrets, self.key}, key=len, reverse=True)
        else:
            self.client = options.new_client(
                secrets=[self.key], service=f"The {self.name} API", key_hint=hint
            )
        self.key_hint = hint
        self._cache: dict[object, object] = {}
        self._cache_lock = threading.Lock()

    def memo(self, key: object, compute: Callable[[], T]) -> T:
        """``compute()`` once per key (several headings of one point share a lookup)."""
        value: object
        with self._cache_lock:
            event = self._cache.get(key)
            if event is None:
                event = self._cache[key] = threading.Event()
                owner = True
            else:
                owner = False
        if isinstance(event, threading.Event):
            if owner:
                try:
                    value = compute()
                except BaseException as exc:
                    value = exc
                with self._cache_lock:
                    self._cache[key] = value
                event.set()
            else:
                event.wait()
        with self._cache_lock:
            value = self._cache[key]
        if isinstance(value, BaseException):
            raise value
        return cast(T, value)  # the cache holds what compute() returned for this key

    def per_point(self, shot: Shot, what: str, compute: Callable[[], T]) -> T | Fetched:
        """``compute()`` once per sample point (the point's headings share it), or a failed
        result naming ``what`` when its request failed."""
        try:
            return self.memo((shot.job.point_id, round(shot.lon, 7), round(shot.lat, 7)), compute)
        except HttpError as exc:
            return Fetched(C.STATUS_FAILED, reason=f"{what}: {exc}")

    def download(
        self, url: str, source: str, *, missing: str, params: QueryParams | None = None
    ) -> Fetched:
        """The image at ``url``: failed after an HTTP error, missing (``missing``) on a 404."""
        try:
            response = self.client.get(url, params=params)
        except HttpError as exc:
            return Fetched(C.STATUS_FAILED, reason=str(exc), source=source)
        if response.status_code == 404:
            return Fetched(C.STATUS_MISSING, reason=missing, source=source)
        return self.image(response.content, source)

    def image(self, response_data: bytes, source: str) -> Fetched:
        """An ok result if the bytes decode as an image."""
        if check_image(response_data) is None:
            return Fetched(C.STATUS_FAILED, reason="the server sent a broken image", source=source)
        return Fetched(C.STATUS_OK, response_data, source=source)

    def close(self) -> None:
        """Close connections."""
        self.client.close()
