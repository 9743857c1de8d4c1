"""Overhead images from an XYZ (slippy map) tile service, warped to each square.

The web-mercator tiles covering a square at one zoom level are fetched concurrently with the
polite HTTP client (:mod:`urbangeo.io.http`), cached on disk so that a rerun never fetches a
tile twice, mosaicked and warped into the square.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import mercantile
import numpy as np
import rasterio.warp
from PIL import Image
from pyproj import CRS
from rasterio.transform import Affine

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.sources.base import Tile, TileOptions, TileSource
from urbangeo.imagery.sources.warp import resampling_method, warp_rgba
from urbangeo.io.files import sha256_bytes, write_bytes_atomic
from urbangeo.io.http import HttpClient, HttpError, ReplyError, redact_url
from urbangeo.io.pool import BoundedPool
from urbangeo.settings.imagery import DEFAULT_MIN_VALID, DEFAULT_RESAMPLING, TILE_KEY_ENV

if TYPE_CHECKING:
    import requests

#: Web-mercator tile size assumed for choosing a zoom level when the provider does not say.
TILE_PX = 256
EARTH_CIRCUMFERENCE_M = 2 * math.pi * 6378137.0
TILE_CACHE_DIR = f"{C.IMAGES_DIR}/.tilecache"
KEY_PLACEHOLDERS = ("apikey", "api_key", "accessToken", "access_token", "key", "token")


def resolve_xyz(template_or_name: str, *, key: str | None = None) -> tuple[str, dict]:
    """A tile URL template with ``{z}``, ``{x}``, ``{y}`` from a URL or an xyzservices name.

    Returns (template with the key filled in, provider attributes). A template without the
    three placeholders is refused; a provider that needs a key gets ``key``.
    """
    attrs: dict = {}
    template = template_or_name.strip()
    if "://" not in template:
        import xyzservices.providers as xyz

        try:
            provider = xyz.query_name(template)
        except ValueError:
            raise InputError(
                f"{template!r} is neither a tile URL nor a known xyzservices provider.",
                hint="Give a URL template such as https://tile.example.org/{z}/{x}/{y}.png or a "
                'provider name such as Esri.WorldImagery (list: python -c "import xyzservices.'
                'providers as p; print(p.flatten().keys())").',
            ) from None
        attrs = dict(provider)
        if provider.requires_token():
            if not key:
                raise InputError(
                    f"Tile provider {provider.name} needs an API key.",
                    hint="Put it in the environment variable named by --key-env "
                    "(default URBANGEO_TILE_KEY).",
                )
            for name, value in provider.items():
                if isinstance(value, str) and value.startswith("<insert"):
                    provider = provider.copy()
                    provider[name] = key
        template = provider.build_url(fill_subdomain=False)
        attrs["url"] = template
    missing = [p for p in ("{z}", "{x}") if p not in template]
    if "{y}" not in template and "{-y}" not in template:
        missing.append("{y}")
    if missing:
        raise InputError(
            f"The tile URL {_public(template, key)} lacks {', '.join(missing)}.",
            hint="An XYZ tile URL names the zoom, column and row of each tile, e.g. "
            "https://tile.example.org/{z}/{x}/{y}.png (Leaflet/QGIS 'XYZ Tiles' syntax).",
        )
    if key:
        for name in KEY_PLACEHOLDERS:
            template = template.replace("{" + name + "}", key)
    leftover = re.findall(r"\{([a-zA-Z_]+)\}", template)
    unknown = sorted(set(leftover) - {"z", "x", "y", "s", "r"})
    if unknown:
        raise InputError(
            f"The tile URL {_public(template, key)} has placeholders urbangeo cannot fill: "
            f"{', '.join('{' + u + '}' for u in unknown)}.",
            hint="Fill them in the URL yourself; an API key placeholder ({apikey}, "
            "{accessToken}, {key}) is filled from the environment variable named by --key-env.",
        )
    return template, attrs


def _public(template: str, key: str | None) -> str:
    """``template`` fit to show: key parameters and the key itself replaced by ``***``."""
    return redact_url(template.replace(key, "***") if key else template)


def tile_url(template: str, tile: mercantile.Tile, subdomains: str = "abc") -> str:
    """The URL of one tile."""
    url = template.replace("{z}", str(tile.z)).replace("{x}", str(tile.x))
    url = url.replace("{-y}", str(2**tile.z - 1 - tile.y)).replace("{y}", str(tile.y))
    url = url.replace("{r}", "")
    if "{s}" in url:
        url = url.replace("{s}", subdomains[(tile.x + tile.y) % len(subdomains)])
    return url


def auto_zoom(
    cell_m: float, size: int, lat: float, *, tile_px: int = TILE_PX, max_zoom: int = 19
) -> int:
    """The lowest zoom whose pixels are at least as fine as ``cell_m / size`` at ``lat``."""
    ground = EARTH_CIRCUMFERENCE_M * math.cos(math.radians(lat)) * size / (tile_px * cell_m)
    return int(min(max(0, math.ceil(math.log2(max(ground, 1e-9)) - 1e-9)), max_zoom))


def _magic_ext(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "tile"


TILE_EXTS = ("png", "jpg", "webp", "tile")


def check_tile(response: requests.Response) -> None:
    """Raise :class:`ReplyError` unless ``response`` holds an image that decodes (a server that
    answers 200 with an HTML page, an error text or a truncated image), naming its type."""
    data = response.content
    kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return
    except Exception as exc:
        if not data:
            what = f"an empty reply ({kind})"
        elif _magic_ext(data) == "tile" and not kind.startswith("image/"):
            what = f"{kind}, not an image"
        else:
            what = f"a broken image ({kind}: {exc})"
    raise ReplyError(
        f"the tile server answered HTTP {response.status_code} with {what}",
        status=response.status_code,
    )


class TileCache:
    """Raw tiles on disk, ``{root}/{z}/{x}/{y}.{ext}``; a 404 leaves ``{y}.404``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find(self, tile: mercantile.Tile) -> Path | None:
        """The cached file of ``tile`` (possibly a ``.404`` marker), or None."""
        folder = self.root / str(tile.z) / str(tile.x)
        for ext in (*TILE_EXTS, "404"):
            path = folder / f"{tile.y}.{ext}"
            if path.is_file():
                return path
        return None

    def put(self, tile: mercantile.Tile, data: bytes | None) -> Path:
        """Store a tile's bytes (None: the server has no such tile)."""
        ext = "404" if data is None else _magic_ext(data)
        path = self.root / str(tile.z) / str(tile.x) / f"{tile.y}.{ext}"
        write_bytes_atomic(path, data or b"")
        return path


