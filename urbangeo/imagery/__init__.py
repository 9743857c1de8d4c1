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
  images staged until the layer that describes them is committed (PNGs:
  :mod:`~urbangeo.imagery.png`);
- :mod:`~urbangeo.imagery.edges`: edge cells, marked in the ``regions`` layer by ``tiles`` and
  left out of training, clustering and prediction;
- :mod:`~urbangeo.imagery.coords`: WGS84 / GCJ-02 / BD-09; :mod:`~urbangeo.imagery.panorama`:
  perspective views from equirectangular panoramas.

The HTTP client is :mod:`urbangeo.io.http`, the worker pool :mod:`urbangeo.io.pool`. The names
below are imported when first used, so ``import urbangeo.imagery`` stays cheap.
"""

from urbangeo._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tiles_stage": ".stages",
        "streetview_stage": ".stages",
        "TILE_SOURCES": ".sources",
        "Tile": ".sources",
        "TileOptions": ".sources",
        "TileSource": ".sources",
        "make_tile_source": ".sources",
        "PROVIDERS": ".streetview",
        "Fetched": ".streetview",
        "ProviderOptions": ".streetview",
        "Shot": ".streetview",
        "StreetViewProvider": ".streetview",
        "make_provider": ".streetview",
        "ImageJob": ".manifest",
        "ImageResult": ".manifest",
        "ImagesFailedError": ".manifest",
        "Manifest": ".manifest",
    },
)
