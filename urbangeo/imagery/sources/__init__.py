"""Sources of overhead images per region, registered by name in :data:`TILE_SOURCES`.

- :mod:`.base`: :class:`TileSource` (the interface, with its optional hooks), :class:`Tile`,
  :class:`TileOptions`;
- :mod:`.raster` (``raster``): a GeoTIFF/COG or any raster GDAL reads, in any CRS;
- :mod:`.xyz` (``xyz``): an XYZ tile service, tiles cached on disk;
- :mod:`.render` (``osm``): map tiles drawn offline from an OSM extract;
- :mod:`.warp`: warping pixels into a square, shared by the sources;
- :mod:`.coverage`: where an OSM extract has data (nothing is drawn beyond it).

A square that has data for less than ``min_valid`` of its area (default half; nodata, outside
the raster, missing tiles) is reported as missing, not drawn. Every tile records the share of
it with data (``valid_share``; pixels without data are black).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from urbangeo._lazy import lazy_exports
from urbangeo._registry import Registry

if TYPE_CHECKING:
    import numpy as np

    from urbangeo.imagery.sources.base import TileOptions, TileSource

#: Tile sources by name (``tiles_stage`` picks one from ``render``, ``raster`` or ``xyz``).
TILE_SOURCES = Registry(
    "tile source",
    {
        "osm": "urbangeo.imagery.sources.render:OsmRenderSource",
        "raster": "urbangeo.imagery.sources.raster:RasterSource",
        "xyz": "urbangeo.imagery.sources.xyz:XyzSource",
    },
)

#: Names imported when first asked for: this package loads no numpy, rasterio, mercantile, pyrosm
#: or requests, so the settings can list :data:`TILE_SOURCES` cheaply.
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DEFAULT_MIN_VALID": "urbangeo.settings.imagery",
        "DEFAULT_RESAMPLING": "urbangeo.settings.imagery",
        "RESAMPLING": "urbangeo.settings.imagery",
        "TILE_KEY_ENV": "urbangeo.settings.imagery",
        "Tile": ".base",
        "TileOptions": ".base",
        "TileSource": ".base",
    },
    defined=["TILE_SOURCES", "make_tile_source"],
    registry=TILE_SOURCES,
)


def make_tile_source(
    name: str,
    options: TileOptions,
    *,
    bounds: np.ndarray | None = None,
    size: int | None = None,
) -> TileSource:
    """The tile source registered as ``name``, built from ``options``.

    With ``bounds`` (the squares), it is checked against them (an :class:`InputError` when no
    square meets its data) and, with ``size`` too, its zoom level is chosen; a source that
    fails these checks is closed.
    """
    cls = TILE_SOURCES.get(name.strip().lower())
    source = cls.from_options(options)
    if bounds is None:
        return source
    try:
        source.check_overlap(bounds)
        if size is not None:
            source.choose_zoom(bounds, size)
    except BaseException:
        source.close()
        raise
    return source
