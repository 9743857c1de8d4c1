"""The offline captioner that describes a place from its OpenStreetMap features.

The default city's captioner: no network and no GPU. Each style (:data:`STYLES`, the backend's
"model") words the facts differently and the seed varies the phrasing, so several OSM
captioners exercise the multi-captioner and consensus path. The features, layers and wording
live in :mod:`urbangeo.captions.osm`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from urbangeo import constants as C
from urbangeo.captions.captioners.base import Captioner, CaptionError, ImageItem
from urbangeo.captions.osm.describe import STYLES, describe
from urbangeo.captions.osm.features import (
    DEFAULT_CONTEXT_RADIUS_M,
    FeatureLayer,
    PlaceFeatures,
    feature_layers,
    place_features,
)
from urbangeo.captions.osm.layers import load_osm_layers
from urbangeo.captions.osm.writer import WRITER_VERSION
from urbangeo.errors import InputError
from urbangeo.io.files import sha256_bytes


class OSMCaptioner(Captioner):
    """Captions from OpenStreetMap features: offline, deterministic for a seed.

    ``models`` are styles (:data:`STYLES`; default all three). ``osm_path`` is an ``.osm.pbf``
    extract (the caption stage fills in the run's city extract); features are read once for
    the bounding box of every place being captioned.
    """

    name = "osm"
    needs_image = False
    cpu_bound = True

    def __init__(
        self,
        models: Sequence[str] | None = None,
        *,
        osm_path: str | os.PathLike | None = None,
        seed: int = 0,
        radius: float = DEFAULT_CONTEXT_RADIUS_M,
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
        self._arrays: dict[str, FeatureLayer] | None = None
        self._crs = None

    def __getstate__(self) -> dict:
        # Worker processes get the layers and rebuild the arrays (never pickled twice).
        return {**self.__dict__, "_arrays": None}

    def options(self) -> dict:
        source = None
        if self.osm_path is not None:
            stat = self.osm_path.stat() if self.osm_path.exists() else None
            source = [self.osm_path.name, stat.st_size if stat else None]
        return {"seed": self.seed, "radius": self.radius, "osm": source, "writer": WRITER_VERSION}

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
        import numpy as np
        import shapely

        crs = places[0].crs
        # The places' bounds widened by the radius (and a margin), not each place buffered:
        # the same box at a fraction of the cost (a million places: seconds, not 2 GB).
        corners = shapely.bounds(np.array([i.place for i in places], dtype=object))
        margin = self.radius + 50
        box = shapely.box(
            *(np.nanmin(corners[:, :2], axis=0) - margin),
            *(np.nanmax(corners[:, 2:], axis=0) + margin),
        )
        box = shapely.segmentize(box, max(box.length / 64, 1.0))  # its edges bend in WGS84
        west, south, east, north = gpd.GeoSeries([box], crs=crs).to_crs(C.WGS84).total_bounds
        self._layers = load_osm_layers(self.osm_path, (west, south, east, north), crs)
        self._arrays = None
        self._crs = crs

    def features(self, item: ImageItem) -> PlaceFeatures:
        """The OSM features of an item's place."""
        if self._layers is None:
            self.prepare([item])
        if item.place is None or self._layers is None:
            raise CaptionError(f"image {item.image_id} has no region or point to describe")
        if self._arrays is None:
            self._arrays = feature_layers(self._layers)
        return place_features(self._arrays, item, radius=self.radius)

    def caption(self, image: bytes | None, prompt: str, model: str, item: ImageItem) -> str:
        return self._describe(self.features(item), model, item)

    def caption_many(
        self, image: bytes | None, item: ImageItem, requests: Sequence[tuple[str, str]]
    ) -> list[str | CaptionError]:
        """Every style's caption of one place from its features, computed once."""
        try:
            feats = self.features(item)
        except CaptionError as exc:
            return [exc] * len(requests)
        return [self._describe(feats, model, item) for _, model in requests]

    def _describe(self, feats: PlaceFeatures, model: str, item: ImageItem) -> str:
        rng = random.Random(f"{self.seed}|{model}|{item.image_id}")
        return describe(feats, style=model, rng=rng)
