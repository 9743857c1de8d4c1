"""Imagery stages that read and write a run's GeoPackage: ``tiles`` and ``streetview``.

Both add rows to the ``images`` layer (one per image, fetched or not) and save image files
beside the GeoPackage (``images/satellite/``, ``images/streetview/``), each file written
atomically. They resume: a rerun with the same settings skips every image whose file is
intact, so after Ctrl-C or a crash the same call continues where it stopped.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import geopandas as gpd
import numpy as np

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.manifest import (
    ImageJob,
    ImageResult,
    Manifest,
    encode_png,
    image_size,
)
from urbangeo.imagery.sources import (
    DEFAULT_MIN_VALID,
    DEFAULT_RESAMPLING,
    TILE_KEY_ENV,
    TileOptions,
    TileSource,
    make_tile_source,
)
from urbangeo.imagery.streetview import (
    DEFAULT_FOV,
    DEFAULT_MATCH_RADIUS_M,
    DEFAULT_MAX_ANGLE,
    ProviderOptions,
    Shot,
    StreetViewProvider,
    make_provider,
)
from urbangeo.io.gpkg import check_can_write, read_layer
from urbangeo.io.http import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_LIMIT,
    DEFAULT_RETRIES,
    HttpClient,
)
from urbangeo.io.osm import run_extract
from urbangeo.io.pool import BoundedPool
from urbangeo.io.runs import StageResult
from urbangeo.progress import message, progress

DEFAULT_TILE_SIZE = 256
RENDER_STYLES = ("osm",)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_id(text: object) -> str:
    """``text`` made safe for a file name (ids such as ``"12_34"`` are kept as they are)."""
    return _UNSAFE.sub("-", str(text)).strip("-") or "x"


def satellite_jobs(regions: gpd.GeoDataFrame) -> list[ImageJob]:
    """One ``sat_{region_id}`` image per region, at the region's centroid."""
    centroids = regions.geometry.centroid
    jobs = []
    for rid, point in zip(regions[C.REGION_ID], centroids, strict=True):
        image_id = f"sat_{safe_id(rid)}"
        jobs.append(ImageJob(image_id, str(rid), None, f"{C.SATELLITE_DIR}/{image_id}.png", point))
    return jobs


def _osm_source(path: Path, osm: str | os.PathLike | None) -> Path:
    if osm is not None:
        return Path(osm)
    source = run_extract(path, roads=None, city=None)
    if source is None:
        from urbangeo.io.runs import read_stage_records

        roads = read_stage_records(path).get("sample")
        candidate = roads.params.get("roads") if roads else None
        if candidate and str(candidate).lower().endswith(".pbf"):
            return Path(candidate)
        raise InputError(
            f"No OSM extract is known for {path}.",
            hint="Pass one with --osm FILE.osm.pbf (rendering needs OSM data; the bundled "
            "cities use their own extract).",
        )
    return source


def _check_size(size: int) -> None:
    if not 16 <= size <= 4096:
        raise InputError(f"Image size {size} is out of range.", hint="Use --size from 16 to 4096.")


