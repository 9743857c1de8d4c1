"""Reading embeddings and indicator tables into one aligned :class:`Dataset`.

Any embeddings table works, not only urbangeo's: a ``region_id`` column plus numeric feature
columns (or one column holding a vector per row), as Parquet or CSV. Indicators are a table with
``region_id`` plus indicator columns (CSV, Parquet, or a GeoPackage layer). Coordinates for the
spatial block split and the coordinates-only baseline come from the run's region polygons, or
from ``lon``/``lat`` (WGS84) or ``x``/``y`` (metres) columns of the indicator table.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.imagery.edges import EDGE, EXCLUDED, VALID_SHARE, region_status
from urbangeo.io.gpkg import list_layers, read_layer

#: Attribute table of ground-truth indicators keyed by region_id (urbangeo indicators).
#: Columns that are never features or indicators.
COORD_COLUMNS = ("lon", "lat", "x", "y")
REGION_ATTRIBUTES = (C.COL, C.ROW, C.AREA_M2, C.INSIDE_SHARE, VALID_SHARE, EDGE, EXCLUDED)
#: Fewest regions with a valid value for a target to be fitted (6:2:2 leaves 2 for testing).
MIN_REGIONS = 10


@dataclass
class Dataset:
    """Features, indicators and coordinates of the same regions (index: region_id)."""

    features: pd.DataFrame
    indicators: pd.DataFrame
    coords: pd.DataFrame | None = None
    regions: gpd.GeoDataFrame | None = None
    name: str = ""

    @property
    def region_ids(self) -> pd.Index:
        return self.features.index


def _read_table(path: Path, *, what: str, layer: str | None = None) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{what} file {path} does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
        if suffix in (".tsv", ".tab"):
            return pd.read_csv(path, sep="\t")
        if suffix == ".gpkg":
            frame = read_layer(path, layer) if layer else None
            if frame is None:
                raise InputError(f"Name the layer of {path} to read.")
            return _attributes(frame)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"Cannot read {what.lower()} file {path}: {type(exc).__name__}: {exc}",
            hint="Give a Parquet or CSV file.",
        ) from exc
    raise InputError(
        f"Unsupported {what.lower()} file type {path.suffix!r} ({path}).",
        hint="Give a Parquet (.parquet) or CSV (.csv) file.",
    )


def _attributes(frame: pd.DataFrame) -> pd.DataFrame:
    """A layer's attribute columns (without its geometry, if it has one)."""
    geoms = [c for c in frame.columns if isinstance(frame[c].dtype, gpd.array.GeometryDtype)]
    return pd.DataFrame(frame.drop(columns=geoms))


def _keyed(frame: pd.DataFrame, *, what: str, source: str) -> pd.DataFrame:
    """``frame`` indexed by region_id (as strings), with a clear error if it has none."""
    if C.REGION_ID not in frame.columns:
        if frame.index.name == C.REGION_ID:
            frame = frame.reset_index()
        else:
            raise InputError(
                f"The {what} table {source} has no '{C.REGION_ID}' column "
                f"(columns: {', '.join(map(str, frame.columns[:10]))}).",
                hint=f"Add a '{C.REGION_ID}' column naming each row's region "
                "(the ids of the run's 'regions' layer).",
            )
    frame = frame.copy()
    frame[C.REGION_ID] = frame[C.REGION_ID].astype(str)
    dupes = frame[C.REGION_ID].duplicated()
    if dupes.any():
        raise InputError(
            f"The {what} table {source} has {int(dupes.sum())} duplicated region ids "
            f"(e.g. {frame.loc[dupes, C.REGION_ID].iloc[0]!r}).",
            hint="Give one row per region.",
        )
    return frame.set_index(C.REGION_ID)


