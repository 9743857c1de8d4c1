"""OpenStreetMap tag values grouped into the words an OSM caption uses.

The tables are data (``vocabulary.toml`` beside this module): tag value → words, and sets of
tag values.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

_TABLES = tomllib.loads(Path(__file__).with_name("vocabulary.toml").read_text(encoding="utf-8"))

LANDUSE_WORDS: dict[str, str] = _TABLES["landuse_words"]
ROAD_CLASSES: dict[str, str] = _TABLES["road_classes"]
BUILDING_WORDS: dict[str, str] = _TABLES["building_words"]
AMENITY_WORDS: dict[str, str] = _TABLES["amenity_words"]
SHOP_WORDS: dict[str, str] = _TABLES["shop_words"]
GREEN: set[str] = set(_TABLES["green"])
WATER: set[str] = set(_TABLES["water"])
#: Street furniture: counted, but too small to shape a caption of the area.
MINOR_AMENITIES: set[str] = set(_TABLES["minor_amenities"])
#: Amenities that make a place commercial (with every shop).
COMMERCIAL: set[str] = set(_TABLES["commercial"])
