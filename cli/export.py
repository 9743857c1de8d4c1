"""``urbangeo export``: a run's layers as GeoParquet (not a stage: it records nothing)."""

from __future__ import annotations

from pathlib import Path

import click

from urbangeo.progress import message
from urbangeo_cli._common import stage_command
from urbangeo_cli._options import gpkg_option


def _size(n: int) -> str:
    """A file size in words: "532 B", "12.3 MB"."""
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


@click.command()
@gpkg_option("The run's GeoPackage (RUN/run.gpkg).")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    metavar="NAME",
    help="A layer to export; repeat for several. Default: every layer of the run "
    "(not urbangeo's own tables).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="A file ending in .parquet (for one --layer), or a folder that gets LAYER.parquet "
    "per layer. Existing files are replaced, each at once when it is complete.",
)
@click.option(
    "--batch-rows",
    type=int,
    default=65_536,
    show_default=True,
    metavar="ROWS",
    help="Rows read and written at a time (one Parquet row group each): memory holds one "
    "batch, never the layer.",
)
@stage_command
def export(gpkg: Path, layers: tuple[str, ...], output: Path, batch_rows: int) -> None:
    """Write a run's layers as GeoParquet, for DuckDB, geopandas, Spark.

    \b
    GeoParquet 1.0: the geometry as WKB with its CRS (PROJJSON), geometry types and
    bounding box; tables without geometry (indicators, captions) as plain Parquet. Layers are
    streamed in batches of --batch-rows, so that a run of a million regions exports in the
    memory of one batch. The run itself is only read: nothing is recorded in it.

    \b
    Examples:
      urbangeo export --gpkg city/run.gpkg --layer regions -o regions.parquet
      urbangeo export --gpkg city/run.gpkg -o city/parquet      # every layer
      urbangeo export --gpkg city/run.gpkg --layer predictions --layer clusters -o out/

    \b
    Reading them back:
      python -c "import geopandas; print(geopandas.read_parquet('regions.parquet'))"
      duckdb -c "INSTALL spatial; LOAD spatial;
                 SELECT region_id, ST_Area(geometry) FROM 'regions.parquet' LIMIT 5"
    """
    from urbangeo.io.export import export as export_layers

    for result in export_layers(gpkg, output, list(layers) or None, batch_rows=batch_rows):
        message(f"{result.layer}: {result.rows:,} rows -> {result.path} ({_size(result.bytes)})")