def tiles_stage(
    gpkg: str | os.PathLike,
    *,
    raster: str | os.PathLike | None = None,
    xyz: str | None = None,
    render: str | None = None,
    osm: str | os.PathLike | None = None,
    size: int = DEFAULT_TILE_SIZE,
    bands: tuple[int, ...] | None = None,
    zoom: int | None = None,
    resampling: str = DEFAULT_RESAMPLING,
    min_valid: float = DEFAULT_MIN_VALID,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate_limit: float = DEFAULT_RATE_LIMIT,
    retries: int = DEFAULT_RETRIES,
    key_env: str = TILE_KEY_ENV,
    user_agent: str | None = None,
    workers: int = 2,
    overwrite: bool = False,
    client: HttpClient | None = None,
    source: TileSource | None = None,
) -> StageResult:
    """One overhead image per region from ``raster``, ``xyz`` or ``render="osm"``.

    Reads ``regions`` from ``gpkg``; writes ``size`` × ``size`` PNGs to ``images/satellite/``
    and rows of kind ``satellite`` to the ``images`` layer. See
    :mod:`urbangeo.imagery.sources` for the sources; any other
    :class:`~urbangeo.imagery.sources.TileSource` can be passed as ``source`` (the caller
    closes it).
    """
    path = check_can_write(gpkg, [])
    if source is not None:
        _check_size(size)
        regions = read_layer(path, C.LAYER_REGIONS)
        bounds = regions.geometry.bounds.to_numpy(dtype=float)
        source.choose_zoom(bounds, size)
        return _make_tiles(path, regions, bounds, source, size, workers, overwrite)
    chosen = [name for name, v in (("raster", raster), ("xyz", xyz), ("render", render)) if v]
    if len(chosen) != 1:
        raise InputError(
            "Give exactly one image source." if chosen else "No image source given.",
            hint="Use one of --raster FILE.tif, --xyz URL_OR_PROVIDER or --render osm.",
        )
    _check_size(size)
    if not 0 <= min_valid <= 1:
        raise InputError("min_valid must be between 0 and 1.", hint="e.g. --min-valid 0.5")
    regions = read_layer(path, C.LAYER_REGIONS)
    bounds = regions.geometry.bounds.to_numpy(dtype=float)
    location: str | os.PathLike | None
    if render is not None:
        if render not in RENDER_STYLES:
            raise InputError(
                f"Unknown map style {render!r}.", hint=f"Choose one of: {', '.join(RENDER_STYLES)}."
            )
        name, location = render, _osm_source(path, osm)
    elif raster is not None:
        name, location = "raster", raster
    else:
        name, location = "xyz", xyz
    options = TileOptions(
        location=location,
        grid_crs=regions.crs,
        run_dir=path.parent,
        bands=bands,
        zoom=zoom,
        resampling=resampling,
        min_valid=min_valid,
        concurrency=concurrency,
        rate_limit=rate_limit,
        retries=retries,
        key_env=key_env,
        user_agent=user_agent,
        client=client,
    )
    made = make_tile_source(name, options, bounds=bounds, size=size)
    try:
        return _make_tiles(path, regions, bounds, made, size, workers, overwrite)
    finally:
        made.close()  # also the HTTP client; a source passed in is the caller's to close


def _make_tiles(
    path: Path,
    regions: gpd.GeoDataFrame,
    bounds: np.ndarray,
    source: TileSource,
    size: int,
    workers: int,
    overwrite: bool,
) -> StageResult:
    params = {**source.params(), "size": size}
    settings = json.dumps(params, sort_keys=True)
    jobs = satellite_jobs(regions)
    manifest = Manifest(
        path,
        kind=C.KIND_SATELLITE,
        stage="tiles",
        params=params,
        crs=regions.crs,
        overwrite=overwrite,
    )
    manifest.keep_only(j.image_id for j in jobs)
    todo = [i for i, job in enumerate(jobs) if not manifest.is_done(job, settings=settings)]
    order = {job.image_id: i for i, job in enumerate(jobs)}

    def save(job: ImageJob, image: np.ndarray) -> ImageResult:
        # In a worker thread: encoding, hashing and file I/O run in parallel.
        data = encode_png(image, settings=settings, photographic=source.photographic)
        return manifest.write(job, data, source=source.source, size=(size, size))

    started = time.perf_counter()
    remaining = len(todo)
    with progress(len(jobs), task="tiles", unit="tile") as bar:
        bar.update(len(jobs) - len(todo), status="done before")

        def settle(job: ImageJob, result: ImageResult) -> None:
            # In this thread, in the regions' order.
            nonlocal remaining
            manifest.record(job, result)
            remaining -= 1
            bar.update(1, status=None if result.status == C.STATUS_OK else result.status)

        try:
            with BoundedPool(workers, settle, name="tiles") as pool:
                for k, tile in source.tiles(bounds[todo], size):
                    job = jobs[todo[k]]
                    if tile.status == C.STATUS_OK:
                        pool.submit(job, save, job, tile.image)
                    else:
                        result = ImageResult(tile.status, reason=tile.reason, source=source.source)
                        pool.settled(job, result)
        finally:
            manifest.flush(pending=remaining, order=order.get)
    counts = manifest.counts()
    manifest.warn_failures()
    seconds = time.perf_counter() - started
    rate = f", {len(todo) / seconds:,.0f} tiles/s" if todo and seconds > 0 else ""
    message(
        f"Satellite images: {counts[C.STATUS_OK]:,} ok, {counts[C.STATUS_MISSING]:,} missing, "
        f"{counts[C.STATUS_FAILED]:,} failed ({len(jobs) - len(todo):,} done before{rate}) "
        f"in {path.parent / C.SATELLITE_DIR} (layer images)."
    )
    return StageResult("tiles", path, counts)


