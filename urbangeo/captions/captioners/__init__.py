"""Captioners: one abstract base, one module per implementation, a registry of their names.

- :mod:`~urbangeo.captions.captioners.base`: :class:`Captioner`, :class:`ImageItem`,
  :class:`CaptionError`, :func:`check_image`, :func:`data_url`
- :mod:`~urbangeo.captions.captioners.osm`: ``osm``, offline, from OpenStreetMap features
- :mod:`~urbangeo.captions.captioners.openai`: ``openai``, any OpenAI-compatible endpoint
- :mod:`~urbangeo.captions.captioners.transformers`: ``transformers``, a local model

:data:`CAPTIONERS` names them without importing any (so without torch or requests);
:func:`make_captioner` builds one by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from urbangeo._registry import Registry
from urbangeo.captions.captioners.base import Captioner, CaptionError, ImageItem

CAPTIONERS = Registry(
    "caption backend",
    {
        "osm": "urbangeo.captions.captioners.osm:OSMCaptioner",
        "openai": "urbangeo.captions.captioners.openai:OpenAICaptioner",
        "transformers": "urbangeo.captions.captioners.transformers:TransformersCaptioner",
    },
)
#: The backend names, in the order the CLI and the QGIS plugin offer them.
BACKENDS = CAPTIONERS.names()

__all__ = ["BACKENDS", "CAPTIONERS", "CaptionError", "Captioner", "ImageItem", "make_captioner"]


def make_captioner(backend: str, models: Sequence[str] | None = None, **options: Any) -> Captioner:
    """A captioner by backend name (one of :data:`BACKENDS`) with its models and options;
    an :class:`~urbangeo.errors.InputError` listing the choices for an unknown name."""
    return CAPTIONERS.get(backend)(list(models or []), **options)
