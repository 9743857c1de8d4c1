"""Downstream tasks on region embeddings: indicators, prediction, clusters, metrics.

- :mod:`.tables`: embeddings and indicator tables read and aligned by ``region_id``;
- :mod:`.indicators`: ground truth from tables, points, polygons, rasters and OSM;
- :mod:`.splits`, :mod:`.heads`, :mod:`.metrics`, :mod:`.predict`: the prediction protocol;
- :mod:`.cluster`: PCA + KMeans;
- :mod:`.stages`: the stage functions on a run's GeoPackage (what the CLI calls).

Importing this package is cheap: torch, scikit-learn, folium and matplotlib load when used.
"""