def embeddings_frame(frame: pd.DataFrame, *, source: str = "embeddings") -> pd.DataFrame:
    """Validate an embeddings table: float features indexed by region_id.

    A single column holding a vector per row (a list or array) is expanded to ``e0..e{d-1}``.
    Non-numeric columns, missing values and an empty feature set are errors.
    """
    frame = _keyed(frame, what="embeddings", source=source)
    frame = frame.drop(columns=[c for c in ("geometry", "geom") if c in frame.columns])
    frame = _without_quality(frame)
    is_vector = lambda v: isinstance(v, list | tuple | np.ndarray)  # noqa: E731
    if frame.shape[1] == 1 and frame.iloc[:, 0].map(is_vector).all():
        values = np.stack(frame.iloc[:, 0].map(np.asarray).to_numpy())
        frame = pd.DataFrame(
            values, index=frame.index, columns=[f"e{i}" for i in range(values.shape[1])]
        )
    bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise InputError(
            f"The embeddings table {source} has non-numeric column(s): {', '.join(bad[:10])}.",
            hint=f"Keep only '{C.REGION_ID}' and numeric feature columns "
            "(or one column holding a vector per row).",
        )
    if frame.shape[1] == 0:
        raise InputError(
            f"The embeddings table {source} has no feature columns.",
            hint=f"Give '{C.REGION_ID}' plus one numeric column per embedding dimension.",
        )
    values = frame.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        rows = int((~np.isfinite(values)).any(axis=1).sum())
        raise InputError(
            f"The embeddings table {source} has {rows} row(s) with missing or infinite values.",
            hint="Drop those regions or fill their embeddings before predicting.",
        )
    frame.columns = [str(c) for c in frame.columns]
    return frame.astype(np.float64)


def _without_quality(frame: pd.DataFrame) -> pd.DataFrame:
    """A region encoder's table (raster, patches) without its quality columns, which are never
    features, and without the regions it found no data for (``valid_share`` 0: a zero vector)."""
    from urbangeo.model.encoders.region_encoder import QUALITY_COLUMNS, VALID_SHARE

    if VALID_SHARE in frame.columns and pd.api.types.is_numeric_dtype(frame[VALID_SHARE]):
        frame = frame[frame[VALID_SHARE].fillna(0) > 0]
    return frame.drop(columns=[c for c in QUALITY_COLUMNS if c in frame.columns])


def load_embeddings(path: str | os.PathLike) -> pd.DataFrame:
    """Read an embeddings table (Parquet or CSV): float features indexed by region_id.

    An ``embeddings.parquet`` as urbangeo writes it (``region_id`` and float32 columns) is
    read row group by row group into one float32 matrix, the frame's only copy
    (:func:`_float32_parquet`); other tables become float64 (:func:`embeddings_frame`).
    """
    path = Path(path)
    fast = _float32_parquet(path)
    if fast is not None:
        return fast
    return embeddings_frame(_read_table(path, what="Embeddings"), source=str(path))


#: Columns read at a time by :func:`_float32_parquet`; rows checked at a time.
_READ_COLUMNS = 32
_READ_ROWS = 65_536


def _float32_parquet(path: Path) -> pd.DataFrame | None:
    """A parquet of ``region_id`` + float32 columns as a region_id-indexed float32 frame,
    without intermediate copies of the whole (memory: the matrix plus a few columns); None for any
    other table (read by :func:`embeddings_frame`) or a file with a problem it reports."""
    if path.suffix.lower() not in (".parquet", ".pq") or not path.is_file():
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception:
        return None  # _read_table says what is wrong with it
    schema = file.schema_arrow
    names = [n for n in schema.names if n != C.REGION_ID]
    if (
        C.REGION_ID not in schema.names
        or not names
        or any(schema.field(n).type != pa.float32() for n in names)
    ):
        return None
    n = file.metadata.num_rows
    matrix = np.empty((n, len(names)), dtype=np.float32)
    # a few columns at a time (every row group): pyarrow's row batches hold far more
    for first in range(0, len(names), _READ_COLUMNS):
        part = names[first : first + _READ_COLUMNS]
        table = pq.read_table(path, columns=part)
        for i, name in enumerate(part):
            matrix[:, first + i] = table.column(name).to_numpy()
        del table
    ids = [str(r) for r in pq.read_table(path, columns=[C.REGION_ID]).column(0).to_pylist()]
    finite = np.ones(n, dtype=bool)
    for first in range(0, n, _READ_ROWS):
        finite[first : first + _READ_ROWS] = np.isfinite(matrix[first : first + _READ_ROWS]).all(1)
    index = pd.Index(ids, name=C.REGION_ID)
    if not finite.all() or index.has_duplicates or index.hasnans:
        return None  # embeddings_frame reports it
    return pd.DataFrame(matrix, index=index, columns=names, copy=False)


def indicators_frame(frame: pd.DataFrame, *, source: str = "indicators") -> pd.DataFrame:
    """Validate an indicator table: indexed by region_id, everything else kept as is."""
    return _keyed(frame, what="indicators", source=source)


