"""Settings of the imagery stages: ``tiles`` (one overhead image per region) and
``streetview`` (images per sample point).

This is the one declaration of their defaults, bounds and choices: ``urbangeo.imagery`` takes
its defaults from the constants below, and the choice lists of tile sources and street-view
providers come from their registries (read when needed, so importing this module stays cheap).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from urbangeo.errors import InputError
from urbangeo.settings._base import StageSettings, setting
from urbangeo.settings.common import ShardSettings, WorkersSettings

RESAMPLING = ("nearest", "bilinear", "cubic", "average", "lanczos")
DEFAULT_RESAMPLING = "bilinear"
COORDS = ("wgs84", "gcj02", "bd09")
#: Side of the square overhead images, in pixels.
DEFAULT_TILE_SIZE = 256
#: A square with image data on less than this share of its area is reported missing.
DEFAULT_MIN_VALID = 0.5
#: A region is an edge cell when its image has data on less than this share of its area...
DEFAULT_MIN_VALID_SHARE = 0.5
#: ...or when less than this share of its cell lies inside the boundary (``inside_share``).
DEFAULT_MIN_INSIDE_SHARE = 0.5
#: The environment variable that holds a tile service's API key, unless another is named.
TILE_KEY_ENV = "URBANGEO_TILE_KEY"
#: A photo matches a sample point (folder) or is searched for (web APIs) within this radius.
DEFAULT_MATCH_RADIUS_M = 30.0
DEFAULT_FOV = 90.0
DEFAULT_MAX_ANGLE = 60.0
#: HTTP: requests in flight, requests per second (all threads), retries, seconds per request.
DEFAULT_CONCURRENCY = 4
DEFAULT_RATE_LIMIT = 10.0
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT_S = 30.0
#: Tile sources chosen by a setting of their own (the others are ``--render`` styles).
_OWN_FLAG_SOURCES = ("raster", "xyz")


def tile_source_names() -> tuple[str, ...]:
    """The renderers of offline map tiles (the ``--render`` styles), from ``TILE_SOURCES``."""
    from urbangeo.imagery.sources import TILE_SOURCES

    return tuple(n for n in TILE_SOURCES.names() if n not in _OWN_FLAG_SOURCES)


def provider_names() -> tuple[str, ...]:
    """The registered street-view providers, from ``PROVIDERS``."""
    from urbangeo.imagery.streetview import PROVIDERS

    return tuple(sorted(PROVIDERS))


@dataclass(frozen=True)
class HttpSettings(StageSettings):
    """How a stage that downloads talks to servers (shared by tiles and streetview)."""

    concurrency: int = setting(
        DEFAULT_CONCURRENCY, "HTTP requests in flight at once.", unit="N", min=1, max=64
    )
    rate_limit: float = setting(
        DEFAULT_RATE_LIMIT,
        "Most requests per second, all connections together (0: no limit). Keep it polite on "
        "public servers.",
        unit="PER_SECOND",
        min=0,
        max=1000,
    )
    retries: int = setting(
        DEFAULT_RETRIES,
        "Tries after the first on HTTP 429/5xx, timeouts and dropped connections, with "
        "exponential backoff (and at least the server's Retry-After).",
        unit="N",
        min=0,
        max=20,
    )
    timeout: float = setting(
        DEFAULT_TIMEOUT_S,
        "Seconds to wait for a server's answer to one request (then it is retried).",
        unit="SECONDS",
        min=0,
        min_open=True,
        max=600,
        runtime=True,
    )
    user_agent: str | None = setting(None, "The User-Agent header.", cli=False)


@dataclass(frozen=True)
class TilesSettings(ShardSettings, HttpSettings, WorkersSettings, stage="tiles"):
    """``tiles``: one overhead image per region (``workers``: processes that draw ``render``
    tiles; threads that read ``raster`` tiles; for every source, threads that encode and save
    the images)."""

    render: str | None = setting(
        None,
        "Draw map tiles from OpenStreetMap data, offline (the default source).",
        unit="STYLE",
        choices=tile_source_names,
    )
    osm: Path | None = setting(
        None,
        "OSM extract (.osm.pbf) for --render. Default: the run's bundled city, or the "
        ".osm.pbf that `urbangeo sample` used.",
        exists=True,
    )
    raster: Path | None = setting(
        None,
        "A GeoTIFF/COG (any raster GDAL reads, any CRS) to cut the tiles from.",
        plugin="GeoTIFF (instead of the OSM map)",
    )
    bands: tuple[int, ...] | None = setting(
        None, "Raster bands for R,G,B, or one band for grey.", unit="B,B,B", min=1, max=65535
    )
    xyz: str | None = setting(
        None,
        "An XYZ tile service: a URL template with {z}/{x}/{y} or an xyzservices provider name "
        "such as Esri.WorldImagery.",
        unit="URL|PROVIDER",
        plugin="XYZ URL …/{z}/{x}/{y}.png",
    )
    zoom: int | None = setting(
        None,
        "Zoom level for --xyz. Default: auto.",
        unit="LEVEL",
        min=0,
        max=23,
        plugin="XYZ zoom level",
    )
    key_env: str = setting(
        TILE_KEY_ENV,
        "Environment variable holding the tile service's API key, if it needs one.",
        unit="VAR",
    )
    size: int = setting(
        DEFAULT_TILE_SIZE,
        "Side of the square images.",
        unit="PIXELS",
        min=16,
        max=4096,
        plugin="Image size (px)",
    )
    resampling: str = setting(
        DEFAULT_RESAMPLING, "Resampling for --raster and --xyz.", choices=RESAMPLING
    )
    min_valid: float = setting(
        DEFAULT_MIN_VALID,
        "A region with image data on less than this share of its area is recorded as missing "
        "(outside the raster, nodata, missing tiles).",
        unit="SHARE",
        min=0,
        max=1,
    )
    min_valid_share: float = setting(
        DEFAULT_MIN_VALID_SHARE,
        "A region whose image has data on less than this share of its area (the rest lies "
        "outside the OSM extract's coverage or the raster) is an edge cell (column edge of "
        "layer regions).",
        unit="SHARE",
        min=0,
        max=1,
    )
    min_inside_share: float = setting(
        DEFAULT_MIN_INSIDE_SHARE,
        "A region with less than this share of its cell inside the boundary (column "
        "inside_share) is an edge cell too.",
        unit="SHARE",
        min=0,
        max=1,
    )
    include_edges: bool = setting(
        False,
        "Keep edge cells in training, clustering and prediction. By default they stay in the "
        "grid but are left out of them, with the reason in column excluded.",
        plugin="Include edge cells",
    )

    def check(self) -> None:
        given = [n for n in ("render", "raster", "xyz") if getattr(self, n) is not None]
        if len(given) > 1:
            raise InputError(
                f"Give exactly one tile source, not {' and '.join('--' + n for n in given)}.",
                hint="--render osm (offline map, the default), --raster FILE or --xyz URL.",
            )

    @property
    def source(self) -> str:
        """The tile source these settings choose (the offline OSM map by default)."""
        if self.raster is not None:
            return "raster"
        if self.xyz is not None:
            return "xyz"
        return self.render or "osm"


@dataclass(frozen=True)
class StreetviewSettings(ShardSettings, HttpSettings, stage="streetview"):
    """``streetview``: images per street-view sample point."""

    provider: str | None = setting(
        "folder",
        "Where the images come from (the providers are listed above).",
        unit="NAME",
        choices=provider_names,
    )
    folder: Path | None = setting(
        None, "folder: a folder of images (searched recursively).", folder=True, exists=True
    )
    csv: Path | None = setting(
        None,
        "folder: a CSV with columns image, lon, lat[, heading] locating the images.",
        exists=True,
    )
    coords: str = setting(
        "wgs84",
        "folder: datum of the coordinates in names/CSV/EXIF (gcj02, bd09: Chinese maps).",
        choices=COORDS,
    )
    radius: float = setting(
        DEFAULT_MATCH_RADIUS_M,
        "Match an image to a sample point only this close.",
        unit="METRES",
        min=0,
        min_open=True,
        max=10_000,
    )
    headings: tuple[float, ...] = setting(
        (0.0,),
        "Camera headings relative to the road (0: along it; 90,270: both sides).",
        unit="DEG,DEG",
        min=-360,
        max=360,
    )
    panorama_views: int = setting(
        0,
        "folder: cut 2:1 panoramas into N perspective views around the road heading "
        "(0: keep panoramas whole).",
        unit="N",
        min=0,
        max=36,
    )
    fov: float = setting(
        DEFAULT_FOV,
        "Horizontal field of view of a view.",
        unit="DEG",
        min=0,
        min_open=True,
        max=180,
    )
    pitch: float = setting(0.0, "Camera tilt above the horizon.", unit="DEG", min=-90, max=90)
    size: tuple[int, ...] | None = setting(
        None,
        "Image size (default: google 640x640, baidu 1024x512, panorama views 640x640).",
        unit="WxH",
        min=1,
        max=8192,
    )
    max_angle: float = setting(
        DEFAULT_MAX_ANGLE,
        "mapillary: accept images facing at most this far from the wanted heading.",
        unit="DEG",
        min=0,
        max=180,
    )
    base_url: str | None = setting(
        None,
        "API base URL, for proxies and tests (or the provider's environment variable).",
        unit="URL",
    )

    def check(self) -> None:
        if self.size is not None and len(self.size) != 2:
            raise InputError(
                f"[streetview] size is WIDTHxHEIGHT, e.g. 640x640, not "
                f"{'x'.join(map(str, self.size))}."
            )
