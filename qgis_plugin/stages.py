"""What each urbangeo stage takes and writes, as plain data shared by the panel and Processing.

Pure Python (no QGIS import). A stage is one ``urbangeo`` subcommand; its parameters map to
command-line flags, and the layers it adds to the run's GeoPackage are loaded into QGIS after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """A stage parameter: a Processing parameter and the flag it becomes."""

    name: str
    flag: str
    kind: str  # number | int | enum | string | list | file | output | vector | extent | bool
    label: str
    default: object = None
    options: tuple[str, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class Stage:
    """One urbangeo subcommand."""

    name: str
    title: str
    help: str
    params: tuple[Param, ...]
    layers: tuple[str, ...]


GPKG = Param("GPKG", "--gpkg", "file", "Run GeoPackage")
OVERWRITE = Param("OVERWRITE", "--overwrite", "bool", "Replace existing layers", False)
NETWORKS = ("drive", "walk", "all")
TRAIN_MODES = ("urbanln", "urbanclip", "no-ipsi", "no-distill")
ENCODERS = ("trained", "frozen-clip", "random", "resnet18", "image-stats")

STAGES: dict[str, Stage] = {
    "grid": Stage(
        "grid",
        "Region grid",
        "Square regions over a boundary (a bundled city, a polygon file or a bounding box), "
        "in the local UTM zone, with region ids stable across runs.",
        (
            Param("CITY", "--city", "string", "Bundled city", optional=True),
            Param("BOUNDARY", "--boundary", "vector", "Boundary polygon layer", optional=True),
            Param("EXTENT", "--bbox", "extent", "Extent", optional=True),
            Param("PLACE", "--place", "string", "Place name (online)", optional=True),
            Param("CELL_SIZE", "--cell-size", "number", "Cell size (m)", 1000.0),
            Param("GPKG", "--gpkg", "output", "Run GeoPackage"),
            OVERWRITE,
        ),
        ("boundary", "regions"),
    ),
    "sample": Stage(
        "sample",
        "Street-view sample points",
        "A point every interval metres along the roads of the run's boundary, with the road's "
        "heading and the region that contains it.",
        (
            GPKG,
            Param("ROADS", "--roads", "file", "Road file (.osm.pbf, .osm, lines)", optional=True),
            Param("NETWORK", "--network", "enum", "Road network", "drive", NETWORKS),
            Param("INTERVAL", "--interval", "number", "Interval (m)", 500.0),
            OVERWRITE,
        ),
        ("roads", "sv_points"),
    ),
    "tiles": Stage(
        "tiles",
        "Overhead tiles",
        "One image per region: a map rendered offline from the run's OpenStreetMap data "
        "(default), a window of a GeoTIFF, or XYZ tiles mosaicked and cut to the region.",
        (
            GPKG,
            Param("RASTER", "--raster", "file", "GeoTIFF (instead of the OSM map)", optional=True),
            Param("XYZ", "--xyz", "string", "XYZ URL …/{z}/{x}/{y}.png", optional=True),
            Param("ZOOM", "--zoom", "int", "XYZ zoom level", optional=True),
            Param("SIZE", "--size", "int", "Image size (px)", 256),
            OVERWRITE,
        ),
        ("images",),
    ),
    "caption": Stage(
        "caption",
        "Captions",
        "Captions for every image from one or several captioners (offline OSM-grounded, any "
        "OpenAI-compatible endpoint, or a local transformers model), the consensus caption "
        "chosen by CAPTURE.",
        (
            GPKG,
            Param(
                "BACKEND",
                "--backend",
                "enum",
                "Captioner",
                "osm",
                ("osm", "openai", "transformers"),
            ),
            Param("MODELS", "--model", "list", "Models / styles (comma-separated)", optional=True),
            Param("BASE_URL", "--base-url", "string", "Endpoint URL (openai)", optional=True),
            OVERWRITE,
        ),
        (),
    ),
    "train": Stage(
        "train",
        "Pre-train CLIP (UrbanLN)",
        "Pre-trains CLIP on the run's image–caption pairs with 248-token text (IPSI) and "
        "momentum self-distillation; checkpoints beside the GeoPackage.",
        (
            GPKG,
            Param("MODEL", "--model", "string", "Architecture", "urbangeo-tiny-vit"),
            Param("MODE", "--mode", "enum", "Mode", "urbanln", TRAIN_MODES),
            Param("EPOCHS", "--epochs", "int", "Epochs", 10),
            Param("BATCH_SIZE", "--batch-size", "int", "Batch size", 64),
            Param("RESUME", "--resume", "bool", "Resume an interrupted run", False),
            OVERWRITE,
        ),
        (),
    ),
    "embed": Stage(
        "embed",
        "Region embeddings",
        "One vector per region from the frozen image encoder (mean of its images).",
        (
            GPKG,
            Param("ENCODER", "--encoder", "enum", "Encoder", "trained", ENCODERS),
            Param("CHECKPOINT", "--checkpoint", "file", "Checkpoint (transfer)", optional=True),
            OVERWRITE,
        ),
        ("region_embeddings",),
    ),
    "predict": Stage(
        "predict",
        "Predict indicators",
        "Prediction heads per indicator on the frozen embeddings: R², RMSE, MAE over seeds, "
        "beside a coordinates-only baseline; predictions and residuals as a layer.",
        (
            GPKG,
            Param("SEEDS", "--seeds", "int", "Seeds", 5),
            Param("SPLIT", "--split", "enum", "Split", "random", ("random", "block")),
            Param("BLOCK_SIZE", "--block-size", "number", "Block size (m)", optional=True),
            OVERWRITE,
        ),
        ("predictions",),
    ),
    "cluster": Stage(
        "cluster",
        "Clusters",
        "PCA + KMeans of the region embeddings, with a per-cluster indicator density plot.",
        (GPKG, Param("K", "--k", "string", "Clusters (a number or auto)", "3"), OVERWRITE),
        ("clusters",),
    ),
}


def build_args(stage: Stage, values: Mapping[str, object]) -> list[str]:
    """The command-line arguments of ``stage`` for parameter ``values`` (by parameter name).

    Values are already plain: a file path for ``vector`` parameters, ``"W,S,E,N"`` in WGS84
    for ``extent`` ones (the QGIS side converts layers and extents before calling this).
    """
    args = [stage.name]
    for param in stage.params:
        value = values.get(param.name, param.default)
        if value is None or value == "":
            if not param.optional and param.kind != "bool":
                raise ValueError(f"{param.label} is required for {stage.title}.")
            continue
        if param.kind == "bool":
            if value:
                args.append(param.flag)
            continue
        if param.kind == "list":
            for item in str(value).split(","):
                if item.strip():
                    args += [param.flag, item.strip()]
            continue
        if param.kind == "enum" and isinstance(value, int):
            value = param.options[value]
        if param.kind == "number":
            value = f"{float(value):g}"
        args += [param.flag, str(value)]
    return args


def run_args(
    *,
    city: str,
    run_dir: str,
    cell_size: float = 1000.0,
    interval: float = 500.0,
    network: str = "drive",
) -> list[str]:
    """Arguments of ``urbangeo run`` (the whole pipeline for a bundled city)."""
    return [
        "run",
        "--city",
        city,
        "-o",
        run_dir,
        "--cell-size",
        f"{float(cell_size):g}",
        "--interval",
        f"{float(interval):g}",
        "--network",
        network,
    ]
