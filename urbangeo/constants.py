"""Names shared by every module: layers, columns, CRS and defaults.

Stages exchange data through one GeoPackage per run; these constants are the contract between
them, the CLI and the QGIS plugin.
"""

from __future__ import annotations

# --- GeoPackage layers -------------------------------------------------------------------------
LAYER_BOUNDARY = "boundary"
LAYER_REGIONS = "regions"
LAYER_ROADS = "roads"
LAYER_SV_POINTS = "sv_points"
LAYER_IMAGES = "images"
LAYER_CAPTIONS = "captions"
LAYER_REGION_EMBEDDINGS = "region_embeddings"
LAYER_PREDICTIONS = "predictions"
LAYER_CLUSTERS = "clusters"
LAYER_INDICATORS = "indicators"

# --- Columns -----------------------------------------------------------------------------------
REGION_ID = "region_id"
POINT_ID = "point_id"
COL = "col"
ROW = "row"
AREA_M2 = "area_m2"
INSIDE_SHARE = "inside_share"
HEADING = "heading"
LON = "lon"
LAT = "lat"
ROAD_ID = "road_id"
HIGHWAY = "highway"
LENGTH_M = "length_m"
NAME = "name"
SOURCE = "source"

# images layer (one row per image, fetched or not): the contract between imagery, captions
# and the model. ``path`` is relative to the GeoPackage's folder.
IMAGE_ID = "image_id"
KIND = "kind"
#: A region's image seen from above: a rendered OSM map, an aerial or satellite raster, or an
#: XYZ service's tiles (column ``source`` of the images layer says which).
KIND_OVERHEAD = "overhead"
KIND_STREETVIEW = "streetview"
#: Older spellings of image kinds, read (and accepted as settings) for one release with a
#: deprecation message: runs written by urbangeo 0.1 name overhead images "satellite".
LEGACY_KINDS: dict[str, str] = {"satellite": KIND_OVERHEAD}
#: Deprecated alias of :data:`KIND_OVERHEAD` (goes in the next release).
KIND_SATELLITE = KIND_OVERHEAD
PATH = "path"
STATUS = "status"
STATUS_OK = "ok"
STATUS_MISSING = "missing"
STATUS_FAILED = "failed"
REASON = "reason"
WIDTH = "width"
HEIGHT = "height"
SHA256 = "sha256"

# captions table (several candidates per image; one is selected by consensus)
CAPTION = "caption"
BACKEND = "backend"
MODEL = "model"
SCORE = "score"
SELECTED = "selected"

# --- Stages, in the order data flows (a stage's output invalidates every later one) -----------
STAGES = (
    "grid",
    "sample",
    "tiles",
    "streetview",
    "caption",
    "train",
    "embed",
    "indicators",
    "predict",
    "cluster",
    "map",
)
#: What each stage reads from the stages before it. Redoing a stage makes every stage that
#: reads it, directly or not, stale; its siblings (tiles and streetview) stay as they are.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "grid": (),
    "sample": ("grid",),
    "tiles": ("grid", "sample"),  # sample: the extract its roads came from
    "streetview": ("sample",),
    "caption": ("tiles", "streetview"),
    "train": ("caption",),
    "embed": ("train", "tiles", "streetview"),
    "indicators": ("grid", "sample"),
    "predict": ("embed", "indicators"),
    "cluster": ("embed", "indicators"),
    "map": ("sample", "caption", "predict", "cluster", "indicators"),
}
RUN_GPKG = "run.gpkg"
RUN_TOML = "run.toml"

# --- Files beside the GeoPackage ---------------------------------------------------------------
IMAGES_DIR = "images"
OVERHEAD_DIR = "images/overhead"
#: Where runs written by urbangeo 0.1 keep their overhead images (still read, never moved).
LEGACY_OVERHEAD_DIR = "images/satellite"
#: Deprecated alias of :data:`OVERHEAD_DIR` (goes in the next release).
SATELLITE_DIR = OVERHEAD_DIR
STREETVIEW_DIR = "images/streetview"
CAPTIONS_JSONL = "captions.jsonl"
CHECKPOINTS_DIR = "checkpoints"
EMBEDDINGS_PARQUET = "embeddings.parquet"
METRICS_JSON = "metrics.json"
MAPS_DIR = "maps"

# --- CRS ---------------------------------------------------------------------------------------
WGS84 = "EPSG:4326"

# --- Defaults ----------------------------------------------------------------------------------
DEFAULT_CITY = "sao-paulo"
DEFAULT_CELL_SIZE_M = 1000.0
DEFAULT_INTERVAL_M = 500.0
#: Sample points closer than this are merged; about the width of a junction, far below the
#: 500 m interval, so that only the duplicates produced where road lines meet are merged.
DEFAULT_MERGE_TOLERANCE_M = 25.0
#: A grid with more cells than this (counted over the boundary's bounding box) needs ``force``.
MAX_CELLS = 1_000_000
DEFAULT_NETWORK = "drive"
NETWORK_TYPES = ("drive", "walk", "all")

#: GeoPackage version written: QGIS 3.22's GDAL 3.6 expects 1.3.
GPKG_VERSION = "1.3"
