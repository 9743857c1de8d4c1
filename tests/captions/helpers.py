"""Small runs and images for the caption tests, built here (never the evaluation data)."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
from PIL import Image

from urbangeo import constants as C
from urbangeo.geo.boundary import get_city
from urbangeo.io.gpkg import write_layers

#: The sizes of a tiny transformer (text or vision tower), for models made in the tests.
TINY_TOWER = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}


def tiny_text_tower(vocab_size: int, positions: int, **token_ids: int) -> dict:
    """A tiny text tower's config: :data:`TINY_TOWER` with a vocabulary, positions and special
    token ids (``bos=0`` gives ``bos_token_id: 0``)."""
    ids = {f"{name}_token_id": value for name, value in token_ids.items()}
    return {**TINY_TOWER, "vocab_size": vocab_size, "max_position_embeddings": positions, **ids}


def has(module: str) -> bool:
    """Whether an optional module is importable."""
    return importlib.util.find_spec(module) is not None


def png_bytes(
    color: tuple[int, int, int] = (30, 120, 60), size: tuple[int, int] = (24, 16)
) -> bytes:
    """A small PNG image."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def make_run(
    folder: Path,
    *,
    n_regions: int = 3,
    n_points: int = 2,
    broken: tuple[str, ...] = (),
    missing: tuple[str, ...] = (),
) -> Path:
    """A run folder with Kotka's boundary and first regions, street-view points at region
    centres, and an ``images`` layer (overhead per region, street view per point).

    Image ids in ``broken`` get a file that is not an image; those in ``missing`` have
    status missing and no file.
    """
    city = get_city("kotka")
    boundary = gpd.read_file(city.sample_grid, layer=C.LAYER_BOUNDARY)
    regions = gpd.read_file(city.sample_grid, layer=C.LAYER_REGIONS).head(n_regions)
    centres = regions.geometry.centroid
    points = gpd.GeoDataFrame(
        {
            C.POINT_ID: [f"p{i}" for i in range(n_points)],
            C.REGION_ID: list(regions[C.REGION_ID][:n_points]),
            C.HEADING: [45.0 * i for i in range(n_points)],
        },
        geometry=list(centres[:n_points]),
        crs=regions.crs,
    )
    gpkg = folder / "run.gpkg"
    rows = []
    for i, rid in enumerate(regions[C.REGION_ID]):
        rows.append(
            (f"overhead_{rid}", C.KIND_OVERHEAD, rid, None, f"images/overhead/{rid}.png", i)
        )
    for i, (pid, rid) in enumerate(zip(points[C.POINT_ID], points[C.REGION_ID], strict=True)):
        rows.append(
            (f"sv_{pid}", C.KIND_STREETVIEW, rid, pid, f"images/streetview/{pid}.png", 9 + i)
        )
    records = []
    for image_id, kind, rid, pid, rel, shade in rows:
        status = C.STATUS_OK
        file = folder / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        if image_id in missing:
            status = C.STATUS_MISSING
        elif image_id in broken:
            file.write_bytes(b"this is not an image")
        else:
            file.write_bytes(png_bytes((20 * shade % 256, 100, 50)))
        records.append(
            {
                C.IMAGE_ID: image_id,
                C.KIND: kind,
                C.REGION_ID: rid,
                C.POINT_ID: pid,
                C.PATH: rel,
                C.STATUS: status,
            }
        )
    write_layers(
        gpkg,
        {
            C.LAYER_BOUNDARY: boundary.to_crs(regions.crs),
            C.LAYER_REGIONS: regions,
            C.LAYER_SV_POINTS: points,
            C.LAYER_IMAGES: pd.DataFrame(records),
        },
    )
    return gpkg


def first_region_id() -> str:
    """The id of the first region of Kotka's bundled grid."""
    regions = gpd.read_file(get_city("kotka").sample_grid, layer=C.LAYER_REGIONS)
    return str(regions[C.REGION_ID].iloc[0])


def cache_records(folder: Path) -> list[dict]:
    """The records of a run's captions.jsonl less what depends on the clock."""
    out = []
    for line in (folder / C.CAPTIONS_JSONL).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record.pop("time")
        record.pop("seconds")
        out.append(record)
    return out
