"""Ground-truth indicators attached to regions, from tables, points, polygons, rasters, OSM.

Every function returns a table indexed by ``region_id`` with one row per region and one column
per indicator. The rules:

- **Region table** (CSV keyed by ``region_id``): joined as it is; rows naming no region are
  dropped with a warning.
- **Points** (CSV with ``lon``/``lat`` in WGS84): each point goes to the region that contains
  it (a point on a shared edge to one of them); its values are aggregated per region by
  ``sum`` (regions without points get 0) or ``mean`` (NaN); without value columns the points
  are counted. Points outside every region are dropped with a warning.
- **Polygons** (area-weighted interpolation): an *extensive* value (a count such as
  population) is split by area: a region receives ``value × area(source ∩ region) /
  area(source)`` from every source polygon, so totals are kept where the regions cover the
  sources. An *intensive* value (a density, a share) becomes the mean of the sources weighted
  by their overlap area with the region.
- **Raster** (zonal statistics, e.g. a WorldPop GeoTIFF): the regions are reprojected to the
  raster's CRS; a pixel belongs to the region that contains its centre (rasterio's
  rasterisation rule); ``sum`` or ``mean`` of the valid (not nodata) pixels; NaN for a region
  with no valid pixel (outside the raster, or smaller than a pixel).
- **OSM** (from the run's ``.osm.pbf`` extract, read with pyrosm): ``osm_buildings`` (count,
  by each building's representative point), ``osm_building_area_m2`` (footprint area inside
  the region), ``osm_pois`` (amenities, shops and tourism features, by representative point),
  ``osm_road_length_m`` (length of every highway inside the region).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.geo.boundary import OSM_DERIVED, City, run_city
from urbangeo.io.osm import NETWORK_ALL, open_extract

AGGREGATIONS = ("sum", "mean")
POLYGON_KINDS = ("extensive", "intensive")
OSM_COLUMNS = ("osm_buildings", "osm_building_area_m2", "osm_pois", "osm_road_length_m")
#: The share of a region a city's real indicator polygons must cover for its value to be known
#: (not 1.0: the hexagons' shared edges leave slivers of rounding).
CITY_MIN_COVERAGE = 0.99
#: How a stage record names indicators from files the user gave.
GIVEN = "given"


def _index(regions: gpd.GeoDataFrame) -> pd.Index:
    return pd.Index(regions[C.REGION_ID].astype(str), name=C.REGION_ID)


def _metric(regions: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if regions.crs is None:
        raise InputError("The regions have no CRS.", hint="Build them with `urbangeo grid`.")
    if not regions.crs.is_projected:
        regions = regions.to_crs(regions.estimate_utm_crs())
    return regions


def _numeric(frame: pd.DataFrame, columns: list[str] | None, skip: set[str], what: str) -> list:
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise InputError(
                f"Column(s) {', '.join(missing)} not in the {what}.",
                hint=f"Columns: {', '.join(map(str, frame.columns))}.",
            )
        bad = [c for c in columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise InputError(f"Column(s) {', '.join(bad)} of the {what} are not numeric.")
        return list(columns)
    return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV (or Parquet) file as a DataFrame, with a clear error if it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"File {path} does not exist.")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:
        raise InputError(f"Cannot read {path}: {type(exc).__name__}: {exc}") from exc


def from_region_table(
    regions: gpd.GeoDataFrame, table: pd.DataFrame, columns: list[str] | None = None
) -> pd.DataFrame:
    """Indicator columns of a table keyed by region_id, one row per region (NaN if absent)."""
    if C.REGION_ID not in table.columns:
        raise InputError(
            f"The table has no '{C.REGION_ID}' column.",
            hint="Key it by region_id, or give lon/lat points with --points.",
        )
    table = table.assign(**{C.REGION_ID: table[C.REGION_ID].astype(str)})
    cols = _numeric(table, columns, {C.REGION_ID, "lon", "lat", "x", "y"}, "table")
    index = _index(regions)
    if table[C.REGION_ID].duplicated().any():
        raise InputError("The table has duplicated region ids.", hint="Give one row per region.")
    matched = table[C.REGION_ID].isin(index)
    if not matched.any():
        raise InputError(
            "No row of the table names a region of this run "
            f"(e.g. {table[C.REGION_ID].iloc[0]!r}; regions look like {index[0]!r}).",
            hint="Use the ids of the run's 'regions' layer.",
        )
    if not matched.all():
        warnings.warn(
            f"{int((~matched).sum())} row(s) name no region of this run; dropped.",
            UrbangeoWarning,
            stacklevel=2,
        )
    return table.set_index(C.REGION_ID)[cols].reindex(index)


def from_points(
    regions: gpd.GeoDataFrame,
    points: pd.DataFrame,
    columns: list[str] | None = None,
    *,
    agg: str = "sum",
    lon: str = "lon",
    lat: str = "lat",
    count_name: str = "point_count",
) -> pd.DataFrame:
    """Values of lon/lat points aggregated per containing region (see the module docstring)."""
    if agg not in AGGREGATIONS:
        raise InputError(f"Unknown aggregation {agg!r}.", hint="Choose sum or mean.")
    if lon not in points.columns or lat not in points.columns:
        raise InputError(
            f"The points table needs '{lon}' and '{lat}' columns (WGS84 degrees).",
            hint="Name the columns with --lon-col/--lat-col, or key the table by region_id.",
        )
    cols = _numeric(points, columns, {lon, lat, C.REGION_ID, "x", "y"}, "points table")
    geo = gpd.GeoDataFrame(
        points[cols], geometry=gpd.points_from_xy(points[lon], points[lat]), crs=C.WGS84
    ).to_crs(regions.crs)
    area = regions[[C.REGION_ID, regions.geometry.name]].assign(
        **{C.REGION_ID: regions[C.REGION_ID].astype(str)}
    )
    joined = gpd.sjoin(geo, area, how="left", predicate="intersects")
    joined = joined[~joined.index.duplicated(keep="first")]  # a point on a shared edge
    outside = int(joined[C.REGION_ID].isna().sum())
    if outside:
        warnings.warn(
            f"{outside} of {len(points)} point(s) lie in no region; dropped.",
            UrbangeoWarning,
            stacklevel=2,
        )
    joined = joined.dropna(subset=[C.REGION_ID])
    index = _index(regions)
    if not cols:
        counts = joined.groupby(C.REGION_ID).size()
        return pd.DataFrame({count_name: counts.reindex(index, fill_value=0).astype(float)})
    grouped = joined.groupby(C.REGION_ID)[cols]
    out = grouped.sum() if agg == "sum" else grouped.mean()
    return out.reindex(index, fill_value=0.0 if agg == "sum" else np.nan).astype(float)


def from_polygons(
    regions: gpd.GeoDataFrame,
    sources: gpd.GeoDataFrame,
    columns: list[str] | None = None,
    *,
    kind: str = "extensive",
    min_coverage: float | None = None,
) -> pd.DataFrame:
    """Area-weighted interpolation of polygon values onto the regions (module docstring).

    ``min_coverage`` (0-1): NaN for a region less than this share of which the sources cover.
    """
    if kind not in POLYGON_KINDS:
        raise InputError(f"Unknown kind {kind!r}.", hint="Choose extensive or intensive.")
    if min_coverage is not None and not 0 <= min_coverage <= 1:
        raise InputError(f"min_coverage must be between 0 and 1, not {min_coverage!r}.")
    if sources.crs is None:
        raise InputError("The polygon layer has no CRS.", hint="Give the file a CRS.")
    cols = _numeric(
        pd.DataFrame(sources.drop(columns=sources.geometry.name)),
        columns,
        {C.REGION_ID, "id", "fid"},
        "polygon layer",
    )
    if not cols:
        raise InputError("The polygon layer has no numeric column to interpolate.")
    area_regions = _metric(regions)
    src = sources.to_crs(area_regions.crs)
    src = src[src.geometry.notna() & ~src.geometry.is_empty].reset_index(drop=True)
    src = src.assign(_src=np.arange(len(src)), _src_area=src.geometry.area)
    src = src[src["_src_area"] > 0]
    target = area_regions[[C.REGION_ID, area_regions.geometry.name]].assign(
        **{C.REGION_ID: area_regions[C.REGION_ID].astype(str)}
    )
    pieces = gpd.overlay(
        src[[*cols, "_src", "_src_area", src.geometry.name]], target, how="intersection"
    )
    overlap = pieces.geometry.area.to_numpy()
    index = _index(regions)
    out = pd.DataFrame(index=index)
    for col in cols:
        values = pieces[col].to_numpy(dtype=np.float64)
        ok = np.isfinite(values)
        if kind == "extensive":
            part = np.where(ok, values * overlap / pieces["_src_area"].to_numpy(), 0.0)
            sums = pd.Series(part).groupby(pieces[C.REGION_ID].to_numpy()).sum()
            out[col] = sums.reindex(index, fill_value=0.0)
        else:
            w = np.where(ok, overlap, 0.0)
            num = pd.Series(np.where(ok, values, 0.0) * w).groupby(pieces[C.REGION_ID]).sum()
            den = pd.Series(w).groupby(pieces[C.REGION_ID].to_numpy()).sum()
            with np.errstate(invalid="ignore", divide="ignore"):
                out[col] = (num / den.replace(0, np.nan)).reindex(index)
    if min_coverage is not None:
        covered = pd.Series(overlap).groupby(pieces[C.REGION_ID].to_numpy()).sum()
        share = covered.reindex(index, fill_value=0.0) / target.geometry.area.to_numpy()
        out.loc[share.to_numpy() < min_coverage, :] = np.nan
    return out


def from_city(
    regions: gpd.GeoDataFrame, city: City, *, min_coverage: float = CITY_MIN_COVERAGE
) -> pd.DataFrame:
    """A bundled city's real indicators area-weighted onto ``regions`` (module docstring):
    NaN in every column for a region its polygons cover less than ``min_coverage`` of."""
    if city.indicators is None:
        raise InputError(
            f"{city.title} has no real indicators bundled ({OSM_DERIVED} counts only).",
            hint="Use the OSM counts (--osm) or give a source (--table, --polygons...).",
        )
    real = city.indicators
    polygons = gpd.read_file(real.path, engine="pyogrio")
    return from_polygons(
        regions, polygons, list(real.columns), kind=real.kind, min_coverage=min_coverage
    )


def default_city(gpkg: str | os.PathLike, *, file_sources: int) -> City | None:
    """The bundled city whose real indicators a run gets by default: the run's city (see
    :func:`urbangeo.geo.boundary.run_city`) when it has them and no file source is given."""
    if file_sources:
        return None
    city = run_city(gpkg)
    return city if city is not None and city.indicators is not None else None


def from_raster(
    regions: gpd.GeoDataFrame,
    raster: str | os.PathLike,
    *,
    band: int = 1,
    stat: str = "sum",
    name: str | None = None,
) -> pd.DataFrame:
    """Zonal ``sum`` or ``mean`` of a raster band per region (module docstring)."""
    import rasterio
    from rasterio import features, windows

    if stat not in AGGREGATIONS:
        raise InputError(f"Unknown statistic {stat!r}.", hint="Choose sum or mean.")
    path = Path(raster)
    if not path.exists():
        raise InputError(f"Raster {path} does not exist.")
    name = name or path.stem
    index = _index(regions)
    try:
        src = rasterio.open(path)
    except Exception as exc:
        raise InputError(f"Cannot open raster {path}: {exc}", hint="Give a GeoTIFF.") from exc
    with src:
        if src.crs is None:
            raise InputError(f"Raster {path} has no CRS.", hint="Give the raster a CRS.")
        if not 1 <= band <= src.count:
            raise InputError(f"Raster {path} has {src.count} band(s); band {band} asked.")
        shapes = regions.to_crs(src.crs).geometry
        west, south, east, north = shapes.total_bounds
        full = windows.Window(0, 0, src.width, src.height)
        try:
            window = (
                windows.from_bounds(west, south, east, north, transform=src.transform)
                .round_offsets(op="floor")
                .round_lengths(op="ceil")
                .intersection(full)
            )
        except Exception:  # rasterio raises WindowError when they do not overlap
            window = None
        result = np.full(len(index), np.nan)
        if window is not None and window.width > 0 and window.height > 0:
            data = src.read(band, window=window, masked=True)
            transform = src.window_transform(window)
            labels = features.rasterize(
                ((geom, i + 1) for i, geom in enumerate(shapes) if geom is not None),
                out_shape=data.shape,
                transform=transform,
                fill=0,
                dtype="int32",
            )
            values = np.ma.filled(data.astype(np.float64), np.nan)
            valid = (labels > 0) & np.isfinite(values)
            lab = labels[valid] - 1
            sums = np.bincount(lab, weights=values[valid], minlength=len(index))
            counts = np.bincount(lab, minlength=len(index))
            with np.errstate(invalid="ignore", divide="ignore"):
                result = np.where(counts > 0, sums if stat == "sum" else sums / counts, np.nan)
    return pd.DataFrame({name: result}, index=index)


def from_osm(
    regions: gpd.GeoDataFrame, osm_pbf: str | os.PathLike, *, boundary: gpd.GeoDataFrame | None
) -> pd.DataFrame:
    """Counts of buildings and POIs, building area and road length per region (pyrosm)."""
    metric = _metric(regions)
    area = (boundary if boundary is not None else regions).to_crs(C.WGS84).union_all()
    extract = open_extract(osm_pbf, bbox=area.envelope)
    buildings = extract.buildings()
    pois = extract.pois()
    roads = extract.roads(network=NETWORK_ALL)
    target = metric[[C.REGION_ID, metric.geometry.name]].assign(
        **{C.REGION_ID: metric[C.REGION_ID].astype(str)}
    )
    index = _index(regions)
    out = pd.DataFrame(index=index)
    out["osm_buildings"] = _count_points(buildings, target, index)
    out["osm_building_area_m2"] = _clipped_measure(buildings, target, index, "area")
    out["osm_pois"] = _count_points(pois, target, index)
    out["osm_road_length_m"] = _clipped_measure(roads, target, index, "length")
    return out


def _count_points(frame: gpd.GeoDataFrame | None, target: gpd.GeoDataFrame, index) -> pd.Series:
    if frame is None or len(frame) == 0:
        return pd.Series(0.0, index=index)
    pts = gpd.GeoDataFrame(
        geometry=frame.to_crs(target.crs).geometry.representative_point(), crs=target.crs
    )
    joined = gpd.sjoin(pts, target, how="inner", predicate="intersects")
    joined = joined[~joined.index.duplicated(keep="first")]
    return joined.groupby(C.REGION_ID).size().reindex(index, fill_value=0).astype(float)


def _clipped_measure(
    frame: gpd.GeoDataFrame | None, target: gpd.GeoDataFrame, index, measure: str
) -> pd.Series:
    if frame is None or len(frame) == 0:
        return pd.Series(0.0, index=index)
    geoms = frame.to_crs(target.crs).geometry.make_valid()
    src = gpd.GeoDataFrame(geometry=geoms, crs=target.crs)
    joined = gpd.sjoin(src, target, how="inner", predicate="intersects")
    region_geoms = target.geometry.to_numpy()[joined["index_right"].to_numpy()]
    clipped = shapely.intersection(joined.geometry.to_numpy(), region_geoms)
    values = shapely.area(clipped) if measure == "area" else shapely.length(clipped)
    return (
        pd.Series(values)
        .groupby(joined[C.REGION_ID].to_numpy())
        .sum()
        .reindex(index, fill_value=0.0)
    )


def source_label(source: str) -> str:
    """What kind of ground truth a stage record's source is: a bundled city's real indicators
    (``city:NAME``), ``OSM-derived`` counts (``osm:FILE``) or ``given`` (a user's file)."""
    from urbangeo.geo.boundary import CITY_PREFIX, get_city

    if source.startswith(CITY_PREFIX):
        return get_city(source.removeprefix(CITY_PREFIX)).indicator_label
    return OSM_DERIVED if source.startswith("osm:") else GIVEN


def summary(sources: list[str], frame: pd.DataFrame) -> str:
    """One sentence for the stage's message: the kinds of ground truth, and the regions left
    without any value (outside the data)."""
    labels = list(dict.fromkeys(source_label(s) for s in sources))
    text = f" Ground truth: {'; '.join(labels)}."
    empty = int(frame.isna().all(axis=1).sum()) if len(frame.columns) else 0
    if empty:
        text += (
            f" {empty} of {len(frame)} regions have no value (outside the data, or only partly "
            "inside it)."
        )
    return text
