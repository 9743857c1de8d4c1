"""Imagery: overhead images per region and street-view images per sample point.

- :mod:`~urbangeo.imagery.stages`: ``tiles_stage`` and ``streetview_stage``, the library
  functions behind ``urbangeo tiles`` and ``urbangeo streetview``;
- :mod:`~urbangeo.imagery.sources`: tile sources behind the ``TileSource`` base, registered by
  name in ``TILE_SOURCES`` (``osm``: :mod:`.sources.render`, map tiles drawn offline from OSM
  data; ``raster``: :mod:`.sources.raster`, GeoTIFF/COG; ``xyz``: :mod:`.sources.xyz`, tile
  services), built by ``make_tile_source``;
- :mod:`~urbangeo.imagery.streetview`: street-view providers behind the ``StreetViewProvider``
  base, registered by name in ``PROVIDERS`` (``folder``, ``google``, ``mapillary``,
  ``baidu``; one module each, photo locations in :mod:`.streetview.location`), built by
  ``make_provider``;
- :mod:`~urbangeo.imagery.manifest`: the ``images`` layer, atomic image files, resume, new
  images staged until the layer that describes them is committed;
- :mod:`~urbangeo.imagery.coords`: WGS84 / GCJ-02 / BD-09; :mod:`~urbangeo.imagery.panorama`:
  perspective views from equirectangular panoramas.

The HTTP client is :mod:`urbangeo.io.http`, the worker pool :mod:`urbangeo.io.pool`. The names
below are imported when first used, so ``import urbangeo.imagery`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "tiles_stage": "urbangeo.imagery.stages",
    "streetview_stage": "urbangeo.imagery.stages",
    "TILE_SOURCES": "urbangeo.imagery.sources",
    "Tile": "urbangeo.imagery.sources",
    "TileOptions": "urbangeo.imagery.sources",
    "TileSource": "urbangeo.imagery.sources",
    "make_tile_source": "urbangeo.imagery.sources",
    "PROVIDERS": "urbangeo.imagery.streetview",
    "Fetched": "urbangeo.imagery.streetview",
    "ProviderOptions": "urbangeo.imagery.streetview",
    "Shot": "urbangeo.imagery.streetview",
    "StreetViewProvider": "urbangeo.imagery.streetview",
    "make_provider": "urbangeo.imagery.streetview",
    "ImageJob": "urbangeo.imagery.manifest",
    "ImageResult": "urbangeo.imagery.manifest",
    "ImagesFailedError": "urbangeo.imagery.manifest",
    "Manifest": "urbangeo.imagery.manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
