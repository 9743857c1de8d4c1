"""Downstream stages on a run's GeoPackage: indicators, predict, cluster (the map's stage is
:func:`urbangeo.viz.stages.map_stage`).

Each is a body run by :func:`urbangeo.stage.stage` (settings checked and outputs checked
before any work, the run's lock, one atomic write of its layers and its record); its settings
are :class:`~urbangeo.settings.IndicatorsSettings`, :class:`~urbangeo.settings.PredictSettings`,
:class:`~urbangeo.settings.ClusterSettings`.
``predict`` and ``cluster`` also run on files alone (no GeoPackage: nothing is recorded);
:func:`transfer_stage` (fit on one city, test on another) is not a pipeline stage. Heavy
libraries (torch, scikit-learn, folium, matplotlib) are imported when a stage runs, so that
importing this module (the CLI does) stays cheap.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError, OutputError, UrbangeoWarning
from urbangeo.io.files import atomic_path, ensure_writable_file, write_text_atomic
from urbangeo.io.gpkg import list_layers, read_layer
from urbangeo.io.runs import StageResult
from urbangeo.progress import message, progress
from urbangeo.settings import ClusterSettings, IndicatorsSettings, PredictSettings
from urbangeo.stage import StageRun, stage


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


@stage(PredictSettings, outputs=(C.LAYER_PREDICTIONS,), gpkg_required=False)
def predict_stage(
    run: StageRun,
    s: PredictSettings,
    *,
    overwrite: bool,
    mlp: object | None = None,
    fit_share: object | None = None,
) -> StageResult:
    """Evaluate indicator prediction; with ``gpkg``, write the ``predictions`` layer.

    Inputs: a run's GeoPackage (embeddings from ``embeddings.parquet`` beside it or its
    ``region_embeddings`` layer; indicators from its ``indicators`` table or the regions'
    columns; ``embeddings``/``indicators`` files replace either), or an ``embeddings`` and an
    ``indicators`` file. ``output``: metrics JSON (default with ``gpkg``: ``metrics.json``
    beside it). Scores by 6:2:2 splits or repeated k-fold (``cv``), beside the ``baselines``
    (the image ones embedded once and cached in ``baselines/`` beside the GeoPackage). The
    layer holds the ``model``'s out-of-fold predictions, averaged over the seeds (repeats)
    ("ensemble") or of one seed, and ``NAME_split`` saying where each came from. The record's
    counts include ``below_baseline``: the targets the ``model`` predicts worse than their
    mean. ``mlp``: the MLP head's configuration (:class:`~urbangeo.downstream.heads.MLPConfig`;
    default ``DEFAULT_MLP``). Regions the run excludes (edge cells) are not scored; their rows
    have no prediction, with ``edge`` and ``excluded`` (:mod:`urbangeo.imagery.edges`).
    ``features``: feature sets scored side by side (:mod:`urbangeo.downstream.features`).
    ``fit_share`` (given by :func:`urbangeo.shard.run_shard`, ``--shard I/N``): make only
    that share of the fits, from the run's inputs, into the shard's folder
    (:mod:`urbangeo.shard_plans.predict`).
    """
    from urbangeo.downstream.fits import fit_jobs
    from urbangeo.downstream.heads import DEFAULT_MLP, MLPConfig

    path = run.path
    if path is None and ((s.embeddings is None and not s.features) or s.indicators is None):
        raise InputError(
            "Nothing to predict from.",
            hint="Give a run's GeoPackage (--gpkg RUN.gpkg) or both --embeddings and "
            "--indicators files (or --features FILE,... and --indicators).",
        )
    head: MLPConfig = mlp or DEFAULT_MLP  # type: ignore[assignment]
    if fit_share is not None:
        from urbangeo.shard_plans.predict import FitShare, fit_shard

        assert isinstance(fit_share, FitShare)
        inputs = PredictInputs.read(fit_share.run_gpkg, s)
        return fit_shard(run, fit_share, inputs.plan(s), head, inputs.baselines)
    output = metrics_path(path, s)
    inputs = PredictInputs.read(path, s)
    plan = inputs.plan(s)
    report = plan.report(fit_jobs(plan, head), head)
    layers, counts, params, files = predict_outputs(path, s, inputs, report, output)
    result = run.commit(layers, counts=counts, params=params, files=files, report=report)
    say_predicted(path, s, report, output)
    return result


def metrics_path(path: Path | None, s: PredictSettings) -> Path | None:
    """Where ``predict`` writes its metrics (checked writable): ``output``, else
    ``metrics.json`` beside the GeoPackage."""
    output = s.output
    if output is None and path is not None:
        output = path.parent / C.METRICS_JSON
    if output is not None:
        ensure_writable_file(output)
    return output


@dataclass
class PredictInputs:
    """What ``predict`` scores, read from a run (or files): the dataset (edge cells out), the
    regions before that, the feature sets, the baselines' features and what was done."""

    dataset: Any
    n_all: int
    sets: Any
    extra: dict[str, pd.DataFrame]
    baselines: dict[str, dict]
    status: pd.DataFrame | None

    @classmethod
    def read(cls, path: Path | None, s: PredictSettings) -> PredictInputs:
        """The inputs of ``predict`` with settings ``s`` on the run ``path`` (or files)."""
        from urbangeo.downstream.baselines import image_baselines
        from urbangeo.downstream.features import predict_dataset
        from urbangeo.downstream.tables import run_status
        from urbangeo.settings.downstream import DEFAULT_BASELINES

        status = run_status(path)  # edge cells the run excludes get no prediction
        dataset, n_all, sets = predict_dataset(path, s, status)
        extra, baselines = image_baselines(
            path,
            s.baseline_names,
            regions=dataset.features.index,
            explicit=s.baselines != DEFAULT_BASELINES,
        )
        return cls(dataset, n_all, sets, extra, baselines, status)

    def plan(self, s: PredictSettings) -> Any:
        """Every fit to make (:class:`~urbangeo.downstream.fits.FitPlan`)."""
        from urbangeo.downstream.predict import plan_evaluation

        return plan_evaluation(
            self.dataset,
            list(s.targets) if s.targets else None,
            seeds=s.seeds,
            split=s.split,
            block_size=s.block_size,
            log=s.log,
            cv=s.cv,
            folds=s.folds,
            repeats=s.repeats,
            extra_features=self.sets.merge(self.extra, self.baselines),
            baseline_heads=("ridge",) if s.model == "ridge" else ("mlp", "ridge"),
            coords_baseline="coords" in s.baseline_names,
            column_weights=self.sets.column_weights(),
        )


