"""Downstream stages on a run's GeoPackage: indicators, predict, cluster, map.

Like the stages in :mod:`urbangeo.pipeline`, each checks that its outputs can be written before
any work, reports progress, and writes its layers plus its record in ``urbangeo_stages`` in one
atomic write. Heavy libraries (torch, scikit-learn, folium, matplotlib) are imported when a
stage runs, so that importing this module (the CLI does) stays cheap.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError, OutputError
from urbangeo.io.files import ensure_writable_file, write_text_atomic
from urbangeo.io.gpkg import check_can_write, list_layers, read_layer, write_layers
from urbangeo.io.runs import StageRecord, stage_table
from urbangeo.progress import message, progress

STAGES_TABLE = "urbangeo_stages"
#: The metrics of ``predict`` in a run folder (beside the GeoPackage).


@dataclass
class DownstreamResult:
    """What a downstream stage wrote, and what it found."""

    stage: str
    path: Path | None
    counts: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    report: object | None = None


def write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as indented JSON, atomically (a temporary file replaced in one step)."""
    path = ensure_writable_file(path)
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _regions_frame(gpkg: Path, table: pd.DataFrame) -> gpd.GeoDataFrame:
    """Region polygons (region_id, geometry) with ``table``'s columns joined by region_id."""
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    regions[C.REGION_ID] = regions[C.REGION_ID].astype(str)
    base = regions[[C.REGION_ID, regions.geometry.name]]
    joined = base.merge(table, left_on=C.REGION_ID, right_index=True, how="inner")
    return gpd.GeoDataFrame(joined, geometry=regions.geometry.name, crs=regions.crs)


def predict_stage(
    gpkg: str | os.PathLike | None = None,
    *,
    embeddings: str | os.PathLike | None = None,
    indicators: str | os.PathLike | None = None,
    targets: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    split: str = "random",
    block_size: float | None = None,
    log: bool = True,
    output: str | os.PathLike | None = None,
    predictions_seed: int | None = None,
    model: str = "mlp",
    overwrite: bool = False,
    mlp: object | None = None,
) -> DownstreamResult:
    """Evaluate indicator prediction; with ``gpkg``, write the ``predictions`` layer.

    Inputs: a run's GeoPackage (embeddings from ``embeddings.parquet`` beside it or its
    ``region_embeddings`` layer; indicators from its ``indicators`` table or the regions'
    columns; ``embeddings``/``indicators`` files replace either), or an ``embeddings`` and an
    ``indicators`` file. ``output``: metrics JSON (default with ``gpkg``: ``metrics.json``
    beside it). The layer holds the ``model``'s predictions
    of the seed ``predictions_seed``, or the mean over the seeds' models (None).
    """
    from urbangeo.downstream.heads import DEFAULT_MLP
    from urbangeo.downstream.predict import evaluate
    from urbangeo.downstream.tables import dataset_from_files, dataset_from_gpkg

    if model not in ("mlp", "ridge"):
        raise InputError(f"Unknown model {model!r}.", hint="Choose mlp or ridge.")
    path = None
    if gpkg is not None:
        path = check_can_write(gpkg, [C.LAYER_PREDICTIONS], overwrite=overwrite)
    elif embeddings is None or indicators is None:
        raise InputError(
            "Nothing to predict from.",
            hint="Give a run's GeoPackage (--gpkg RUN.gpkg) or both --embeddings and "
            "--indicators files.",
        )
    if output is None and path is not None:
        output = path.parent / C.METRICS_JSON
    if output is not None:
        ensure_writable_file(output)
    started = time.perf_counter()
    if path is not None:
        dataset = dataset_from_gpkg(path, embeddings=embeddings, indicators=indicators)
    else:
        dataset = dataset_from_files(embeddings, indicators)  # type: ignore[arg-type]
    report = evaluate(
        dataset,
        targets,
        seeds=seeds,
        split=split,
        block_size=block_size,
        log=log,
        mlp=mlp or DEFAULT_MLP,  # type: ignore[arg-type]
    )
    summary = report.to_dict()
    counts: dict = {"regions": len(dataset.features), "targets": len(report.targets)}
    for name, result in report.targets.items():
        counts[f"r2_{model}_{name}"] = round(result.metrics[model]["r2"]["mean"], 4)
    files = []
    if output is not None:
        files.append(write_json(output, summary))
    if path is not None:
        frame = report.prediction_frame(model=model, seed=predictions_seed)
        layer = _regions_frame(path, frame)
        params = {
            "embeddings": str(embeddings) if embeddings else "run",
            "indicators": str(indicators) if indicators else "run",
            "targets": list(report.targets),
            "seeds": report.protocol["seeds"],
            "split": split,
            "block_size": block_size,
            "log": log,
            "model": model,
            "predictions": "ensemble" if predictions_seed is None else predictions_seed,
        }
        record = StageRecord("predict", params, counts, time.perf_counter() - started)
        write_layers(
            path,
            {C.LAYER_PREDICTIONS: layer, STAGES_TABLE: stage_table(path, record)},
            overwrite=True,  # checked before the work began
        )
        message(
            f"Wrote predictions of {len(report.targets)} indicator(s) to {path} "
            f"(layer {C.LAYER_PREDICTIONS})."
        )
    if output is not None:
        message(f"Wrote metrics to {output}.")
    return DownstreamResult("predict", path, counts, files, report)


