"""Encoder ``patches``: patch embeddings (points or polygons, one vector each) per region.

``urbangeo embed --encoder patches --patches FILE [--patch-column NAME]`` reads a GeoParquet
or GeoPackage (or any vector file GDAL reads) whose rows are patches with a vector: Earth
Index, Clay, Major TOM and the like. The vector column holds a list per row (GeoParquet), JSON
text (``[0.1, ...]``, a GeoPackage) or is spread over number columns ``NAME0 .. NAME{D-1}``;
by default the column named ``embedding``, ``embeddings``, ``vector`` or ``features``, else
the only list column. A Parquet file without GeoParquet metadata works too when it has a WKB
``geometry`` column (taken as lon/lat, EPSG:4326).

==========  ===================================================================================
patches     a region's vector
==========  ===================================================================================
polygons    the mean of the patches overlapping the region, each weighted by the area it shares
            with the region
points      the mean of the points inside the region (a point on the border between two
            regions counts in both)
==========  ===================================================================================

A region without any patch takes its nearest patch's vector, and ``patch_distance_m`` records
how far that patch is (0 for regions with patches of their own); ``n_patches`` counts the
patches averaged. Areas and distances are measured in the grid's CRS (or the UTM zone of the
grid when that CRS is geographic). Only patches within :data:`MARGIN_M` (or a tenth of the
grid's extent, if more) of the grid are read. No torch here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import shapely
from pyproj import CRS, Transformer
from scipy import sparse

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.model.encoders.region_encoder import (
    N_PATCHES,
    PATCH_DISTANCE,
    RegionEncoder,
    RegionVectors,
    vectors_frame,
)
from urbangeo.progress import message

if TYPE_CHECKING:
    from urbangeo.settings import EmbedSettings

#: Column names tried, in order, when ``--patch-column`` is not given.
VECTOR_NAMES = ("embedding", "embeddings", "vector", "features")
#: Patches farther than this from the grid (in metres) are not read.
MARGIN_M = 5000.0
PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")


class PatchEncoder(RegionEncoder, name="patches"):
    """Patch vectors averaged per region; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        column: str | None = None,
        attribution: str | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path} does not exist.", hint="Check the --patches path.")
        self.column = column
        self.attribution = attribution

    @classmethod
    def from_settings(cls, s: EmbedSettings) -> PatchEncoder:
        """``--patches``, ``--patch-column`` and ``--attribution`` of the embed stage."""
        return cls(cls.product_file(s, "patches"), column=s.patch_column, attribution=s.attribution)

    # --- reading -----------------------------------------------------------------------------

    def read(self, area: gpd.GeoSeries | None = None) -> tuple[gpd.GeoSeries, np.ndarray, str]:
        """The patches near ``area`` (all without it): geometries, ``[n, dim]`` vectors and
        the vector column's name. Rows without geometry or with a broken vector are dropped."""
        frame = self._read_frame(area)
        if frame.crs is None:
            raise InputError(
                f"{self.path} has no CRS, so its patches cannot be placed on the grid.",
                hint="Write it with its CRS (GeoParquet metadata, or a GeoPackage layer's SRS).",
            )
        vectors, column = patch_vectors(frame, self.column, source=str(self.path))
        keep = (
            frame.geometry.notna().to_numpy()
            & ~frame.geometry.is_empty.to_numpy()
            & np.isfinite(vectors).all(axis=1)
        )
        if not keep.all():
            message(
                f"{int((~keep).sum()):,} of {len(keep):,} patches of {self.path.name} have no "
                "geometry or a vector that is not finite; left out.",
                level="warning",
            )
        return frame.geometry[keep].reset_index(drop=True), vectors[keep], column

    def _read_frame(self, area: gpd.GeoSeries | None) -> gpd.GeoDataFrame:
        suffix = self.path.suffix.lower()
        crs = self._file_crs()
        bbox = None
        if area is not None and crs is not None:
            bbox = _margin_bounds(area, CRS.from_user_input(crs))
        try:
            if suffix in PARQUET_SUFFIXES:
                frame = self._read_parquet(bbox)
            else:
                frame = gpd.read_file(self.path, layer=self._layer(), bbox=bbox, engine="pyogrio")
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"Cannot read patches from {self.path}: {type(exc).__name__}: {exc}",
                hint="Give a GeoParquet or GeoPackage of points or polygons with a vector column.",
            ) from exc
        if bbox is not None and len(frame):  # also where the file could not filter
            frame = frame[frame.intersects(shapely.box(*bbox))]
        if not len(frame):
            raise InputError(
                f"{self.path} has no patches within {MARGIN_M / 1000:g} km of the grid.",
                hint="Give patch embeddings of the study area (check the file's CRS).",
            )
        return frame

    def _layer(self) -> str | None:
        """The first layer with geometry (named in a message when there are several)."""
        if not hasattr(self, "_layer_name"):
            layers = pyogrio.list_layers(self.path)
            spatial = [str(name) for name, kind in layers if kind]
            if len(spatial) > 1:
                message(f"{self.path.name} has {len(spatial)} layers; reading {spatial[0]!r}.")
            self._layer_name = spatial[0] if spatial else None
        return self._layer_name

    def _file_crs(self) -> Any:
        """The file's CRS without reading its rows (None if it has none)."""
        if self.path.suffix.lower() in PARQUET_SUFFIXES:
            meta = pq.read_schema(self.path).metadata or {}
            if b"geo" not in meta:
                return C.WGS84  # plain Parquet with WKB: lon/lat (see _read_parquet)
            geo = json.loads(meta[b"geo"])
            column = geo.get("columns", {}).get(geo.get("primary_column", "geometry"), {})
            return column.get("crs", "OGC:CRS84")  # absent: lon/lat; null: unknown
        try:
            return pyogrio.read_info(self.path, layer=self._layer()).get("crs")
        except Exception:  # unreadable: reported when the rows are read
            return None

    def _read_parquet(self, bbox: tuple[float, ...] | None) -> gpd.GeoDataFrame:
        meta = pq.read_schema(self.path).metadata or {}
        if b"geo" in meta:
            try:
                return gpd.read_parquet(self.path, bbox=bbox)
            except ValueError:  # no bbox covering column to filter on: read it all
                return gpd.read_parquet(self.path)
        frame = pd.read_parquet(self.path)
        name = next((c for c in ("geometry", "geom", "wkb_geometry") if c in frame), None)
        if name is None:
            raise InputError(
                f"{self.path} is a Parquet file without GeoParquet metadata or a geometry column.",
                hint="Write it as GeoParquet (geopandas: to_parquet), or add a WKB 'geometry' "
                "column.",
            )
        message(
            f"{self.path.name} has no GeoParquet metadata: reading its WKB column {name!r} "
            "as lon/lat (EPSG:4326)."
        )
        geometry = shapely.from_wkb(frame.pop(name).to_numpy())
        return gpd.GeoDataFrame(frame, geometry=geometry, crs=C.WGS84)

    # --- aggregation -------------------------------------------------------------------------

    def encode(self, regions: gpd.GeoDataFrame) -> RegionVectors:
        """Every region's vector, ``n_patches`` and ``patch_distance_m``."""
        if regions.crs is None:
            raise InputError("The regions layer has no CRS.", hint="Recreate it with grid.")
        work = regions.crs if CRS.from_user_input(regions.crs).is_projected else None
        work = work or regions.estimate_utm_crs()
        zones = regions.geometry.to_crs(work)
        geoms, vectors, column = self.read(zones)
        geoms = geoms.to_crs(work)
        kinds = set(geoms.geom_type)
        points = kinds <= {"Point"}
        if not (points or kinds <= {"Polygon", "MultiPolygon"}):
            raise InputError(
                f"{self.path} mixes or holds unsupported geometries ({', '.join(sorted(kinds))}).",
                hint="Give points (patch centres) or polygons (patch footprints), not both.",
            )
        cells = np.asarray(zones.values, dtype=object)
        patches = np.asarray(geoms.values, dtype=object)
        tree = shapely.STRtree(patches)
        region_i, patch_j = tree.query(cells, predicate="intersects")
        if points:
            weights = np.ones(len(region_i))
        else:
            weights = shapely.area(shapely.intersection(cells[region_i], patches[patch_j]))
            keep = weights > 0
            region_i, patch_j, weights = region_i[keep], patch_j[keep], weights[keep]
        n = len(cells)
        matrix = sparse.csr_matrix((weights, (region_i, patch_j)), shape=(n, len(patches)))
        total = np.bincount(region_i, weights=weights, minlength=n)
        n_patches = np.bincount(region_i, minlength=n).astype(np.int64)
        out = np.asarray(matrix @ vectors, dtype=np.float64)
        has = total > 0
        out[has] /= total[has, None]
        distance = np.zeros(n, dtype=np.float64)
        empty = np.flatnonzero(~has)
        if len(empty):
            pairs, dist = tree.query_nearest(cells[empty], return_distance=True, all_matches=False)
            out[empty[pairs[0]]] = vectors[pairs[1]]
            distance[empty[pairs[0]]] = dist
        dim = vectors.shape[1]
        frame = vectors_frame(
            regions[C.REGION_ID].tolist(), out, {N_PATCHES: n_patches, PATCH_DISTANCE: distance}
        )
        what = "points" if points else "polygons"
        rule = (
            "the mean of the patch points inside it"
            if points
            else "the mean of the patches overlapping it, weighted by the area they share"
        )
        abstract = (
            f"Region embeddings: per region, {rule} ({self.path.name}, column {column}, "
            f"{dim} values); regions without patches take the nearest one's vector "
            "(patch_distance_m: how far it is)."
        )
        info = {
            "encoder": self.name,
            "patches": str(self.path.resolve()),
            "patch_column": column,
            "patch_geometry": what,
        }
        counts = {
            "regions": n,
            "regions_empty": 0,
            "regions_nearest": len(empty),
            "patches": len(patches),
            "patches_used": len(np.unique(patch_j)),
            "dim": dim,
        }
        quality = (N_PATCHES, PATCH_DISTANCE)
        title = f"patch embeddings {self.path.name}"
        return RegionVectors(
            frame, dim, quality, title, abstract, self.attribution, None, info, counts
        )