def predict_outputs(
    path: Path | None,
    s: PredictSettings,
    inputs: PredictInputs,
    report: Any,
    output: Path | None,
) -> tuple[dict | None, dict, dict, list[Path]]:
    """The layers, counts, params and files (the metrics JSON, written) of ``report``."""
    from urbangeo.downstream.tables import with_status

    report.protocol["baselines"] = {"asked": list(s.baseline_names), **inputs.baselines}
    inputs.sets.annotate(report)
    below = report.below_baseline(s.model)
    counts: dict = {"regions": len(inputs.dataset.features), "targets": len(report.targets)}
    counts["excluded"] = inputs.n_all - len(inputs.dataset.features)
    for name, target in report.targets.items():
        counts[f"r2_{s.model}_{name}"] = round(target.metrics[s.model]["r2"]["mean"], 4)
    counts["below_baseline"] = len(below)
    files = []
    if output is not None:
        summary = report.to_dict()
        summary["protocol"]["layer_model"] = s.model  # the head whose predictions fill the layer
        files.append(write_json(output, summary))
    layers = None
    if path is not None:
        frame = report.prediction_frame(model=s.model, seed=s.predictions_seed)
        layers = {C.LAYER_PREDICTIONS: _regions_frame(path, with_status(frame, inputs.status))}
    params = {
        "embeddings": str(s.embeddings) if s.embeddings else "run",
        "indicators": str(s.indicators) if s.indicators else "run",
        "targets": list(report.targets),
        "seeds": report.protocol["seeds"],
        "cv": s.cv,
        "schemes": report.protocol["schemes"],
        "folds": s.folds,
        "repeats": report.protocol["repeats"],
        "split": s.split,
        "block_size": s.block_size,
        "log": s.log,
        "model": s.model,
        "baselines": list(s.baseline_names),
        "predictions": "ensemble" if s.predictions_seed is None else s.predictions_seed,
        **inputs.sets.params(s),
    }
    return layers, counts, params, files


