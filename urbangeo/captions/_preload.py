"""Imported once by the caption stage's fork server (:mod:`urbangeo.captions.workers`), never
by the parent: what every worker needs, loaded before the workers are forked from it."""

from __future__ import annotations

import os

from urbangeo.captions.workers import THREAD_VARIABLES

# Before numpy, BLAS and torch load: one thread in the server and in every worker forked.
for _name in THREAD_VARIABLES:
    os.environ[_name] = "1"

import geopandas  # noqa: E402, F401
import shapely  # noqa: E402, F401

import urbangeo.captions.stages  # noqa: E402, F401
