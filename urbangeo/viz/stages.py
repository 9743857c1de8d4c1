"""The map stage: the run's offline folium map (``maps/map.html``) and its QGIS project.

A body run by :func:`urbangeo.stage.stage` (settings :class:`~urbangeo.settings.MapSettings`);
folium, matplotlib and the viz modules are imported when it runs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from urbangeo import constants as C
from urbangeo.io.files import ensure_writable_file
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.io.runs import StageResult
from urbangeo.progress import message, progress
from urbangeo.settings import MapSettings
from urbangeo.stage import StageRun, stage

#: The map written by :func:`map_stage`, in the run's maps folder.
MAP_HTML = "map.html"


def _selected_captions(gpkg: Path) -> tuple[pd.Series | None, pd.Series | None]:
    """The selected caption per region (overhead) and per point (street view), if any.

    Reads the ``captions`` table (one row per candidate; ``selected`` marks the kept one, else
    the best ``score``, else the first) and joins it to ``images`` for the image's region
    or point when the captions table does not carry them itself.
    """
    layers = list_layers(gpkg)
    if C.LAYER_CAPTIONS not in layers:
        return None, None
    caps = pd.DataFrame(read_layer(gpkg, C.LAYER_CAPTIONS))
    if C.CAPTION not in caps:
        return None, None
    if C.SELECTED in caps:
        chosen = caps[caps[C.SELECTED].astype(str).str.lower().isin(["1", "true", "yes"])]
        caps = chosen if len(chosen) else caps
    if C.SCORE in caps:
        caps = caps.sort_values(C.SCORE, ascending=False, kind="stable")
    if C.IMAGE_ID in caps and C.LAYER_IMAGES in layers:
        images = pd.DataFrame(read_layer(gpkg, C.LAYER_IMAGES))
        keep = [c for c in (C.IMAGE_ID, C.KIND, C.REGION_ID, C.POINT_ID) if c in images]
        caps = caps.drop(columns=[c for c in keep if c != C.IMAGE_ID and c in caps])
        caps = caps.merge(images[keep], on=C.IMAGE_ID, how="left")
    kind = caps[C.KIND].astype(str) if C.KIND in caps else pd.Series("", index=caps.index)
    region = point = None
    if C.POINT_ID in caps:
        sv = caps[(kind != C.KIND_OVERHEAD) & caps[C.POINT_ID].notna()]
        point = sv.drop_duplicates(C.POINT_ID).set_index(C.POINT_ID)[C.CAPTION]
    if C.REGION_ID in caps:
        ov = caps[(kind != C.KIND_STREETVIEW) & caps[C.REGION_ID].notna()]
        ov = ov.assign(**{C.REGION_ID: ov[C.REGION_ID].astype(str)})
        region = ov.drop_duplicates(C.REGION_ID).set_index(C.REGION_ID)[C.CAPTION]
    return region, point


#: The run's region tables the map shows, by build_map's keyword.
_TABLES = {
    "clusters": C.LAYER_CLUSTERS,
    "predictions": C.LAYER_PREDICTIONS,
    "observed": C.LAYER_INDICATORS,
}
#: The run's other vector layers the map draws, by build_map's keyword.
_GEO_LAYERS = {"points": C.LAYER_SV_POINTS, "boundary": C.LAYER_BOUNDARY, "roads": C.LAYER_ROADS}


def _table(gpkg: Path, name: str) -> pd.DataFrame:
    """A region layer as a table indexed by ``region_id`` (text), without geometry or
    coordinates."""
    frame = pd.DataFrame(read_layer(gpkg, name))
    frame = frame.drop(columns=[c for c in frame if c in ("geometry", "lon", "lat", "x", "y")])
    return frame.assign(**{C.REGION_ID: frame[C.REGION_ID].astype(str)}).set_index(C.REGION_ID)


def _products(gpkg: Path, layers: list[str]) -> dict:
    """What the run gives its map, as :func:`~urbangeo.viz.maps.build_map`'s keywords: region
    tables, vector layers, selected captions and image thumbnails."""
    from urbangeo.downstream.report import below_baseline_targets
    from urbangeo.downstream.similar import map_embeddings
    from urbangeo.viz.scores import read_metrics
    from urbangeo.viz.thumbs import run_image_uris

    products: dict = {
        key: _table(gpkg, name) if name in layers else None for key, name in _TABLES.items()
    }
    for key, name in _GEO_LAYERS.items():
        products[key] = read_layer(gpkg, name) if name in layers else None
    products["region_captions"], products["point_captions"] = _selected_captions(gpkg)
    products["region_images"], products["point_images"] = run_image_uris(gpkg)
    products["embeddings"] = map_embeddings(gpkg)
    products["metrics"] = read_metrics(gpkg.parent / C.METRICS_JSON)
    products["below_baseline"] = below_baseline_targets(products["metrics"])
    return products


@stage(MapSettings)
def map_stage(run: StageRun, s: MapSettings, *, overwrite: bool) -> StageResult:
    """Write an offline folium map of the run's products (``maps/map.html`` beside it), and
    the run's QGIS project (``run.qgz`` beside the GeoPackage: :mod:`urbangeo.viz.project`).

    Layers, each toggleable: the run's images as an offline base layer, clusters, per
    predicted indicator its prediction, ground truth and residual, ground truth of indicators
    without predictions, the roads, the study area and the street-view points; tooltips show
    the region's image, values and selected caption (:mod:`urbangeo.viz.maps`); a "Scores"
    panel shows the test R² of every model in ``metrics.json`` when the run has one; a click on a
    region outlines its most similar regions (by the run's embeddings, up to a size). Large
    runs get ``maps/map_files/`` beside the page (captions and cells loaded on demand) and,
    above :data:`urbangeo.viz.maps.AGGREGATE_REGIONS` regions, an aggregated view.
    """
    from urbangeo.viz.maps import build_map, write_map
    from urbangeo.viz.project import write_project

    path = run.path
    assert path is not None  # the stage needs the GeoPackage
    out = s.output if s.output is not None else path.parent / C.MAPS_DIR / MAP_HTML
    ensure_writable_file(out)
    with progress(3, task="map", unit="step") as bar:
        bar.update(0, status="read")
        regions = read_layer(path, C.LAYER_REGIONS)
        products = _products(path, list_layers(path))
        bar.update(1, status="build")
        title = f"urbangeo: {path.parent.name or path.stem}"
        fmap = build_map(regions, **products, tiles=s.tiles, title=title)
        bar.update(1, status="write")
        write_map(fmap, out)
        project = write_project(path.parent, gpkg_name=path.name)
        bar.update(1)
    named = {**_TABLES, "points": C.LAYER_SV_POINTS}
    shown = [name for key, name in named.items() if products[key] is not None]
    result = run.commit(counts={"layers": len(shown)}, files=[out, project])
    message(
        f"Wrote the map of {', '.join(shown) or 'the regions'} to {out}, and the QGIS project "
        f"to {project}."
    )
    return result
