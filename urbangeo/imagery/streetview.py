"""Street-view images per sample point, from providers behind one interface.

A provider turns the run's sample points into :class:`Shot` s (one image each: which point,
which camera heading, where the file goes) and fetches each shot's bytes. Providers register
by name (:func:`register_provider`); :func:`make_provider` builds one from
:class:`ProviderOptions`.

- ``folder``: images you already have, matched to the nearest sample point within
  ``radius`` metres. Locations come from a CSV (``image, lon, lat[, heading]``), from the file
  name (``id_lon,lat_yyyymm_heading.jpg``, also a parent folder named ``id_lon,lat``), or from
  the EXIF GPS tags (or their XMP copy), in that order. Equirectangular panoramas (2:1) can be
  cut into ``panorama_views`` perspective views around the road heading.
- ``google``: Street View Static API. A free metadata call per point first, so points without
  a panorama cost nothing; key from ``GOOGLE_MAPS_API_KEY``.
- ``mapillary``: Graph API v4, the nearest image within ``radius`` facing the wanted heading;
  token from ``MAPILLARY_TOKEN`` (sent in a header, never in a URL).
- ``baidu``: panorama static image API (``panorama/v2``), WGS84 converted to BD-09; key from
  ``BAIDU_MAP_AK``.

Keys are read from the environment only and never written anywhere: not to the manifest
(which records ids such as ``google:PANO_ID``), not to logs, not to error messages.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import geopandas as gpd
import numpy as np
import shapely
from PIL import ExifTags, Image
from pyproj import Transformer

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.imagery.coords import TO_WGS84, wgs84_to_bd09
from urbangeo.imagery.http import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_LIMIT,
    DEFAULT_RETRIES,
    AccessDeniedError,
    HttpClient,
    HttpError,
)
from urbangeo.imagery.manifest import ImageJob
from urbangeo.imagery.panorama import is_panorama, perspective

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
DEFAULT_RADIUS_M = 30.0
DEFAULT_FOV = 90.0
DEFAULT_MAX_ANGLE = 60.0
JPEG_QUALITY = 92
#: ``id_lon,lat[_yyyymm][_heading]``: the naming of many street-view data sets.
NAME_PATTERN = re.compile(
    r"^(?P<id>[^_]+)_(?P<lon>-?\d+(?:\.\d+)?),(?P<lat>-?\d+(?:\.\d+)?)"
    r"(?:_(?P<date>\d{4,8}))?(?:_(?P<heading>-?\d+(?:\.\d+)?))?$"
)
XMP_COORDINATE = re.compile(r"(\d+(?:\.\d+)?),(\d+(?:\.\d+)?)(?:,(\d+(?:\.\d+)?))?([NSEW])")
ENV_KEYS = {
    "google": "GOOGLE_MAPS_API_KEY",
    "mapillary": "MAPILLARY_TOKEN",
    "baidu": "BAIDU_MAP_AK",
}
ENV_URLS = {
    "google": "URBANGEO_GOOGLE_URL",
    "mapillary": "URBANGEO_MAPILLARY_URL",
    "baidu": "URBANGEO_BAIDU_URL",
}
DEFAULT_URLS = {
    "google": "https://maps.googleapis.com",
    "mapillary": "https://graph.mapillary.com",
    "baidu": "https://api.map.baidu.com",
}


@dataclass(frozen=True)
class Shot:
    """One street-view image to make: the job, the point (WGS84), the camera heading."""

    job: ImageJob
    lon: float
    lat: float
    heading: float
    extra: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Fetched:
    """A shot's encoded image (``data``) or why there is none."""

    status: str
    data: bytes | None = None
    reason: str = ""
    source: str = ""


