"""Settings of the downstream stages: ``indicators``, ``predict``, ``cluster`` and ``map``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from urbangeo.errors import InputError
from urbangeo.settings._base import MAX_SEED, StageSettings, setting
from urbangeo.settings.common import ShardSettings

HEADS = ("mlp", "ridge")
SPLITS = ("random", "block")
#: How predict measures test scores (urbangeo.downstream.predict.CV).
CV = ("auto", "split", "kfold")
#: Baselines scored beside the embeddings; "random" and "image-stats" embed the run's images,
#: "location" encodes the region centroids with GeoCLIP (the optional extra "location").
BASELINES = ("coords", "random", "image-stats", "location", "none")
DEFAULT_BASELINES = ("coords", "random", "image-stats", "location")
MAP_TILES = ("osm", "none")


@dataclass(frozen=True)
class IndicatorsSettings(StageSettings, stage="indicators"):
    """``indicators``: ground truth per region from tables, points, polygons, rasters or OSM."""

    table: Path | None = setting(
        None,
        "A table keyed by region_id: its numeric columns are joined as they are.",
        unit="FILE.csv",
        exists=True,
    )
    points: Path | None = setting(
        None,
        "Points with lon/lat (WGS84): each goes to the region containing it; values are "
        "aggregated with --agg, or the points counted when the table has no value column.",
        unit="FILE.csv",
        exists=True,
    )
    agg: str = setting(
        "sum",
        "How --points values combine per region (sum: 0 where none; mean: empty).",
        choices=("sum", "mean"),
    )
    lon: str = setting("lon", "Longitude column of --points.", flag="--lon-col")
    lat: str = setting("lat", "Latitude column of --points.", flag="--lat-col")
    polygons: Path | None = setting(
        None,
        "A polygon file (any CRS) whose values are interpolated by area: an extensive value "
        "(a count) is split by the share of each polygon's area in each region.",
        unit="FILE",
        exists=True,
    )
    polygon_layer: str | None = setting(None, "Layer of --polygons.", flag="--layer", unit="NAME")
    kind: str = setting(
        "extensive",
        "extensive: counts split by area; intensive: densities or shares averaged, weighted by "
        "overlap area.",
        choices=("extensive", "intensive"),
    )
    raster: Path | None = setting(
        None,
        "A raster (e.g. a WorldPop GeoTIFF): zonal --stat of the pixels whose centre lies in "
        "each region; nodata pixels skipped.",
        unit="FILE.tif",
        exists=True,
    )
    band: int = setting(1, "Band of --raster.", min=1)
    stat: str = setting("sum", "Zonal statistic of --raster.", choices=("sum", "mean"))
    osm: bool = setting(
        False,
        "OSM counts per region (osm_buildings, osm_building_area_m2, osm_pois, "
        "osm_road_length_m) from the run's OSM extract (--osm-file or the bundled city). The "
        "default when no other source is given.",
    )
    osm_file: Path | None = setting(
        None,
        "The .osm.pbf extract for the OSM counts (implies --osm; default: the run's bundled city).",
        unit="FILE.osm.pbf",
        exists=True,
    )
    columns: tuple[str, ...] | None = setting(
        None,
        "Use only these columns of --table/--points/--polygons (repeatable).",
        multiple=True,
        unit="COL",
    )
    name: str | None = setting(
        None,
        "Column name of --raster (default: the file's name) or of the --points count (default "
        "point_count).",
        unit="COL",
    )

    @property
    def sources(self) -> int:
        """How many file sources these settings give (OSM counts when none)."""
        return sum(x is not None for x in (self.table, self.points, self.polygons, self.raster))

    @property
    def use_osm(self) -> bool:
        """Whether OSM counts are computed: asked for (--osm, --osm-file) or no other source."""
        return self.osm or self.osm_file is not None or self.sources == 0


@dataclass(frozen=True)
class PredictSettings(ShardSettings, stage="predict"):
    """``predict``: prediction heads on frozen embeddings, scored over seeds."""

    embeddings: Path | None = setting(
        None,
        "Embeddings table (.parquet or .csv): region_id plus numeric feature columns (or one "
        "column holding a vector per row).",
        exists=True,
    )
    indicators: Path | None = setting(
        None,
        "Indicator table (.csv, .parquet or a .gpkg): region_id plus indicator columns; lon/lat "
        "(WGS84) or x/y (metres) columns give coordinates.",
        exists=True,
    )
    targets: tuple[str, ...] | None = setting(
        None,
        "Indicator to predict (repeat for several). Default: every numeric column with at "
        "least 10 regions that is not constant.",
        flag="--target",
        multiple=True,
        unit="NAME",
    )
    seeds: int = setting(
        5,
        "Number of random splits (seeds 0..N-1); metrics are mean ± std over them.",
        min=1,
        max=1000,
        plugin="Seeds",
    )
    cv: str = setting(
        "auto",
        "How test scores are measured. 'split': one 6:2:2 split per seed. 'kfold': repeated "
        "k-fold cross-validation, every region tested once per repeat by a model that did not "
        "see it (trained on 3/4, validated on 1/4 of the others). 'auto': kfold for a target "
        "with fewer than 100 regions, where a 6:2:2 test set of under 20 regions gives an R² "
        "whose spread is as large as the differences between models.",
        choices=CV,
        plugin="Cross-validation",
    )
    folds: int = setting(5, "Folds of the k-fold cross-validation.", min=2, max=100)
    repeats: int | None = setting(
        None,
        "Repeats of the k-fold cross-validation (seeds 0..N-1, each reshuffles the folds); "
        "metrics are mean ± std over them. Default: --seeds.",
        min=1,
        max=1000,
    )
    split: str = setting(
        "random",
        "'random': 6:2:2 over regions. 'block': whole squares of --block-size metres go to "
        "train, val or test (honest when neighbours share values).",
        choices=SPLITS,
        plugin="Split",
    )
    block_size: float | None = setting(
        None,
        "Side of the blocks of --split block, e.g. 5000 for 1 km regions.",
        unit="METRES",
        min=0,
        min_open=True,
        plugin="Block size (m)",
    )
    log: bool = setting(True, "Fit ln(1 + y) (--no-log: the values as they are).")
    predictions_from: str = setting(
        "ensemble",
        "Which predictions go into the 'predictions' layer: each region's out-of-fold "
        "predictions averaged over the seeds (repeats) whose test held it, or one seed's "
        "(repeat's) model; NAME_split tells where each value came from (test, never-tested, "
        "fold k).",
        unit="ensemble|SEED",
    )
    model: str = setting(
        "mlp",
        "Model whose predictions are written to the layer.",
        choices=HEADS,
        flag="--head",
        deprecated=("--model",),
    )
    baselines: tuple[str, ...] = setting(
        DEFAULT_BASELINES,
        "Baselines scored beside the embeddings, with the same splits: coords (k-NN on region "
        "coordinates), random (a randomly initialised encoder of the same architecture), "
        "image-stats (colour statistics of the images), the two embedded from the run's images "
        "once and cached in baselines/ beside it (left out when the run has no images), and "
        "location (GeoCLIP's pretrained location encoder at the region centroids, cached there "
        "too; left out when the extra urbangeo[location] is not installed); none for no "
        "baseline.",
        choices=BASELINES,
        unit="NAME,...",
        plugin="Baselines (comma-separated)",
    )
    features: tuple[str, ...] | None = setting(
        None,
        "A feature set scored instead of the run's embeddings: sources separated by commas, "
        "each a file (.parquet/.csv like --embeddings) or a name in the run's folder: run (its "
        "own embeddings, or --embeddings; also the encoder name embed recorded), NAME for "
        "embeddings_NAME.parquet beside the GeoPackage or in its baselines/ (random, "
        "image-stats, location...). Sources are joined by region_id, each block standardised "
        "and divided by the square root of its column count. Repeat for several sets, scored "
        "side by side on the same regions, splits, seeds and heads; the first fills the layer.",
        flag="--features",
        multiple=True,
        unit="SRC[,SRC...]",
    )
    compare: bool = setting(
        False,
        "With --features: also score each source alone and all of them together.",
    )
    output: Path | None = setting(
        None, "Write the metrics as JSON.", flag="--output", unit="FILE.json"
    )

    def __post_init__(self) -> None:
        _number_as_text(self, "predictions_from")  # run.toml: predictions_from = 3
        super().__post_init__()

    def check(self) -> None:
        if self.predictions_from != "ensemble" and not self.predictions_from.isdigit():
            raise InputError(
                "[predict] predictions_from (--predictions-from) must be 'ensemble' or a seed "
                f"number, not {self.predictions_from!r}."
            )
        if "none" in self.baselines and len(self.baselines) > 1:
            raise InputError(
                "[predict] baselines (--baselines) 'none' cannot be combined with others, not "
                f"{','.join(self.baselines)}."
            )
        if self.compare and not self.features:
            raise InputError(
                "[predict] compare (--compare) scores the sources of --features: give some.",
                hint="e.g. --features run,text.parquet --compare",
            )

    @property
    def baseline_names(self) -> tuple[str, ...]:
        """The baselines asked for (without 'none')."""
        return tuple(b for b in self.baselines if b != "none")

    @property
    def predictions_seed(self) -> int | None:
        """The seed whose model fills the layer (None: the ensemble)."""
        return None if self.predictions_from == "ensemble" else int(self.predictions_from)


@dataclass(frozen=True)
class ClusterSettings(StageSettings, stage="cluster"):
    """``cluster``: PCA + KMeans of the region embeddings."""

    embeddings: Path | None = setting(
        None, "Embeddings table (region_id + features) instead of the run's own.", exists=True
    )
    indicators: Path | None = setting(
        None,
        "Indicator table for the density plot (default: the run's indicators).",
        exists=True,
    )
    k: int | str = setting(
        3,
        "Number of clusters; 'auto' takes the best silhouette of --k-range.",
        unit="N|auto",
        plugin="Clusters (a number or auto)",
    )
    k_range: tuple[int, ...] = setting(
        (2, 8),
        "Smallest and largest k whose silhouette is reported (and among which --k auto chooses).",
        unit="MIN MAX",
        min=2,
    )
    components: int = setting(10, "Principal components kept before KMeans.", min=1)
    seed: int = setting(0, "Seed of PCA and KMeans.", min=0, max=MAX_SEED)
    output: Path | None = setting(
        None,
        "Also write region_id, cluster, pc1, pc2 as CSV (or .parquet).",
        flag="--output",
        unit="FILE.csv",
    )
    plot: Path | None = setting(
        None,
        "Density plot path. Default with --gpkg: maps/cluster_density.png beside it.",
        unit="FILE.png",
    )
    log: bool = setting(True, "Densities of ln(1 + y) in the plot.", cli=False)

    def check(self) -> None:
        if len(self.k_range) != 2 or self.k_range[0] > self.k_range[1]:
            given = " ".join(map(str, self.k_range))
            raise InputError(
                "[cluster] k_range (--k-range) must be two numbers MIN MAX with MIN <= MAX, "
                f"not {given}.",
                hint="e.g. --k-range 2 8 (in run.toml: k_range = [2, 8]).",
            )
        k = self.k
        if isinstance(k, str) and k.strip().isdigit():
            k = int(k)
            object.__setattr__(self, "k", k)
        if k != "auto" and not (isinstance(k, int) and not isinstance(k, bool) and k >= 2):
            raise InputError(
                f"[cluster] k (--k) must be a number of clusters (2 or more) or 'auto', not {k!r}."
            )

    @property
    def k_value(self) -> int | str:
        """``k`` as the library takes it: a number or 'auto'."""
        return self.k


@dataclass(frozen=True)
class MapSettings(StageSettings, stage="map"):
    """``map``: an offline folium map of the run's products."""

    output: Path | None = setting(
        None,
        "Where to write the map. Default: maps/map.html beside the GeoPackage.",
        flag="--output",
        unit="FILE.html",
    )
    tiles: str = setting(
        "osm",
        "Base map: OpenStreetMap tiles (shown when online), or none (the page then fetches "
        "nothing at all).",
        choices=MAP_TILES,
    )


