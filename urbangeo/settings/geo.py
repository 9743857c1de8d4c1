"""Settings of the geo stages: ``grid`` and ``sample``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.geo.limits import MAX_SV_POINTS, check_bbox
from urbangeo.settings._base import StageSettings, setting


@dataclass(frozen=True)
class GridSettings(StageSettings, stage="grid"):
    """``grid``: square regions over a boundary."""

    city: str | None = setting(
        None,
        "A bundled city (see `urbangeo cities`).",
        unit="NAME",
        plugin="Bundled city",
        plugin_kind="string",
    )
    boundary_file: Path | None = setting(
        None,
        "A polygon file GDAL reads (GeoPackage, GeoJSON, Shapefile...), any CRS.",
        flag="--boundary",
        plugin="Boundary polygon layer",
        plugin_kind="vector",
    )
    boundary_layer: str | None = setting(
        None,
        "The layer of the --boundary file to use. Needed when the file has several polygon "
        "layers; otherwise its only (polygon) layer is used.",
        unit="NAME",
        flag="--layer",
    )
    boundary_crs: str | None = setting(
        None,
        "The CRS of the --boundary file's coordinates, when the file names none or a wrong one "
        "(a GeoJSON without a 'crs' member is read as WGS84 degrees).",
        unit="CRS",
    )
    bbox: tuple[float, ...] | None = setting(
        None, "A rectangle in WGS84 degrees.", unit="W,S,E,N", plugin="Extent", plugin_kind="extent"
    )
    place: str | None = setting(
        None, "A place name geocoded with OSM (online).", unit="NAME", plugin="Place name (online)"
    )
    cell_size: float = setting(
        C.DEFAULT_CELL_SIZE_M,
        "Side of the square cells.",
        unit="METRES",
        min=0,
        min_open=True,
        plugin="Cell size (m)",
    )
    crs: str | None = setting(
        None,
        "Projected CRS in metres of the grid (e.g. EPSG:3067). Default: the local UTM zone, "
        "for areas one zone holds (within 80°S-84°N, lengths off by at most 1 %).",
        unit="CRS",
    )
    force: bool = setting(
        False, f"Build grids with more than {C.MAX_CELLS:,} cells in the bounding box."
    )

    def check(self) -> None:
        if self.city is not None:
            from urbangeo.geo.boundary import get_city

            get_city(self.city)  # an unknown city fails here, listing the offline options
        if self.bbox is not None and len(self.bbox) != 4:
            raise InputError(
                f"[grid] bbox needs 4 numbers W,S,E,N, not {len(self.bbox)}.",
                hint="e.g. --bbox 24.93,60.16,24.96,60.18",
            )
        sources = [s for s in (self.boundary_file, self.bbox, self.place) if s is not None]
        if len(sources) > 1:
            raise InputError(
                "Give one boundary source: --boundary, --bbox or --place.",
                hint="A bundled --city gives way to any of them.",
            )
        for name, flag in (("boundary_layer", "--layer"), ("boundary_crs", "--boundary-crs")):
            if getattr(self, name) is not None and self.boundary_file is None:
                raise InputError(
                    f"[grid] {name} ({flag}) applies to a --boundary file, and none is given.",
                    hint=f"Give --boundary FILE, or leave {flag} out.",
                )
        if self.crs is not None or self.boundary_crs is not None:
            from urbangeo.geo.crs import grid_crs, user_crs

            if self.crs is not None:
                grid_crs(self.crs)  # unknown, geographic or not in metres: refused before work
            if self.boundary_crs is not None:
                user_crs(self.boundary_crs)
        if self.bbox is not None:
            check_bbox(*self.bbox)
            if self.crs is None:
                from urbangeo.geo.boundary import boundary_from_bbox
                from urbangeo.geo.crs import utm_crs

                utm_crs(boundary_from_bbox(*self.bbox))  # an area no UTM zone holds


@dataclass(frozen=True)
class SampleSettings(StageSettings, stage="sample"):
    """``sample``: street-view points along the roads."""

    roads: Path | None = setting(
        None,
        "Road source: an OSM extract (.osm.pbf, .osm, .osm.bz2) or a line vector file. "
        "Default: the run's bundled city, else downloaded with osmnx (online).",
        plugin="Road file (.osm.pbf, .osm, lines)",
    )
    city: str | None = setting(None, "Take roads from this bundled city's extract.", unit="NAME")
    network: str = setting(
        C.DEFAULT_NETWORK,
        "Which roads: 'drive' (public streets that cars, and street-view cars, drive), "
        "'walk' (walkable ways) or 'all' (every highway).",
        choices=C.NETWORK_TYPES,
        plugin="Road network",
    )
    interval: float = setting(
        C.DEFAULT_INTERVAL_M,
        "Distance between street-view points along the roads.",
        unit="METRES",
        min=0,
        min_open=True,
        plugin="Interval (m)",
    )
    merge_tolerance: float = setting(
        C.DEFAULT_MERGE_TOLERANCE_M,
        "Merge sample points closer than this (duplicates where roads meet).",
        unit="METRES",
        min=0,
    )
    force: bool = setting(
        False,
        f"Sample more than {MAX_SV_POINTS:,} street-view points (estimated before sampling as "
        "road length / interval).",
        runtime=True,
    )

    def check(self) -> None:
        if self.merge_tolerance >= self.interval:
            raise InputError(
                f"[sample] merge_tolerance ({self.merge_tolerance:g} m) must be less than the "
                f"interval ({self.interval:g} m): points that close would be merged away.",
                hint="Lower --merge-tolerance (e.g. to a tenth of --interval) or raise --interval.",
            )