def say_predicted(path: Path | None, s: PredictSettings, report: Any, output: Path | None) -> None:
    """What ``predict`` did, once committed."""
    below = report.below_baseline(s.model)
    if below:
        message(
            f"The {s.model} head predicts {', '.join(below)} worse than the mean baseline "
            "(R² < 0): nothing learned there."
        )
    if path is not None:
        message(
            f"Wrote predictions of {len(report.targets)} indicator(s) to {path} "
            f"(layer {C.LAYER_PREDICTIONS})."
        )
    if output is not None:
        message(f"Wrote metrics to {output}.")


def transfer_stage(
    train_on: str | os.PathLike,
    test_on: str | os.PathLike,
    *,
    targets: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 5,
    log: bool = True,
    output: str | os.PathLike | None = None,
    mlp: object | None = None,
) -> StageResult:
    """Fit on one city, test on another; each a ``RUN.gpkg`` or ``EMBEDDINGS,INDICATORS``.

    Not a pipeline stage: nothing is written to either GeoPackage or recorded; ``output``
    writes the metrics as JSON. Counts: the MLP head's R² per target and ``below_baseline``.
    """
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
    files = (write_json(output, report.to_dict()),) if output is not None else ()
    counts: dict = {
        name: round(r.metrics["mlp"]["r2"]["mean"], 4) for name, r in report.targets.items()
    }
    counts["below_baseline"] = len(report.below_baseline("mlp"))
    return StageResult("transfer", None, counts, files=files, report=report)


def _read_rows(path: Path, what: str, row: str) -> pd.DataFrame:
    """The table of a ``--table``/``--points`` source, refused when it has no rows."""
    from urbangeo.downstream.indicators import read_table

    frame = read_table(path)
    if frame.empty:
        header = ", ".join(map(str, frame.columns))
        raise InputError(
            f"The {what} {path} has no rows" + (f" (only a header: {header})." if header else "."),
            hint=f"Give a table with one row per {row}.",
        )
    return frame


def _say_dropped(
    frame: pd.DataFrame, columns: Sequence[str] | None, skip: set[str], what: str
) -> None:
    """Warn about the columns of a source that are left out because they are not numeric
    (the indicator functions take the numeric ones when no --columns are given)."""
    if columns:
        return  # chosen columns that are not numeric are refused by the indicator functions
    dropped = [
        str(c)
        for c in frame.columns
        if c not in skip and not pd.api.types.is_numeric_dtype(frame[c])
    ]
    if dropped:
        warnings.warn(
            f"Column(s) {', '.join(dropped)} of the {what} are not numeric; left out of the "
            "indicators.",
            UrbangeoWarning,
            stacklevel=3,
        )


def _osm_extract(path: Path, s: IndicatorsSettings, layers: list[str]) -> Path | None:
    """The .osm.pbf extract the OSM counts come from (None: no OSM counts asked for)."""
    if not s.use_osm:
        return None
    osm_path = s.osm_file
    if osm_path is None and C.LAYER_BOUNDARY in layers:
        from urbangeo.io.osm import run_extract

        osm_path = run_extract(path, roads=None, city=None)
    if osm_path is None or not str(osm_path).endswith(".pbf"):
        raise InputError(
            f"{path} was not built for a bundled city, so it has no OSM extract.",
            hint="Give one with --osm-file FILE.osm.pbf, or another source (--table, --points, "
            "--polygons, --raster).",
        )
    return Path(osm_path)