@dataclass
class ProviderOptions:
    """Settings of every provider (each uses the ones that concern it)."""

    folder: Path | None = None
    csv: Path | None = None
    radius: float = DEFAULT_RADIUS_M
    coords: str = "wgs84"
    headings: tuple[float, ...] = (0.0,)
    panorama_views: int = 0
    fov: float = DEFAULT_FOV
    pitch: float = 0.0
    size: tuple[int, int] | None = None
    max_angle: float = DEFAULT_MAX_ANGLE
    base_url: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    rate_limit: float = DEFAULT_RATE_LIMIT
    retries: int = DEFAULT_RETRIES
    user_agent: str | None = None
    client: HttpClient | None = None


def heading_id(heading: float) -> int:
    """A heading as the whole degree used in image ids, 0..359."""
    return round(float(heading)) % 360


def shot_job(point: dict, heading: float, ext: str) -> ImageJob:
    """The job of an image of ``point`` (a row of sv_points) at ``heading``."""
    pid = int(point[C.POINT_ID])
    image_id = f"sv_{pid}_{heading_id(heading)}"
    region = point.get(C.REGION_ID)
    return ImageJob(
        image_id,
        None if region is None or region != region else str(region),
        pid,
        f"{C.STREETVIEW_DIR}/{image_id}.{ext}",
        point["geometry"],
    )


