"""Where a source has data: an OSM extract's coverage, and its mask over a block of pixels.

Cells at the edge of a study area are only partly covered by the extract: beyond its end the
renderer has nothing to draw. Those pixels are marked as having no data (drawn black, as a
raster's nodata) and counted in the tile's ``valid_share``, so that a mostly blank tile is
known as such (:mod:`urbangeo.imagery.edges`).

An extract's coverage is, in this order: the boundary of the bundled city whose extract it is
(:func:`urbangeo.geo.boundary.city_boundary`, the area the extract was cut to), the bounding
box in the ``.osm.pbf`` header (:func:`pbf_header_bbox`; osmium and Geofabrik write one), or
the bounding box of the data read (:class:`~urbangeo.imagery.sources.render.OsmRenderSource`).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import rasterio.features
import shapely
from rasterio.transform import Affine

#: Pixels with no data are drawn in this colour (as a raster's nodata).
NODATA_RGB = (0, 0, 0)
#: The header block of an .osm.pbf file is small; anything larger is not one.
_MAX_HEADER = 64 * 1024 * 1024


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as ints, the rest as bytes."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire}")
        yield number, value


def pbf_header_bbox(path: str | os.PathLike) -> tuple[float, float, float, float] | None:
    """The (west, south, east, north) bounding box an ``.osm.pbf`` file's header declares,
    in degrees; None when it declares none or the file cannot be read as one."""
    try:
        with open(path, "rb") as fh:
            (size,) = struct.unpack(">I", fh.read(4))
            if size > _MAX_HEADER:
                return None
            blob_header = dict(_fields(fh.read(size)))
            if blob_header.get(1) != b"OSMHeader":
                return None
            datasize = blob_header.get(3)
            if not isinstance(datasize, int) or datasize > _MAX_HEADER:
                return None
            blob = dict(_fields(fh.read(datasize)))
        raw = blob.get(1)
        packed = blob.get(3)
        data = raw if isinstance(raw, bytes) else zlib.decompress(packed)  # type: ignore[arg-type]
        box = dict(_fields(data)).get(1)
        if not isinstance(box, bytes):
            return None
        values = dict(_fields(box))
        if not all(isinstance(values.get(k), int) for k in (1, 2, 3, 4)):
            return None

        def degrees(key: int) -> float:
            v = int(values[key])
            return ((v >> 1) ^ -(v & 1)) / 1e9  # zigzag-encoded nanodegrees

        west, east, north, south = (degrees(k) for k in (1, 2, 3, 4))
    except (OSError, ValueError, IndexError, struct.error, zlib.error, TypeError):
        return None
    if not (west < east and south < north):
        return None
    return west, south, east, north


def box_in_crs(bounds: tuple[float, float, float, float], crs: object) -> shapely.Geometry:
    """A WGS84 bounding box as a polygon in ``crs`` (its edges densified, so that it bends as
    the box does in a projected CRS)."""
    import geopandas as gpd

    from urbangeo import constants as C

    west, south, east, north = bounds
    ring = shapely.segmentize(shapely.box(west, south, east, north), (east - west) / 64)
    return gpd.GeoSeries([ring], crs=C.WGS84).to_crs(crs).iloc[0]


def coverage_mask(
    coverage: shapely.Geometry | None,
    bounds: tuple[float, float, float, float],
    pixel: float,
    shape: tuple[int, int],
) -> np.ndarray | None:
    """Where a block of pixels (``shape``, from the top left corner of ``bounds``, ``pixel``
    metres each) lies in ``coverage``: a boolean array, or None when all of it does."""
    if coverage is None:
        return None
    minx, _, _, maxy = bounds
    height, width = shape
    block = shapely.box(minx, maxy - height * pixel, minx + width * pixel, maxy)
    if shapely.contains(coverage, block):
        return None
    if not shapely.intersects(coverage, block):
        return np.zeros(shape, dtype=bool)
    burnt = rasterio.features.rasterize(
        [(shapely.intersection(coverage, block), 1)],
        out_shape=shape,
        transform=Affine(pixel, 0, minx, 0, -pixel, maxy),
        fill=0,
        dtype=np.uint8,
    )
    return burnt.astype(bool)


def extract_coverage(
    gpkg: str | os.PathLike, osm_path: str | os.PathLike, crs: object
) -> shapely.Geometry | None:
    """The coverage of a run's OSM extract in ``crs``, when it is a bundled city's extract:
    the city's boundary (the area the extract was cut to); else None (the renderer then uses
    the extract's header or its data)."""
    from pathlib import Path

    from urbangeo.geo.boundary import city_boundary, run_city

    city = run_city(gpkg)
    if city is None:
        return None
    try:
        same = city.osm_path().resolve() == Path(osm_path).resolve()
    except (OSError, AssertionError):
        return None
    if not same:
        return None
    return city_boundary(city.name).to_crs(crs).union_all()
