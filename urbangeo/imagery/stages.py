"""Imagery stages that read and write a run's GeoPackage: ``tiles`` and ``streetview``.

Both add rows to the ``images`` layer (one per image, fetched or not) and save image files
beside the GeoPackage (``images/overhead/``, ``images/streetview/``), each file written
atomically. They resume: a rerun with the same settings skips every image whose file is
intact, so after Ctrl-C or a crash the same call continues where it stopped. With
``overwrite`` the new images replace the old ones only once they are all made, together with
the layer that describes them (:mod:`urbangeo.imagery.manifest`). Settings:
:class:`~urbangeo.settings.TilesSettings`, :class:`~urbangeo.settings.StreetviewSettings`;
the run mechanism: :mod:`urbangeo.stage`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.edges import regions_with_edges
from urbangeo.imagery.http_options import http_options
from urbangeo.imagery.kinds import LEGACY_OVERHEAD_PREFIX, OVERHEAD_PREFIX, describe_source
from urbangeo.imagery.manifest import ImageJob, ImageResult, Manifest
from urbangeo.imagery.png import encode_png, image_size
from urbangeo.imagery.sources import Tile, TileOptions, TileSource, make_tile_source
from urbangeo.imagery.streetview import ProviderOptions, Shot, StreetViewProvider, make_provider
from urbangeo.io.gpkg import read_layer
from urbangeo.io.http import HttpClient
from urbangeo.io.osm import run_extract
from urbangeo.io.pool import BoundedPool
from urbangeo.io.processes import choose_workers
from urbangeo.io.runs import StageResult
from urbangeo.progress import message, progress
from urbangeo.settings.imagery import DEFAULT_TILE_SIZE, StreetviewSettings, TilesSettings
from urbangeo.stage import StageRun, stage

__all__ = ["DEFAULT_TILE_SIZE", "overhead_jobs", "safe_id", "streetview_stage", "tiles_stage"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_id(text: object) -> str:
    """``text`` made safe for a file name (ids such as ``"12_34"`` are kept as they are)."""
    return _UNSAFE.sub("-", str(text)).strip("-") or "x"


def overhead_jobs(regions: gpd.GeoDataFrame, *, legacy: bool = False) -> list[ImageJob]:
    """One ``overhead_{region_id}`` image per region in ``images/overhead/``, at the region's
    centroid; ``legacy``: named as urbangeo 0.1 named them (``images/satellite/sat_{region_id}``,
    for a run folder it started: its images are resumed where they are)."""
    prefix, folder = (
        (LEGACY_OVERHEAD_PREFIX, C.LEGACY_OVERHEAD_DIR)
        if legacy
        else (OVERHEAD_PREFIX, C.OVERHEAD_DIR)
    )
    centroids = regions.geometry.centroid
    jobs = []
    for rid, point in zip(regions[C.REGION_ID], centroids, strict=True):
        image_id = f"{prefix}{safe_id(rid)}"
        jobs.append(ImageJob(image_id, str(rid), None, f"{folder}/{image_id}.png", point))
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


def _tile_options(
    path: Path, regions: gpd.GeoDataFrame, s: TilesSettings, client: HttpClient | None
) -> TileOptions:
    location: str | os.PathLike | None
    if s.source == "raster":
        location = s.raster
    elif s.source == "xyz":
        location = s.xyz
    else:
        location = _osm_source(path, s.osm)
    coverage = None
    if s.source == "osm" and location is not None:
        from urbangeo.imagery.sources.coverage import extract_coverage

        coverage = extract_coverage(path, location, regions.crs)
    return TileOptions(
        location=location,
        grid_crs=regions.crs,
        coverage=coverage,
        run_dir=path.parent,
        **s.pick("bands", "zoom", "resampling", "min_valid", "key_env"),
        **http_options(s, client),
    )


@stage(TilesSettings)
def tiles_stage(
    run: StageRun,
    s: TilesSettings,
    *,
    overwrite: bool,
    client: HttpClient | None = None,
    source: TileSource | None = None,
) -> StageResult:
    """One overhead image per region from ``raster``, ``xyz`` or ``render`` (default: the
    offline OSM map).

    Reads ``regions`` from ``gpkg``; writes ``size`` × ``size`` PNGs to ``images/overhead/``
    and rows of kind ``overhead`` to the ``images`` layer (with each image's ``valid_share`` and
    ``source``; a run folder that urbangeo 0.1 started keeps its ``images/satellite/``),
    and marks the edge cells in ``regions`` (columns ``valid_share``, ``edge``, ``excluded``:
    :mod:`urbangeo.imagery.edges`; ``min_valid_share``, ``min_inside_share``,
    ``include_edges``). See
    :mod:`urbangeo.imagery.sources` for the sources; any other
    :class:`~urbangeo.imagery.sources.TileSource` can be passed as ``source`` (the caller
    closes it), and an :class:`~urbangeo.io.http.HttpClient` as ``client`` for ``xyz``.
    Raises :class:`~urbangeo.imagery.manifest.ImagesFailedError` when images failed and none
    could be made.
    """
    path = run.gpkg
    regions = read_layer(path, C.LAYER_REGIONS)
    bounds = regions.geometry.bounds.to_numpy(dtype=float)
    if source is not None:
        source.choose_zoom(bounds, s.size)
        return _make_tiles(run, regions, bounds, source, s, overwrite)
    options = _tile_options(path, regions, s, client)
    made = make_tile_source(s.source, options, bounds=bounds, size=s.size)
    made.workers = choose_workers(s.workers)  # render: processes; raster: reading threads
    try:
        return _make_tiles(run, regions, bounds, made, s, overwrite)
    finally:
        made.close()  # also the HTTP client; a source passed in is the caller's to close


def _make_tiles(
    run: StageRun,
    regions: gpd.GeoDataFrame,
    bounds: np.ndarray,
    source: TileSource,
    s: TilesSettings,
    overwrite: bool,
) -> StageResult:
    size = s.size
    params = {**source.params(), "size": size}
    settings = json.dumps(params, sort_keys=True)
    # A run folder started by urbangeo 0.1 keeps its images' names: they are resumed, not redone.
    legacy = (run.gpkg.parent / C.LEGACY_OVERHEAD_DIR).is_dir()
    jobs = overhead_jobs(regions, legacy=legacy)
    manifest = Manifest(
        run, C.KIND_OVERHEAD, params, regions.crs, overwrite=overwrite, source=source.source
    )
    todo = manifest.plan(jobs, settings=settings)
    source.png_settings = settings  # a source drawing in worker processes encodes there too

    def save(job: ImageJob, tile: Tile) -> ImageResult:
        # In a worker thread: encoding, hashing and file I/O run in parallel.
        share = tile.valid_share
        data = tile.data
        if data is None:
            data = encode_png(
                tile.image, settings=settings, photographic=source.photographic, valid_share=share
            )
        return manifest.write(job, data, source=source.source, size=(size, size), valid_share=share)

    def submit(pool: BoundedPool[ImageJob, ImageResult]) -> None:
        for k, tile in source.tiles(bounds[todo], size):
            job = jobs[todo[k]]
            if tile.status == C.STATUS_OK:
                pool.submit(job, save, job, tile)
            else:
                result = ImageResult(
                    tile.status,
                    reason=tile.reason,
                    source=source.source,
                    valid_share=tile.valid_share,
                )
                pool.settled(job, result)

    edge_counts: dict[str, int] = {}

    def edges(done: Manifest) -> tuple[dict, dict]:
        # The regions layer with each region's valid_share, edge and excluded columns.
        layers, counts = regions_with_edges(
            regions,
            done.frame(),
            min_valid_share=s.min_valid_share,
            min_inside_share=s.min_inside_share,
            include_edges=s.include_edges,
        )
        edge_counts.update(counts)
        return layers, counts

    started = time.perf_counter()
    committed = _make_images(
        run,
        manifest,
        submit,
        workers=choose_workers(s.workers),
        task="tiles",
        unit="tile",
        show_ok=False,
        extra=edges,
    )
    seconds = time.perf_counter() - started
    rate = f", {len(todo) / seconds:,.0f} tiles/s" if todo and seconds > 0 else ""
    folder = run.gpkg.parent / (C.LEGACY_OVERHEAD_DIR if legacy else C.OVERHEAD_DIR)
    what = "Overhead images" + describe_source(source.source).removeprefix("overhead image")
    _report(what, committed.counts, len(jobs) - len(todo), folder, rate)
    if edge_counts.get("edge"):
        kept = (
            "kept in the analysis (include_edges)"
            if not edge_counts["excluded"]
            else "left out of training, clustering and prediction (--include-edges keeps them)"
        )
        message(
            f"{edge_counts['edge']:,} of {len(jobs):,} regions are edge cells (under "
            f"{s.min_inside_share:.0%} inside the boundary or {s.min_valid_share:.0%} image "
            f"data; columns edge and excluded of layer regions): {kept}."
        )
    return committed


def _make_images(
    run: StageRun,
    manifest: Manifest,
    submit: Callable[[BoundedPool[ImageJob, ImageResult]], None],
    *,
    workers: int,
    task: str,
    unit: str,
    show_ok: bool = True,
    extra: Callable[[Manifest], tuple[dict, dict]] | None = None,
) -> StageResult:
    """Make the images that ``submit`` hands to a pool of ``workers`` threads, each recorded
    in ``manifest`` (planned with :meth:`Manifest.plan`) as it settles, then finish the stage.
    ``show_ok``: whether the progress bar says "ok" too, or only the other statuses;
    ``extra``: the stage's other layers and counts, from the finished manifest."""
    total = len(manifest.order)
    with progress(total, task=task, unit=unit) as bar:
        bar.update(total - len(manifest.pending), status="done before")

        def settle(job: ImageJob, result: ImageResult) -> None:
            # In this thread, in the plan's order.
            manifest.record(job, result)
            shown = show_ok or result.status != C.STATUS_OK
            bar.update(1, status=result.status if shown else None)

        with manifest.kept_on_error(), BoundedPool(workers, settle, name=manifest.stage) as pool:
            submit(pool)
    layers, counts = extra(manifest) if extra is not None else ({}, {})
    return manifest.finish(run, layers=layers, counts=counts)


