"""The ``google`` provider: the Street View Static API.

A free metadata call per point first, so points without a panorama cost nothing; the key
from ``GOOGLE_MAPS_API_KEY``.
"""

from __future__ import annotations

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.streetview.base import Fetched, ProviderOptions, Shot
from urbangeo.imagery.streetview.web import WebProvider
from urbangeo.io.http import AccessDeniedError


class GoogleProvider(WebProvider):
    """Google Street View Static API (metadata first, then the image)."""

    name = "google"
    key_env = "GOOGLE_MAPS_API_KEY"
    url_env = "URBANGEO_GOOGLE_URL"
    default_url = "https://maps.googleapis.com"
    MAX_SIZE = 640

    def __init__(self, options: ProviderOptions) -> None:
        super().__init__(options)
        w, h = self.size
        if not (1 <= w <= self.MAX_SIZE and 1 <= h <= self.MAX_SIZE):
            raise InputError(
                f"Google Street View images are at most {self.MAX_SIZE}x{self.MAX_SIZE}.",
                hint="Use --size 640x640 or smaller.",
            )
        if not 10 <= options.fov <= 120:
            raise InputError("Google's fov is 10 to 120 degrees.", hint="e.g. --fov 90")

    def params(self) -> dict:
        """Settings that decide the images."""
        return {**super().params(), "radius": float(self.options.radius)}

    def _metadata(self, shot: Shot) -> dict:
        response = self.client.get(
            f"{self.base_url}/maps/api/streetview/metadata",
            params={
                "location": f"{shot.lat:.7f},{shot.lon:.7f}",
                "radius": f"{self.options.radius:g}",
                "source": "outdoor",
                "key": self.key,
            },
        )
        if response.status_code == 404:
            return {"status": "NOT_FOUND"}
        try:
            return response.json()
        except ValueError:
            return {"status": "UNKNOWN_ERROR", "error_message": "not JSON"}

    def fetch(self, shot: Shot) -> Fetched:
        """Metadata (once per point), then the image at this heading."""
        meta = self.per_point(shot, "metadata", lambda: self._metadata(shot))
        if isinstance(meta, Fetched):
            return meta
        status = meta.get("status")
        if status in ("ZERO_RESULTS", "NOT_FOUND"):
            return Fetched(
                C.STATUS_MISSING, reason=f"no Street View within {self.options.radius:g} m"
            )
        if status == "REQUEST_DENIED":
            self.client.deny(
                AccessDeniedError(
                    "Google Street View refused the request (REQUEST_DENIED): "
                    + self.client.scrub(str(meta.get("error_message", ""))).strip(),
                    hint=self.key_hint,
                )
            )
        if status != "OK":
            return Fetched(C.STATUS_FAILED, reason=f"metadata status {status}")
        pano = str(meta.get("pano_id", ""))
        source = f"google:{pano}" if pano else "google"
        w, h = self.size
        return self.download(
            f"{self.base_url}/maps/api/streetview",
            source,
            missing="no Street View image",
            params={
                "size": f"{w}x{h}",
                "location": f"{shot.lat:.7f},{shot.lon:.7f}",
                "heading": f"{shot.heading:.2f}",
                "fov": f"{self.options.fov:g}",
                "pitch": f"{self.options.pitch:g}",
                "radius": f"{self.options.radius:g}",
                "source": "outdoor",
                "return_error_code": "true",
                "key": self.key,
            },
        )
