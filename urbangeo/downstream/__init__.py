"""Downstream tasks on region embeddings: indicators, prediction, clusters, metrics.

- :mod:`.tables`: embeddings and indicator tables read and aligned by ``region_id``;
- :mod:`.indicators`: ground truth from tables, points, polygons, rasters and OSM;
- :mod:`.splits`, :mod:`.heads`, :mod:`.metrics`, :mod:`.predict`: the prediction protocol;
- :mod:`.cluster`: PCA + KMeans;
- :mod:`.stages`: the stage functions on a run's GeoPackage (what the CLI calls).

Importing this package is cheap: torch, scikit-learn, folium and matplotlib load when used.
"""

from urbangeo._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "cluster_embeddings": ".cluster",
        "from_osm": ".indicators",
        "from_points": ".indicators",
        "from_polygons": ".indicators",
        "from_raster": ".indicators",
        "from_region_table": ".indicators",
        "PredictionReport": ".predict",
        "evaluate": ".predict",
        "transfer": ".predict",
        "block_split": ".splits",
        "random_split": ".splits",
        "cluster_stage": ".stages",
        "indicators_stage": ".stages",
        "predict_stage": ".stages",
        "transfer_stage": ".stages",
        "Dataset": ".tables",
        "load_embeddings": ".tables",
        "load_indicators": ".tables",
    },
)
