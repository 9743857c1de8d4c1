"""Image kinds and their older spellings, and what an overhead image's source is.

A region's image is an ``overhead`` image: a map rendered from OpenStreetMap (the default,
offline), an aerial or satellite raster, or an XYZ service's tiles. urbangeo 0.1 called the
kind ``satellite`` (folder ``images/satellite/``, ids ``sat_{region_id}``); runs it wrote are
read as they are, their kinds normalised here, in one place, when a layer is read. Imports
nothing heavy (pandas only).
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING

from urbangeo import constants as C
from urbangeo.errors import UrbangeoWarning

if TYPE_CHECKING:
    import pandas as pd

#: The image id prefix of overhead images, and that of runs written by urbangeo 0.1.
OVERHEAD_PREFIX = "overhead_"
LEGACY_OVERHEAD_PREFIX = "sat_"


def canonical_kind(kind: str, *, where: str = "kind") -> str:
    """``kind`` in its current spelling (``satellite`` → ``overhead``, with a deprecation
    warning); any other value as it is."""
    new = C.LEGACY_KINDS.get(kind)
    if new is None:
        return kind
    warnings.warn(
        f"{where}: {kind!r} is deprecated; use {new!r} (the old spelling goes in the next "
        "release).",
        UrbangeoWarning,
        stacklevel=3,
    )
    return new


def normalize_kinds(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (an images layer, a captions table, pairs) with old kind spellings replaced,
    in place; without a ``kind`` column or old spellings it is returned as it is."""
    if C.KIND in frame.columns:
        kinds = frame[C.KIND]
        old = kinds.isin(list(C.LEGACY_KINDS))
        if old.any():
            frame.loc[old, C.KIND] = kinds[old].map(C.LEGACY_KINDS)
    return frame


#: Words in an XYZ tile address that say it serves imagery (Esri's World_Imagery, Mapbox
#: satellite, orthophoto services...), not a map.
IMAGERY_WORDS = re.compile(r"imagery|satellite|aerial|ortho", re.IGNORECASE)


def source_kind(source: object) -> str | None:
    """What an overhead image's ``source`` (column of the images layer) is: ``map`` (rendered
    from OpenStreetMap), ``imagery`` (a raster, or an XYZ service whose address says imagery:
    :data:`IMAGERY_WORDS`), ``tiles`` (another XYZ service: a map, or imagery it cannot tell)
    or None (not known)."""
    if not isinstance(source, str) or ":" not in source:
        return None
    scheme, rest = source.split(":", 1)
    if scheme == "xyz":
        return "imagery" if IMAGERY_WORDS.search(rest) else "tiles"
    return {"osm": "map", "raster": "imagery"}.get(scheme)


def describe_source(source: object) -> str:
    """An overhead image in words, by its source: "overhead image (rendered OSM map)",
    "overhead image (aerial or satellite imagery)", ... or plain "overhead image"."""
    what = {
        "map": "rendered OSM map",
        "imagery": "aerial or satellite imagery",
        "tiles": "XYZ tiles",
    }.get(source_kind(source) or "")
    return f"overhead image ({what})" if what else "overhead image"
