"""What every captioner is: the :class:`Captioner` base, the item it captions, its errors.

A captioner turns (image bytes, prompt, model) into a caption. Errors that concern one image
raise :class:`CaptionError` (the stage records them and goes on); errors that every call would
hit (an unreachable endpoint, a reply that is not JSON, a rejected key) raise
:class:`~urbangeo.errors.InputError`, which stops the stage.
"""

from __future__ import annotations

import base64
import io
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from urbangeo.errors import InputError
from urbangeo.io.files import sha256_bytes


class CaptionError(Exception):
    """A call that failed for this image only (undecodable image, empty caption...)."""


@dataclass(frozen=True)
class ImageItem:
    """One image to caption, as the ``images`` layer describes it.

    ``path`` is absolute (or None when the file is missing). ``place`` is the region polygon
    or the street-view point, in ``crs`` (projected metres), for captioners that describe the
    place rather than the pixels. ``source``: where the image came from (column ``source``,
    e.g. ``osm:...`` for a rendered map), which chooses the overhead prompt's wording.
    """

    image_id: str
    kind: str
    path: Path | None = None
    region_id: str | None = None
    point_id: str | None = None
    place: Any = None
    crs: Any = None
    heading: float | None = None
    source: str | None = None


class Captioner(ABC):
    """The interface of every captioner: :meth:`caption` to implement, hooks to override."""

    #: The name the captioner is registered under (the ``backend`` column of ``captions``).
    name: ClassVar[str] = "base"
    #: False for captioners that describe the place, not the pixels (they also caption
    #: images whose file is missing).
    needs_image: ClassVar[bool] = True
    #: Several threads may call :meth:`caption` at once.
    thread_safe: ClassVar[bool] = True
    #: Calls it takes at once when it knows (openai: the sum of its endpoints'), else None:
    #: the stage's ``--concurrency``.
    concurrency: int | None = None
    #: Calls are Python work on this machine's CPU (no network, no GPU), held back by the GIL in
    #: threads: the caption stage spreads them over worker processes (``--workers``), each with
    #: a pickled copy of the prepared captioner, instead of ``concurrency`` threads.
    cpu_bound: ClassVar[bool] = False

    def __init__(self, models: Sequence[str]) -> None:
        if not models:
            raise InputError(f"The {self.name} backend needs at least one --model.")
        self.models = tuple(models)

    @abstractmethod
    def caption(self, image: bytes | None, prompt: str, model: str, item: ImageItem) -> str:
        """One caption of ``image`` by ``model`` for ``prompt``."""

    def caption_many(
        self, image: bytes | None, item: ImageItem, requests: Sequence[tuple[str, str]]
    ) -> list[str | CaptionError]:
        """The captions of one image for several ``(prompt, model)`` requests, in order; a
        failed request gives its :class:`CaptionError`. Override to share work between the
        models of one image."""
        out: list[str | CaptionError] = []
        for prompt, model in requests:
            try:
                out.append(self.caption(image, prompt, model, item))
            except CaptionError as exc:
                out.append(exc)
        return out

    def options(self) -> dict:
        """Generation settings that change the output (part of the cache key)."""
        return {}

    def input_sha256(self, item: ImageItem, image: bytes | None) -> str:
        """What identifies the input of a call: by default the image's sha256."""
        if image is None:
            raise CaptionError(f"image {item.image_id} has no file")
        return sha256_bytes(image)

    def prepare(self, items: Sequence[ImageItem]) -> None:  # noqa: B027 - most need nothing
        """Get ready for captioning ``items`` (read shared data once); nothing by default."""

    def close(self) -> None:  # noqa: B027 - some hold nothing
        """Release sessions and models; nothing by default."""


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
