"""What OpenStreetMap says about one place: :class:`PlaceFeatures` and :func:`place_features`.

For a region (overhead image) the features inside the region polygon; for a street-view
point, those within a radius (:data:`DEFAULT_CONTEXT_RADIUS_M`) of the point: land-use
shares, building counts and types, amenities and shops, road classes and lengths, water and
green space.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from urbangeo.captions.osm.vocabulary import (
    AMENITY_WORDS,
    BUILDING_WORDS,
    COMMERCIAL,
    GREEN,
    LANDUSE_WORDS,
    MINOR_AMENITIES,
    ROAD_CLASSES,
    SHOP_WORDS,
    WATER,
)
from urbangeo.settings.captions import DEFAULT_CONTEXT_RADIUS_M

if TYPE_CHECKING:
    from urbangeo.captions.captioners.base import ImageItem

__all__ = [
    "DEFAULT_CONTEXT_RADIUS_M",
    "FeatureLayer",
    "PlaceFeatures",
    "feature_layers",
    "is_number",
    "place_features",
]


@dataclass
class PlaceFeatures:
    """What OpenStreetMap says about one place (a region or a street-view neighbourhood)."""

    kind: str
    area_m2: float
    landuse: dict[str, float] = field(default_factory=dict)  # word -> share of the area
    green_share: float = 0.0
    water_share: float = 0.0
    waterways: Counter = field(default_factory=Counter)
    buildings: int = 0
    building_share: float = 0.0
    building_types: Counter = field(default_factory=Counter)
    levels: float | None = None
    amenities: Counter = field(default_factory=Counter)
    minor_amenities: int = 0
    commerce: int = 0  # shops and commercial amenities
    names: list[str] = field(default_factory=list)
    roads_m: Counter = field(default_factory=Counter)  # road word -> metres
    trees: int = 0
    street: str | None = None  # street-view: the nearest road's name or class
    street_class: str | None = None
    heading: float | None = None

    @property
    def road_km(self) -> float:
        return sum(self.roads_m.values()) / 1000

    @property
    def road_density(self) -> float:
        """Kilometres of road per square kilometre."""
        return self.road_km / max(self.area_m2 / 1e6, 1e-9)

    @property
    def density(self) -> str:
        """``dense``, ``moderately built`` or ``sparsely built``, from the building footprint."""
        if self.building_share >= 0.25:
            return "dense"
        if self.building_share >= 0.08:
            return "moderately built"
        return "sparsely built"

    @property
    def function(self) -> str:
        """The dominant function in a word: residential, industrial, commercial, green..."""
        scores: defaultdict[str, float] = defaultdict(float)
        for word, share in self.landuse.items():
            for key in ("residential", "industrial", "commercial", "retail", "port", "farm"):
                if key in word:
                    scores["commercial" if key == "retail" else key] += share
        scores["green"] += self.green_share * 0.8
        scores["waterside"] += self.water_share * 0.8
        for btype, n in self.building_types.items():
            if btype in ("residential buildings", "apartment blocks", "houses"):
                scores["residential"] += 0.3 * n / max(self.buildings, 1)
            elif btype in ("industrial buildings", "warehouses"):
                scores["industrial"] += 0.3 * n / max(self.buildings, 1)
        scores["commercial"] += min(self.commerce, 40) / 100
        if not scores or max(scores.values()) < 0.05:
            return "mixed"
        best = max(scores, key=scores.__getitem__)  # the first of the highest, as most_common
        return "agricultural" if best == "farm" else best


#: The tag columns that :func:`place_features` reads from each layer.
LAYER_COLUMNS = {
    "landuse": ("landuse",),
    "leisure": ("leisure",),
    "natural": ("natural",),
    "water": ("waterway",),
    "buildings": ("building", "building:levels", "name"),
    "pois": ("amenity", "shop", "tourism", "name"),
    "roads": ("highway", "name"),
    "trees": (),
}


class FeatureLayer:
    """One OSM layer as plain arrays (geometries and the tag columns read) with its spatial
    index: a place's features are found without pandas' row selection, which took most of a
    call's time. Built once per layer by :func:`feature_layers`."""

    def __init__(self, frame: Any, columns: tuple[str, ...]) -> None:
        self.frame = frame
        n = len(frame)
        self.geoms = _objects(frame.geometry.values if n else (), n)
        self.columns = {
            name: _objects(frame[name] if name in frame else (None,) * n, n) for name in columns
        }
        self._empty = np.zeros(0, dtype=np.intp)

    def __len__(self) -> int:
        return len(self.geoms)

    def inside(self, area: Any) -> np.ndarray:
        """Positions of the features that intersect ``area``, in the spatial index's order."""
        if not len(self.geoms):
            return self._empty
        return self.frame.sindex.query(area, predicate="intersects")

    def col(self, name: str, index: np.ndarray) -> np.ndarray:
        """Column ``name`` (None where a layer lacks it) at ``index``."""
        values = self.columns.get(name)
        if values is None:
            return np.full(len(index), None, dtype=object)
        return values[index]


