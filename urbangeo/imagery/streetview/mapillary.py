"""The ``mapillary`` provider: Graph API v4, the nearest image facing the wanted heading.

The token comes from ``MAPILLARY_TOKEN`` and is sent in a header, never in a URL.
"""

from __future__ import annotations

import math

from urbangeo import constants as C
from urbangeo.imagery.streetview.base import Fetched, Shot
from urbangeo.imagery.streetview.web import WebProvider


class MapillaryProvider(WebProvider):
    """Mapillary Graph API v4: the nearest image facing the wanted heading."""

    name = "mapillary"
    key_env = "MAPILLARY_TOKEN"
    url_env = "URBANGEO_MAPILLARY_URL"
    default_url = "https://graph.mapillary.com"
    FIELDS = "id,thumb_1024_url,computed_geometry,compass_angle"

    @property
    def size(self) -> tuple[int, int]:
        """Mapillary's thumbnails are 1024 px wide (the height follows the image)."""
        return (1024, 0)

    def params(self) -> dict:
        """Settings that decide the images."""
        o = self.options
        return {**self.shot_params(), "radius": float(o.radius), "max_angle": float(o.max_angle)}

    def _search(self, shot: Shot) -> list[dict]:
        r = self.options.radius
        dlat = r / 111_320.0
        dlon = r / (111_320.0 * max(math.cos(math.radians(shot.lat)), 1e-6))
        west, east = shot.lon - dlon, shot.lon + dlon
        bbox = f"{west:.7f},{shot.lat - dlat:.7f},{east:.7f},{shot.lat + dlat:.7f}"
        response = self.client.get(
            f"{self.base_url}/images",
            params={"fields": self.FIELDS, "bbox": bbox, "limit": 100},
            headers={"Authorization": f"OAuth {self.key}"},
        )
        if response.status_code == 404:
            return []
        try:
            return list(response.json().get("data", []))
        except (ValueError, AttributeError):
            return []

    def fetch(self, shot: Shot) -> Fetched:
        """Search around the point (once per point), pick an image, download its thumbnail."""
        found = self.per_point(shot, "search", lambda: self._search(shot))
        if isinstance(found, Fetched):
            return found
        best = None
        for item in found:
            coords = (item.get("computed_geometry") or {}).get("coordinates")
            url = item.get("thumb_1024_url")
            if not coords or not url:
                continue
            d = _ground_distance(shot.lon, shot.lat, float(coords[0]), float(coords[1]))
            angle = item.get("compass_angle")
            if d > self.options.radius:
                continue
            if (
                angle is not None
                and _angle_diff(float(angle), shot.heading) > self.options.max_angle
            ):
                continue
            if best is None or d < best[0]:
                best = (d, item)
        if best is None:
            return Fetched(
                C.STATUS_MISSING,
                reason=f"no Mapillary image within {self.options.radius:g} m facing "
                f"{shot.heading:.0f}±{self.options.max_angle:g}°",
            )
        item = best[1]
        source = f"mapillary:{item.get('id')}"
        # A signed CDN URL: no Authorization header, so the token never leaves for it.
        url = str(item["thumb_1024_url"])
        return self.download(url, source, missing="image no longer available")


def _ground_distance(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Metres between two nearby WGS84 points (equirectangular approximation)."""
    k = 111_320.0
    dx = (lon2 - lon1) * k * math.cos(math.radians((lat1 + lat2) / 2))
    dy = (lat2 - lat1) * k
    return math.hypot(dx, dy)


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)
