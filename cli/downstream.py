"""Commands of the downstream layer: indicators, predict, cluster, map, similar.

Their options are the settings of :mod:`urbangeo.settings.downstream`; only the run's
GeoPackage, the transfer inputs of ``predict`` and the spellings a generated option cannot take
(``-o`` beside ``--output``, ``--k-range MIN MAX``, ``--osm [FILE]``) are declared here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.progress import get_mode, message
from urbangeo.settings import ClusterSettings, IndicatorsSettings, MapSettings, PredictSettings
from urbangeo.settings._base import Field, StageSettings
from urbangeo.settings.downstream import SimilarSettings
from urbangeo_cli._common import overwrite_option, stage_command
from urbangeo_cli._options import FILE, gpkg_option, settings_from, settings_options


def _show(text: str) -> None:
    """Print a result table on stdout (as a message event with --progress json)."""
    mode = get_mode()
    if mode == "json":
        message(text)
    elif mode == "bar":
        click.echo(text)


def _field(cls: type[StageSettings], name: str) -> Field:
    return next(f for f in cls.fields() if f.name == name)


def _options(
    cls: type[StageSettings], **custom: Callable[[Any], Any]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``settings_options(cls)``, with the settings named in ``custom`` declared by their own
    decorator (a spelling the generated option cannot take), in declaration order."""
    names = cls.names()

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for f in reversed(cls.fields()):
            if f.name in custom:
                func = custom[f.name](func)
            else:
                others = [n for n in names if n != f.name]
                func = settings_options(cls, exclude=others, with_profile=False)(func)
        return settings_options(cls, exclude=names)(func)  # --profile

    return decorate


def _output_option(cls: type[StageSettings]) -> Callable[[Any], Any]:
    """The setting ``output`` as ``-o/--output`` (its declaration, plus the short flag)."""
    f = _field(cls, "output")
    return click.option("-o", f.flag, f.name, type=FILE, metavar=f.spec.unit, help=f.spec.help)


def _k_range_option(func: Any) -> Any:
    """The setting ``k_range`` as ``--k-range MIN MAX`` (two numbers, as it always was)."""
    f = _field(ClusterSettings, "k_range")
    return click.option(
        f.flag,
        f.name,
        nargs=2,
        type=click.IntRange(None if f.spec.min is None else int(f.spec.min)),
        default=f.default,
        show_default=True,
        metavar=f.spec.unit,
        help=f.spec.help,
    )(func)


def _log_option(func: Any) -> Any:
    """The setting ``log`` (default on) as ``--log/--no-log``.

    Declared here while ``settings_options`` cannot make a flag whose default is True.
    """
    f = _field(PredictSettings, "log")
    return click.option(
        f"{f.flag}/--no-{f.flag[2:]}",
        f.name,
        default=f.default,
        show_default=True,
        help=f.spec.help,
    )(func)