def patch_vectors(
    frame: pd.DataFrame, column: str | None = None, *, source: str = "patches"
) -> tuple[np.ndarray, str]:
    """``[n, dim]`` vectors of ``frame`` and the column they came from (see the module
    docstring for the forms and the default names)."""
    names = [c for c in frame.columns if not isinstance(frame[c].dtype, gpd.array.GeometryDtype)]
    if column is None:
        column = next((c for c in VECTOR_NAMES if c in names), None)
    if column is None:
        listed = [c for c in names if frame[c].dtype == object and _is_vector(_first(frame[c]))]
        if len(listed) == 1:
            column = listed[0]
    if column is None:
        raise InputError(
            f"Which column of {source} holds the vectors? None is named "
            f"{', '.join(VECTOR_NAMES)}, and no single column holds lists.",
            hint=f"Pass --patch-column NAME (columns: {', '.join(map(str, names[:15]))}).",
        )
    if column in names:
        values = frame[column]
        first = _first(values)
        if isinstance(first, str):
            rows = [json.loads(v) if isinstance(v, str) else None for v in values]
        elif _is_vector(first):
            rows = list(values)
        else:
            raise InputError(
                f"Column {column!r} of {source} holds one number per row, not a vector.",
                hint="Name the column holding lists, or the prefix of the number columns "
                "(--patch-column e for e0, e1, ...).",
            )
        return _stack(rows, column, source), column
    pattern = re.compile(rf"^{re.escape(column)}_?(\d+)$")
    numbered = sorted(
        ((int(m.group(1)), c) for c in names if (m := pattern.match(str(c)))), key=lambda t: t[0]
    )
    if not numbered:
        raise InputError(
            f"{source} has no column {column!r} (nor {column}0, {column}1, ...).",
            hint=f"Columns: {', '.join(map(str, names[:15]))}.",
        )
    return frame[[c for _, c in numbered]].to_numpy(np.float64), column


