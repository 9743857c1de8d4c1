"""Input/output: GeoPackage conventions, run records and the run lock, OSM extracts, the HTTP
client, the bounded worker pool and atomic files."""

from urbangeo._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "atomic_path": ".files",
        "write_bytes_atomic": ".files",
        "write_text_atomic": ".files",
        "sha256_file": ".files",
        "check_can_write": ".gpkg",
        "list_layers": ".gpkg",
        "read_layer": ".gpkg",
        "write_layers": ".gpkg",
        "HttpClient": ".http",
        "HttpError": ".http",
        "RetryPolicy": ".http",
        "run_lock": ".lock",
        "read_lock": ".lock",
        "open_extract": ".osm",
        "run_extract": ".osm",
        "BoundedPool": ".pool",
        "open_raster": ".raster",
        "StageRecord": ".runs",
        "StageResult": ".runs",
        "read_stage_records": ".runs",
    },
)