def load_indicators(path: str | os.PathLike, *, layer: str | None = None) -> pd.DataFrame:
    """Read an indicator table (CSV, Parquet, or a GeoPackage layer) indexed by region_id."""
    path = Path(path)
    if path.suffix.lower() == ".gpkg" and layer is None:
        return gpkg_indicators(path)
    return indicators_frame(_read_table(path, what="Indicators", layer=layer), source=str(path))


def indicator_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric columns of an indicator table that can be targets."""
    skip = set(COORD_COLUMNS) | set(REGION_ATTRIBUTES) | {"geometry"}
    return [
        str(c)
        for c in frame.columns
        if c not in skip
        and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    ]


def gpkg_indicators(gpkg: str | os.PathLike) -> pd.DataFrame:
    """A run's indicators: the ``indicators`` table, else extra numeric columns of ``regions``."""
    layers = list_layers(gpkg)
    if C.LAYER_INDICATORS in layers:
        return load_indicators(gpkg, layer=C.LAYER_INDICATORS)
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    frame = indicators_frame(_attributes(regions))
    if not indicator_columns(frame):
        raise InputError(
            f"{gpkg} has no indicators: no '{C.LAYER_INDICATORS}' table and no indicator "
            "columns in 'regions'.",
            hint=f"Attach ground truth first: `urbangeo indicators --gpkg {gpkg} ...` "
            "(or pass --indicators FILE).",
        )
    return frame


def gpkg_embeddings(gpkg: str | os.PathLike) -> pd.DataFrame:
    """A run's region embeddings: ``embeddings.parquet`` beside it, else its layer."""
    gpkg = Path(gpkg)
    beside = gpkg.parent / C.EMBEDDINGS_PARQUET
    if beside.exists():
        return load_embeddings(beside)
    if C.LAYER_REGION_EMBEDDINGS in list_layers(gpkg):
        layer = read_layer(gpkg, C.LAYER_REGION_EMBEDDINGS)
        frame = _without_quality(_attributes(layer))
        # The embed stage's layer: n_images beside the vector, stored as JSON text when wide.
        drop = [c for c in (*REGION_ATTRIBUTES, "n_images") if c in frame.columns]
        frame = frame.drop(columns=drop)
        if "embedding" in frame.columns and isinstance(frame["embedding"].iloc[0], str):
            frame["embedding"] = frame["embedding"].map(json.loads).astype(object)
        return embeddings_frame(frame, source=f"{gpkg} (layer {C.LAYER_REGION_EMBEDDINGS})")
    raise InputError(
        f"No region embeddings for {gpkg}: neither {beside} nor a "
        f"'{C.LAYER_REGION_EMBEDDINGS}' layer.",
        hint="Embed the run's images first, or pass --embeddings FILE (region_id + features).",
    )