def _first(values: pd.Series) -> Any:
    valid = values.dropna()
    return valid.iloc[0] if len(valid) else None


def _is_vector(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray) or (
        isinstance(value, str) and value.lstrip().startswith("[")
    )


def _stack(rows: list[Any], column: str, source: str) -> np.ndarray:
    lengths = {len(r) for r in rows if r is not None}
    if len(lengths) != 1:
        raise InputError(
            f"The vectors in column {column!r} of {source} differ in length "
            f"({', '.join(map(str, sorted(lengths)[:5]))}).",
            hint="Every patch needs a vector of the same length.",
        )
    dim = lengths.pop()
    out = np.full((len(rows), dim), np.nan, dtype=np.float64)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = np.asarray(row, dtype=np.float64)
    return out


def _margin_bounds(area: gpd.GeoSeries, crs: CRS) -> tuple[float, float, float, float]:
    """The bounds of ``area`` grown by the margin, in ``crs``."""
    x0, y0, x1, y1 = area.total_bounds
    margin = max(MARGIN_M, 0.1 * max(x1 - x0, y1 - y0))
    grown = (x0 - margin, y0 - margin, x1 + margin, y1 + margin)
    to = Transformer.from_crs(area.crs, crs, always_xy=True)
    west, south, east, north = to.transform_bounds(*grown, densify_pts=21)
    return (west, south, east, north)


def aggregate_patches(
    regions: gpd.GeoDataFrame,
    patches: str | os.PathLike,
    *,
    column: str | None = None,
    attribution: str | None = None,
) -> RegionVectors:
    """One vector per region from the patch file ``patches`` (see the module docstring)."""
    return PatchEncoder(patches, column=column, attribution=attribution).encode(regions)