def transfer_stage(
    train_on: str | os.PathLike,
    test_on: str | os.PathLike,
    *,
    targets: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    log: bool = True,
    output: str | os.PathLike | None = None,
    mlp: object | None = None,
) -> DownstreamResult:
    """Fit on one city, test on another; each a ``RUN.gpkg`` or ``EMBEDDINGS,INDICATORS``."""
    from urbangeo.downstream.heads import DEFAULT_MLP
    from urbangeo.downstream.predict import transfer
    from urbangeo.downstream.tables import open_dataset

    if output is not None:
        ensure_writable_file(output)
    report = transfer(
        open_dataset(train_on),
        open_dataset(test_on),
        targets,
        seeds=seeds,
        log=log,
        mlp=mlp or DEFAULT_MLP,  # type: ignore[arg-type]
    )
    files = [write_json(output, report.to_dict())] if output is not None else []
    counts = {name: round(r.metrics["mlp"]["r2"]["mean"], 4) for name, r in report.targets.items()}
    return DownstreamResult("transfer", None, counts, files, report)


def indicators_stage(
    gpkg: str | os.PathLike,
    *,
    table: str | os.PathLike | None = None,
    points: str | os.PathLike | None = None,
    polygons: str | os.PathLike | None = None,
    raster: str | os.PathLike | None = None,
    osm: bool | str | os.PathLike = False,
    columns: Sequence[str] | None = None,
    agg: str = "sum",
    lon: str = "lon",
    lat: str = "lat",
    polygon_layer: str | None = None,
    kind: str = "extensive",
    band: int = 1,
    stat: str = "sum",
    name: str | None = None,
    overwrite: bool = False,
) -> DownstreamResult:
    """Attach ground-truth indicators to the run's regions: the ``indicators`` table.

    Sources (any number; see :mod:`urbangeo.downstream.indicators` for the rules): ``table``
    keyed by region_id, lon/lat ``points``, ``polygons`` (area-weighted), a ``raster`` (zonal
    statistics), ``osm`` (True: the run's bundled city extract; or a ``.osm.pbf`` path). With
    no source, OSM counts from the run's bundled city. New columns are added to an existing
    ``indicators`` table; replacing columns it has needs ``overwrite``.
    """
    from urbangeo.downstream import indicators as ind
    from urbangeo.downstream.tables import indicators_frame

    path = check_can_write(gpkg, [], overwrite=overwrite)
    started = time.perf_counter()
    regions = read_layer(path, C.LAYER_REGIONS)
    if not any(x is not None for x in (table, points, polygons, raster)) and not osm:
        osm = True
    osm_path = None
    if osm:
        from urbangeo.geo.stages import roads_source_for

        if osm is not True:
            osm_path = Path(osm)
        elif C.LAYER_BOUNDARY in list_layers(path):
            osm_path = roads_source_for(path, roads=None, city=None)
        if osm_path is None or not str(osm_path).endswith(".pbf"):
            raise InputError(
                f"{path} was not built for a bundled city, so it has no OSM extract.",
                hint="Give one with --osm FILE.osm.pbf, or another source (--table, --points, "
                "--polygons, --raster).",
            )
    existing = None
    if C.LAYER_INDICATORS in list_layers(path):
        existing = indicators_frame(
            pd.DataFrame(read_layer(path, C.LAYER_INDICATORS)), source=f"{path}"
        )
    cols = list(columns) if columns else None
    parts: list[pd.DataFrame] = []
    sources: list[str] = []
    steps = sum(x is not None for x in (table, points, polygons, raster)) + bool(osm_path) + 1
    with progress(steps, task="indicators", unit="source") as bar:
        if table is not None:
            bar.update(0, status="table")
            parts.append(ind.from_region_table(regions, ind.read_table(table), cols))
            sources.append(f"table:{table}")
            bar.update(1)
        if points is not None:
            bar.update(0, status="points")
            frame = ind.from_points(
                regions,
                ind.read_table(points),
                cols,
                agg=agg,
                lon=lon,
                lat=lat,
                count_name=name or "point_count",
            )
            parts.append(frame)
            sources.append(f"points:{points}:{agg}")
            bar.update(1)
        if polygons is not None:
            bar.update(0, status="polygons")
            try:
                src = gpd.read_file(polygons, layer=polygon_layer, engine="pyogrio")
            except Exception as exc:
                raise InputError(f"Cannot read polygons {polygons}: {exc}") from exc
            parts.append(ind.from_polygons(regions, src, cols, kind=kind))
            sources.append(f"polygons:{polygons}:{kind}")
            bar.update(1)
        if raster is not None:
            bar.update(0, status="raster")
            parts.append(ind.from_raster(regions, raster, band=band, stat=stat, name=name))
            sources.append(f"raster:{raster}:{stat}")
            bar.update(1)
        if osm_path is not None:
            bar.update(0, status="OSM")
            boundary = (
                read_layer(path, C.LAYER_BOUNDARY)
                if C.LAYER_BOUNDARY in list_layers(path)
                else None
            )
            parts.append(ind.from_osm(regions, osm_path, boundary=boundary))
            sources.append(f"osm:{osm_path}")
            bar.update(1)
        new = pd.concat(parts, axis=1)
        dupes = new.columns[new.columns.duplicated()].tolist()
        if dupes:
            raise InputError(
                f"Two sources give the column(s) {', '.join(map(str, dupes))}.",
                hint="Run them one at a time, or rename with --name/--columns.",
            )
        added = list(map(str, new.columns))
        if existing is not None:
            clash = [c for c in new.columns if c in existing.columns]
            if clash and not overwrite:
                raise OutputError(
                    f"The indicators table already has column(s) {', '.join(clash)}.",
                    hint="Pass --overwrite to replace them.",
                )
            kept = existing.drop(columns=clash).reindex(new.index)
            new = pd.concat([kept, new], axis=1)
        out = new.reset_index()
        bar.update(0, status="write")
        counts = {"regions": len(out), "columns": len(new.columns)}
        record = StageRecord(
            "indicators",
            {"sources": sources, "columns": list(map(str, new.columns))},
            counts,
            time.perf_counter() - started,
        )
        write_layers(
            path,
            {C.LAYER_INDICATORS: out, STAGES_TABLE: stage_table(path, record)},
            overwrite=True,
        )
        bar.update(1)
    message(
        f"Wrote indicators {', '.join(added)} for {len(out):,} regions to {path} "
        f"(table {C.LAYER_INDICATORS})."
    )
    return DownstreamResult("indicators", path, counts, report=new)