def _objects(values: Any, n: int) -> np.ndarray:
    # The values as iterating the column gives them (str, None, pd.NA...): the checks below
    # (isinstance, is_number) see exactly what they saw on the frames.
    out = np.empty(n, dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def feature_layers(layers: Mapping[str, Any]) -> dict[str, FeatureLayer]:
    """``layers`` (GeoDataFrames by name, as :func:`~urbangeo.captions.osm.layers.
    load_osm_layers` reads them) as :class:`FeatureLayer`; already converted ones are kept."""
    return {
        name: frame
        if isinstance(frame, FeatureLayer)
        else FeatureLayer(frame, LAYER_COLUMNS.get(name, ()))
        for name, frame in layers.items()
    }


def place_features(layers: Mapping[str, Any], item: ImageItem, *, radius: float) -> PlaceFeatures:
    """Summarise the features within a region, or within ``radius`` of a street-view point.

    ``layers``: GeoDataFrames by name or, faster when called for many places, the
    :func:`feature_layers` made from them once.
    """
    import shapely

    L = feature_layers(layers)
    place = item.place
    is_point = place.geom_type == "Point"
    area = place.buffer(radius) if is_point else place
    area_m2 = float(area.area)
    feats = PlaceFeatures(kind=item.kind, area_m2=area_m2, heading=item.heading)

    # Land use: landuse, leisure and natural polygons, clipped to the area, overlaps unioned
    # per word so that a park drawn twice does not count twice.
    pieces: dict[str, list] = {}
    for layer, key in (("landuse", "landuse"), ("leisure", "leisure"), ("natural", "natural")):
        index = L[layer].inside(area)
        for value, geom in zip(L[layer].col(key, index), L[layer].geoms[index], strict=True):
            if not isinstance(value, str) or geom.geom_type not in ("Polygon", "MultiPolygon"):
                continue
            word = LANDUSE_WORDS.get(value)
            if word is None:
                continue
            pieces.setdefault(word, []).append(geom.intersection(area))
            if value in GREEN:
                pieces.setdefault("_green", []).append(geom.intersection(area))
            if value in WATER:
                pieces.setdefault("_water", []).append(geom.intersection(area))
    water = L["water"]
    index = water.inside(area)
    for geom in water.geoms[index]:
        if geom.geom_type in ("Polygon", "MultiPolygon"):
            pieces.setdefault("_water", []).append(geom.intersection(area))
            pieces.setdefault("water", []).append(geom.intersection(area))
    shares = {w: float(shapely.union_all(g).area) / area_m2 for w, g in pieces.items()}
    feats.green_share = min(shares.pop("_green", 0.0), 1.0)
    feats.water_share = min(shares.pop("_water", 0.0), 1.0)
    feats.landuse = {w: min(s, 1.0) for w, s in shares.items() if s >= 0.01}
    for value, geom in zip(water.col("waterway", index), water.geoms[index], strict=True):
        if isinstance(value, str) and geom.geom_type in ("LineString", "MultiLineString"):
            feats.waterways[{"drain": "ditch", "ditch": "ditch"}.get(value, value)] += 1

    buildings = L["buildings"]
    index = buildings.inside(area)
    if len(index):
        # A building belongs to the place its centroid is in (no double counts at borders).
        index = index[shapely.within(shapely.centroid(buildings.geoms[index]), area)]
        feats.buildings = len(index)
        clipped = shapely.area(shapely.intersection(buildings.geoms[index], area))
        feats.building_share = min(float(np.nansum(clipped)) / area_m2, 1.0)
        for value in buildings.col("building", index):
            word = BUILDING_WORDS.get(value) if isinstance(value, str) else None
            if word:
                feats.building_types[word] += 1
        levels = buildings.col("building:levels", index)
        numeric = [float(v) for v in levels if is_number(v)]
        if numeric:
            feats.levels = sum(numeric) / len(numeric)
        for name in buildings.col("name", index):
            if isinstance(name, str) and name and name not in feats.names:
                feats.names.append(name)

    pois = L["pois"]
    index = pois.inside(area)
    for amenity, shop, tourism, name in zip(
        pois.col("amenity", index),
        pois.col("shop", index),
        pois.col("tourism", index),
        pois.col("name", index),
        strict=True,
    ):
        if isinstance(amenity, str) and amenity in MINOR_AMENITIES:
            feats.minor_amenities += 1
            continue
        word = None
        if isinstance(shop, str) or (isinstance(amenity, str) and amenity in COMMERCIAL):
            feats.commerce += 1
        if isinstance(amenity, str):
            word = AMENITY_WORDS.get(amenity, amenity.replace("_", " ") + "s")
        elif isinstance(shop, str):
            word = SHOP_WORDS.get(shop, "shops")
        elif isinstance(tourism, str):
            word = {"hotel": "hotels", "museum": "museums", "attraction": "attractions"}.get(
                tourism, "tourist facilities"
            )
        if word:
            feats.amenities[word] += 1
            if isinstance(name, str) and name and name not in feats.names:
                feats.names.insert(0, name)

    roads = L["roads"]
    index = roads.inside(area)
    highways = roads.col("highway", index)
    for value, geom in zip(highways, roads.geoms[index], strict=True):
        word = ROAD_CLASSES.get(value) if isinstance(value, str) else None
        if word:
            # a Counter of metres: Counter allows float values, typeshed types them int
            feats.roads_m[word] += float(geom.intersection(area).length)  # type: ignore[assignment]
    if is_point and len(index):
        distances = shapely.distance(roads.geoms[index], place)
        nearest = int(np.nanargmin(distances))  # the first nearest, as pandas' idxmin
        feats.street_class = ROAD_CLASSES.get(highways[nearest], "street")
        name = roads.col("name", index)[nearest]
        feats.street = name if isinstance(name, str) and name else None
    feats.trees = len(L["trees"].inside(area))
    return feats


def is_number(value: Any) -> bool:
    """Whether ``value`` reads as a finite number (OSM tags are text)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
