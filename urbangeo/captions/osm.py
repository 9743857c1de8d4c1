"""An offline captioner that describes a place from its OpenStreetMap features.

For a region (satellite image) it summarises the features inside the region polygon; for a
street-view point, those within ``radius`` metres of the point: land-use shares, building
counts and types, amenities and shops, road classes and lengths, water and green space. The
summary becomes a fluent paragraph of 100-200 words in the spirit of the paper's prompts
(functional layout, road network, human activity, natural elements). Each ``style`` (the
backend's "model") words it differently and the seed varies the phrasing, so several OSM
captioners exercise the multi-captioner and consensus path without any network or GPU.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from urbangeo import constants as C
from urbangeo.captions.backends import Captioner, CaptionError, ImageItem
from urbangeo.errors import InputError
from urbangeo.io.files import sha256_bytes

STYLES = ("planner", "observer", "analyst")
DEFAULT_RADIUS_M = 75.0
MIN_WORDS, MAX_WORDS = 100, 200

# OSM tag values grouped into the words a caption uses.
LANDUSE_WORDS = {
    "residential": "residential housing",
    "apartments": "residential housing",
    "commercial": "commercial premises",
    "retail": "retail and shopping",
    "industrial": "industrial sites",
    "port": "port facilities",
    "railway": "railway land",
    "construction": "construction sites",
    "brownfield": "vacant brownfield land",
    "greenfield": "undeveloped land",
    "farmland": "farmland",
    "farmyard": "farmyards",
    "meadow": "meadows",
    "orchard": "orchards",
    "allotments": "allotment gardens",
    "greenhouse_horticulture": "greenhouses",
    "forest": "woodland",
    "wood": "woodland",
    "scrub": "scrubland",
    "heath": "heath",
    "wetland": "wetland",
    "grass": "lawns",
    "village_green": "lawns",
    "recreation_ground": "recreation grounds",
    "park": "parks",
    "garden": "gardens",
    "playground": "playgrounds",
    "pitch": "sports pitches",
    "sports_centre": "sports facilities",
    "stadium": "sports facilities",
    "cemetery": "a cemetery",
    "religious": "religious grounds",
    "military": "military land",
    "education": "school grounds",
    "institutional": "institutional grounds",
    "water": "water",
    "basin": "water",
    "reservoir": "water",
}
GREEN = {
    "forest", "wood", "scrub", "heath", "grass", "village_green", "recreation_ground", "park",
    "garden", "meadow", "orchard", "allotments", "cemetery", "wetland",
}  # fmt: skip
WATER = {"water", "basin", "reservoir", "riverbank"}
ROAD_CLASSES = {
    "motorway": "motorways", "motorway_link": "motorways", "trunk": "highways",
    "trunk_link": "highways", "primary": "main roads", "primary_link": "main roads",
    "secondary": "main roads", "secondary_link": "main roads", "tertiary": "collector streets",
    "tertiary_link": "collector streets", "residential": "residential streets",
    "living_street": "residential streets", "unclassified": "minor roads",
    "service": "service roads", "track": "tracks", "footway": "footpaths",
    "path": "footpaths", "pedestrian": "pedestrian streets", "steps": "footpaths",
    "cycleway": "cycle paths", "bridleway": "footpaths",
}  # fmt: skip
BUILDING_WORDS = {
    "residential": "residential buildings", "apartments": "apartment blocks",
    "house": "houses", "detached": "detached houses", "semidetached_house": "houses",
    "terrace": "terraced houses", "commercial": "commercial buildings",
    "retail": "shops", "office": "office buildings", "industrial": "industrial buildings",
    "warehouse": "warehouses", "garage": "garages", "garages": "garages",
    "public": "public buildings", "school": "schools", "kindergarten": "kindergartens",
    "university": "university buildings", "hospital": "hospital buildings",
    "church": "churches", "chapel": "churches", "cathedral": "churches",
    "hotel": "hotels", "train_station": "station buildings", "shed": "sheds",
    "roof": "canopies", "greenhouse": "greenhouses", "farm_auxiliary": "farm buildings",
    "barn": "barns", "civic": "civic buildings", "government": "government buildings",
}  # fmt: skip
AMENITY_WORDS = {
    "restaurant": "restaurants", "cafe": "cafes", "fast_food": "fast-food outlets",
    "pub": "pubs", "bar": "bars", "bank": "banks", "pharmacy": "pharmacies",
    "school": "schools", "kindergarten": "kindergartens", "library": "libraries",
    "parking": "car parks", "bicycle_parking": "bicycle stands", "fuel": "petrol stations",
    "place_of_worship": "places of worship", "post_office": "post offices",
    "hospital": "hospitals", "clinic": "clinics", "doctors": "doctors' surgeries",
    "dentist": "dentists", "bus_station": "bus stations", "theatre": "theatres",
    "cinema": "cinemas", "townhall": "a town hall", "police": "a police station",
    "marketplace": "a marketplace", "university": "university facilities",
    "bench": "benches", "toilets": "public toilets", "recycling": "recycling points",
    "ice_cream": "ice-cream stands", "nightclub": "nightclubs", "car_wash": "car washes",
    "community_centre": "community centres", "arts_centre": "arts centres",
}  # fmt: skip
SHOP_WORDS = {
    "supermarket": "supermarkets", "convenience": "convenience stores",
    "clothes": "clothing shops", "hairdresser": "hairdressers", "bakery": "bakeries",
    "kiosk": "kiosks", "car": "car dealers", "car_repair": "car repair shops",
    "jewelry": "jewellers", "beauty": "beauty salons", "books": "bookshops",
    "florist": "florists", "furniture": "furniture stores", "hardware": "hardware stores",
    "mall": "a shopping mall", "department_store": "department stores",
}  # fmt: skip
#: Street furniture: counted, but too small to shape a caption of the area.
MINOR_AMENITIES = {
    "bench", "waste_basket", "vending_machine", "post_box", "telephone", "drinking_water",
    "bicycle_parking", "recycling", "clock", "atm", "parking_entrance", "charging_station",
}  # fmt: skip
#: Amenities that make a place commercial (with every shop).
COMMERCIAL = {
    "restaurant", "cafe", "fast_food", "pub", "bar", "bank", "pharmacy", "marketplace",
    "nightclub", "ice_cream", "cinema", "theatre", "fuel", "car_wash",
}  # fmt: skip
COMPASS = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


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
        scores: Counter = Counter()
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
        best = scores.most_common(1)[0][0]
        return "agricultural" if best == "farm" else best


def _words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _pct(share: float) -> str:
    if share <= 0:
        return "none"
    return f"{round(100 * share):d}%" if share >= 0.01 else "less than 1%"


def _count(n: int, word: str) -> str:
    """``3 cafes``, ``one pharmacy``; ``a town hall`` stays as it is for one."""
    if word.startswith(("a ", "an ")):
        return word if n == 1 else f"{n} {word.split(' ', 1)[1]}s"
    if n > 1:
        return f"{n} {word}"
    if word.endswith("ies"):
        return "one " + word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses")):
        return "one " + word[:-2]
    return "one " + word.removesuffix("s")


class OSMCaptioner(Captioner):
    """Captions from OpenStreetMap features: offline, deterministic for a seed.

    ``models`` are styles (:data:`STYLES`; default all three). ``osm_path`` is an ``.osm.pbf``
    extract (the caption stage fills in the run's city extract); features are read once for
    the bounding box of every place being captioned.
    """

    name = "osm"
    needs_image = False

    def __init__(
        self,
        models: Sequence[str] | None = None,
        *,
        osm_path: str | os.PathLike | None = None,
        seed: int = 0,
        radius: float = DEFAULT_RADIUS_M,
    ) -> None:
        styles = tuple(models or STYLES)
        unknown = [s for s in styles if s not in STYLES]
        if unknown:
            raise InputError(
                f"Unknown OSM caption style(s) {', '.join(unknown)}.",
                hint=f"The osm backend's --model is a style: {', '.join(STYLES)}.",
            )
        super().__init__(styles)
        self.osm_path = Path(osm_path) if osm_path is not None else None
        self.seed = int(seed)
        self.radius = float(radius)
        self._layers: dict[str, Any] | None = None
        self._crs = None

    def options(self) -> dict:
        source = None
        if self.osm_path is not None:
            stat = self.osm_path.stat() if self.osm_path.exists() else None
            source = [self.osm_path.name, stat.st_size if stat else None]
        return {"seed": self.seed, "radius": self.radius, "osm": source}

    def input_sha256(self, item: ImageItem, image: bytes | None) -> str:
        # The caption depends on the place, not the pixels: two regions with identical
        # tiles (open sea) must not share a description.
        if item.place is None:
            raise CaptionError(f"image {item.image_id} has no region or point to describe")
        crs = item.crs.to_string() if hasattr(item.crs, "to_string") else str(item.crs)
        wkt = item.place.wkt if hasattr(item.place, "wkt") else str(item.place)
        return sha256_bytes(f"{item.kind}|{crs}|{item.heading}|{wkt}".encode())

    # --- features ---------------------------------------------------------------------------
    def prepare(self, items: Sequence[ImageItem]) -> None:
        """Read the OSM features around every place once, in the places' CRS."""
        places = [i for i in items if i.place is not None]
        if not places:
            return
        if self.osm_path is None or not self.osm_path.exists():
            raise InputError(
                f"The osm caption backend needs an OpenStreetMap extract; "
                f"{self.osm_path or 'none was given'} does not exist.",
                hint="Pass --osm FILE.osm.pbf or --city NAME (a bundled city's extract).",
            )
        import geopandas as gpd

        crs = places[0].crs
        bounds = gpd.GeoSeries([i.place for i in places], crs=crs).buffer(self.radius + 50)
        west, south, east, north = bounds.to_crs(C.WGS84).total_bounds
        self._layers = load_osm_layers(self.osm_path, (west, south, east, north), crs)
        self._crs = crs

    def features(self, item: ImageItem) -> PlaceFeatures:
        """The OSM features of an item's place."""
        if self._layers is None:
            self.prepare([item])
        if item.place is None or self._layers is None:
            raise CaptionError(f"image {item.image_id} has no region or point to describe")
        return place_features(self._layers, item, radius=self.radius)

    def caption(self, image: bytes | None, prompt: str, model: str, item: ImageItem) -> str:
        feats = self.features(item)
        rng = random.Random(f"{self.seed}|{model}|{item.image_id}")
        return describe(feats, style=model, rng=rng)


def load_osm_layers(
    path: str | os.PathLike, bbox: tuple[float, float, float, float], crs: Any
) -> dict[str, Any]:
    """Buildings, land use, POIs, roads, water and trees of an extract within ``bbox``."""
    from urbangeo.io.osm import NETWORK_ALL, open_extract

    extract = open_extract(path, bbox=bbox)
    layers = {
        "buildings": extract.buildings(),
        "landuse": extract.landuse(),
        "natural": extract.natural(),
        "leisure": extract.tagged({"leisure": True}, nodes=False),
        "water": extract.tagged({"water": True, "waterway": True}, nodes=False),
        "trees": extract.tagged({"natural": ["tree"]}, ways=False, relations=False),
        "pois": extract.pois(),
        "roads": extract.roads(network=NETWORK_ALL),
    }
    layers = {name: _in_crs(frame, crs) for name, frame in layers.items()}
    for frame in layers.values():
        frame.sindex  # noqa: B018 - build the spatial index once, before the threads
    return layers


def _in_crs(frame: Any, crs: Any) -> Any:
    """``frame``'s non-empty geometries in ``crs``, made valid."""
    import geopandas as gpd

    if len(frame) == 0:
        return gpd.GeoDataFrame(geometry=[], crs=crs)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty].to_crs(crs)
    # OSM polygons are often invalid (self-touching rings); GEOS needs them valid.
    invalid = ~frame.geometry.is_valid
    if invalid.any():
        frame.loc[invalid, frame.geometry.name] = frame.geometry[invalid].make_valid()
    return frame