def _report(what: str, counts: dict, before: int, folder: Path, rate: str = "") -> None:
    """The stage's closing message: images per status, and where they are."""
    message(
        f"{what}: {counts[C.STATUS_OK]:,} ok, {counts[C.STATUS_MISSING]:,} missing, "
        f"{counts[C.STATUS_FAILED]:,} failed ({before:,} done before{rate}) "
        f"in {folder} (layer images)."
    )


@stage(StreetviewSettings)
def streetview_stage(
    run: StageRun,
    s: StreetviewSettings,
    *,
    overwrite: bool,
    client: HttpClient | None = None,
    source: StreetViewProvider | None = None,
    keep: Callable[[list[Shot]], list[Shot]] | None = None,
) -> StageResult:
    """Street-view images for the run's sample points from ``provider``.

    Reads ``sv_points`` from ``gpkg``; writes images to ``images/streetview/`` and rows of kind
    ``streetview`` to the ``images`` layer (``sv_{point_id}_{heading}``; points without an
    image are rows with status missing). See :mod:`urbangeo.imagery.streetview`; any other
    :class:`~urbangeo.imagery.streetview.StreetViewProvider` can be passed as ``source`` (the
    caller closes it), and an :class:`~urbangeo.io.http.HttpClient` as ``client``;
    ``keep`` chooses the shots to make among those planned for all the points (a shard's:
    :mod:`urbangeo.shard_plans.streetview`). Raises
    :class:`~urbangeo.imagery.manifest.ImagesFailedError` when images failed and none could
    be made.
    """
    points = read_layer(run.gpkg, C.LAYER_SV_POINTS)
    if source is not None:
        return _make_streetview(run, points, source, overwrite, keep)
    options = ProviderOptions(
        folder=s.folder,
        csv=s.csv,
        radius=s.radius,
        coords=s.coords,
        headings=s.headings or (0.0,),
        panorama_views=s.panorama_views,
        fov=s.fov,
        pitch=s.pitch,
        size=None if s.size is None else (s.size[0], s.size[1]),
        max_angle=s.max_angle,
        base_url=s.base_url,
        **http_options(s, client),
    )
    provider = make_provider(s.provider or "folder", options)
    try:
        return _make_streetview(run, points, provider, overwrite, keep)
    finally:
        provider.close()