@stage(IndicatorsSettings)
def indicators_stage(run: StageRun, s: IndicatorsSettings, *, overwrite: bool) -> StageResult:
    """Attach ground-truth indicators to the run's regions: the ``indicators`` table.

    Sources (any number; see :mod:`urbangeo.downstream.indicators` for the rules): ``table``
    keyed by region_id, lon/lat ``points``, ``polygons`` (area-weighted), a ``raster`` (zonal
    statistics), ``osm`` (the run's bundled city extract, or the ``osm_file`` given). With
    no file source: the real indicators of a run's bundled city that has them (São Paulo's
    r5r hexgrid, area-weighted; ``osm`` adds OSM counts), else OSM counts from the run's
    bundled city (or the bundled extract its area lies in). New columns are added to an existing
    ``indicators`` table; replacing columns it has needs ``overwrite``. Non-numeric columns
    of a table, points or polygons are left out with a warning naming them.
    """
    from urbangeo.downstream import indicators as ind
    from urbangeo.downstream.tables import indicators_frame

    path = run.path
    assert path is not None  # the stage needs the GeoPackage
    regions = read_layer(path, C.LAYER_REGIONS)
    layers = list_layers(path)
    real = ind.default_city(path, file_sources=s.sources)
    osm_asked = s.osm or s.osm_file is not None
    osm_path = None if real is not None and not osm_asked else _osm_extract(path, s, layers)
    existing = None
    if C.LAYER_INDICATORS in layers:
        existing = indicators_frame(
            pd.DataFrame(read_layer(path, C.LAYER_INDICATORS)), source=f"{path}"
        )
    cols = list(s.columns) if s.columns else None
    parts: list[pd.DataFrame] = []
    sources: list[str] = []
    steps = s.sources + (real is not None) + (osm_path is not None) + 1
    with progress(steps, task="indicators", unit="source") as bar:
        if s.table is not None:
            bar.update(0, status="table")
            frame = _read_rows(s.table, "table", "region")
            _say_dropped(frame, cols, {C.REGION_ID, "lon", "lat", "x", "y"}, f"table {s.table}")
            parts.append(ind.from_region_table(regions, frame, cols))
            sources.append(f"table:{s.table}")
            bar.update(1)
        if s.points is not None:
            bar.update(0, status="points")
            frame = _read_rows(s.points, "points table", "point")
            skip = {s.lon, s.lat, C.REGION_ID, "x", "y"}
            _say_dropped(frame, cols, skip, f"points table {s.points}")
            count_name = s.name or "point_count"
            chosen = s.pick("agg", "lon", "lat")
            frame = ind.from_points(regions, frame, cols, count_name=count_name, **chosen)
            parts.append(frame)
            sources.append(f"points:{s.points}:{s.agg}")
            bar.update(1)
        if s.polygons is not None:
            bar.update(0, status="polygons")
            try:
                src = gpd.read_file(s.polygons, layer=s.polygon_layer, engine="pyogrio")
            except Exception as exc:
                raise InputError(f"Cannot read polygons {s.polygons}: {exc}") from exc
            attributes = pd.DataFrame(src.drop(columns=src.geometry.name))
            _say_dropped(attributes, cols, {C.REGION_ID, "id", "fid"}, f"polygons {s.polygons}")
            parts.append(ind.from_polygons(regions, src, cols, kind=s.kind))
            sources.append(f"polygons:{s.polygons}:{s.kind}")
            bar.update(1)
        if s.raster is not None:
            bar.update(0, status="raster")
            parts.append(ind.from_raster(regions, s.raster, band=s.band, stat=s.stat, name=s.name))
            sources.append(f"raster:{s.raster}:{s.stat}")
            bar.update(1)
        if real is not None:
            bar.update(0, status=real.name)
            parts.append(ind.from_city(regions, real))
            sources.append(f"city:{real.name}")
            bar.update(1)
        if osm_path is not None:
            bar.update(0, status="OSM")
            boundary = read_layer(path, C.LAYER_BOUNDARY) if C.LAYER_BOUNDARY in layers else None
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
        result = run.commit(
            {C.LAYER_INDICATORS: out},
            counts={"regions": len(out), "columns": len(new.columns)},
            params={
                "sources": sources,
                "ground_truth": {src: ind.source_label(src) for src in sources},
                "columns": list(map(str, new.columns)),
            },
            report=new,
        )
        bar.update(1)
    message(
        f"Wrote indicators {', '.join(added)} for {len(out):,} regions to {path} "
        f"(table {C.LAYER_INDICATORS}).{ind.summary(sources, new[added])}"
    )
    return result


#: The per-cluster indicator density plot, in the run's maps folder.
DENSITY_PNG = "cluster_density.png"


