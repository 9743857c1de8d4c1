"""The tile-source interface: what every source of overhead images provides.

A source is given the regions' squares (rows of minx, miny, maxx, maxy in the grid's CRS) and
yields one image per square, warped so that it covers exactly that square, north up, ``size`` ×
``size`` pixels; or the reason there is none (a :class:`Tile` either way).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from urbangeo.imagery.http_options import HttpOptions
from urbangeo.settings.imagery import (  # the one declaration of the defaults (re-exported)
    DEFAULT_MIN_VALID,
    DEFAULT_RESAMPLING,
    RESAMPLING,
    TILE_KEY_ENV,
)

__all__ = [
    "DEFAULT_MIN_VALID",
    "DEFAULT_RESAMPLING",
    "RESAMPLING",
    "TILE_KEY_ENV",
    "Tile",
    "TileOptions",
    "TileSource",
]


@dataclass(frozen=True)
class Tile:
    """One region's image (``image``: H × W × 3 or H × W uint8) or why there is none.

    ``valid_share``: the share of the square where the source has data (0..1; the rest is
    drawn black), None when the source cannot tell. ``data``: the image already encoded as
    PNG (with :attr:`TileSource.png_settings`) by a source that encodes in its worker
    processes; ``image`` is None then.
    """

    status: str
    image: np.ndarray | None = None
    reason: str = ""
    valid_share: float | None = None
    data: bytes | None = None


@dataclass
class TileOptions(HttpOptions):
    """Settings of every tile source (each uses the ones that concern it), with the HTTP
    settings of :class:`~urbangeo.imagery.http_options.HttpOptions`.

    ``location`` is what the source reads: the raster file (``raster``), the URL template or
    xyzservices name (``xyz``), the OSM extract (``osm``).
    """

    location: str | os.PathLike | None = None
    grid_crs: object = None
    #: Where the source has data, in the grid's CRS (a shapely geometry; None: the source
    #: finds out itself). The OSM renderer draws nothing outside it.
    coverage: object = None
    #: The run's folder: sources keep their caches under it.
    run_dir: Path | None = None
    bands: tuple[int, ...] | None = None
    zoom: int | None = None
    resampling: str = DEFAULT_RESAMPLING
    min_valid: float = DEFAULT_MIN_VALID
    key_env: str = TILE_KEY_ENV


class TileSource(ABC):
    """Where overhead images come from; registered by name in ``TILE_SOURCES``."""

    #: False for flat-coloured maps: their PNGs compress best with zlib's default filters.
    photographic: ClassVar[bool] = True
    #: Processes (``render``: drawing is CPU-bound) or threads (``raster``: reads) the source
    #: may use; ``tiles`` sets it from ``--workers`` (``xyz`` downloads follow ``concurrency``).
    workers: int = 1
    #: The settings text ``tiles`` writes into each PNG (:func:`~urbangeo.imagery.png.encode_png`):
    #: set, a source that draws in worker processes encodes there too (``Tile.data``).
    png_settings: str | None = None

    @classmethod
    @abstractmethod
    def from_options(cls, options: TileOptions) -> TileSource:
        """The source that ``options`` describe (an :class:`InputError` if they do not fit)."""

    @property
    @abstractmethod
    def source(self) -> str:
        """What the manifest's ``source`` column says (never holds a secret)."""

    @abstractmethod
    def params(self) -> dict:
        """Settings that decide what the images look like (recorded with the stage)."""

    @abstractmethod
    def tiles(self, bounds: np.ndarray, size: int) -> Iterator[tuple[int, Tile]]:
        """(index into ``bounds``, tile) for each square (rows of minx, miny, maxx, maxy)."""

    def check_overlap(self, bounds: np.ndarray) -> None:  # noqa: B027 - most cannot tell early
        """Fail clearly when no square meets the source's data (default: no check)."""

    def choose_zoom(self, bounds: np.ndarray, size: int) -> int | None:
        """The zoom level used for these squares, chosen now so that :meth:`params` records
        it; None for sources without zoom levels (the default)."""
        return None

    def close(self) -> None:  # noqa: B027 - some sources hold nothing
        """Release files and connections (default: nothing to release)."""