def streetview_stage(
    gpkg: str | os.PathLike,
    *,
    provider: str | StreetViewProvider = "folder",
    folder: str | os.PathLike | None = None,
    csv: str | os.PathLike | None = None,
    radius: float = DEFAULT_MATCH_RADIUS_M,
    coords: str = "wgs84",
    headings: tuple[float, ...] = (0.0,),
    panorama_views: int = 0,
    fov: float = DEFAULT_FOV,
    pitch: float = 0.0,
    size: tuple[int, int] | None = None,
    max_angle: float = DEFAULT_MAX_ANGLE,
    base_url: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate_limit: float = DEFAULT_RATE_LIMIT,
    retries: int = DEFAULT_RETRIES,
    user_agent: str | None = None,
    overwrite: bool = False,
    client: HttpClient | None = None,
) -> StageResult:
    """Street-view images for the run's sample points from ``provider``.

    Reads ``sv_points`` from ``gpkg``; writes images to ``images/streetview/`` and rows of kind
    ``streetview`` to the ``images`` layer (``sv_{point_id}_{heading}``; points without an
    image are rows with status missing). See :mod:`urbangeo.imagery.streetview`.
    """
    path = check_can_write(gpkg, [])
    if radius <= 0:
        raise InputError("radius must be positive.", hint="e.g. --radius 30")
    points = read_layer(path, C.LAYER_SV_POINTS)
    if isinstance(provider, str):
        options = ProviderOptions(
            folder=None if folder is None else Path(folder),
            csv=None if csv is None else Path(csv),
            radius=radius,
            coords=coords,
            headings=tuple(float(h) for h in headings) or (0.0,),
            panorama_views=panorama_views,
            fov=fov,
            pitch=pitch,
            size=size,
            max_angle=max_angle,
            base_url=base_url,
            concurrency=concurrency,
            rate_limit=rate_limit,
            retries=retries,
            user_agent=user_agent,
            client=client,
        )
        provider = make_provider(provider, options)
    try:
        return _make_streetview(path, points, provider, overwrite)
    finally:
        provider.close()


def _make_streetview(
    path: Path, points: gpd.GeoDataFrame, provider: StreetViewProvider, overwrite: bool
) -> StageResult:
    params = provider.params()
    manifest = Manifest(
        path,
        kind=C.KIND_STREETVIEW,
        stage="streetview",
        params=params,
        crs=points.crs,
        overwrite=overwrite,
    )
    shots = provider.plan(points)
    manifest.keep_only(s.job.image_id for s in shots)
    order = {shot.job.image_id: i for i, shot in enumerate(shots)}
    todo = [shot for shot in shots if not manifest.is_done(shot.job)]
    remaining = len(todo)

    def fetch_and_save(shot: Shot) -> ImageResult:
        # In a worker thread: the fetch and the file I/O; the manifest stays in this one.
        fetched = provider.fetch(shot)
        if fetched.status == C.STATUS_OK and fetched.data is not None:
            size = image_size(fetched.data)
            return manifest.write(shot.job, fetched.data, source=fetched.source, size=size)
        return ImageResult(fetched.status, reason=fetched.reason, source=fetched.source)

    with progress(len(shots), task=f"streetview ({provider.name})", unit="image") as bar:
        bar.update(len(shots) - len(todo), status="done before")

        def settle(shot: Shot, result: ImageResult) -> None:
            # In this thread, in the shots' order.
            nonlocal remaining
            manifest.record(shot.job, result)
            remaining -= 1
            bar.update(1, status=result.status)

        try:
            with BoundedPool(provider.concurrency, settle, name="streetview") as pool:
                for shot in todo:
                    pool.submit(shot, fetch_and_save, shot)
        finally:
            manifest.flush(pending=remaining, order=order.get)
    counts = manifest.counts()
    manifest.warn_failures()
    message(
        f"Street-view images ({provider.name}): {counts[C.STATUS_OK]:,} ok, "
        f"{counts[C.STATUS_MISSING]:,} missing, {counts[C.STATUS_FAILED]:,} failed "
        f"({len(shots) - len(todo):,} done before) in {path.parent / C.STREETVIEW_DIR} "
        "(layer images)."
    )
    return StageResult("streetview", path, counts)
