"""Imported by the caption stage's fork server when its workers will parse captions: spaCy's
pipeline loaded once there, shared by every worker forked from it."""

from __future__ import annotations

import contextlib

import urbangeo.captions._preload  # noqa: F401 - one thread first

with contextlib.suppress(Exception):  # each worker then loads it itself, and reports errors
    from urbangeo.captions.scenegraph import load_spacy

    load_spacy()
