"""The geo stages on a run's GeoPackage: ``grid`` (boundary, regions) and ``sample`` (roads,
street-view points).

Like every stage, each checks that its outputs can be written before any work, reports
progress, and writes its layers plus its record in the ``urbangeo_stages`` table in one atomic
write.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from urbangeo import constants as C
from urbangeo.geo.boundary import check_boundary_file, get_city, load_boundary
from urbangeo.geo.grid import make_grid
from urbangeo.geo.roads import load_roads
from urbangeo.geo.sampling import check_sampling_settings, sample_points
from urbangeo.io.files import new_folders_removed_on_error
from urbangeo.io.gpkg import check_can_write, read_layer, write_layers
from urbangeo.io.runs import StageRecord, StageResult, downstream_of, stage_table
from urbangeo.progress import message, progress


def grid_stage(
    gpkg: str | os.PathLike,
    *,
    city: str | None = None,
    boundary_file: str | os.PathLike | None = None,
    bbox: tuple[float, float, float, float] | str | None = None,
    place: str | None = None,
    cell_size: float = C.DEFAULT_CELL_SIZE_M,
    crs: str | None = None,
    force: bool = False,
    overwrite: bool = False,
) -> StageResult:
    """Write layers ``boundary`` and ``regions`` (the square grid) to ``gpkg``."""
    if boundary_file is not None:
        check_boundary_file(boundary_file)  # a missing input before a clash of outputs
    with new_folders_removed_on_error(gpkg):
        path = check_can_write(gpkg, [C.LAYER_BOUNDARY, C.LAYER_REGIONS], overwrite=overwrite)
        started = time.perf_counter()
        with progress(3, task="grid", unit="step") as bar:
            bar.update(0, status="boundary")
            boundary = load_boundary(city=city, file=boundary_file, bbox=bbox, place=place)
            bar.update(1, status="cells")
            regions = make_grid(boundary, cell_size=cell_size, crs=crs, force=force)
            bar.update(1, status="write")
            params = {
                "source": str(boundary[C.SOURCE].iloc[0]),
                "cell_size": float(cell_size),
                "crs": regions.crs.to_string(),
            }
            counts = {"regions": len(regions)}
            record = StageRecord("grid", params, counts, time.perf_counter() - started)
            write_layers(
                path,
                {
                    C.LAYER_BOUNDARY: boundary.to_crs(regions.crs),
                    C.LAYER_REGIONS: regions,
                    "urbangeo_stages": stage_table(path, record, invalidates=downstream_of("grid")),
                },
                overwrite=True,  # checked before the work began
            )
            bar.update(1)
        centre = boundary.to_crs(C.WGS84).union_all().centroid
        message(
            f"Wrote {len(regions):,} regions of {cell_size:g} m to {path} (layer regions; "
            f"{regions.crs.name}, centred on lon {centre.x:.4f}, lat {centre.y:.4f})."
        )
        return StageResult("grid", path, counts)


def roads_source_for(
    gpkg: str | os.PathLike, *, roads: str | os.PathLike | None, city: str | None
) -> Path | None:
    """Where the roads come from: a file, a bundled city's extract, or None (online).

    Without ``roads`` or ``city``, a GeoPackage whose boundary is a bundled city uses that
    city's extract.
    """
    if roads is not None:
        return Path(roads)
    if city is None:
        boundary = read_layer(gpkg, C.LAYER_BOUNDARY)
        source = str(boundary[C.SOURCE].iloc[0]) if C.SOURCE in boundary else ""
        if source.startswith("city:"):
            city = source.removeprefix("city:")
    return get_city(city).osm_path() if city else None


def sample_stage(
    gpkg: str | os.PathLike,
    *,
    roads: str | os.PathLike | None = None,
    city: str | None = None,
    network: str = C.DEFAULT_NETWORK,
    interval: float = C.DEFAULT_INTERVAL_M,
    merge_tolerance: float = C.DEFAULT_MERGE_TOLERANCE_M,
    overwrite: bool = False,
) -> StageResult:
    """Write layers ``roads`` and ``sv_points`` (street-view points) to ``gpkg``.

    Reads ``boundary`` and ``regions`` from ``gpkg`` (written by :func:`grid_stage`).
    """
    check_sampling_settings(interval=interval, merge_tolerance=merge_tolerance)
    path = check_can_write(gpkg, [C.LAYER_ROADS, C.LAYER_SV_POINTS], overwrite=overwrite)
    started = time.perf_counter()
    with progress(4, task="sample", unit="step") as bar:
        bar.update(0, status="read regions")
        regions = read_layer(path, C.LAYER_REGIONS)
        boundary = read_layer(path, C.LAYER_BOUNDARY)
        source = roads_source_for(path, roads=roads, city=city)
        bar.update(1, status="roads")
        road_lines = load_roads(source, boundary=boundary, network=network, crs=regions.crs)
        bar.update(1, status="points")
        points = sample_points(
            road_lines, interval=interval, merge_tolerance=merge_tolerance, regions=regions
        )
        bar.update(1, status="write")
        params = {
            "roads": "online" if source is None else str(source),
            "network": network,
            "interval": float(interval),
            "merge_tolerance": float(merge_tolerance),
        }
        counts = {
            "roads": len(road_lines),
            "road_km": round(float(road_lines[C.LENGTH_M].sum()) / 1000, 3),
            "sv_points": len(points),
        }
        record = StageRecord("sample", params, counts, time.perf_counter() - started)
        write_layers(
            path,
            {
                C.LAYER_ROADS: road_lines,
                C.LAYER_SV_POINTS: points,
                "urbangeo_stages": stage_table(path, record, invalidates=downstream_of("sample")),
            },
            overwrite=True,  # checked before the work began
        )
        bar.update(1)
    message(
        f"Wrote {len(points):,} street-view points every {interval:g} m along "
        f"{counts['road_km']:,} km of roads to {path} (layers roads, sv_points)."
    )
    return StageResult("sample", path, counts)
