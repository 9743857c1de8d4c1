"""Imported once by the caption stage's fork server (:mod:`urbangeo.captions.workers`), never
by the parent: what every worker needs, loaded before the workers are forked from it."""

from __future__ import annotations

import os

from urbangeo.model.threads import one_thread_env

# Before numpy, BLAS and torch load: one thread in the server and in every worker forked.
os.environ.update(one_thread_env())

import geopandas  # noqa: F401
import shapely  # noqa: F401

import urbangeo.captions.stages  # noqa: F401