def coords_from_table(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Coordinates in metres (columns x, y) from ``x``/``y`` or ``lon``/``lat`` columns."""
    if {"x", "y"} <= set(frame.columns):
        return frame[["x", "y"]].astype(float)
    if {"lon", "lat"} <= set(frame.columns):
        points = gpd.GeoSeries(gpd.points_from_xy(frame["lon"], frame["lat"]), crs=C.WGS84)
        metric = points.to_crs(points.estimate_utm_crs())
        return pd.DataFrame({"x": metric.x.to_numpy(), "y": metric.y.to_numpy()}, frame.index)
    return None


def coords_from_regions(regions: gpd.GeoDataFrame) -> pd.DataFrame:
    """Region centroids in metres (the layer's CRS if projected, else local UTM)."""
    if regions.crs is not None and not regions.crs.is_projected:
        regions = regions.to_crs(regions.estimate_utm_crs())
    centroids = regions.geometry.centroid
    return pd.DataFrame(
        {"x": centroids.x.to_numpy(), "y": centroids.y.to_numpy()},
        index=regions[C.REGION_ID].astype(str).to_numpy(),
    )


def align(
    features: pd.DataFrame,
    indicators: pd.DataFrame,
    *,
    coords: pd.DataFrame | None = None,
    regions: gpd.GeoDataFrame | None = None,
    name: str = "",
) -> Dataset:
    """Keep the regions that have features; error if no indicator row matches them."""
    if coords is None:
        coords = coords_from_table(indicators)
    matched = indicators.index.intersection(features.index)
    if len(matched) == 0:
        raise InputError(
            f"No indicator row matches a region of the embeddings{f' of {name}' if name else ''}"
            f" (e.g. indicator ids {list(indicators.index[:3])}, "
            f"embedding ids {list(features.index[:3])}).",
            hint=f"Both tables must use the same '{C.REGION_ID}' values.",
        )
    unmatched = len(indicators.index) - len(matched)
    if unmatched:
        warnings.warn(
            f"{unmatched} indicator row(s) name regions without embeddings; they are ignored.",
            UrbangeoWarning,
            stacklevel=2,
        )
    if coords is not None:
        coords = coords.reindex(features.index)
        if coords.isna().any(axis=None):
            warnings.warn(
                f"{int(coords.isna().any(axis=1).sum())} region(s) have embeddings but no "
                "coordinates: the block split and the coordinates baseline are unavailable.",
                UrbangeoWarning,
                stacklevel=2,
            )
            coords = None
    return Dataset(
        features=features,
        indicators=indicators.reindex(features.index),
        coords=coords,
        regions=regions,
        name=name,
    )


def dataset_from_files(
    embeddings: str | os.PathLike, indicators: str | os.PathLike, *, name: str = ""
) -> Dataset:
    """A dataset from an embeddings table and an indicator table."""
    return align(
        load_embeddings(embeddings), load_indicators(indicators), name=name or str(embeddings)
    )


def dataset_from_gpkg(
    gpkg: str | os.PathLike,
    *,
    embeddings: str | os.PathLike | None = None,
    indicators: str | os.PathLike | None = None,
) -> Dataset:
    """A run's dataset: its embeddings and indicators unless files are given instead."""
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    regions[C.REGION_ID] = regions[C.REGION_ID].astype(str)
    features = load_embeddings(embeddings) if embeddings else gpkg_embeddings(gpkg)
    table = load_indicators(indicators) if indicators else gpkg_indicators(gpkg)
    return align(
        features,
        table,
        coords=coords_from_regions(regions),
        regions=regions,
        name=str(gpkg),
    )


def open_dataset(spec: str | os.PathLike) -> Dataset:
    """A dataset from ``RUN.gpkg`` or ``EMBEDDINGS,INDICATORS`` (two files, comma-separated)."""
    text = str(spec)
    if text.lower().endswith(".gpkg"):
        return dataset_from_gpkg(text)
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(
            f"Cannot tell what {text!r} is.",
            hint="Give a run's GeoPackage (RUN.gpkg) or an embeddings and an indicators file "
            "separated by a comma (E.parquet,I.csv).",
        )
    return dataset_from_files(parts[0], parts[1], name=parts[0])


# --------------------------------------------------------------------------------------------
# Excluded regions (edge cells: urbangeo.imagery.edges)
# --------------------------------------------------------------------------------------------


def run_status(gpkg: str | os.PathLike | None) -> pd.DataFrame | None:
    """``edge`` and ``excluded`` of a run's regions (None without a GeoPackage)."""
    return None if gpkg is None else region_status(gpkg)


def kept(index: pd.Index, status: pd.DataFrame | None) -> pd.Index:
    """The regions of ``index`` the run does not exclude."""
    if status is None:
        return index
    excluded = status.index[status[EXCLUDED].notna()]
    return index[~index.astype(str).isin(excluded)]


def without_excluded(dataset: Dataset, status: pd.DataFrame | None) -> Dataset:
    """``dataset`` without the regions the run excludes (edge cells)."""
    keep = kept(dataset.features.index, status)
    if len(keep) == len(dataset.features):
        return dataset
    return Dataset(
        features=dataset.features.loc[keep],
        indicators=dataset.indicators.reindex(keep),
        coords=None if dataset.coords is None else dataset.coords.reindex(keep),
        regions=dataset.regions,
        name=dataset.name,
    )


def with_status(frame: pd.DataFrame, status: pd.DataFrame | None) -> pd.DataFrame:
    """``frame`` (indexed by region_id) with ``edge`` and ``excluded`` per region, plus an
    empty row (no cluster, no prediction) for each excluded region it lacks."""
    if status is None:
        return frame
    frame = frame.copy()
    frame.index = frame.index.astype(str)
    excluded = status.index[status[EXCLUDED].notna()]
    missing = excluded[~excluded.isin(frame.index)]
    if len(missing):
        ints = [c for c in frame.columns if pd.api.types.is_integer_dtype(frame[c])]
        frame = frame.reindex(frame.index.append(missing))
        frame = frame.astype({c: "Int64" for c in ints})
        frame.index.name = C.REGION_ID
    frame[EDGE] = status[EDGE].reindex(frame.index).fillna(False).astype(bool).to_numpy()
    frame[EXCLUDED] = status[EXCLUDED].reindex(frame.index).astype(object).to_numpy()
    return frame