class StreetViewProvider(ABC):
    """A source of street-view images: plans shots for sample points and fetches them."""

    name: ClassVar[str]

    def __init__(self, options: ProviderOptions) -> None:
        self.options = options

    @property
    def source(self) -> str:
        """What the manifest's ``source`` column starts with (never a secret)."""
        return self.name

    def params(self) -> dict:
        """Settings that decide the images (recorded with the stage)."""
        o = self.options
        return {
            "source": self.source,
            "headings": [float(h) for h in o.headings],
            "fov": float(o.fov),
            "pitch": float(o.pitch),
            "size": list(self.size),
        }

    @property
    def size(self) -> tuple[int, int]:
        """Image size (width, height) asked for."""
        return self.options.size or (640, 640)

    @property
    def concurrency(self) -> int:
        """How many shots to fetch at once."""
        return self.options.concurrency

    def plan(self, points: gpd.GeoDataFrame) -> list[Shot]:
        """One shot per point and heading offset (``options.headings``, from the road)."""
        shots: dict[str, Shot] = {}
        for point in _point_rows(points):
            road = point[C.HEADING]
            for offset in self.options.headings:
                heading = (float(offset) + (0.0 if road != road else float(road))) % 360.0
                job = shot_job(point, heading, "jpg")
                shots.setdefault(job.image_id, Shot(job, point[C.LON], point[C.LAT], heading))
        return list(shots.values())

    @abstractmethod
    def fetch(self, shot: Shot) -> Fetched:
        """The shot's image bytes, or why there are none."""

    def close(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections."""


PROVIDERS: dict[str, type[StreetViewProvider]] = {}


def register_provider(cls: type[StreetViewProvider]) -> type[StreetViewProvider]:
    """Class decorator: make a provider available by its ``name``."""
    PROVIDERS[cls.name] = cls
    return cls


def make_provider(name: str, options: ProviderOptions | None = None) -> StreetViewProvider:
    """The provider registered as ``name``."""
    cls = PROVIDERS.get(name.strip().lower())
    if cls is None:
        raise InputError(
            f"Unknown street-view provider {name!r}.",
            hint=f"Choose one of: {', '.join(sorted(PROVIDERS))}.",
        )
    return cls(options or ProviderOptions())


def _point_rows(points: gpd.GeoDataFrame) -> list[dict]:
    if C.LON in points and C.LAT in points:
        lon, lat = points[C.LON].to_numpy(float), points[C.LAT].to_numpy(float)
    else:
        ll = points.geometry.to_crs(C.WGS84)
        lon, lat = ll.x.to_numpy(), ll.y.to_numpy()
    headings = points[C.HEADING] if C.HEADING in points else [float("nan")] * len(points)
    regions = points[C.REGION_ID] if C.REGION_ID in points else [None] * len(points)
    return [
        {
            C.POINT_ID: pid,
            C.REGION_ID: region,
            C.HEADING: float(h),
            C.LON: float(x),
            C.LAT: float(y),
            "geometry": geom,
        }
        for pid, region, h, x, y, geom in zip(
            points[C.POINT_ID], regions, headings, lon, lat, points.geometry, strict=True
        )
    ]


def _check_image(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.size
    except Exception:
        return None


def _encode_jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# --- folder --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocatedImage:
    """An image file with its WGS84 location and heading (None: unknown)."""

    path: Path
    lon: float
    lat: float
    heading: float | None
    width: int
    height: int
    how: str


def exif_location(image: Image.Image) -> tuple[float, float, float | None] | None:
    """(lon, lat, heading) from an image's EXIF GPS tags, or None."""
    try:
        gps = image.getexif().get_ifd(0x8825)
    except Exception:
        return None
    tags = ExifTags.GPS
    if tags.GPSLatitude not in gps or tags.GPSLongitude not in gps:
        return None

    def degrees(value: object) -> float:
        parts = [float(v) for v in value]  # type: ignore[union-attr]
        parts += [0.0] * (3 - len(parts))
        return parts[0] + parts[1] / 60 + parts[2] / 3600

    try:
        lat = degrees(gps[tags.GPSLatitude])
        lon = degrees(gps[tags.GPSLongitude])
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if str(gps.get(tags.GPSLatitudeRef, "N")).upper().startswith("S"):
        lat = -lat
    if str(gps.get(tags.GPSLongitudeRef, "E")).upper().startswith("W"):
        lon = -lon
    heading = gps.get(tags.GPSImgDirection)
    try:
        heading = None if heading is None else float(heading) % 360.0
    except (TypeError, ValueError, ZeroDivisionError):
        heading = None
    return lon, lat, heading


def _xmp_value(xmp: str, name: str) -> str | None:
    """An XMP property written as an attribute (``exif:GPSLatitude="..."``) or an element."""
    match = re.search(rf'{name}="([^"]*)"', xmp) or re.search(rf"<{name}>([^<]*)<", xmp)
    return match.group(1).strip() if match else None


def _xmp_number(text: str | None) -> float | None:
    if not text:
        return None
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        return None


def _xmp_coordinate(text: str | None) -> float | None:
    """XMP's ``DDD,MM,SSk`` or ``DDD,MM.mmk`` (k: N, S, E or W) in decimal degrees."""
    match = re.fullmatch(
        r"(\d+(?:\.\d+)?),(\d+(?:\.\d+)?)(?:,(\d+(?:\.\d+)?))?([NSEW])", text or ""
    )
    if not match:
        return None
    deg, minutes, seconds, ref = match.groups()
    value = float(deg) + float(minutes) / 60 + float(seconds or 0) / 3600
    return -value if ref in "SW" else value


def xmp_location(image: Image.Image) -> tuple[float, float, float | None] | None:
    """(lon, lat, heading) from XMP metadata (``exif:GPS*``, as Adobe tools and 360° cameras
    write it; the heading from ``exif:GPSImgDirection`` or ``GPano:PoseHeadingDegrees``)."""
    raw = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if not raw:
        return None
    xmp = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    lat = _xmp_coordinate(_xmp_value(xmp, "exif:GPSLatitude"))
    lon = _xmp_coordinate(_xmp_value(xmp, "exif:GPSLongitude"))
    if lat is None or lon is None:
        return None
    heading = _xmp_number(_xmp_value(xmp, "GPano:PoseHeadingDegrees"))
    if heading is None:
        heading = _xmp_number(_xmp_value(xmp, "exif:GPSImgDirection"))
    return lon, lat, None if heading is None else heading % 360.0


def name_location(path: Path) -> tuple[float, float, float | None] | None:
    """(lon, lat, heading) from ``id_lon,lat[_yyyymm][_heading]`` in the file or folder name."""
    for name in (path.stem, path.parent.name):
        match = NAME_PATTERN.match(name)
        if match:
            heading = match.group("heading") if name == path.stem else None
            return (
                float(match.group("lon")),
                float(match.group("lat")),
                None if heading is None else float(heading) % 360.0,
            )
    return None


def read_locations_csv(path: Path) -> dict[str, tuple[float, float, float | None]]:
    """``image → (lon, lat, heading)`` from a CSV with columns image, lon, lat[, heading]."""
    if not path.is_file():
        raise InputError(f"CSV {path} does not exist.", hint="Check the --csv path.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = {(n or "").strip().lower(): n for n in reader.fieldnames or []}
        needed = [c for c in ("image", "lon", "lat") if c not in fields]
        if needed:
            raise InputError(
                f"CSV {path} lacks the column(s) {', '.join(needed)}.",
                hint="The CSV needs columns image, lon, lat (WGS84 unless --coords says "
                "otherwise) and optionally heading; image is the file name relative to the folder.",
            )
        out = {}
        for i, row in enumerate(reader, start=2):
            try:
                lon = float(row[fields["lon"]])
                lat = float(row[fields["lat"]])
            except (TypeError, ValueError):
                raise InputError(
                    f"CSV {path} line {i}: lon/lat are not numbers.",
                    hint="Write decimal degrees, e.g. 24.9384,60.1699.",
                ) from None
            heading = row.get(fields["heading"]) if "heading" in fields else None
            out[row[fields["image"]].strip()] = (
                lon,
                lat,
                float(heading) % 360.0 if heading not in (None, "") else None,
            )
    return out


def scan_folder(
    folder: Path, *, csv_path: Path | None = None, coords: str = "wgs84"
) -> tuple[list[LocatedImage], list[str], list[str]]:
    """Images in ``folder`` (recursively) with their locations.

    Returns (located images, unreadable files, images without a location).
    """
    if not folder.is_dir():
        raise InputError(f"Image folder {folder} does not exist.", hint="Check the --folder path.")
    if coords not in TO_WGS84:
        raise InputError(
            f"Unknown coordinate system {coords!r}.", hint=f"Choose one of: {', '.join(TO_WGS84)}."
        )
    table = read_locations_csv(csv_path) if csv_path is not None else None
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError(
            f"No images in {folder}.",
            hint=f"The folder (and its subfolders) should hold {', '.join(IMAGE_SUFFIXES)} files.",
        )
    located: list[tuple[Path, float, float, float | None, int, int, str]] = []
    unreadable: list[str] = []
    unlocated: list[str] = []
    for path in files:
        rel = path.relative_to(folder).as_posix()
        try:
            with Image.open(path) as im:
                width, height = im.size
                where = None
                how = ""
                if table is not None:
                    where = table.get(rel) or table.get(path.name)
                    how = "csv"
                if where is None and table is None:
                    where, how = name_location(path), "name"
                    if where is None:
                        where, how = exif_location(im), "exif"
                    if where is None:
                        where, how = xmp_location(im), "xmp"
        except Exception:
            unreadable.append(rel)
            continue
        if where is None:
            unlocated.append(rel)
            continue
        located.append((path, *where, width, height, how))
    if not located:
        return [], unreadable, unlocated
    lon = np.array([r[1] for r in located])
    lat = np.array([r[2] for r in located])
    lon, lat = TO_WGS84[coords](lon, lat)
    images = [
        LocatedImage(r[0], float(x), float(y), r[3], r[4], r[5], r[6])
        for r, x, y in zip(located, lon, lat, strict=True)
    ]
    return images, unreadable, unlocated


def _list(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@register_provider
class FolderProvider(StreetViewProvider):
    """Images from a local folder, matched to the nearest sample point within ``radius``."""

    name = "folder"

    def __init__(self, options: ProviderOptions) -> None:
        super().__init__(options)
        if options.folder is None:
            raise InputError(
                "The folder provider needs a folder of images.", hint="Pass --folder DIR."
            )
        self.folder = Path(options.folder)
        if options.panorama_views < 0:
            raise InputError("--panorama-views must be 0 or more.", hint="e.g. --panorama-views 4")
        self._panos: dict[Path, np.ndarray | None] = {}
        self._pano_lock = threading.Lock()

    @property
    def source(self) -> str:
        """``folder:/absolute/path``."""
        return f"folder:{self.folder.resolve()}"

    @property
    def concurrency(self) -> int:
        """Local files: one thread per core is plenty."""
        return min(self.options.concurrency, os.cpu_count() or 1)

    def params(self) -> dict:
        """Settings that decide the images."""
        o = self.options
        params = {
            "source": self.source,
            "radius": float(o.radius),
            "coords": o.coords,
            "panorama_views": int(o.panorama_views),
        }
        if o.csv is not None:
            params["csv"] = str(Path(o.csv).resolve())
        if o.panorama_views:
            params.update(fov=float(o.fov), pitch=float(o.pitch), size=list(self.size))
        return params

    def plan(self, points: gpd.GeoDataFrame) -> list[Shot]:
        """Match the folder's images to points; points left without one are missing shots."""
        o = self.options
        images, unreadable, unlocated = scan_folder(
            self.folder, csv_path=None if o.csv is None else Path(o.csv), coords=o.coords
        )
        if unreadable:
            if not images and not unlocated:
                raise InputError(
                    f"None of the {len(unreadable)} image files in {self.folder} can be read "
                    f"({_list(unreadable)}).",
                    hint="They may be truncated or not images at all; check the files.",
                )
            warnings.warn(
                f"{len(unreadable)} image file(s) in {self.folder} cannot be read and are "
                f"skipped: {_list(unreadable)}.",
                UrbangeoWarning,
                stacklevel=2,
            )
        if unlocated:
            if not images:
                raise InputError(
                    f"No image in {self.folder} has a location.",
                    hint="Name files id_lon,lat_yyyymm_heading.jpg, give them EXIF GPS tags, or "
                    "pass --csv with columns image, lon, lat.",
                )
            warnings.warn(
                f"{len(unlocated)} image(s) have no location (file name, EXIF GPS or CSV) and "
                f"are skipped: {_list(unlocated)}.",
                UrbangeoWarning,
                stacklevel=2,
            )
        rows = _point_rows(points)
        if not rows:
            return []
        to_grid = Transformer.from_crs(C.WGS84, points.crs, always_xy=True)
        ix, iy = to_grid.transform([i.lon for i in images], [i.lat for i in images])
        tree = shapely.STRtree(points.geometry.values)
        where = shapely.points(ix, iy)
        pairs, dist = tree.query_nearest(
            where, max_distance=o.radius, return_distance=True, all_matches=False
        )
        if pairs.shape[1] == 0:
            nearest = tree.query_nearest(where, return_distance=True)[1]
            raise InputError(
                f"None of the {len(images)} located images in {self.folder} is within "
                f"{o.radius:g} m of a sample point (the closest is {nearest.min():,.0f} m away).",
                hint="Check that the images belong to this study area and that their coordinates "
                "are read right (--coords wgs84/gcj02/bd09), or raise --radius.",
            )
        best: dict[str, tuple[float, Shot]] = {}
        matched: set[int] = set()
        for image_index, point_index, d in zip(pairs[0], pairs[1], dist, strict=True):
            image = images[image_index]
            point = rows[point_index]
            matched.add(int(point_index))
            road = point[C.HEADING]
            road = 0.0 if road != road else road
            if o.panorama_views and is_panorama(image.width, image.height):
                pano_heading = road if image.heading is None else image.heading
                for k in range(o.panorama_views):
                    heading = (road + k * 360.0 / o.panorama_views) % 360.0
                    job = shot_job(point, heading, "jpg")
                    extra = {"file": image.path, "pano_heading": pano_heading, "view": heading}
                    shot = Shot(job, point[C.LON], point[C.LAT], heading, extra)
                    _keep_nearest(best, job.image_id, float(d), shot)
            else:
                heading = road if image.heading is None else image.heading
                ext = image.path.suffix.lower().lstrip(".").replace("jpeg", "jpg")
                job = shot_job(point, heading, ext)
                shot = Shot(job, point[C.LON], point[C.LAT], heading, {"file": image.path})
                _keep_nearest(best, job.image_id, float(d), shot)
        shots = [shot for _, shot in best.values()]
        for i, point in enumerate(rows):
            if i not in matched:
                road = point[C.HEADING]
                heading = 0.0 if road != road else road
                reason = f"no image within {o.radius:g} m"
                shots.append(
                    Shot(
                        shot_job(point, heading, "jpg"),
                        point[C.LON],
                        point[C.LAT],
                        heading,
                        {"missing": reason},
                    )
                )
        return shots

    def _panorama(self, path: Path) -> np.ndarray | None:
        """The decoded panorama, kept while its views are cut (they are planned together)."""
        with self._pano_lock:
            if path in self._panos:
                return self._panos[path]
        try:
            with Image.open(path) as im:
                pano = np.asarray(im.convert("RGB"))
        except Exception:
            pano = None
        with self._pano_lock:
            self._panos[path] = pano
            while len(self._panos) > self.concurrency + 1:
                self._panos.pop(next(iter(self._panos)))
        return pano

    def fetch(self, shot: Shot) -> Fetched:
        """Copy the image, or cut the panorama view."""
        if "missing" in shot.extra:
            return Fetched(C.STATUS_MISSING, reason=shot.extra["missing"])
        path: Path = shot.extra["file"]
        source = f"folder:{path.relative_to(self.folder).as_posix()}"
        try:
            data = path.read_bytes()
        except OSError as exc:
            return Fetched(C.STATUS_FAILED, reason=f"cannot read {path.name}: {exc.strerror}")
        if "view" not in shot.extra:
            if _check_image(data) is None:
                return Fetched(
                    C.STATUS_FAILED, reason=f"unreadable image {path.name}", source=source
                )
            return Fetched(C.STATUS_OK, data, source=source)
        pano = self._panorama(path)
        if pano is None:
            return Fetched(C.STATUS_FAILED, reason=f"unreadable image {path.name}", source=source)
        view = perspective(
            pano,
            heading=shot.extra["view"],
            fov=self.options.fov,
            size=self.size,
            pitch=self.options.pitch,
            pano_heading=shot.extra["pano_heading"],
        )
        return Fetched(C.STATUS_OK, _encode_jpeg(view), source=source)


def _keep_nearest(best: dict[str, tuple[float, Shot]], key: str, d: float, shot: Shot) -> None:
    if key not in best or d < best[key][0]:
        best[key] = (d, shot)


# --- web APIs ------------------------------------------------------------------------------------
class WebProvider(StreetViewProvider):
    """A provider behind an HTTP API with a key from the environment."""

    def __init__(self, options: ProviderOptions) -> None:
        super().__init__(options)
        env = ENV_KEYS[self.name]
        self.key = os.environ.get(env, "").strip()
        if not self.key:
            raise InputError(
                f"The {self.name} provider needs a key in the environment variable {env}.",
                hint=f"export {env}=... (keys are read from the environment only, never from "
                "options, so they stay out of shell history and logs).",
            )
        self.base_url = (
            options.base_url or os.environ.get(ENV_URLS[self.name]) or DEFAULT_URLS[self.name]
        ).rstrip("/")
        hint = f"Check the key in {env}: that it is valid and enabled for this API."
        if options.client is not None:
            self.client = options.client
            self.client.secrets = sorted({*self.client.secrets, self.key}, key=len, reverse=True)
        else:
            self.client = HttpClient(
                concurrency=options.concurrency,
                rate_limit=options.rate_limit,
                retries=options.retries,
                user_agent=options.user_agent,
                secrets=[self.key],
                service=f"The {self.name} API",
                key_hint=hint,
            )
        self.key_hint = hint
        self._cache: dict[object, object] = {}
        self._cache_lock = threading.Lock()

    def memo(self, key: object, compute: Callable[[], object]) -> object:
        """``compute()`` once per key (several headings of one point share a lookup)."""
        with self._cache_lock:
            event = self._cache.get(key)
            if event is None:
                event = self._cache[key] = threading.Event()
                owner = True
            else:
                owner = False
        if isinstance(event, threading.Event):
            if owner:
                try:
                    value = compute()
                except BaseException as exc:
                    value = exc
                with self._cache_lock:
                    self._cache[key] = value
                event.set()
            else:
                event.wait()
        with self._cache_lock:
            value = self._cache[key]
        if isinstance(value, BaseException):
            raise value
        return value

    def image(self, response_data: bytes, source: str) -> Fetched:
        """An ok result if the bytes decode as an image."""
        if _check_image(response_data) is None:
            return Fetched(C.STATUS_FAILED, reason="the server sent a broken image", source=source)
        return Fetched(C.STATUS_OK, response_data, source=source)

    def close(self) -> None:
        """Close connections."""
        self.client.close()


@register_provider
class GoogleProvider(WebProvider):
    """Google Street View Static API (metadata first, then the image)."""

    name = "google"
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
        key = (shot.job.point_id, round(shot.lon, 7), round(shot.lat, 7))
        try:
            meta = self.memo(key, lambda: self._metadata(shot))
        except HttpError as exc:
            return Fetched(C.STATUS_FAILED, reason=f"metadata: {exc}")
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
        try:
            response = self.client.get(
                f"{self.base_url}/maps/api/streetview",
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
        except HttpError as exc:
            return Fetched(C.STATUS_FAILED, reason=str(exc), source=source)
        if response.status_code == 404:
            return Fetched(C.STATUS_MISSING, reason="no Street View image", source=source)
        return self.image(response.content, source)


@register_provider
class MapillaryProvider(WebProvider):
    """Mapillary Graph API v4: the nearest image facing the wanted heading."""

    name = "mapillary"
    FIELDS = "id,thumb_1024_url,computed_geometry,compass_angle"

    @property
    def size(self) -> tuple[int, int]:
        """Mapillary's thumbnails are 1024 px wide (the height follows the image)."""
        return (1024, 0)

    def params(self) -> dict:
        """Settings that decide the images."""
        o = self.options
        return {
            "source": self.source,
            "headings": [float(h) for h in o.headings],
            "radius": float(o.radius),
            "max_angle": float(o.max_angle),
        }

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
        key = (shot.job.point_id, round(shot.lon, 7), round(shot.lat, 7))
        try:
            found = self.memo(key, lambda: self._search(shot))
        except HttpError as exc:
            return Fetched(C.STATUS_FAILED, reason=f"search: {exc}")
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
        try:
            # A signed CDN URL: no Authorization header, so the token never leaves for it.
            response = self.client.get(str(item["thumb_1024_url"]))
        except HttpError as exc:
            return Fetched(C.STATUS_FAILED, reason=str(exc), source=source)
        if response.status_code == 404:
            return Fetched(C.STATUS_MISSING, reason="image no longer available", source=source)
        return self.image(response.content, source)


def _ground_distance(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Metres between two nearby WGS84 points (equirectangular approximation)."""
    k = 111_320.0
    dx = (lon2 - lon1) * k * math.cos(math.radians((lat1 + lat2) / 2))
    dy = (lat2 - lat1) * k
    return math.hypot(dx, dy)


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


#: Baidu answers errors as JSON ``{"status": N, "message": ...}`` with HTTP 200.
BAIDU_NO_PANORAMA = frozenset({402, 403, 404, 405})
BAIDU_DENIED = frozenset({101, 102, 508, 509, *range(200, 300)})
BAIDU_QUOTA = frozenset({301, 302, 401})


@register_provider
class BaiduProvider(WebProvider):
    """Baidu panorama static images (``panorama/v2``), located in BD-09."""

    name = "baidu"
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