#: The per-cluster indicator density plot, in the run's maps folder.
DENSITY_PNG = "cluster_density.png"


def cluster_stage(
    gpkg: str | os.PathLike | None = None,
    *,
    embeddings: str | os.PathLike | None = None,
    indicators: str | os.PathLike | None = None,
    k: int | str = 3,
    k_range: tuple[int, int] = (2, 8),
    components: int = 10,
    seed: int = 0,
    output: str | os.PathLike | None = None,
    plot: str | os.PathLike | None = None,
    log: bool = True,
    overwrite: bool = False,
) -> DownstreamResult:
    """PCA + KMeans of region embeddings; the ``clusters`` layer and a density plot.

    With ``gpkg``: embeddings and indicators of the run (or the files given), the layer
    ``clusters`` (region polygons, ``cluster``, ``pc1``, ``pc2``) and the plot
    ``maps/cluster_density.png`` beside it when there are indicators. ``output`` writes the
    same columns as a CSV or Parquet table (region_id, cluster, pc1, pc2); ``plot`` names the
    PNG.
    """
    from urbangeo.downstream.cluster import cluster_embeddings
    from urbangeo.downstream.tables import (
        gpkg_embeddings,
        gpkg_indicators,
        indicator_columns,
        load_embeddings,
        load_indicators,
    )

    path = None
    if gpkg is not None:
        path = check_can_write(gpkg, [C.LAYER_CLUSTERS], overwrite=overwrite)
    elif embeddings is None:
        raise InputError(
            "Nothing to cluster.",
            hint="Give a run's GeoPackage (--gpkg RUN.gpkg) or an --embeddings file.",
        )
    for target in (output, plot):
        if target is not None:
            ensure_writable_file(target)
    started = time.perf_counter()
    features = load_embeddings(embeddings) if embeddings else gpkg_embeddings(path)
    table = None
    if indicators is not None:
        table = load_indicators(indicators)
    elif path is not None:
        try:
            table = gpkg_indicators(path)
        except InputError:
            table = None  # clusters need no indicators; the plot is skipped
    with progress(2, task="cluster", unit="step") as bar:
        bar.update(0, status="PCA + KMeans")
        result = cluster_embeddings(
            features, k=k, k_range=k_range, components=components, seed=seed
        )
        bar.update(1, status="write")
        frame = result.frame()
        files: list[Path] = []
        if plot is None and path is not None:
            plot = path.parent / C.MAPS_DIR / DENSITY_PNG
        if table is not None and plot is not None:
            names = indicator_columns(table)
            if names:
                from urbangeo.viz.plots import cluster_density_plot

                values = table[names].reindex(result.region_ids)
                files.append(cluster_density_plot(values, result.labels, plot, log=log))
        if output is not None:
            out = Path(output)
            tmp = out.with_name(f".{out.name}.tmp")
            if out.suffix.lower() in (".parquet", ".pq"):
                frame.reset_index().to_parquet(tmp, index=False)
            else:
                frame.reset_index().to_csv(tmp, index=False)
            os.replace(tmp, out)
            files.append(out)
        counts = {"regions": len(frame), "k": result.k}
        counts.update({f"silhouette_k{kk}": round(s, 4) for kk, s in result.silhouettes.items()})
        if path is not None:
            layer = _regions_frame(path, frame)
            params = {
                "embeddings": str(embeddings) if embeddings else "run",
                "k": k,
                "k_range": list(k_range),
                "components": components,
                "seed": seed,
            }
            record = StageRecord("cluster", params, counts, time.perf_counter() - started)
            write_layers(
                path,
                {C.LAYER_CLUSTERS: layer, STAGES_TABLE: stage_table(path, record)},
                overwrite=True,  # checked before the work began
            )
        bar.update(1)
    where = f" to {path} (layer {C.LAYER_CLUSTERS})" if path is not None else ""
    message(f"Clustered {len(frame):,} regions into {result.k} clusters{where}.")
    for file in files:
        message(f"Wrote {file}.")
    return DownstreamResult("cluster", path, counts, files, result)


