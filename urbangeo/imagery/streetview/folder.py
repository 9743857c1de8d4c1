"""The ``folder`` provider: images you already have, matched to the nearest sample point.

An image is matched within ``radius`` metres (its location from :mod:`.location`). An
equirectangular panorama (2:1) can be cut into ``panorama_views`` perspective views around the
road heading.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from PIL import Image
from pyproj import Transformer

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.imagery.panorama import is_panorama, perspective
from urbangeo.imagery.streetview.base import (
    Fetched,
    ProviderOptions,
    Shot,
    StreetViewProvider,
    check_image,
    point_rows,
    shot_job,
)
from urbangeo.imagery.streetview.location import scan_folder

JPEG_QUALITY = 92


def _encode_jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _list(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


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
            params.update(self.view_params())
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
        rows = point_rows(points)
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
            if check_image(data) is None:
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
