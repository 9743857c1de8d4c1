"""Entry point of the ``urbangeo`` command."""

from __future__ import annotations

import click

from urbangeo import __version__
from urbangeo_cli.captions import caption, captions
from urbangeo_cli.downstream import cluster, indicators, map_command, predict, similar
from urbangeo_cli.export import export
from urbangeo_cli.geo import cities, grid, sample
from urbangeo_cli.imagery import streetview, tiles
from urbangeo_cli.model import embed, train
from urbangeo_cli.qgis import qgis_plugin
from urbangeo_cli.run import run, status
from urbangeo_cli.shard import merge


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="urbangeo")
def cli() -> None:
    """urbangeo: urban region profiling from OpenStreetMap, imagery and captions.

    \b
    A city becomes one GeoPackage that QGIS opens as it is:
      grid     square regions over a boundary             -> layers boundary, regions
      sample   street-view points every 500 m on roads    -> layers roads, sv_points
      tiles    one overhead image per region (OSM map, GeoTIFF, XYZ) -> images/, layer images
      streetview  street-view images per sample point    -> images/, layer images
      caption  captions per image from one or more captioners, consensus -> table captions
      train    pre-train CLIP (UrbanLN) on image-caption pairs -> checkpoints/, train_metrics.csv
      embed    region vectors from the images -> layer region_embeddings, embeddings.parquet
      indicators  ground truth per region (CSV, polygons, raster, OSM) -> table indicators
      predict  prediction heads, R2/RMSE/MAE over seeds -> layer predictions, metrics.json
      cluster  PCA + KMeans of the embeddings         -> layer clusters, density plot
      map      an offline folium map of the products  -> maps/map.html
      similar  the regions most like given ones       -> layer similar
      run      every stage for a city, cached and resumable -> RUN_DIR/
      merge    assemble the shards of a stage run with --shard I/N
      status   what each stage of a run folder did
      export   a run's layers as GeoParquet (DuckDB, geopandas, Spark)
      cities   the cities bundled for offline use
      captions caption tools: one-off set-up of CAPTURE's data, scoring
      qgis-plugin  build or install the QGIS plugin

    \b
    Start with:  urbangeo run            (the default city, offline)
    Every command explains itself: urbangeo COMMAND --help
    """


for command in (
    cities,
    grid,
    sample,
    tiles,
    streetview,
    caption,
    train,
    embed,
    indicators,
    predict,
    cluster,
    map_command,
    similar,
    captions,
    run,
    merge,
    status,
    export,
    qgis_plugin,
):
    cli.add_command(command)