@stage(ClusterSettings, outputs=(C.LAYER_CLUSTERS,), gpkg_required=False)
def cluster_stage(run: StageRun, s: ClusterSettings, *, overwrite: bool) -> StageResult:
    """PCA + KMeans of region embeddings; the ``clusters`` layer and a density plot.

    With ``gpkg``: embeddings and indicators of the run (or the files given), the layer
    ``clusters`` (region polygons, ``cluster``, ``pc1``, ``pc2``) and the plot
    ``maps/cluster_density.png`` beside it when there are indicators. ``output`` writes the
    same columns as a CSV or Parquet table (region_id, cluster, pc1, pc2); ``plot`` names the
    PNG. Regions the run excludes (edge cells) keep a row without a cluster, with ``edge`` and
    the reason in ``excluded`` (:mod:`urbangeo.imagery.edges`).
    """
    from urbangeo.downstream.cluster import cluster_embeddings
    from urbangeo.downstream.tables import (
        gpkg_embeddings,
        gpkg_indicators,
        indicator_columns,
        kept,
        load_embeddings,
        load_indicators,
        run_status,
        with_status,
    )

    path = run.path
    if path is None and s.embeddings is None:
        raise InputError(
            "Nothing to cluster.",
            hint="Give a run's GeoPackage (--gpkg RUN.gpkg) or an --embeddings file.",
        )
    for target in (s.output, s.plot):
        if target is not None:
            ensure_writable_file(target)
    if s.embeddings is not None:
        features = load_embeddings(s.embeddings)
    else:
        assert path is not None  # checked above
        features = gpkg_embeddings(path)
    status = run_status(path)  # edge cells the run excludes get no cluster
    n_all = len(features)
    keep = kept(features.index, status)
    if len(keep) < n_all:  # no copy of the whole matrix when nothing is excluded
        features = features.loc[keep]
    table = None
    if s.indicators is not None:
        table = load_indicators(s.indicators)
    elif path is not None:
        try:
            table = gpkg_indicators(path)
        except InputError:
            table = None  # clusters need no indicators; the plot is skipped
    with progress(2, task="cluster", unit="step") as bar:
        bar.update(0, status="PCA + KMeans")
        clusters = cluster_embeddings(
            features,
            k=s.k_value,
            k_range=(s.k_range[0], s.k_range[1]),
            components=s.components,
            seed=s.seed,
        )
        bar.update(1, status="write")
        frame = with_status(clusters.frame(), status)
        files: list[Path] = []
        plot = s.plot
        if plot is None and path is not None:
            plot = path.parent / C.MAPS_DIR / DENSITY_PNG
        if table is not None and plot is not None:
            names = indicator_columns(table)
            if names:
                from urbangeo.viz.plots import cluster_density_plot

                values = table[names].reindex(clusters.region_ids)
                files.append(cluster_density_plot(values, clusters.labels, plot, log=s.log))
        if s.output is not None:
            with atomic_path(s.output) as tmp:
                if s.output.suffix.lower() in (".parquet", ".pq"):
                    frame.reset_index().to_parquet(tmp, index=False)
                else:
                    frame.reset_index().to_csv(tmp, index=False)
            files.append(s.output)
        counts: dict[str, int | float] = {"regions": len(features), "k": clusters.k}
        counts["excluded"] = n_all - len(features)
        counts.update({f"silhouette_k{kk}": round(v, 4) for kk, v in clusters.silhouettes.items()})
        params = {
            "embeddings": str(s.embeddings) if s.embeddings else "run",
            "k": s.k_value,
            "k_range": list(s.k_range),
            "components": s.components,
            "seed": s.seed,
        }
        layers = {C.LAYER_CLUSTERS: _regions_frame(path, frame)} if path is not None else None
        result = run.commit(layers, counts=counts, params=params, files=files, report=clusters)
        bar.update(1)
    where = f" to {path} (layer {C.LAYER_CLUSTERS})" if path is not None else ""
    left = f" ({counts['excluded']:,} edge cells left out)" if counts["excluded"] else ""
    message(f"Clustered {len(features):,} regions into {clusters.k} clusters{where}{left}.")
    for file in files:
        message(f"Wrote {file}.")
    return result
