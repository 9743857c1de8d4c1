"""Street-view images per sample point, from providers behind one interface.

Providers are registered by name in :data:`PROVIDERS`; :func:`make_provider` builds one from
:class:`ProviderOptions`. Each lives in its own module:

- ``folder`` (:mod:`.folder`): images you already have, matched to the nearest sample point
  within ``radius`` metres; their locations come from :mod:`.location` (a CSV, the file name,
  EXIF GPS tags or their XMP copy). Equirectangular panoramas (2:1) can be cut into
  ``panorama_views`` perspective views around the road heading.
- ``google`` (:mod:`.google`): Street View Static API. A free metadata call per point first, so
  points without a panorama cost nothing; key from ``GOOGLE_MAPS_API_KEY``.
- ``mapillary`` (:mod:`.mapillary`): Graph API v4, the nearest image within ``radius`` facing
  the wanted heading; token from ``MAPILLARY_TOKEN`` (sent in a header, never in a URL).
- ``baidu`` (:mod:`.baidu`): panorama static image API (``panorama/v2``), WGS84 converted to
  BD-09; key from ``BAIDU_MAP_AK``.

:mod:`.base` holds the interface (:class:`StreetViewProvider`, :class:`Shot`,
:class:`Fetched`), :mod:`.web` what the web APIs share (:class:`~.web.WebProvider`). Keys are
read from the environment only and never written anywhere: not to the manifest (which records
ids such as ``google:PANO_ID``), not to logs, not to error messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from urbangeo._lazy import lazy_exports
from urbangeo._registry import Registry

if TYPE_CHECKING:
    from urbangeo.imagery.streetview.base import ProviderOptions, StreetViewProvider

#: Street-view providers by name.
PROVIDERS = Registry(
    "street-view provider",
    {
        "folder": "urbangeo.imagery.streetview.folder:FolderProvider",
        "google": "urbangeo.imagery.streetview.google:GoogleProvider",
        "mapillary": "urbangeo.imagery.streetview.mapillary:MapillaryProvider",
        "baidu": "urbangeo.imagery.streetview.baidu:BaiduProvider",
    },
)

#: Names imported when first asked for (each provider's name is known from PROVIDERS alone): this
#: package loads no geopandas, Pillow or requests, so the settings can list :data:`PROVIDERS`
#: cheaply.
__all__, _lazy_getattr, __dir__ = lazy_exports(
    __name__,
    {
        "DEFAULT_FOV": "urbangeo.settings.imagery",
        "DEFAULT_MATCH_RADIUS_M": "urbangeo.settings.imagery",
        "DEFAULT_MAX_ANGLE": "urbangeo.settings.imagery",
        "Fetched": ".base",
        "ProviderOptions": ".base",
        "Shot": ".base",
        "StreetViewProvider": ".base",
        "heading_id": ".base",
        "shot_job": ".base",
        "IMAGE_SUFFIXES": ".location",
        "LocatedImage": ".location",
        "exif_location": ".location",
        "name_location": ".location",
        "read_locations_csv": ".location",
        "scan_folder": ".location",
        "xmp_location": ".location",
        "WebProvider": ".web",
    },
    defined=["ENV_URLS", "PROVIDERS", "make_provider"],
    registry=PROVIDERS,
)


def make_provider(name: str, options: ProviderOptions | None = None) -> StreetViewProvider:
    """The provider registered as ``name`` (an :class:`InputError` lists the choices)."""
    from urbangeo.imagery.streetview.base import ProviderOptions

    cls = PROVIDERS.get(name.strip().lower())
    return cls(options or ProviderOptions())


def env_urls() -> dict[str, str]:
    """``provider name → environment variable`` that points a web provider at another server."""
    from urbangeo.imagery.streetview.web import WebProvider

    providers = {name: PROVIDERS.get(name) for name in PROVIDERS}
    return {
        name: cls.url_env
        for name, cls in providers.items()
        if isinstance(cls, type) and issubclass(cls, WebProvider)
    }


def __getattr__(name: str) -> Any:
    # ENV_URLS is worked out from the providers registered when it is asked for.
    return env_urls() if name == "ENV_URLS" else _lazy_getattr(name)
