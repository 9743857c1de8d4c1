"""OpenStreetMap features of a place, and the captions written from them.

- :mod:`~urbangeo.captions.osm.vocabulary`: OSM tag values grouped into caption words
- :mod:`~urbangeo.captions.osm.layers`: :func:`load_osm_layers`, read once for every place
- :mod:`~urbangeo.captions.osm.features`: :class:`PlaceFeatures`, :func:`place_features`,
  :data:`DEFAULT_CONTEXT_RADIUS_M`
- :mod:`~urbangeo.captions.osm.writer`: the sentences of each style
- :mod:`~urbangeo.captions.osm.describe`: :func:`describe`, :data:`STYLES`

The captioner built on them, :class:`~urbangeo.captions.captioners.osm.OSMCaptioner`, lives
with the other captioners and imports from here (never the other way round).
"""

from __future__ import annotations

from urbangeo.captions.osm.describe import MAX_WORDS, MIN_WORDS, STYLES, describe
from urbangeo.captions.osm.features import DEFAULT_CONTEXT_RADIUS_M, PlaceFeatures, place_features
from urbangeo.captions.osm.layers import load_osm_layers

__all__ = [
    "DEFAULT_CONTEXT_RADIUS_M",
    "MAX_WORDS",
    "MIN_WORDS",
    "STYLES",
    "PlaceFeatures",
    "describe",
    "load_osm_layers",
    "place_features",
]
