"""Small synthetic runs for the downstream and map tests (no files from outside the repo)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from urbangeo import constants as C
from urbangeo.io.gpkg import write_layers

UTM35 = "EPSG:32635"
X0, Y0 = 500_000.0, 6_700_000.0


def square_regions(cols: int, rows: int, size: float = 1000.0) -> gpd.GeoDataFrame:
    """A ``cols`` × ``rows`` grid of squares in UTM 35N with region ids ``"{col}_{row}"``."""
    records = []
    for r in range(rows):
        for c in range(cols):
            x, y = X0 + c * size, Y0 + r * size
            records.append(
                {
                    C.REGION_ID: f"{c}_{r}",
                    C.COL: c,
                    C.ROW: r,
                    C.AREA_M2: size * size,
                    C.INSIDE_SHARE: 1.0,
                    "geometry": shapely.box(x, y, x + size, y + size),
                }
            )
    return gpd.GeoDataFrame(records, crs=UTM35)


def linear_data(n_regions: int, dim: int, *, noise: float = 0.05, seed: int = 0):
    """Embeddings X and a target with ln(1 + y) = X·w + 3 + small noise (so y > 0)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_regions, dim))
    w = rng.normal(size=dim) / np.sqrt(dim)
    log_y = X @ w + 3 + noise * rng.normal(size=n_regions)
    return X, np.expm1(log_y)


def embeddings_table(ids: list[str], X: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(X, columns=[f"e{i}" for i in range(X.shape[1])])
    frame.insert(0, C.REGION_ID, ids)
    return frame


def make_run(
    folder: Path,
    *,
    cols: int = 12,
    rows: int = 10,
    dim: int = 16,
    seed: int = 0,
    indicators_layer: bool = True,
) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """A run folder with regions, embeddings.parquet and indicators (table or columns)."""
    regions = square_regions(cols, rows)
    ids = regions[C.REGION_ID].tolist()
    X, y = linear_data(len(ids), dim, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    gpkg = folder / "run.gpkg"
    embeddings_table(ids, X).to_parquet(folder / C.EMBEDDINGS_PARQUET)
    rng = np.random.default_rng(seed + 1)
    indicators = pd.DataFrame(
        {C.REGION_ID: ids, "population": y, "shops": rng.poisson(5, len(ids)).astype(float)}
    )
    layers: dict = {C.LAYER_REGIONS: regions}
    if indicators_layer:
        layers["indicators"] = indicators
    else:
        layers[C.LAYER_REGIONS] = regions.merge(indicators, on=C.REGION_ID)
    write_layers(gpkg, layers)
    return gpkg, indicators, X
