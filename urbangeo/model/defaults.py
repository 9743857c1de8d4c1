"""Choices and defaults of the model's settings, importable without torch.

They are declared with the stage settings (:mod:`urbangeo.settings.model`); the modules that use
them at run time (``data``, ``distill``, ``embed``, ``training``) import them from here.
"""

from __future__ import annotations

from urbangeo.settings.model import (
    DEFAULT_MOMENTUM,
    DEFAULT_MU,
    DEFAULT_QUEUE_SIZE,
    EMBED_KINDS,
    PRECISIONS,
)
from urbangeo.settings.model import PAIR_KINDS as KIND_CHOICES

__all__ = [
    "DEFAULT_MOMENTUM",
    "DEFAULT_MU",
    "DEFAULT_QUEUE_SIZE",
    "EMBED_KINDS",
    "KIND_CHOICES",
    "PRECISIONS",
]
