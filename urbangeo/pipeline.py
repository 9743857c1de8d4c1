"""Stages that read and write a run's GeoPackage, and the runner that chains them.

Each stage is a library function the CLI and the QGIS plugin call as they are: it checks that
its output can be written before any work, reports progress, and writes its layers plus its
record in the ``urbangeo_stages`` table in one atomic write.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from urbangeo import constants as C
from urbangeo.geo.boundary import get_city, load_boundary
from urbangeo.geo.grid import make_grid
from urbangeo.geo.roads import load_roads
from urbangeo.geo.sampling import sample_points
from urbangeo.io.gpkg import check_can_write, read_layer, write_layers
from urbangeo.io.runs import StageRecord, read_stage_records, stage_table
from urbangeo.progress import message, progress

#: Stages in the order data flows; a stage's output invalidates every later stage.
STAGES = ("grid", "sample")
RUN_GPKG = "run.gpkg"


@dataclass(frozen=True)
class StageResult:
    """What a stage wrote (or found already done)."""

    stage: str
    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    skipped: bool = False


def _downstream(stage: str) -> tuple[str, ...]:
    return STAGES[STAGES.index(stage) + 1 :]


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
                "urbangeo_stages": stage_table(path, record, invalidates=_downstream("grid")),
            },
            overwrite=True,  # checked before the work began
        )
        bar.update(1)
    message(f"Wrote {len(regions):,} regions of {cell_size:g} m to {path} (layer regions).")
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
                "urbangeo_stages": stage_table(path, record, invalidates=_downstream("sample")),
            },
            overwrite=True,  # checked before the work began
        )
        bar.update(1)
    message(
        f"Wrote {len(points):,} street-view points every {interval:g} m along "
        f"{counts['road_km']:,} km of roads to {path} (layers roads, sv_points)."
    )
    return StageResult("sample", path, counts)


def _is_done(records: dict[str, StageRecord], stage: str, params: dict) -> bool:
    record = records.get(stage)
    return record is not None and all(record.params.get(k) == v for k, v in params.items())


def run_city(
    run_dir: str | os.PathLike | None = None,
    *,
    city: str = C.DEFAULT_CITY,
    cell_size: float = C.DEFAULT_CELL_SIZE_M,
    network: str = C.DEFAULT_NETWORK,
    interval: float = C.DEFAULT_INTERVAL_M,
    merge_tolerance: float = C.DEFAULT_MERGE_TOLERANCE_M,
) -> list[StageResult]:
    """Run every stage for a bundled city into ``run_dir/run.gpkg`` (default ``./{city}``).

    A stage whose record in the GeoPackage has the same parameters is skipped, so a rerun
    after an interruption resumes where it stopped; a stage with other parameters is redone,
    and so is every stage after it.
    """
    city_name = get_city(city).name
    path = Path(run_dir if run_dir is not None else city_name) / RUN_GPKG
    check_can_write(path, [])
    records = read_stage_records(path)
    results: list[StageResult] = []

    grid_params = {"source": f"city:{city_name}", "cell_size": float(cell_size)}
    if _is_done(records, "grid", grid_params):
        results.append(StageResult("grid", path, records["grid"].counts, skipped=True))
    else:
        results.append(grid_stage(path, city=city_name, cell_size=cell_size, overwrite=True))
        records = read_stage_records(path)

    roads = get_city(city_name).osm_path()
    sample_params = {
        "roads": str(roads),
        "network": network,
        "interval": float(interval),
        "merge_tolerance": float(merge_tolerance),
    }
    if _is_done(records, "sample", sample_params):
        results.append(StageResult("sample", path, records["sample"].counts, skipped=True))
    else:
        results.append(
            sample_stage(
                path,
                roads=roads,
                network=network,
                interval=interval,
                merge_tolerance=merge_tolerance,
                overwrite=True,
            )
        )
    for result in results:
        if result.skipped:
            message(f"Stage {result.stage}: already done with these settings, skipped.")
    return results
