"""The ``baidu`` provider: panorama static images (``panorama/v2``), located in BD-09.

WGS84 points are converted to BD-09 first; the key comes from ``BAIDU_MAP_AK``.
"""

from __future__ import annotations

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.coords import wgs84_to_bd09
from urbangeo.imagery.streetview.base import Fetched, ProviderOptions, Shot
from urbangeo.imagery.streetview.web import WebProvider
from urbangeo.io.http import AccessDeniedError, HttpError

#: Baidu answers errors as JSON ``{"status": N, "message": ...}`` with HTTP 200.
BAIDU_NO_PANORAMA = frozenset({402, 403, 404, 405})
BAIDU_DENIED = frozenset({101, 102, 508, 509, *range(200, 300)})
BAIDU_QUOTA = frozenset({301, 302, 401})


class BaiduProvider(WebProvider):
    """Baidu panorama static images (``panorama/v2``), located in BD-09."""

    name = "baidu"
    key_env = "BAIDU_MAP_AK"
    url_env = "URBANGEO_BAIDU_URL"
    default_url = "https://api.map.baidu.com"
    MAX_SIZE = (1024, 512)

    @property
    def size(self) -> tuple[int, int]:
        """Default 1024 × 512, Baidu's largest."""
        return self.options.size or self.MAX_SIZE

    def __init__(self, options: ProviderOptions) -> None:
        super().__init__(options)
        w, h = self.size
        if not (10 <= w <= self.MAX_SIZE[0] and 10 <= h <= self.MAX_SIZE[1]):
            raise InputError(
                "Baidu panorama images are 10 to 1024 px wide and 10 to 512 px high.",
                hint="Use e.g. --size 1024x512.",
            )
        if not 10 <= options.fov <= 360:
            raise InputError("Baidu's fov is 10 to 360 degrees.", hint="e.g. --fov 90")

    def fetch(self, shot: Shot) -> Fetched:
        """One panorama view; WGS84 → BD-09 first."""
        lon, lat = wgs84_to_bd09(shot.lon, shot.lat)
        w, h = self.size
        try:
            response = self.client.get(
                f"{self.base_url}/panorama/v2",
                params={
                    "ak": self.key,
                    "width": w,
                    "height": h,
                    "location": f"{float(lon):.6f},{float(lat):.6f}",
                    "coordtype": "bd09ll",
                    "heading": f"{shot.heading:.2f}",
                    "pitch": f"{self.options.pitch:g}",
                    "fov": f"{self.options.fov:g}",
                },
            )
        except HttpError as exc:
            return Fetched(C.STATUS_FAILED, reason=str(exc), source="baidu")
        if response.status_code == 404:
            return Fetched(C.STATUS_MISSING, reason="no panorama (HTTP 404)", source="baidu")
        ctype = response.headers.get("Content-Type", "")
        if ctype.startswith("image/"):
            return self.image(response.content, "baidu")
        try:
            answer = response.json()
            status = int(answer.get("status"))
        except (ValueError, TypeError, AttributeError):
            return Fetched(C.STATUS_FAILED, reason="unexpected answer (not an image)")
        text = self.client.scrub(str(answer.get("message") or answer.get("msg") or "")).strip()
        if status in BAIDU_DENIED:
            self.client.deny(
                AccessDeniedError(
                    f"Baidu refused the request (status {status}{': ' + text if text else ''}).",
                    hint=self.key_hint,
                )
            )
        if status in BAIDU_NO_PANORAMA:
            return Fetched(C.STATUS_MISSING, reason=f"no panorama here (Baidu status {status})")
        if status in BAIDU_QUOTA:
            return Fetched(C.STATUS_FAILED, reason=f"Baidu quota or rate limit (status {status})")
        return Fetched(C.STATUS_FAILED, reason=f"Baidu status {status}: {text}")
