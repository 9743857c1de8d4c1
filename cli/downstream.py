"""Commands of the downstream layer: indicators, predict, cluster, map."""

from __future__ import annotations

from pathlib import Path

import click

from urbangeo.errors import InputError
from urbangeo.progress import get_mode, message
from urbangeo_cli._common import overwrite_option, stage_command

FILE = click.Path(dir_okay=False, path_type=Path)
EXISTING = click.Path(dir_okay=False, exists=True, path_type=Path)


def _show(text: str) -> None:
    """Print a result table on stdout (as a message event with --progress json)."""
    mode = get_mode()
    if mode == "json":
        message(text)
    elif mode == "bar":
        click.echo(text)


def _seed_choice(value: str) -> int | None:
    if value == "ensemble":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise InputError(
            f"--predictions-from must be 'ensemble' or a seed number, not {value!r}."
        ) from exc


@click.command()
@click.option(
    "--gpkg",
    "gpkg",
    type=FILE,
    help="A run's GeoPackage: region polygons, embeddings (embeddings.parquet beside it or "
    "the region_embeddings layer) and indicators (the indicators table or regions' "
    "columns). Predictions are written back as the layer 'predictions'.",
)
@click.option(
    "--embeddings",
    type=EXISTING,
    help="Embeddings table (.parquet or .csv): region_id plus numeric feature columns "
    "(or one column holding a vector per row).",
)
@click.option(
    "--indicators",
    type=EXISTING,
    help="Indicator table (.csv, .parquet or a .gpkg): region_id plus indicator columns; "
    "lon/lat (WGS84) or x/y (metres) columns give coordinates.",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="NAME",
    help="Indicator to predict (repeat for several). Default: every numeric column with "
    "at least 10 regions that is not constant.",
)
@click.option(
    "--seeds",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Number of random splits (seeds 0..N-1); metrics are mean ± std over them.",
)
@click.option(
    "--split",
    type=click.Choice(["random", "block"]),
    default="random",
    show_default=True,
    help="'random': 6:2:2 over regions. 'block': whole squares of --block-size metres go to "
    "train, val or test (honest when neighbours share values).",
)
@click.option(
    "--block-size",
    type=float,
    metavar="METRES",
    help="Side of the blocks of --split block, e.g. 5000 for 1 km regions.",
)
@click.option(
    "--no-log", "no_log", is_flag=True, help="Fit the values as they are instead of ln(1 + y)."
)
@click.option(
    "--train-on",
    metavar="RUN.gpkg|E,I",
    help="Transfer: fit on this city (a run's GeoPackage, or EMBEDDINGS,INDICATORS files "
    "separated by a comma) ...",
)
@click.option("--test-on", metavar="RUN.gpkg|E,I", help="... and test on all regions of this one.")
@click.option(
    "--predictions-from",
    default="ensemble",
    show_default=True,
    metavar="ensemble|SEED",
    help="Which model's predictions go into the 'predictions' layer: the mean of every "
    "seed's model, or one seed's (then a column tells each region's split).",
)
@click.option(
    "--model",
    type=click.Choice(["mlp", "ridge"]),
    default="mlp",
    show_default=True,
    help="Model whose predictions are written to the layer.",
)
@click.option("-o", "--output", type=FILE, metavar="FILE.json", help="Write the metrics as JSON.")
@overwrite_option
@stage_command
def predict(
    gpkg,
    embeddings,
    indicators,
    targets,
    seeds,
    split,
    block_size,
    no_log,
    train_on,
    test_on,
    predictions_from,
    model,
    output,
    overwrite,
) -> None:
    """Predict urban indicators from region embeddings and score it honestly.

    \b
    The paper's protocol: targets ln(1 + y); regions without a value dropped; per seed a
    6:2:2 train/val/test split (n_val = n_test = round(0.2 n), halves up); an MLP head per
    indicator on the standardised, frozen embeddings with early stopping on val, beside a
    ridge baseline (penalty chosen on val) and a coordinates-only k-NN baseline (how much
    neighbouring regions alone explain). Prints test R², RMSE and MAE as mean ± std over
    the seeds; -o writes them as JSON.

    \b
    Input: --gpkg RUN.gpkg, or --embeddings E.parquet --indicators I.csv (files given with
    --gpkg replace the run's own). Transfer: --train-on and --test-on.
    Output: with --gpkg, layer 'predictions': region polygons with, per indicator,
    NAME_observed, NAME_predicted (indicator units), NAME_residual (predicted - observed in
    ln(1 + y)) and NAME_test_seeds (or NAME_split with --predictions-from SEED).

    \b
    Examples:
      urbangeo predict --gpkg kotka/run.gpkg
      urbangeo predict --embeddings emb.parquet --indicators beijing.csv --target population
      urbangeo predict --gpkg run.gpkg --split block --block-size 5000 -o metrics.json
      urbangeo predict --train-on beijing/run.gpkg --test-on shanghai/run.gpkg
    """
    from urbangeo.downstream.stages import predict_stage, transfer_stage

    if train_on or test_on:
        if not (train_on and test_on):
            raise InputError("Transfer needs both --train-on and --test-on.")
        result = transfer_stage(
            train_on, test_on, targets=targets or None, seeds=seeds, log=not no_log, output=output
        )
    else:
        result = predict_stage(
            gpkg,
            embeddings=embeddings,
            indicators=indicators,
            targets=targets or None,
            seeds=seeds,
            split=split,
            block_size=block_size,
            log=not no_log,
            output=output,
            predictions_seed=_seed_choice(predictions_from),
            model=model,
            overwrite=overwrite,
        )
    _show(result.report.table())  # type: ignore[union-attr]