class XyzSource(TileSource):
    """Images from an XYZ (slippy map) tile service, warped to each square.

    Tiles are fetched with ``client`` (concurrent, rate-limited, retried), cached under
    ``cache_dir`` so a rerun never fetches a tile twice, decoded with Pillow (transparent
    pixels count as missing data), mosaicked per square and warped from web mercator.
    """

    def __init__(
        self,
        template: str,
        *,
        grid_crs: object,
        cache_dir: Path,
        zoom: int | None = None,
        client: HttpClient | None = None,
        key: str | None = None,
        resampling: str = DEFAULT_RESAMPLING,
        min_valid: float = DEFAULT_MIN_VALID,
        batch: int = 64,
    ) -> None:
        self.template, self.attrs = resolve_xyz(template, key=key)
        self.grid_crs = CRS.from_user_input(grid_crs)
        self.zoom = zoom
        self.client = client or HttpClient(secrets=[key] if key else ())
        if key:
            self.client.secrets = sorted({*self.client.secrets, key}, key=len, reverse=True)
        self.resampling_name = resampling
        self.resampling = resampling_method(resampling)
        self.min_valid = min_valid
        self.batch = batch
        self.subdomains = self.attrs.get("subdomains", "abc")
        self.max_zoom = int(self.attrs.get("max_zoom", 19))
        self.tile_px = int(self.attrs.get("tileSize", TILE_PX))
        public = redact_url(self.client.scrub(self.template))
        self.cache = TileCache(cache_dir / sha256_bytes(public.encode())[:12])
        self.public_template = public
        self.fetched = 0

    @classmethod
    def from_options(cls, options: TileOptions) -> XyzSource:
        """The service at ``options.location``, its key from ``options.key_env`` (if set).

        Tiles are cached under ``options.run_dir``. The source closes its client, also
        ``options.client``.
        """
        if options.location is None:
            raise InputError(
                "The xyz source needs a tile URL or provider name.",
                hint="Pass --xyz URL_OR_PROVIDER.",
            )
        key_env = options.key_env or TILE_KEY_ENV
        key = os.environ.get(key_env) or None
        client = options.client
        if client is None:
            client = options.new_client(
                secrets=[key] if key else (),
                service="The tile server",
                key_hint=f"Check the tile service's API key (environment variable {key_env}) "
                "and that it allows this service and area.",
            )
        try:
            return cls(
                str(options.location),
                grid_crs=options.grid_crs,
                cache_dir=Path(options.run_dir or ".") / TILE_CACHE_DIR,
                zoom=options.zoom,
                client=client,
                key=key,
                resampling=options.resampling,
                min_valid=options.min_valid,
            )
        except BaseException:
            client.close()
            raise

    @property
    def source(self) -> str:
        """The manifest's source: the template without secrets, and the zoom."""
        return f"xyz:{self.public_template}" + (f"@z{self.zoom}" if self.zoom is not None else "")

    def params(self) -> dict:
        """Settings that decide the images."""
        return {
            "source": f"xyz:{self.public_template}",
            "zoom": self.zoom,
            "resampling": self.resampling_name,
            "min_valid": self.min_valid,
        }

    def choose_zoom(self, bounds: np.ndarray, size: int) -> int:
        """``zoom`` if given, else :func:`auto_zoom` for the squares' size and latitude."""
        if self.zoom is None:
            centre = np.array([bounds[:, [0, 2]].mean(), bounds[:, [1, 3]].mean()])
            _, lat = rasterio.warp.transform(self.grid_crs, C.WGS84, [centre[0]], [centre[1]])
            cell = float(np.median(bounds[:, 2] - bounds[:, 0]))
            self.zoom = auto_zoom(cell, size, lat[0], tile_px=self.tile_px, max_zoom=self.max_zoom)
        return self.zoom

    def _tiles_of(self, b: np.ndarray) -> list[mercantile.Tile]:
        west, south, east, north = rasterio.warp.transform_bounds(
            self.grid_crs, C.WGS84, *(float(v) for v in b), densify_pts=21
        )
        return list(mercantile.tiles(west, south, east, north, self.zoom))

    def fetch(self, tile: mercantile.Tile) -> Path:
        """The cached file of ``tile`` (a ``.404`` marker if the server has none), fetching it
        first if needed; :class:`HttpError` if that fails or the reply is not an image."""
        cached = self.cache.find(tile)
        if cached is not None:
            return cached
        url = tile_url(self.template, tile, self.subdomains)
        response = self.client.get(url)
        if response.status_code == 404:
            return self.cache.put(tile, None)
        check_tile(response)  # an HTML page or a broken image is a failed download, not cached
        self.fetched += 1
        return self.cache.put(tile, response.content)

    def fetch_all(self, tiles: list[mercantile.Tile]) -> dict[mercantile.Tile, Path | str]:
        """Fetch ``tiles`` concurrently: the cached path of each, or why it failed."""
        results: dict[mercantile.Tile, Path | str] = {}
        todo = []
        for t in tiles:
            cached = self.cache.find(t)
            if cached is not None:
                results[t] = cached
            else:
                todo.append(t)
        if not todo:
            return results

        def fetch(tile: mercantile.Tile) -> Path | str:
            try:
                return self.fetch(tile)
            except HttpError as exc:
                return str(exc)

        # On AccessDeniedError or Ctrl-C the pool drops the queued fetches and starts no more.
        with BoundedPool(self.client.concurrency, results.__setitem__) as pool:
            for t in todo:
                pool.submit(t, fetch, t)
        return results

    def _decode(self, path: Path) -> tuple[np.ndarray, np.ndarray] | str | None:
        """(RGB, alpha) of a cached tile; None for a ``.404`` marker; why it is unusable."""
        if path.suffix == ".404":
            return None
        try:
            with Image.open(path) as im:
                im.load()
                rgba = np.asarray(im.convert("RGBA"))
        except Exception as exc:
            path.unlink(missing_ok=True)  # a corrupt cache entry is fetched again next time
            return f"a cached tile was broken ({exc}); it is fetched again on the next run"
        return rgba[..., :3], rgba[..., 3]

    def _mosaic(
        self,
        tiles: list[mercantile.Tile],
        files: dict[mercantile.Tile, Path | str],
        pixels: dict[mercantile.Tile, tuple[np.ndarray, np.ndarray] | str | None],
    ) -> tuple[np.ndarray, np.ndarray, Affine, str]:
        xs = [t.x for t in tiles]
        ys = [t.y for t in tiles]
        x0, y0 = min(xs), min(ys)
        decoded = {}
        problems = []
        px = None
        for t in tiles:
            d = pixels.get(t)
            if isinstance(d, str):
                problems.append(d)
            elif d is not None:
                decoded[t] = d
                px = px or d[0].shape[0]
            elif isinstance(marker := files.get(t), str):
                problems.append(marker)
        px = px or self.tile_px
        nx, ny = max(xs) - x0 + 1, max(ys) - y0 + 1
        data = np.zeros((3, ny * px, nx * px), dtype=np.uint8)
        valid = np.zeros((ny * px, nx * px), dtype=np.uint8)
        for t, (rgb, alpha) in decoded.items():
            if rgb.shape[:2] != (px, px):
                rgb = np.asarray(Image.fromarray(rgb).resize((px, px), Image.Resampling.BILINEAR))
                alpha = np.asarray(
                    Image.fromarray(alpha).resize((px, px), Image.Resampling.NEAREST)
                )
            r, c = (t.y - y0) * px, (t.x - x0) * px
            data[:, r : r + px, c : c + px] = np.moveaxis(rgb, -1, 0)
            valid[r : r + px, c : c + px] = alpha
        assert self.zoom is not None  # chosen by tiles() before any mosaic
        left, _, _, top = mercantile.xy_bounds(mercantile.Tile(x0, y0, self.zoom))
        step = EARTH_CIRCUMFERENCE_M / (2**self.zoom * px)
        transform = Affine(step, 0, left, 0, -step, top)
        unique = list(dict.fromkeys(problems))
        more = f" (and {len(unique) - 1} more)" if len(unique) > 1 else ""
        return data, valid, transform, (unique[0] + more) if unique else ""

    def tiles(self, bounds: np.ndarray, size: int) -> Iterator[tuple[int, Tile]]:
        """One image per square; tiles are fetched ``batch`` squares at a time."""
        bounds = np.asarray(bounds, dtype=float).reshape(-1, 4)
        if len(bounds) == 0:
            return
        self.choose_zoom(bounds, size)
        for start in range(0, len(bounds), self.batch):
            chunk = bounds[start : start + self.batch]
            per_square = [self._tiles_of(b) for b in chunk]
            needed = list(dict.fromkeys(t for ts in per_square for t in ts))
            files = self.fetch_all(needed)
            # Decoded once per batch: neighbouring squares share tiles.
            pixels = {t: self._decode(f) for t, f in files.items() if isinstance(f, Path)}
            for offset, (b, ts) in enumerate(zip(chunk, per_square, strict=True)):
                if not ts:
                    yield (
                        start + offset,
                        Tile(C.STATUS_MISSING, reason="outside web mercator", valid_share=0.0),
                    )
                    continue
                data, valid, transform, problems = self._mosaic(ts, files, pixels)
                tile = warp_rgba(
                    data,
                    valid,
                    transform,
                    "EPSG:3857",
                    b,
                    self.grid_crs,
                    size,
                    self.resampling,
                    self.min_valid,
                )
                if tile.status != C.STATUS_OK and problems:
                    tile = Tile(C.STATUS_FAILED, reason=f"tile requests failed: {problems}")
                yield start + offset, tile

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()