@dataclass(frozen=True)
class SimilarSettings(StageSettings, stage="similar"):
    """``similar``: the regions whose embeddings are closest to some regions' (not a pipeline
    stage: a question asked of a run, whose answer is its layer ``similar``)."""

    regions: tuple[str, ...] | None = setting(
        None,
        "The region to find regions like (its region_id); repeat for several: regions like "
        "their mean.",
        flag="--region",
        multiple=True,
        unit="ID",
    )
    k: int = setting(20, "How many of the most similar regions to list and write.", min=1, unit="N")
    encoder: str | None = setting(
        None,
        "Whose embeddings to compare, by name: run (the default: the run's own), or NAME for "
        "embeddings_NAME.parquet beside the GeoPackage or in its baselines/ folder (as "
        "predict --features resolves names).",
        unit="NAME",
    )
    embeddings: Path | None = setting(
        None,
        "Embeddings table (region_id + features) to compare instead of the run's own.",
        exists=True,
    )

    def check(self) -> None:
        if not self.regions:
            raise InputError(
                "[similar] regions (--region) must name at least one region.",
                hint="e.g. --region 12_7 (a region_id of the run's regions layer).",
            )
        if self.encoder is not None and self.embeddings is not None:
            raise InputError(
                "[similar] give either encoder (--encoder) or embeddings (--embeddings), not both."
            )


def _number_as_text(settings: StageSettings, name: str) -> None:
    """A whole number given for a text setting that takes numbers or a word (k = 3)."""
    value = getattr(settings, name)
    if isinstance(value, int) and not isinstance(value, bool):
        object.__setattr__(settings, name, str(value))