@click.command()
@click.option(
    "--gpkg",
    "gpkg",
    required=True,
    type=FILE,
    help="The run's GeoPackage, with 'regions' from `urbangeo grid`.",
)
@click.option(
    "--table",
    type=EXISTING,
    metavar="FILE.csv",
    help="A table keyed by region_id: its numeric columns are joined as they are.",
)
@click.option(
    "--points",
    type=EXISTING,
    metavar="FILE.csv",
    help="Points with lon/lat (WGS84): each goes to the region containing it; values are "
    "aggregated with --agg, or the points counted when the table has no value column.",
)
@click.option(
    "--agg",
    type=click.Choice(["sum", "mean"]),
    default="sum",
    show_default=True,
    help="How --points values combine per region (sum: 0 where none; mean: empty).",
)
@click.option("--lon-col", default="lon", show_default=True, help="Longitude column of --points.")
@click.option("--lat-col", default="lat", show_default=True, help="Latitude column of --points.")
@click.option(
    "--polygons",
    type=EXISTING,
    metavar="FILE",
    help="A polygon file (any CRS) whose values are interpolated by area: an extensive "
    "value (a count) is split by the share of each polygon's area in each region.",
)
@click.option("--layer", "polygon_layer", metavar="NAME", help="Layer of --polygons.")
@click.option(
    "--kind",
    type=click.Choice(["extensive", "intensive"]),
    default="extensive",
    show_default=True,
    help="extensive: counts split by area; intensive: densities or shares averaged, "
    "weighted by overlap area.",
)
@click.option(
    "--raster",
    type=EXISTING,
    metavar="FILE.tif",
    help="A raster (e.g. a WorldPop GeoTIFF): zonal --stat of the pixels whose centre lies "
    "in each region; nodata pixels skipped.",
)
@click.option(
    "--band", type=click.IntRange(1), default=1, show_default=True, help="Band of --raster."
)
@click.option(
    "--stat",
    type=click.Choice(["sum", "mean"]),
    default="sum",
    show_default=True,
    help="Zonal statistic of --raster.",
)
@click.option(
    "--osm",
    "osm",
    is_flag=False,
    flag_value="run",
    default=None,
    metavar="[FILE.osm.pbf]",
    help="OSM counts per region: osm_buildings, osm_building_area_m2, osm_pois, "
    "osm_road_length_m; from FILE or (bare --osm) the run's bundled city extract. The "
    "default when no other source is given.",
)
@click.option(
    "--columns",
    "columns",
    multiple=True,
    metavar="COL",
    help="Use only these columns of --table/--points/--polygons (repeatable).",
)
@click.option(
    "--name",
    metavar="COL",
    help="Column name of --raster (default: the file's "
    "name) or of the --points count (default point_count).",
)
@overwrite_option
@stage_command
def indicators(
    gpkg,
    table,
    points,
    agg,
    lon_col,
    lat_col,
    polygons,
    polygon_layer,
    kind,
    raster,
    band,
    stat,
    osm,
    columns,
    name,
    overwrite,
) -> None:
    """Attach ground-truth indicators to the regions (the table 'indicators').

    \b
    Sources, any number at once:
      --table FILE.csv      joined by region_id
      --points FILE.csv     lon/lat points in the region containing them (--agg sum|mean)
      --polygons FILE       area-weighted interpolation (--kind extensive|intensive)
      --raster FILE.tif     zonal sum or mean (--stat), regions reprojected to the raster
      --osm [FILE.osm.pbf]  building, POI and road counts from OpenStreetMap
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

    indicators_stage(
        gpkg,
        table=table,
        points=points,
        polygons=polygons,
        raster=raster,
        osm=True if osm == "run" else (osm or False),
        columns=columns or None,
        agg=agg,
        lon=lon_col,
        lat=lat_col,
        polygon_layer=polygon_layer,
        kind=kind,
        band=band,
        stat=stat,
        name=name,
        overwrite=overwrite,
    )


def _k_value(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError as exc:
        raise InputError(f"--k must be a number of clusters or 'auto', not {value!r}.") from exc


@click.command()
@click.option(
    "--gpkg", "gpkg", type=FILE, help="A run's GeoPackage: clusters go to its layer 'clusters'."
)
@click.option(
    "--embeddings",
    type=EXISTING,
    help="Embeddings table (region_id + features) instead of the run's own.",
)
@click.option(
    "--indicators",
    type=EXISTING,
    help="Indicator table for the density plot (default: the run's indicators).",
)
@click.option(
    "--k",
    "k",
    default="3",
    show_default=True,
    metavar="N|auto",
    help="Number of clusters; 'auto' takes the best silhouette of --k-range.",
)
@click.option(
    "--k-range",
    nargs=2,
    type=click.IntRange(2),
    default=(2, 8),
    show_default=True,
    metavar="MIN MAX",
    help="The k whose silhouette is reported.",
)
@click.option(
    "--components",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Principal components kept before KMeans.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of PCA and KMeans.")
@click.option(
    "-o",
    "--output",
    type=FILE,
    metavar="FILE.csv",
    help="Also write region_id, cluster, pc1, pc2 as CSV (or .parquet).",
)
@click.option(
    "--plot",
    type=FILE,
    metavar="FILE.png",
    help="Density plot path. Default with --gpkg: maps/cluster_density.png beside it.",
)
@overwrite_option
@stage_command
def cluster(
    gpkg, embeddings, indicators, k, k_range, components, seed, output, plot, overwrite
) -> None:
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

    result = cluster_stage(
        gpkg,
        embeddings=embeddings,
        indicators=indicators,
        k=_k_value(k),
        k_range=tuple(k_range),
        components=components,
        seed=seed,
        output=output,
        plot=plot,
        overwrite=overwrite,
    )
    _show(result.report.table())  # type: ignore[union-attr]


@click.command("map")
@click.option(
    "--gpkg",
    "gpkg",
    required=True,
    type=FILE,
    help="The run's GeoPackage (regions, and whatever products it has).",
)
@click.option(
    "-o",
    "--output",
    type=FILE,
    metavar="FILE.html",
    help="Where to write the map. Default: maps/map.html beside the GeoPackage.",
)
@click.option(
    "--tiles",
    type=click.Choice(["osm", "none"]),
    default="osm",
    show_default=True,
    help="Base map: OpenStreetMap tiles (shown when online), or none (the page then "
    "fetches nothing at all).",
)
@stage_command
def map_command(gpkg, output, tiles) -> None:
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
    from urbangeo.downstream.stages import map_stage

    map_stage(gpkg, output=output, tiles=tiles)
