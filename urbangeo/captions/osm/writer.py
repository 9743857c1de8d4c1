"""Sentences about a place from its :class:`PlaceFeatures`, in each caption style."""

from __future__ import annotations

import random
from collections.abc import Sequence

from urbangeo import constants as C
from urbangeo.captions.osm.features import DEFAULT_CONTEXT_RADIUS_M, PlaceFeatures, is_number
from urbangeo.captions.osm.vocabulary import GREEN, LANDUSE_WORDS

COMPASS = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


def _words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


#: The wording's version, part of each OSM call's cache key: captions cached in an older wording
#: are made again (2: small places in metres).
WRITER_VERSION = 2


def _area(m2: float, *, adjective: bool = False) -> str:
    """``0.06 square kilometres``, or in square metres where kilometres would read 0.00."""
    unit = "square kilometre" if m2 >= 5_000 else "square metre"
    value = f"{m2 / 1e6:.2f}" if m2 >= 5_000 else f"{m2:,.0f}"
    return f"{value} {unit}" if adjective else f"{value} {unit}s"


def _length(m: float) -> str:
    """``1.2 km``, or in metres where kilometres would read 0.0."""
    return f"{m / 1000:.1f} km" if m >= 50 else f"{m:.0f} m"


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


class Writer:
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
        return _words([f"{w} ({_length(m)})" for w, m in top])

    def road_words(self, n: int = 3) -> str:
        return _words([w for w, _ in self.f.roads_m.most_common(n)])

    def direction(self) -> str:
        if self.f.heading is None or not is_number(self.f.heading):
            return ""
        return COMPASS[round(float(self.f.heading) % 360 / 45) % 8]

    def where(self) -> str:
        road = (self.f.street_class or "street").removesuffix("s")  # "a residential street"
        if self.f.street:
            return f"{self.f.street}, a {road}"
        return f"a {road}"

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

    def closing(self, verdict: str) -> list[str]:
        """The last sentences of a narrative caption: activity, nature, then ``verdict``."""
        return [self.activity_sentence(), self.natural_sentence(), verdict]

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
                f"This overhead image shows a {f.density} {f.function} area of about "
                f"{_area(f.area_m2)}.",
                f"The overhead image covers about {_area(f.area_m2)} of a "
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
        out += self.closing(f"Overall, it reads as a {f.density} {f.function} urban unit.")
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
        out += self.closing(f"The overall impression is of a {f.density} {f.function} place.")
        return out

    def analyst(self) -> list[str]:
        f = self.f
        place = (
            "neighbourhood within " + f"{DEFAULT_CONTEXT_RADIUS_M:.0f} m of this street-view point"
            if self.sv
            else f"{_area(f.area_m2, adjective=True)} region"
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
