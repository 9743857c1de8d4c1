"""Settings for the online OSM services used through osmnx (Nominatim, Overpass).

``URBANGEO_NOMINATIM_URL`` and ``URBANGEO_OVERPASS_URL`` point urbangeo at a mirror or a
self-hosted server; osmnx's own HTTP cache goes to ``~/.cache/urbangeo/osmnx`` instead of the
current folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

#: Environment variables that override the public endpoints.
ENV_NOMINATIM_URL = "URBANGEO_NOMINATIM_URL"
ENV_OVERPASS_URL = "URBANGEO_OVERPASS_URL"
USER_AGENT = "urbangeo (+https://github.com/urbangeo/urbangeo)"


def configured_osmnx() -> ModuleType:
    """Import osmnx with urbangeo's settings applied and return it."""
    import osmnx as ox

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "urbangeo" / "osmnx"
    ox.settings.cache_folder = str(cache)
    ox.settings.log_console = False
    ox.settings.http_user_agent = USER_AGENT
    ox.settings.requests_timeout = int(os.environ.get("URBANGEO_HTTP_TIMEOUT", "60"))
    if url := os.environ.get(ENV_NOMINATIM_URL):
        ox.settings.nominatim_url = url
    if url := os.environ.get(ENV_OVERPASS_URL):
        ox.settings.overpass_url = url
        # A custom server has no public rate-limit endpoint to ask, nor a public host name to
        # resolve through DNS-over-HTTPS.
        ox.settings.overpass_rate_limit = False
        ox.settings.doh_url_template = None
    return ox