class _OsmValue(click.ParamType):
    """The value of ``--osm``: 'run' when bare, a file name in the deprecated ``--osm FILE``."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value


def _osm_option(func: Any) -> Any:
    """The setting ``osm`` as ``--osm``; ``--osm FILE`` (now ``--osm-file FILE``) still works."""
    f = _field(IndicatorsSettings, "osm")
    return click.option(
        f.flag,
        f.name,
        type=_OsmValue(),
        is_flag=False,
        flag_value="run",
        default=f.default,
        metavar=" ",
        help=f.spec.help,
    )(func)


def _with_osm(settings: IndicatorsSettings, value: Any) -> IndicatorsSettings:
    """``settings`` with what ``--osm`` (bare, or the old ``--osm FILE``) asked for."""
    if value in (None, False):
        return settings
    if value == "run":
        return settings.replace(osm=True)
    warnings.warn(
        "--osm FILE is deprecated; use --osm-file FILE (the old spelling goes in the next "
        "release).",
        UrbangeoWarning,
        stacklevel=2,
    )
    path = Path(value)
    if not path.is_file():
        raise InputError(f"The OSM extract {path} (--osm) does not exist.")
    return settings.replace(osm=True, osm_file=path)


@click.command()
@gpkg_option(
    "A run's GeoPackage: region polygons, embeddings (embeddings.parquet beside it or "
    "the region_embeddings layer) and indicators (the indicators table or regions' "
    "columns). Predictions are written back as the layer 'predictions'.",
    required=False,
)
@_options(PredictSettings, log=_log_option, output=_output_option(PredictSettings))
@click.option(
    "--train-on",
    metavar="RUN.gpkg|E,I",
    help="Transfer: fit on this city (a run's GeoPackage, or EMBEDDINGS,INDICATORS files "
    "separated by a comma) ...",
)
@click.option("--test-on", metavar="RUN.gpkg|E,I", help="... and test on all regions of this one.")
@overwrite_option
@stage_command
def predict(
    gpkg: Path | None,
    train_on: str | None,
    test_on: str | None,
    overwrite: bool,
    **values: Any,
) -> None:
    """Predict urban indicators from region embeddings and score it honestly.

    \b
    The paper's protocol: targets ln(1 + y); regions without a value dropped; per seed a
    6:2:2 train/val/test split (n_val = n_test = round(0.2 n), halves up); an MLP head per
    indicator on the standardised, frozen embeddings with early stopping on val, beside a
    ridge head (penalty chosen on val) and the baselines (--baselines): the same heads on a
    random encoder's and on image-statistics embeddings of the run's images (computed once,
    cached in baselines/), a coordinates-only k-NN (how much neighbouring regions alone
    explain) and the training mean. Below 100 regions (--cv auto) a 6:2:2 test set is too
    small to score on, so each target is scored by repeated 5-fold cross-validation instead:
    every region tested once per repeat. Prints test R², RMSE and MAE as mean ± std over the
    seeds (repeats), with the protocol and test n of each target; BELOW MEAN marks a model
    that does worse than predicting the mean. -o writes them as JSON.

    \b
    Input: --gpkg RUN.gpkg, or --embeddings E.parquet --indicators I.csv (files given with
    --gpkg replace the run's own). Transfer: --train-on and --test-on.
    Output: with --gpkg, layer 'predictions': region polygons with, per indicator,
    NAME_observed, NAME_predicted (indicator units, out-of-fold), NAME_residual (predicted -
    observed in ln(1 + y)), NAME_split (test, never-tested, fold k, no-target) and
    NAME_test_seeds; metrics.json beside it.

    \b
    Examples:
      urbangeo predict --gpkg kotka/run.gpkg
      urbangeo predict --embeddings emb.parquet --indicators beijing.csv --target population
      urbangeo predict --gpkg run.gpkg --split block --block-size 5000 -o metrics.json
      urbangeo predict --gpkg run.gpkg --cv kfold --folds 10 --repeats 3 --baselines coords
      urbangeo predict --train-on beijing/run.gpkg --test-on shanghai/run.gpkg
      urbangeo predict --gpkg run.gpkg --features run,text.parquet,location --compare
      urbangeo predict --gpkg run.gpkg --features run --features run,location

    \b
    Feature sets (--features, repeatable; sources joined by commas): files, or names in the
    run's folder: run (its embeddings), NAME (embeddings_NAME.parquet beside the GeoPackage or
    in baselines/, e.g. the cached random, image-stats and location baselines). Each block is
    standardised and divided by sqrt(its columns); every set is scored on the same regions,
    splits and seeds, and a second table shows their R² side by side (--compare: each source
    alone and all together too). The first set fills the layer.
    """
    from urbangeo.downstream.stages import predict_stage, transfer_stage

    settings = settings_from(PredictSettings, values)
    if train_on or test_on:
        if not (train_on and test_on):
            raise InputError("Transfer needs both --train-on and --test-on.")
        chosen = settings.pick("targets", "seeds", "log", "output")
        result = transfer_stage(train_on, test_on, **chosen)
    else:
        result = predict_stage(gpkg, settings, overwrite=overwrite)
    if result.report is None:  # a shard (--shard I/N): `urbangeo merge predict` reports
        return
    _show(result.report.table())  # type: ignore[attr-defined]
    if settings.features:
        from urbangeo.downstream.features import comparison_table

        _show(comparison_table(result.report))  # type: ignore[arg-type]


@click.command()
@gpkg_option("The run's GeoPackage, with 'regions' from `urbangeo grid`.")
@_options(IndicatorsSettings, osm=_osm_option)
@overwrite_option
@stage_command
def indicators(gpkg: Path, osm: Any, overwrite: bool, **values: Any) -> None:
    """Attach ground-truth indicators to the regions (the table 'indicators').

    \b
    Sources, any number at once:
      --table FILE.csv      joined by region_id
      --points FILE.csv     lon/lat points in the region containing them (--agg sum|mean)
      --polygons FILE       area-weighted interpolation (--kind extensive|intensive)
      --raster FILE.tif     zonal sum or mean (--stat), regions reprojected to the raster
      --osm                 building, POI and road counts from OpenStreetMap
                            (--osm-file FILE.osm.pbf: from that extract)
    With no source: the OSM counts of the run's bundled city (offline).
    Output: the attribute table 'indicators' (region_id + one column per indicator) in the
    GeoPackage; columns from earlier calls are kept, and replacing one needs --overwrite.
    `urbangeo predict` uses it as ground truth.

    \b
    Examples:
      urbangeo indicators --gpkg kotka/run.gpkg
      urbangeo indicators --gpkg run.gpkg --raster worldpop_2020.tif --name population
      urbangeo indicators --gpkg run.gpkg --polygons census.gpkg --columns pop
      urbangeo indicators --gpkg run.gpkg --points shops.csv --agg sum
    """
    from urbangeo.downstream.stages import indicators_stage

    settings = _with_osm(settings_from(IndicatorsSettings, values), osm)
    indicators_stage(gpkg, settings, overwrite=overwrite)


@click.command()
@gpkg_option("A run's GeoPackage: clusters go to its layer 'clusters'.", required=False)
@_options(ClusterSettings, k_range=_k_range_option, output=_output_option(ClusterSettings))
@overwrite_option
@stage_command
def cluster(gpkg: Path | None, overwrite: bool, **values: Any) -> None:
    """Cluster regions by their embeddings: PCA, then KMeans.

    \b
    As in the paper's latent-space case study: embeddings projected on their first
    --components principal components, KMeans with --k clusters (3 by default; clusters
    numbered by size, 0 the largest), the silhouette of every k in --k-range printed, and
    a plot of each cluster's indicator density (KDE of ln(1 + y)) per indicator.
    Input: --gpkg RUN.gpkg (its embeddings and indicators) or --embeddings FILE.
    Output: layer 'clusters' (region polygons with cluster, pc1, pc2) and
    maps/cluster_density.png beside the GeoPackage; -o writes a table instead/as well.

    \b
    Examples:
      urbangeo cluster --gpkg kotka/run.gpkg
      urbangeo cluster --gpkg run.gpkg --k auto --k-range 2 10
      urbangeo cluster --embeddings emb.parquet --indicators ind.csv -o clusters.csv \\
          --plot density.png
    """
    from urbangeo.downstream.stages import cluster_stage

    result = cluster_stage(gpkg, settings_from(ClusterSettings, values), overwrite=overwrite)
    _show(result.report.table())  # type: ignore[attr-defined]


@click.command("map")
@gpkg_option("The run's GeoPackage (regions, and whatever products it has).")
@_options(MapSettings, output=_output_option(MapSettings))
@stage_command
def map_command(gpkg: Path, **values: Any) -> None:
    """Write an interactive map of the run's products (folium, works offline).

    \b
    Toggleable layers, each with a legend: clusters (from `urbangeo cluster`), and per
    predicted indicator (from `urbangeo predict`) the prediction, the ground truth and the
    residual; ground truth of other indicators; the street-view points. Hovering a region
    shows its id, values and the selected caption of its image when the run has captions.
    Leaflet is inlined from the xstatic-leaflet package: the HTML file works without the
    internet (only the optional base tiles need it).
    Output: maps/map.html beside the GeoPackage (or -o); open it in a browser.

    \b
    Examples:
      urbangeo map --gpkg kotka/run.gpkg
      urbangeo map --gpkg run.gpkg --tiles none -o offline.html
    """
    from urbangeo.viz.stages import map_stage

    map_stage(gpkg, settings_from(MapSettings, values))


@click.command()
@gpkg_option("The run's GeoPackage: its regions and embeddings; the answer is its layer 'similar'.")
@settings_options(SimilarSettings, with_profile=False)
@stage_command
def similar(gpkg: Path, **values: Any) -> None:
    """Find the regions most like one region (or like several, on average).

    \b
    Cosine similarity of the regions' embeddings (each scaled to unit length) to the region
    given, or to the mean of the regions given (--region repeated). Exact search (numpy) up to
    200,000 regions, a ball tree above. Edge cells the run excludes are not candidates.
    Embeddings: the run's own, --encoder NAME (run, or embeddings_NAME.parquet beside the
    GeoPackage or in baselines/, as predict --features names them) or --embeddings FILE.
    Output: prints the top --k, and writes layer 'similar' (region polygons with similarity,
    rank, selected; the top k and the selected regions), replacing an earlier one. In QGIS:
    select regions of the regions layer and press "Similar regions" in the urbangeo panel.

    \b
    Examples:
      urbangeo similar --gpkg kotka/run.gpkg --region 496_6709
      urbangeo similar --gpkg run.gpkg --region 12_7 --region 13_7 --k 50
      urbangeo similar --gpkg run.gpkg --region 12_7 --encoder image-stats
    """
    from urbangeo.downstream.similar import similar_stage

    result = similar_stage(gpkg, settings_from(SimilarSettings, values))
    _show(result.report.table())  # type: ignore[attr-defined]
