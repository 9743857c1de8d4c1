"""What the user looks at: interactive folium maps, the QGIS project and static plots of a run's
products."""

from urbangeo._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "build_map": ".maps",
        "map_stage": ".stages",
        "write_map": ".maps",
        "write_project": ".project",
    },
)