def _make_streetview(
    run: StageRun,
    points: gpd.GeoDataFrame,
    provider: StreetViewProvider,
    overwrite: bool,
    keep: Callable[[list[Shot]], list[Shot]] | None = None,
) -> StageResult:
    manifest = Manifest(run, C.KIND_STREETVIEW, provider.params(), points.crs, overwrite=overwrite)
    shots = provider.plan(points)
    if keep is not None:
        shots = keep(shots)
    todo = [shots[i] for i in manifest.plan([shot.job for shot in shots])]

    def fetch_and_save(shot: Shot) -> ImageResult:
        # In a worker thread: the fetch and the file I/O; the manifest stays in this one.
        fetched = provider.fetch(shot)
        if fetched.status == C.STATUS_OK and fetched.data is not None:
            size = image_size(fetched.data)
            return manifest.write(shot.job, fetched.data, source=fetched.source, size=size)
        return ImageResult(fetched.status, reason=fetched.reason, source=fetched.source)

    def submit(pool: BoundedPool[ImageJob, ImageResult]) -> None:
        for shot in todo:
            pool.submit(shot.job, fetch_and_save, shot)

    task = f"streetview ({provider.name})"
    committed = _make_images(
        run, manifest, submit, workers=provider.concurrency, task=task, unit="image"
    )
    what, folder = f"Street-view images ({provider.name})", run.gpkg.parent / C.STREETVIEW_DIR
    _report(what, committed.counts, len(shots) - len(todo), folder)
    return committed