def _inside(frame: Any, area: Any) -> Any:
    if len(frame) == 0:
        return frame
    return frame.iloc[frame.sindex.query(area, predicate="intersects")]


def _col(frame: Any, name: str) -> Any:
    import pandas as pd

    if name in frame:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def place_features(layers: dict[str, Any], item: ImageItem, *, radius: float) -> PlaceFeatures:
    """Summarise the features within a region, or within ``radius`` of a street-view point."""
    import shapely

    place = item.place
    is_point = place.geom_type == "Point"
    area = place.buffer(radius) if is_point else place
    area_m2 = float(area.area)
    feats = PlaceFeatures(kind=item.kind, area_m2=area_m2, heading=item.heading)

    # Land use: landuse, leisure and natural polygons, clipped to the area, overlaps unioned
    # per word so that a park drawn twice does not count twice.
    pieces: dict[str, list] = {}
    for layer, key in (("landuse", "landuse"), ("leisure", "leisure"), ("natural", "natural")):
        frame = _inside(layers[layer], area)
        for value, geom in zip(_col(frame, key), frame.geometry, strict=True):
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
    water = _inside(layers["water"], area)
    for geom in water.geometry:
        if geom.geom_type in ("Polygon", "MultiPolygon"):
            pieces.setdefault("_water", []).append(geom.intersection(area))
            pieces.setdefault("water", []).append(geom.intersection(area))
    shares = {w: float(shapely.union_all(g).area) / area_m2 for w, g in pieces.items()}
    feats.green_share = min(shares.pop("_green", 0.0), 1.0)
    feats.water_share = min(shares.pop("_water", 0.0), 1.0)
    feats.landuse = {w: min(s, 1.0) for w, s in shares.items() if s >= 0.01}
    for value, geom in zip(_col(water, "waterway"), water.geometry, strict=True):
        if isinstance(value, str) and geom.geom_type in ("LineString", "MultiLineString"):
            feats.waterways[{"drain": "ditch", "ditch": "ditch"}.get(value, value)] += 1

    buildings = _inside(layers["buildings"], area)
    if len(buildings):
        # A building belongs to the place its centroid is in (no double counts at borders).
        centroids = buildings.geometry.centroid
        buildings = buildings[centroids.within(area)]
        feats.buildings = len(buildings)
        feats.building_share = min(
            float(buildings.geometry.intersection(area).area.sum()) / area_m2, 1.0
        )
        for value in _col(buildings, "building"):
            word = BUILDING_WORDS.get(value) if isinstance(value, str) else None
            if word:
                feats.building_types[word] += 1
        levels = _col(buildings, "building:levels")
        numeric = [float(v) for v in levels if _is_number(v)]
        if numeric:
            feats.levels = sum(numeric) / len(numeric)
        for name in _col(buildings, "name"):
            if isinstance(name, str) and name and name not in feats.names:
                feats.names.append(name)

    pois = _inside(layers["pois"], area)
    for amenity, shop, tourism, name in zip(
        _col(pois, "amenity"),
        _col(pois, "shop"),
        _col(pois, "tourism"),
        _col(pois, "name"),
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

    roads = _inside(layers["roads"], area)
    for value, geom in zip(_col(roads, "highway"), roads.geometry, strict=True):
        word = ROAD_CLASSES.get(value) if isinstance(value, str) else None
        if word:
            feats.roads_m[word] += float(geom.intersection(area).length)
    if is_point and len(roads):
        distances = roads.geometry.distance(place)
        nearest = roads.loc[distances.idxmin()]
        feats.street_class = ROAD_CLASSES.get(nearest.get("highway"), "street")
        name = nearest.get("name")
        feats.street = name if isinstance(name, str) and name else None
    feats.trees = len(_inside(layers["trees"], area))
    return feats


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# --- wording ---------------------------------------------------------------------------------
def describe(
    feats: PlaceFeatures, *, style: str = "planner", rng: random.Random | None = None
) -> str:
    """A paragraph of 100-200 words about a place, worded in ``style``."""
    rng = rng or random.Random(0)
    writer = _Writer(feats, rng)
    sentences = getattr(writer, style)()
    # Fill short paragraphs with grounded generalities; trim long ones from the end of the
    # optional sentences (the closing sentence stays).
    extra = writer.fillers(style)
    text = " ".join(sentences)
    while len(text.split()) < MIN_WORDS and extra:
        sentences.insert(-1, extra.pop(0))
        text = " ".join(sentences)
    while len(text.split()) > MAX_WORDS and len(sentences) > 3:
        sentences.pop(-2)
        text = " ".join(sentences)
    return text


class _Writer:
    """Sentences about a place; one method per style."""

    def __init__(self, feats: PlaceFeatures, rng: random.Random) -> None:
        self.f = feats
        self.rng = rng
        self.sv = feats.kind == C.KIND_STREETVIEW

    def pick(self, *options: str) -> str:
        return self.rng.choice(options)

    # facts as phrases
    def landuse_phrase(self, n: int = 3) -> str:
        top = sorted(self.f.landuse.items(), key=lambda kv: -kv[1])[:n]
        return _words([f"{word} ({_pct(share)})" for word, share in top])

    def building_types(self, n: int = 3) -> str:
        return _words([w for w, _ in self.f.building_types.most_common(n)])

    def amenity_phrase(self, n: int = 4) -> str:
        return _words([_count(c, w) for w, c in self.f.amenities.most_common(n)])

    def road_phrase(self, n: int = 3) -> str:
        top = self.f.roads_m.most_common(n)
        return _words([f"{w} ({m / 1000:.1f} km)" for w, m in top])

    def road_words(self, n: int = 3) -> str:
        return _words([w for w, _ in self.f.roads_m.most_common(n)])

    def direction(self) -> str:
        if self.f.heading is None or not _is_number(self.f.heading):
            return ""
        return COMPASS[round(float(self.f.heading) % 360 / 45) % 8]

    def where(self) -> str:
        if self.f.street:
            return f"{self.f.street}, a {self.f.street_class.removesuffix('s')}"
        if self.f.street_class:
            return f"a {self.f.street_class.removesuffix('s')}"
        return "a street"

    def natural_sentence(self) -> str:
        f = self.f
        green = [w for w in f.landuse if w in {LANDUSE_WORDS[k] for k in GREEN}]
        parts = []
        if f.green_share >= 0.01:
            parts.append(
                f"green space covers about {_pct(f.green_share)} of the area"
                + (f", mainly {_words(green[:3])}" if green else "")
            )
        if f.trees:
            parts.append(f"{f.trees} individually mapped trees line the streets")
        if f.water_share >= 0.01:
            parts.append(f"water takes up about {_pct(f.water_share)}")
        if f.waterways:
            parts.append(f"{_words([w + 's' for w in f.waterways])} run through it")
        if not parts:
            return self.pick(
                "Natural elements are scarce: no parks, woodland or water are mapped here.",
                "There is little nature to speak of, with no mapped green space or water.",
            )
        text = _words(parts)
        return f"As for natural elements, {text}."

    def activity_sentence(self) -> str:
        f = self.f
        if f.amenities:
            named = f" such as {_words(f.names[:2])}" if f.names[:2] else ""
            return self.pick(
                f"Human activity gathers around {self.amenity_phrase()}{named}.",
                f"Everyday activity is served by {self.amenity_phrase()}{named}.",
            )
        if f.minor_amenities:
            return (
                f"Apart from {f.minor_amenities} items of street furniture such as benches, "
                "few services are mapped, so activity is mostly local."
            )
        return self.pick(
            "No shops or services are mapped, which points to quiet, mostly local activity.",
            "Human activity appears limited, with no mapped shops, cafes or services.",
        )

    # styles
    def planner(self) -> list[str]:
        f = self.f
        if self.sv:
            d = self.direction()
            opening = (
                f"This street-view scene{' looks ' + d + ' along' if d else ' is on'} "
                f"{self.where()}, in a {f.density} {f.function} neighbourhood."
            )
        else:
            opening = self.pick(
                f"This satellite image shows a {f.density} {f.function} area of about "
                f"{f.area_m2 / 1e6:.2f} square kilometres.",
                f"The satellite image covers about {f.area_m2 / 1e6:.2f} square kilometres of a "
                f"{f.density}, largely {f.function} district.",
            )
        out = [opening]
        if f.landuse:
            out.append(
                f"In terms of functional layout, the land is given over to {self.landuse_phrase()}."
            )
        if f.buildings:
            types = f", mostly {self.building_types()}" if f.building_types else ""
            lv = f" of about {f.levels:.0f} storeys" if f.levels and f.levels >= 1.5 else ""
            lv = " of one or two storeys" if f.levels and f.levels < 1.5 else lv
            out.append(
                f"There are {f.buildings} buildings{lv}{types}, covering "
                f"{_pct(f.building_share)} of the ground."
            )
        else:
            out.append("No buildings are mapped, so the ground is open.")
        if f.roads_m:
            out.append(
                f"The road network, about {f.road_density:.0f} km per square kilometre, "
                f"consists of {self.road_phrase()}."
            )
        else:
            out.append("No roads are mapped in this area.")
        out.append(self.activity_sentence())
        out.append(self.natural_sentence())
        out.append(f"Overall, it reads as a {f.density} {f.function} urban unit.")
        return out

    def observer(self) -> list[str]:
        f = self.f
        if self.sv:
            d = self.direction()
            out = [
                f"The image captures {self.where()} seen at street level"
                + (f", facing {d}." if d else ".")
            ]
            if f.buildings:
                types = self.building_types(2) or "buildings"
                out.append(f"{f.buildings} buildings stand nearby, mainly {types}.")
            else:
                out.append("No buildings stand close to the road here.")
        else:
            look = {
                "dense": "a tight pattern of rooftops",
                "moderately built": "rooftops spread among open ground",
                "sparsely built": "mostly open ground",
            }
            out = [
                self.pick(
                    f"From above, the image shows {look[f.density]}.",
                    f"Seen from the air, the scene is made of {look[f.density]}.",
                )
            ]
            if f.buildings:
                out.append(
                    f"Roughly {f.buildings} building footprints are visible, "
                    f"mostly {self.building_types(2) or 'of unspecified use'}."
                )
        if f.roads_m:
            out.append(
                self.pick(
                    f"The roads are mostly {self.road_words()}.",
                    f"{self.road_words().capitalize()} make up the street network.",
                )
            )
        if f.landuse:
            top = max(f.landuse.items(), key=lambda kv: kv[1])
            out.append(f"Much of the land is {top[0]}, about {_pct(top[1])} of the view.")
        out.append(self.activity_sentence())
        out.append(self.natural_sentence())
        out.append(f"The overall impression is of a {f.density} {f.function} place.")
        return out

    def analyst(self) -> list[str]:
        f = self.f
        place = (
            "neighbourhood within " + f"{DEFAULT_RADIUS_M:.0f} m of this street-view point"
            if self.sv
            else f"{f.area_m2 / 1e6:.2f} square kilometre region"
        )
        out = [f"Mapped data describe this {place} as {f.density} and {f.function}."]
        if f.landuse:
            out.append(f"Land-use shares: {self.landuse_phrase(4)}.")
        out.append(
            f"Buildings: {f.buildings}, footprint {_pct(f.building_share)}"
            + (f", types {self.building_types()}" if f.building_types else "")
            + "."
        )
        if f.amenities:
            out.append(f"Amenities: {self.amenity_phrase(5)}.")
        if f.roads_m:
            out.append(f"Roads: {f.road_km:.1f} km, namely {self.road_phrase(4)}.")
        out.append(f"Green space: {_pct(f.green_share)}; water: {_pct(f.water_share)}.")
        out.append(f"These figures suggest a {f.function} function at {f.density} intensity.")
        return out

    def fillers(self, style: str) -> list[str]:
        f = self.f
        out = [
            f"The {f.function} character is consistent with the building stock and land use.",
            "The built form and the street pattern suggest a planned rather than an informal "
            "layout."
            if f.roads_m
            else "Without streets, access appears limited.",
            f"Buildings cover {_pct(f.building_share)} of the ground, leaving "
            f"{_pct(max(0.0, 1 - f.building_share))} open for streets, yards and greenery.",
            "Pedestrians can use mapped footpaths and cycle paths."
            if f.roads_m.get("footpaths") or f.roads_m.get("cycle paths")
            else "Most movement is likely by car, as few footpaths are mapped.",
            f"The mix of functions is {'varied' if len(f.landuse) >= 3 else 'limited'}, with "
            f"{len(f.landuse)} mapped land-use types.",
            "Residents probably rely on nearby districts for services."
            if not f.amenities
            else "Local services make the area usable on foot.",
            f"In short, this is a {f.density} {f.function} part of the city.",
        ]
        self.rng.shuffle(out)
        return out