#: The map written by :func:`map_stage`, in the run's maps folder.
MAP_HTML = "map.html"


def _selected_captions(gpkg: Path) -> tuple[pd.Series | None, pd.Series | None]:
    """The selected caption per region (satellite) and per point (street view), if any.

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
        sv = caps[(kind != C.KIND_SATELLITE) & caps[C.POINT_ID].notna()]
        point = sv.drop_duplicates(C.POINT_ID).set_index(C.POINT_ID)[C.CAPTION]
    if C.REGION_ID in caps:
        sat = caps[(kind != C.KIND_STREETVIEW) & caps[C.REGION_ID].notna()]
        sat = sat.assign(**{C.REGION_ID: sat[C.REGION_ID].astype(str)})
        region = sat.drop_duplicates(C.REGION_ID).set_index(C.REGION_ID)[C.CAPTION]
    return region, point


def map_stage(
    gpkg: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    tiles: str = "osm",
) -> DownstreamResult:
    """Write an offline folium map of the run's products (``maps/map.html`` beside it).

    Layers, each toggleable: clusters, per predicted indicator its prediction, ground truth
    and residual, ground truth of indicators without predictions, and the street-view points;
    tooltips show the region's values and its selected caption when there is a captions table.
    """
    from urbangeo.viz.maps import TILES, build_map, write_map

    if tiles not in TILES:
        raise InputError(f"Unknown tiles {tiles!r}.", hint=f"Choose one of: {', '.join(TILES)}.")
    path = Path(gpkg)
    out = Path(output) if output is not None else path.parent / C.MAPS_DIR / MAP_HTML
    ensure_writable_file(out)
    layers = list_layers(path)
    with progress(3, task="map", unit="step") as bar:
        bar.update(0, status="read")
        regions = read_layer(path, C.LAYER_REGIONS)

        def table(name: str) -> pd.DataFrame | None:
            if name not in layers:
                return None
            frame = pd.DataFrame(read_layer(path, name))
            frame = frame.drop(columns=[c for c in frame if c == "geometry"])
            return frame.assign(**{C.REGION_ID: frame[C.REGION_ID].astype(str)}).set_index(
                C.REGION_ID
            )

        clusters = table(C.LAYER_CLUSTERS)
        predictions = table(C.LAYER_PREDICTIONS)
        observed = table(C.LAYER_INDICATORS)
        if observed is not None:
            observed = observed.drop(columns=[c for c in ("lon", "lat", "x", "y") if c in observed])
        points = read_layer(path, C.LAYER_SV_POINTS) if C.LAYER_SV_POINTS in layers else None
        region_captions, point_captions = _selected_captions(path)
        bar.update(1, status="build")
        fmap = build_map(
            regions,
            clusters=clusters,
            predictions=predictions,
            observed=observed,
            points=points,
            region_captions=region_captions,
            point_captions=point_captions,
            tiles=tiles,
            title=f"urbangeo: {path.parent.name or path.stem}",
        )
        bar.update(1, status="write")
        write_map(fmap, out)
        bar.update(1)
    shown = [
        name
        for name, frame in (
            ("clusters", clusters),
            ("predictions", predictions),
            ("indicators", observed),
            ("sv_points", points),
        )
        if frame is not None
    ]
    message(f"Wrote the map of {', '.join(shown) or 'the regions'} to {out}.")
    return DownstreamResult("map", path, {"layers": len(shown)}, [out])
