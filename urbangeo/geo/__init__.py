"""Geo layer: boundaries, square region grids, OSM roads and street-view sample points.

Nothing here imports torch: these functions run inside light environments too.
"""

from urbangeo._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "City": ".boundary",
        "list_cities": ".boundary",
        "get_city": ".boundary",
        "load_boundary": ".boundary",
        "boundary_from_file": ".boundary",
        "boundary_layer": ".boundary",
        "boundary_from_bbox": ".boundary",
        "parse_bbox": ".boundary",
        "metric_crs": ".crs",
        "grid_crs": ".crs",
        "utm_crs": ".crs",
        "check_bbox": ".limits",
        "check_point_count": ".limits",
        "MAX_SV_POINTS": ".limits",
        "make_grid": ".grid",
        "merge_lines": ".linemerge",
        "unique_undirected": ".linemerge",
        "load_roads": ".roads",
        "sample_points": ".sampling",
        "check_sampling_settings": ".sampling",
        "grid_stage": ".stages",
        "sample_stage": ".stages",
    },
)
