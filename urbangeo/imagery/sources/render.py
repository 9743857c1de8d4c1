"""Map tiles rendered from OpenStreetMap data: an offline overhead image per region.

The OSM extract is read once (pyrosm), reprojected once into the grid's CRS, and turned into
one list of shapes with a class each, in drawing order. Regions are rendered in blocks of up to
``BLOCK`` × ``BLOCK`` neighbouring regions: one ``rasterio.features.rasterize`` call per block
at the target resolution burns class numbers (later classes over earlier ones), each region's
square is sliced out and coloured through the palette. No anti-aliasing: every pixel has
exactly one class colour, so the images are easy to read for a model and to test.

Colour scheme (RGB), drawn in this order, each over the ones before:

====================  ===============  ======================================================
class                 colour           OSM features
====================  ===============  ======================================================
background            (242, 239, 233)  anything not mapped below (OSM Carto's land colour)
residential           (224, 223, 223)  landuse=residential
commercial            (242, 218, 217)  landuse=commercial, retail
industrial            (235, 219, 232)  landuse=industrial, railway, port, quarry, garages
other land use        (226, 220, 207)  any other landuse (construction, military, civil...)
farmland              (238, 240, 213)  landuse=farmland, farmyard, orchard, vineyard
green                 (173, 209, 158)  landuse forest, grass, meadow, park, cemetery...;
                                       natural wood, scrub, grassland, heath, wetland;
                                       leisure park, garden, pitch, playground, golf_course...
bare                  (238, 229, 220)  natural beach, sand, bare_rock, scree, shingle
water                 (170, 211, 223)  natural=water, landuse reservoir/basin/pond,
                                       waterway riverbank/dock and river/canal/stream lines
railway               (112, 112, 112)  railway rail, tram, light_rail, subway, narrow_gauge
path                  (250, 178, 160)  highway footway, path, cycleway, steps, pedestrian...
minor road            (255, 255, 255)  highway residential, service, unclassified, track...
major road            (247, 250, 191)  highway primary, secondary, tertiary (and links)
motorway              (232, 146, 162)  highway motorway, trunk (and links)
building              (196, 182, 171)  building=*
====================  ===============  ======================================================

Lines are drawn as polygons buffered to a width in metres (``ROAD_WIDTH_M``), so a road is as
wide in the image as on the ground; tunnels are not drawn. The sea is drawn only where OSM maps
it as a water polygon (coastlines are not closed into sea areas).

Nothing is drawn beyond the extract's coverage (:mod:`.coverage`): those pixels are black (no
data), and each tile's ``valid_share`` says how much of it the extract covers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio.features
import shapely
from rasterio.transform import from_origin

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.sources.base import Tile, TileOptions, TileSource
from urbangeo.imagery.sources.coverage import (
    NODATA_RGB,
    box_in_crs,
    coverage_mask,
    pbf_header_bbox,
)
from urbangeo.imagery.sources.warp import lattice_step

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

# geopandas, pandas and the OSM reader are imported where they are used: the worker processes
# that draw blocks (render_workers) import this module and need none of them.

OSM_HINT = "Pass an .osm.pbf file with --osm (e.g. from download.geofabrik.de)."

#: (name, RGB) of each class; the index is the class number and the drawing order.
CLASSES: list[tuple[str, tuple[int, int, int]]] = [
    ("background", (242, 239, 233)),
    ("residential", (224, 223, 223)),
    ("commercial", (242, 218, 217)),
    ("industrial", (235, 219, 232)),
    ("landuse", (226, 220, 207)),
    ("farmland", (238, 240, 213)),
    ("green", (173, 209, 158)),
    ("bare", (238, 229, 220)),
    ("water", (170, 211, 223)),
    ("railway", (112, 112, 112)),
    ("path", (250, 178, 160)),
    ("minor_road", (255, 255, 255)),
    ("major_road", (247, 250, 191)),
    ("motorway", (232, 146, 162)),
    ("building", (196, 182, 171)),
]
CLASS = {name: i for i, (name, _) in enumerate(CLASSES)}
PALETTE = np.array([rgb for _, rgb in CLASSES], dtype=np.uint8)
COLOURS = {name: rgb for name, rgb in CLASSES}

LANDUSE_CLASS = {
    "residential": "residential",
    "commercial": "commercial",
    "retail": "commercial",
    "industrial": "industrial",
    "railway": "industrial",
    "port": "industrial",
    "quarry": "industrial",
    "garages": "industrial",
    "farmland": "farmland",
    "farmyard": "farmland",
    "orchard": "farmland",
    "vineyard": "farmland",
    "forest": "green",
    "grass": "green",
    "meadow": "green",
    "park": "green",
    "recreation_ground": "green",
    "village_green": "green",
    "allotments": "green",
    "cemetery": "green",
    "greenfield": "green",
    "plant_nursery": "green",
    "flowerbed": "green",
    "reservoir": "water",
    "basin": "water",
    "pond": "water",
    "salt_pond": "water",
}
NATURAL_CLASS = {
    "wood": "green",
    "scrub": "green",
    "grassland": "green",
    "heath": "green",
    "wetland": "green",
    "fell": "green",
    "beach": "bare",
    "sand": "bare",
    "bare_rock": "bare",
    "scree": "bare",
    "shingle": "bare",
    "water": "water",
    "bay": "water",
    "strait": "water",
}
LEISURE_GREEN = frozenset(
    {"park", "garden", "pitch", "playground", "golf_course", "nature_reserve", "dog_park"}
)
WATERWAY_AREAS = frozenset({"riverbank", "dock"})
#: Full width in metres of drawn lines, by highway / waterway / railway value.
ROAD_WIDTH_M: dict[str, tuple[str, float]] = {
    "motorway": ("motorway", 18.0),
    "trunk": ("motorway", 16.0),
    "motorway_link": ("motorway", 8.0),
    "trunk_link": ("motorway", 8.0),
    "primary": ("major_road", 14.0),
    "secondary": ("major_road", 12.0),
    "tertiary": ("major_road", 10.0),
    "primary_link": ("major_road", 7.0),
    "secondary_link": ("major_road", 7.0),
    "tertiary_link": ("major_road", 7.0),
    "residential": ("minor_road", 8.0),
    "unclassified": ("minor_road", 8.0),
    "living_street": ("minor_road", 7.0),
    "road": ("minor_road", 7.0),
    "service": ("minor_road", 5.0),
    "track": ("minor_road", 4.0),
    "busway": ("minor_road", 7.0),
    "pedestrian": ("path", 5.0),
    "footway": ("path", 2.0),
    "path": ("path", 2.0),
    "cycleway": ("path", 2.0),
    "bridleway": ("path", 2.0),
    "steps": ("path", 2.0),
    "corridor": ("path", 2.0),
}
WATERWAY_WIDTH_M = {"river": 20.0, "canal": 12.0, "stream": 3.0, "ditch": 2.0, "drain": 2.0}
RAILWAY_WIDTH_M = {
    "rail": 3.0,
    "light_rail": 3.0,
    "subway": 3.0,
    "narrow_gauge": 2.5,
    "tram": 2.0,
}
#: Regions per side of a block rendered with one rasterize call...
BLOCK = 16
#: ...and at most this many pixels per side of a block.
MAX_BLOCK_PX = 4096


@dataclass(frozen=True)
class MapFeatures:
    """OSM shapes in drawing order, in a metric CRS: ``geometry`` and ``cls`` (class number)."""

    geometries: np.ndarray
    classes: np.ndarray
    crs: object
    tree: shapely.STRtree

    def __len__(self) -> int:
        return len(self.geometries)


def _polygons(frame: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame:
    import geopandas as gpd

    if frame is None or frame.empty:
        return gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs=C.WGS84)
    return frame[frame.geom_type.isin(["Polygon", "MultiPolygon"])]


def _lines(frame: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame:
    import geopandas as gpd

    if frame is None or frame.empty:
        return gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs=C.WGS84)
    return frame[frame.geom_type.isin(["LineString", "MultiLineString"])]


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    import pandas as pd

    if name in frame:
        return frame[name].astype(object)
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _not_tunnel(frame: pd.DataFrame) -> pd.Series:
    tunnel = _column(frame, "tunnel")
    return ~tunnel.isin(["yes", "building_passage", "culvert"])


def read_osm(
    path: str | os.PathLike, *, bounds_wgs84: tuple[float, float, float, float] | None = None
) -> dict[str, gpd.GeoDataFrame]:
    """Buildings, land use, natural areas, roads and other tags from an ``.osm.pbf`` file."""
    from urbangeo.io.osm import NETWORK_ALL, open_extract

    extract = open_extract(path, bbox=bounds_wgs84, hint=OSM_HINT)
    layers = {
        "buildings": extract.buildings(),
        "landuse": extract.landuse(),
        "natural": extract.natural(),
        "roads": extract.roads(network=NETWORK_ALL),
        "other": extract.tagged({"leisure": True, "waterway": True, "railway": True}, nodes=False),
    }
    return {k: v for k, v in layers.items() if not v.empty}


def map_features(layers: dict[str, gpd.GeoDataFrame], crs: object) -> MapFeatures:
    """Classify OSM layers into drawable shapes in ``crs`` (lines buffered to their width)."""
    import pandas as pd

    parts: list[tuple[int, gpd.GeoSeries]] = []

    def add(cls: str, geoms: gpd.GeoSeries) -> None:
        if len(geoms):
            parts.append((CLASS[cls], geoms))

    landuse = _polygons(layers.get("landuse"))
    natural = _polygons(layers.get("natural"))
    other = layers.get("other")
    other_poly = _polygons(other)
    other_lines = _lines(other)
    lu_value = _column(landuse, "landuse")
    lu_class = lu_value.map(LANDUSE_CLASS)
    nat_class = _column(natural, "natural").map(NATURAL_CLASS)

    for cls in ("residential", "commercial", "industrial"):
        add(cls, landuse.geometry[lu_class == cls])
    add("landuse", landuse.geometry[lu_class.isna() & lu_value.notna()])
    add("farmland", landuse.geometry[lu_class == "farmland"])
    green = [landuse.geometry[lu_class == "green"], natural.geometry[nat_class == "green"]]
    green.append(other_poly.geometry[_column(other_poly, "leisure").isin(LEISURE_GREEN)])
    add("green", pd.concat(green))
    add("bare", natural.geometry[nat_class == "bare"])
    waterway = _column(other_lines, "waterway")
    water_lines = other_lines[waterway.isin(WATERWAY_WIDTH_M.keys()) & _not_tunnel(other_lines)]
    water = [
        landuse.geometry[lu_class == "water"],
        natural.geometry[nat_class == "water"],
        other_poly.geometry[_column(other_poly, "waterway").isin(WATERWAY_AREAS)],
    ]
    parts_water = pd.concat(water)
    # Buffers are computed in the metric CRS below, so lines are kept with their widths.
    lines: list[tuple[int, gpd.GeoSeries, np.ndarray]] = []
    if len(water_lines):
        widths = _column(water_lines, "waterway").map(WATERWAY_WIDTH_M).to_numpy(float)
        lines.append((CLASS["water"], water_lines.geometry, widths))
    add("water", parts_water)

    railway = _column(other_lines, "railway")
    rails = other_lines[railway.isin(RAILWAY_WIDTH_M.keys()) & _not_tunnel(other_lines)]
    if len(rails):
        widths = _column(rails, "railway").map(RAILWAY_WIDTH_M).to_numpy(float)
        lines.append((CLASS["railway"], rails.geometry, widths))

    roads = _lines(layers.get("roads"))
    roads = roads[_not_tunnel(roads)]
    highway = _column(roads, "highway")
    spec = highway.map(ROAD_WIDTH_M)
    for cls in ("path", "minor_road", "major_road", "motorway"):
        chosen = spec.map(lambda s, c=cls: isinstance(s, tuple) and s[0] == c).astype(bool)
        if chosen.any():
            widths = spec[chosen].map(lambda s: s[1]).to_numpy(float)
            lines.append((CLASS[cls], roads.geometry[chosen], widths))

    add("building", _polygons(layers.get("buildings")).geometry)

    items: list[tuple[int, np.ndarray]] = []
    for code, geoms in parts:
        items.append((code, _to_crs(geoms, crs)))
    for code, geoms, widths in lines:
        buffered = shapely.buffer(_to_crs(geoms, crs), widths / 2, quad_segs=2)
        items.append((code, buffered))
    # Stable sort by class keeps drawing order: later classes are burnt over earlier ones.
    items.sort(key=lambda item: item[0])
    if items:
        geometries = np.concatenate([g for _, g in items])
        classes = np.concatenate([np.full(len(g), c, dtype=np.uint8) for c, g in items])
    else:
        geometries = np.array([], dtype=object)
        classes = np.array([], dtype=np.uint8)
    keep = ~(shapely.is_missing(geometries) | shapely.is_empty(geometries))
    geometries, classes = geometries[keep], classes[keep]
    geometries = shapely.make_valid(geometries)
    return MapFeatures(geometries, classes, crs, shapely.STRtree(geometries))


def _to_crs(geoms: gpd.GeoSeries, crs: object) -> np.ndarray:
    if geoms.crs is None:
        geoms = geoms.set_crs(C.WGS84)
    return np.asarray(geoms.to_crs(crs).values, dtype=object)


def shapes_meeting(features: MapFeatures, bounds: tuple[float, float, float, float]) -> np.ndarray:
    """Indices of the shapes that meet a rectangle, in drawing order."""
    if len(features) == 0:
        return np.array([], dtype=np.intp)
    return np.sort(features.tree.query(shapely.box(*bounds)))


def render_block(
    features: MapFeatures,
    bounds: tuple[float, float, float, float],
    pixel: float,
) -> np.ndarray:
    """Class numbers (uint8, H × W) of a rectangle at ``pixel`` metres per pixel."""
    hits = shapes_meeting(features, bounds)
    return burn_shapes(features.geometries[hits], features.classes[hits], bounds, pixel)


def burn_shapes(
    geometries: np.ndarray,
    classes: np.ndarray,
    bounds: tuple[float, float, float, float],
    pixel: float,
) -> np.ndarray:
    """Class numbers of a rectangle with ``geometries`` burnt in order (later ones on top)."""
    minx, miny, maxx, maxy = bounds
    width = round((maxx - minx) / pixel)
    height = round((maxy - miny) / pixel)
    out = np.zeros((height, width), dtype=np.uint8)
    if len(geometries) == 0:
        return out
    shapes = zip(geometries, classes.tolist(), strict=True)
    return rasterio.features.rasterize(
        shapes,
        out=out,
        transform=from_origin(minx, maxy, pixel, pixel),
        merge_alg=rasterio.enums.MergeAlg.replace,
    )


def colourise(classes: np.ndarray) -> np.ndarray:
    """RGB image (H × W × 3) of a class array."""
    return np.take(PALETTE, classes, axis=0)  # several times faster than PALETTE[classes]


def render_regions(
    features: MapFeatures,
    bounds: np.ndarray,
    *,
    size: int = 256,
    block: int = BLOCK,
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB array) for each region square in ``bounds`` (N × 4: minx, miny, maxx, maxy).

    Regions of the same size on a common lattice are rendered together, ``block`` × ``block``
    per rasterize call; others one by one.
    """
    for i, image, _ in render_covered(features, bounds, size=size, block=block):
        yield i, image


