"""Where a photo was taken: from a CSV, its file name, its EXIF GPS tags or their XMP copy.

:func:`scan_folder` locates every image in a folder, trying a CSV (``image, lon, lat[,
heading]``) if one is given, else the file name (``id_lon,lat_yyyymm_heading.jpg``, also a
parent folder named ``id_lon,lat``), the EXIF GPS tags and their XMP copy, in that order.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import SupportsFloat

import numpy as np
from PIL import ExifTags, Image

from urbangeo.errors import InputError
from urbangeo.imagery.coords import TO_WGS84

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
#: ``id_lon,lat[_yyyymm][_heading]``: the naming of many street-view data sets.
NAME_PATTERN = re.compile(
    r"^(?P<id>[^_]+)_(?P<lon>-?\d+(?:\.\d+)?),(?P<lat>-?\d+(?:\.\d+)?)"
    r"(?:_(?P<date>\d{4,8}))?(?:_(?P<heading>-?\d+(?:\.\d+)?))?$"
)
XMP_COORDINATE = re.compile(r"(\d+(?:\.\d+)?),(\d+(?:\.\d+)?)(?:,(\d+(?:\.\d+)?))?([NSEW])")


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

    def degrees(value: Iterable[SupportsFloat]) -> float:
        parts = [float(v) for v in value]
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
    match = XMP_COORDINATE.fullmatch(text or "")
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
