"""The street-view provider interface: shots planned for sample points, fetched one by one.

A provider turns the run's sample points into :class:`Shot` s (one image each: which point,
which camera heading, where the file goes) and fetches each shot's bytes (a :class:`Fetched`).
Fetches run in worker threads, so a provider's ``fetch`` must be thread-safe.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import geopandas as gpd
from PIL import Image

from urbangeo import constants as C
from urbangeo.imagery.http_options import HttpOptions
from urbangeo.imagery.manifest import ImageJob
from urbangeo.settings.imagery import (  # the one declaration of the defaults (re-exported)
    DEFAULT_FOV,
    DEFAULT_MATCH_RADIUS_M,
    DEFAULT_MAX_ANGLE,
)

__all__ = [
    "DEFAULT_FOV",
    "DEFAULT_MATCH_RADIUS_M",
    "DEFAULT_MAX_ANGLE",
    "Fetched",
    "ProviderOptions",
    "Shot",
    "StreetViewProvider",
    "check_image",
    "heading_id",
    "point_rows",
    "shot_job",
]


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
class ProviderOptions(HttpOptions):
    """Settings of every provider (each uses the ones that concern it), with the HTTP settings
    of :class:`~urbangeo.imagery.http_options.HttpOptions`."""

    folder: Path | None = None
    csv: Path | None = None
    radius: float = DEFAULT_MATCH_RADIUS_M
    coords: str = "wgs84"
    headings: tuple[float, ...] = (0.0,)
    panorama_views: int = 0
    fov: float = DEFAULT_FOV
    pitch: float = 0.0
    size: tuple[int, int] | None = None
    max_angle: float = DEFAULT_MAX_ANGLE
    base_url: str | None = None


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
    """A source of street-view images: plans shots for sample points and fetches them.

    Registered by ``name`` in ``PROVIDERS``; built from :class:`ProviderOptions`.
    """

    name: ClassVar[str]

    def __init__(self, options: ProviderOptions) -> None:
        self.options = options

    @property
    def source(self) -> str:
        """What the manifest's ``source`` column starts with (never a secret)."""
        return self.name

    def params(self) -> dict:
        """Settings that decide the images (recorded with the stage)."""
        return {**self.shot_params(), **self.view_params()}

    def shot_params(self) -> dict:
        """The source and the camera headings (where a provider's :meth:`params` start)."""
        return {"source": self.source, "headings": [float(h) for h in self.options.headings]}

    def view_params(self) -> dict:
        """The camera's field of view and pitch, and the image size."""
        o = self.options
        return {"fov": float(o.fov), "pitch": float(o.pitch), "size": list(self.size)}

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
        for point in point_rows(points):
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


def point_rows(points: gpd.GeoDataFrame) -> list[dict]:
    """The sample points as dicts: id, region, road heading, WGS84 lon/lat, geometry."""
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


def check_image(data: bytes) -> tuple[int, int] | None:
    """(width, height) if ``data`` decodes as an image, else None."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.size
    except Exception:
        return None