def _masked(
    classes: np.ndarray, valid: np.ndarray | None, top: int, left: int, size: int
) -> tuple[np.ndarray, float]:
    """The RGB image of one square of a block and the share of it with data."""
    image = colourise(classes[top : top + size, left : left + size])
    if valid is None:
        return image, 1.0
    inside = valid[top : top + size, left : left + size]
    share = float(np.count_nonzero(inside)) / inside.size
    if share < 1:
        image[~inside] = NODATA_RGB
    return image, share


@dataclass(frozen=True)
class Block:
    """A rectangle rendered with one rasterize call (``pixel`` metres per pixel) and the
    squares cut from it: (index into the bounds, top row, left column) each."""

    box: tuple[float, float, float, float]
    pixel: float
    members: list[tuple[int, int, int]]


def blocks(bounds: np.ndarray, *, size: int = 256, block: int = BLOCK) -> Iterator[Block]:
    """The blocks that :func:`render_covered` renders ``bounds`` in, in its order: regions of
    the same size on a common lattice ``block`` × ``block`` at a time, others one by one."""
    bounds = np.asarray(bounds, dtype=float).reshape(-1, 4)
    if len(bounds) == 0:
        return
    cell = lattice_step(bounds)
    if cell is None:
        for i, b in enumerate(bounds):
            pixel = (b[2] - b[0]) / size
            box = (b[0], b[3] - size * pixel, b[0] + size * pixel, b[3])
            yield Block(box, pixel, [(i, 0, 0)])
        return
    pixel = cell / size
    block = max(1, min(block, MAX_BLOCK_PX // size))
    x0, y0 = bounds[0, 0], bounds[0, 1]
    cols = np.round((bounds[:, 0] - x0) / cell).astype(np.int64)
    rows = np.round((bounds[:, 1] - y0) / cell).astype(np.int64)
    keys = np.stack([cols // block, rows // block], axis=1)
    order = np.lexsort((cols, -rows, keys[:, 0], -keys[:, 1]))
    start = 0
    while start < len(order):
        key = keys[order[start]]
        stop = start
        while stop < len(order) and (keys[order[stop]] == key).all():
            stop += 1
        members = order[start:stop]
        c0, c1 = cols[members].min(), cols[members].max() + 1
        r0, r1 = rows[members].min(), rows[members].max() + 1
        box = (x0 + c0 * cell, y0 + r0 * cell, x0 + c1 * cell, y0 + r1 * cell)
        tops = (r1 - 1 - rows[members]) * size
        lefts = (cols[members] - c0) * size
        cut = list(zip(members.tolist(), tops.tolist(), lefts.tolist(), strict=True))
        yield Block(box, pixel, cut)
        start = stop


def cut_squares(
    block: Block, classes: np.ndarray, valid: np.ndarray | None, size: int
) -> list[tuple[int, np.ndarray, float]]:
    """(index, RGB array, valid share) of each square of a drawn block."""
    return [(i, *_masked(classes, valid, top, left, size)) for i, top, left in block.members]


def render_covered(
    features: MapFeatures,
    bounds: np.ndarray,
    *,
    size: int = 256,
    block: int = BLOCK,
    coverage: shapely.Geometry | None = None,
) -> Iterator[tuple[int, np.ndarray, float]]:
    """(index, RGB array, valid share) for each square, as :func:`render_regions`; pixels
    outside ``coverage`` (the extract's, in the features' CRS; None: everywhere) are black."""
    if coverage is not None:
        shapely.prepare(coverage)
    for b in blocks(bounds, size=size, block=block):
        classes = render_block(features, b.box, b.pixel)
        valid = coverage_mask(coverage, b.box, b.pixel, classes.shape)
        yield from cut_squares(b, classes, valid, size)


class OsmRenderSource(TileSource):
    """Map tiles drawn from an OSM extract, in the colour scheme above.

    The extract is read once, for the squares' extent only, when the first tiles are asked for.
    Nothing is drawn outside ``coverage`` (in the grid's CRS; default: the bounding box in the
    extract's header, else that of the data read): see :mod:`.coverage`. With ``workers`` > 1
    the blocks are drawn in that many processes (:mod:`.render_workers`: the same images, in
    the same order).
    """

    photographic = False  # flat colours

    def __init__(
        self,
        osm_path: str | os.PathLike,
        *,
        grid_crs: object,
        coverage: shapely.Geometry | None = None,
        workers: int = 1,
    ) -> None:
        self.workers = max(1, int(workers))
        self.osm_path = Path(osm_path)
        if not self.osm_path.is_file():
            raise InputError(
                f"OSM extract {self.osm_path} does not exist.",
                hint=OSM_HINT,
            )
        self.grid_crs = grid_crs
        self.features: MapFeatures | None = None
        self._source = f"osm:{self.osm_path.resolve()}"
        self.coverage_from = "given"
        if coverage is None:
            header = pbf_header_bbox(self.osm_path)
            if header is not None:
                coverage, self.coverage_from = box_in_crs(header, grid_crs), "pbf header"
            else:
                self.coverage_from = "data"  # known once the data is read
        self.coverage = coverage

    @classmethod
    def from_options(cls, options: TileOptions) -> OsmRenderSource:
        """The extract at ``options.location``, drawn within ``options.coverage``."""
        if options.location is None:
            raise InputError("Rendering map tiles needs an OSM extract.", hint=OSM_HINT)
        coverage = options.coverage if isinstance(options.coverage, shapely.Geometry) else None
        return cls(options.location, grid_crs=options.grid_crs, coverage=coverage)

    @property
    def source(self) -> str:
        """``osm:/absolute/path/of/the/extract.osm.pbf``."""
        return self._source

    def params(self) -> dict:
        """Settings that decide the images (the colour scheme is part of the code)."""
        coverage = self.coverage_from
        if self.coverage is not None:
            wkb = shapely.to_wkb(shapely.set_precision(self.coverage, 0.01), output_dimension=2)
            coverage += ":" + hashlib.sha1(wkb).hexdigest()[:12]
        return {"source": self.source, "style": "urbangeo-osm-2", "coverage": coverage}

    def load(self, bounds: np.ndarray) -> MapFeatures:
        """Read and classify the OSM data around ``bounds`` (once)."""
        if self.features is None:
            from rasterio.warp import transform_bounds

            b = np.asarray(bounds, dtype=float).reshape(-1, 4)
            # pyrosm cuts ways at the box: pad it so that cut shapes lie outside every square.
            pad = max(float(np.max(b[:, 2] - b[:, 0])), 250.0)
            box = transform_bounds(
                self.grid_crs,
                C.WGS84,
                b[:, 0].min() - pad,
                b[:, 1].min() - pad,
                b[:, 2].max() + pad,
                b[:, 3].max() + pad,
                densify_pts=21,
            )
            layers = read_osm(self.osm_path, bounds_wgs84=box)
            self.features = map_features(layers, self.grid_crs)
            if self.coverage is None and len(self.features):
                # No coverage known: the bounding box of the data read stands for it.
                self.coverage = shapely.box(*shapely.total_bounds(self.features.geometries))
        return self.features

    def tiles(self, bounds: np.ndarray, size: int) -> Iterator[tuple[int, Tile]]:
        """One rendered tile per square (in blocks, so not in the order given); in
        ``workers`` processes when there is enough to draw (:mod:`.render_workers`)."""
        if len(bounds) == 0:
            return
        from urbangeo.imagery.sources import render_workers as parallel

        features = self.load(bounds)
        plan = list(blocks(bounds, size=size))
        workers = min(self.workers, len(plan))
        if workers > 1 and parallel.worth_it(features, plan, size):
            yield from parallel.render_in_workers(
                features,
                plan,
                workers=workers,
                size=size,
                coverage=self.coverage,
                png_settings=self.png_settings,
                photographic=self.photographic,
            )
            return
        for i, image, share in render_covered(features, bounds, size=size, coverage=self.coverage):
            yield i, Tile(C.STATUS_OK, image, valid_share=share)
