"""The geo stages on a run's GeoPackage: ``grid`` (boundary, regions) and ``sample`` (roads,
street-view points). Settings: :class:`~urbangeo.settings.GridSettings`,
:class:`~urbangeo.settings.SampleSettings`; the run mechanism: :mod:`urbangeo.stage`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from urbangeo import constants as C
from urbangeo.errors import UrbangeoWarning
from urbangeo.geo.boundary import check_boundary_file, load_boundary
from urbangeo.geo.grid import make_grid
from urbangeo.geo.limits import check_point_count, grid_cost_warning
from urbangeo.geo.roads import load_roads
from urbangeo.geo.sampling import sample_points
from urbangeo.io.files import new_folders_removed_on_error
from urbangeo.io.gpkg import read_layer
from urbangeo.io.osm import run_extract
from urbangeo.io.runs import StageResult
from urbangeo.progress import message, progress
from urbangeo.settings import GridSettings, SampleSettings
from urbangeo.stage import StageRun, settings_of, stage


def grid_stage(
    gpkg: str | os.PathLike,
    settings: GridSettings | Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    **values: Any,
) -> StageResult:
    """Write layers ``boundary`` and ``regions`` (the square grid) to ``gpkg``.

    Settings: the fields of :class:`~urbangeo.settings.GridSettings`, as keyword arguments or
    as ``settings``.
    """
    chosen = settings_of(GridSettings, settings, values)
    if chosen.boundary_file is not None:
        # a missing input (file, layer) before a clash of outputs
        check_boundary_file(chosen.boundary_file, layer=chosen.boundary_layer)
    with new_folders_removed_on_error(gpkg):
        return _grid(gpkg, chosen, overwrite=overwrite)


@stage(GridSettings, outputs=(C.LAYER_BOUNDARY, C.LAYER_REGIONS))
def _grid(run: StageRun, s: GridSettings, *, overwrite: bool) -> StageResult:
    with progress(3, task="grid", unit="step") as bar:
        bar.update(0, status="boundary")
        boundary = load_boundary(
            file=s.boundary_file,
            layer=s.boundary_layer,
            file_crs=s.boundary_crs,
            **s.pick("city", "bbox", "place"),
        )
        bar.update(1, status="cells")
        regions = make_grid(boundary, cell_size=s.cell_size, crs=s.crs, force=s.force)
        if text := grid_cost_warning(len(regions)):
            warnings.warn(text, UrbangeoWarning, stacklevel=2)
        bar.update(1, status="write")
        params = {
            "source": str(boundary[C.SOURCE].iloc[0]),
            "cell_size": float(s.cell_size),
            "crs": regions.crs.to_string(),
        }
        result = run.commit(
            {C.LAYER_BOUNDARY: boundary.to_crs(regions.crs), C.LAYER_REGIONS: regions},
            counts={"regions": len(regions)},
            params=params,
        )
        bar.update(1)
    centre = boundary.to_crs(C.WGS84).union_all().centroid
    message(
        f"Wrote {len(regions):,} regions of {s.cell_size:g} m to {run.path} (layer regions; "
        f"{regions.crs.name}, centred on lon {centre.x:.4f}, lat {centre.y:.4f})."
    )
    return result


@stage(SampleSettings, outputs=(C.LAYER_ROADS, C.LAYER_SV_POINTS))
def sample_stage(run: StageRun, s: SampleSettings, *, overwrite: bool) -> StageResult:
    """Write layers ``roads`` and ``sv_points`` (street-view points) to ``gpkg``.

    Reads ``boundary`` and ``regions`` from ``gpkg`` (written by :func:`grid_stage`). More
    than :data:`~urbangeo.geo.limits.MAX_SV_POINTS` points (road length / interval, estimated
    before sampling) are refused unless ``force``.

    Settings: the fields of :class:`~urbangeo.settings.SampleSettings`, as keyword arguments
    or as ``settings``.
    """
    path = run.path
    assert path is not None  # the stage refuses to run without its GeoPackage
    with progress(4, task="sample", unit="step") as bar:
        bar.update(0, status="read regions")
        regions = read_layer(path, C.LAYER_REGIONS)
        boundary = read_layer(path, C.LAYER_BOUNDARY)
        source = run_extract(path, roads=s.roads, city=s.city)
        bar.update(1, status="roads")
        road_lines = load_roads(source, boundary=boundary, network=s.network, crs=regions.crs)
        # refused before sampling: a tiny interval would exhaust the memory
        check_point_count(float(road_lines[C.LENGTH_M].sum()), s.interval, force=s.force)
        bar.update(1, status="points")
        points = sample_points(
            road_lines,
            interval=s.interval,
            merge_tolerance=s.merge_tolerance,
            regions=regions,
            force=s.force,
        )
        bar.update(1, status="write")
        params = {
            "roads": "online" if source is None else str(source),
            "network": s.network,
            "interval": float(s.interval),
            "merge_tolerance": float(s.merge_tolerance),
        }
        counts = {
            "roads": len(road_lines),
            "road_km": round(float(road_lines[C.LENGTH_M].sum()) / 1000, 3),
            "sv_points": len(points),
        }
        result = run.commit(
            {C.LAYER_ROADS: road_lines, C.LAYER_SV_POINTS: points}, counts=counts, params=params
        )
        bar.update(1)
    message(
        f"Wrote {len(points):,} street-view points every {s.interval:g} m along "
        f"{counts['road_km']:,} km of roads to {path} (layers roads, sv_points)."
    )
    return result


grid_stage.settings_class = GridSettings  # type: ignore[attr-defined]
