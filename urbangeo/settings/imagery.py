"""Settings of the imagery stages: ``tiles`` (one overhead image per region) and
``streetview`` (images per sample point)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from urbangeo.errors import InputError
from urbangeo.settings._base import StageSettings, setting

RESAMPLING = ("nearest", "bilinear", "cubic", "average", "lanczos")
COORDS = ("wgs84", "gcj02", "bd09")


def tile_source_names() -> tuple[str, ...]:
    """The renderers of offline map tiles (the ``--render`` styles)."""
    return ("osm",)


def provider_names() -> tuple[str, ...]:
    """The registered street-view providers."""
    from urbangeo.imagery.streetview import PROVIDERS

    return tuple(sorted(PROVIDERS))


@dataclass(frozen=True)
class HttpSettings(StageSettings):
    """How a stage that downloads talks to servers (shared by tiles and streetview)."""

    concurrency: int = setting(4, "HTTP requests in flight at once.", min=1, max=64)
    rate_limit: float = setting(
        10.0,
        "Most requests per second, all connections together (0: no limit). Keep it polite on "
        "public servers.",
        unit="PER_SECOND",
        min=0,
    )
    retries: int = setting(
        5,
        "Tries after the first on HTTP 429/5xx, timeouts and dropped connections, with "
        "exponential backoff (and at least the server's Retry-After).",
        min=0,
        max=20,
    )
    user_agent: str | None = setting(None, "The User-Agent header.", cli=False)


@dataclass(frozen=True)
class TilesSettings(HttpSettings):
    """``tiles``: one overhead image per region."""

    stage = "tiles"

    render: str | None = setting(
        None,
        "Draw map tiles from OpenStreetMap data, offline (the default source).",
        choices=tile_source_names,
    )
    osm: Path | None = setting(
        None,
        "OSM extract (.osm.pbf) for --render. Default: the run's bundled city, or the "
        ".osm.pbf that `urbangeo sample` used.",
    )
    raster: Path | None = setting(
        None,
        "A GeoTIFF/COG (any raster GDAL reads, any CRS) to cut the tiles from.",
        plugin="GeoTIFF (instead of the OSM map)",
    )
    bands: tuple[int, ...] | None = setting(
        None, "Raster bands for R,G,B, or one band for grey.", unit="B,B,B", min=1
    )
    xyz: str | None = setting(
        None,
        "An XYZ tile service: a URL template with {z}/{x}/{y} or an xyzservices provider name "
        "such as Esri.WorldImagery.",
        unit="URL|PROVIDER",
        plugin="XYZ URL …/{z}/{x}/{y}.png",
    )
    zoom: int | None = setting(
        None, "Zoom level for --xyz. Default: auto.", min=0, max=23, plugin="XYZ zoom level"
    )
    key_env: str = setting(
        "URBANGEO_TILE_KEY",
        "Environment variable holding the tile service's API key, if it needs one.",
        unit="VAR",
    )
    size: int = setting(
        256,
        "Side of the square images.",
        unit="PIXELS",
        min=16,
        max=4096,
        plugin="Image size (px)",
    )
    resampling: str = setting("bilinear", "Resampling for --raster and --xyz.", choices=RESAMPLING)
    min_valid: float = setting(
        0.5,
        "A region with image data on less than this share of its area is recorded as missing "
        "(outside the raster, nodata, missing tiles).",
        unit="SHARE",
        min=0,
        max=1,
    )
    workers: int = setting(
        2, "Threads that encode and save images.", min=1, max=64, cli=False, runtime=True
    )

    def check(self) -> None:
        given = [n for n in ("render", "raster", "xyz") if getattr(self, n) is not None]
        if len(given) > 1:
            raise InputError(
                f"Give one tile source, not {' and '.join('--' + n for n in given)}.",
                hint="--render osm (offline map), --raster FILE or --xyz URL.",
            )

    @property
    def source(self) -> str:
        """The tile source these settings choose (the offline OSM map by default)."""
        if self.raster is not None:
            return "raster"
        if self.xyz is not None:
            return "xyz"
        return "osm"


@dataclass(frozen=True)
class StreetviewSettings(HttpSettings):
    """``streetview``: images per street-view sample point."""

    stage = "streetview"

    provider: str | None = setting("folder", "Where the images come from.", choices=provider_names)
    folder: Path | None = setting(
        None, "folder: a folder of images (searched recursively).", folder=True
    )
    csv: Path | None = setting(
        None, "folder: a CSV with columns image, lon, lat[, heading] locating the images."
    )
    coords: str = setting(
        "wgs84",
        "folder: datum of the coordinates in names/CSV/EXIF (gcj02, bd09: Chinese maps).",
        choices=COORDS,
    )
    radius: float = setting(
        30.0,
        "Match an image to a sample point only this close.",
        unit="METRES",
        min=0,
        min_open=True,
    )
    headings: tuple[float, ...] = setting(
        (0.0,),
        "Camera headings relative to the road (0: along it; 90,270: both sides).",
        unit="DEG,DEG",
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
        90.0, "Horizontal field of view of a view.", unit="DEG", min=0, min_open=True, max=180
    )
    pitch: float = setting(0.0, "Camera tilt above the horizon.", unit="DEG", min=-90, max=90)
    size: tuple[int, ...] | None = setting(
        None,
        "Image size (default: google 640x640, baidu 1024x512, panorama views 640x640).",
        unit="WxH",
        min=1,
    )
    max_angle: float = setting(
        60.0,
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
            raise InputError(f"[streetview] size is WIDTHxHEIGHT, e.g. 640x640, not {self.size}.")
