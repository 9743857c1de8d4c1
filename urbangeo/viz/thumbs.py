"""The run's images, small, as ``data:`` URIs for a self-contained page.

The offline map draws each region's overhead image (``images/overhead/``: the OSM rendering,
raster or tiles the run was built from) as its base layer and shows it in the region's
tooltip; one URI serves both. Images are shrunk to at most ``px`` pixels a side and kept as
PNG or JPEG, whichever is smaller. Above ``budget`` bytes in all, the size is halved (down to
32 px); if that is still too much the map goes without images rather than becoming unwieldy.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pandas as pd

from urbangeo import constants as C

#: Largest side of an inlined image (pixels).
IMAGE_PX = 128
#: Most bytes of images one map inlines (base64 included).
BUDGET = 16 * 1024 * 1024
_MIN_PX = 32


def _encode(path: Path, px: int) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
            image.thumbnail((px, px))
            best: bytes | None = None
            mime = ""
            for fmt, kwargs in (("PNG", {"optimize": True}), ("JPEG", {"quality": 85})):
                buffer = io.BytesIO()
                image.save(buffer, fmt, **kwargs)
                if best is None or buffer.tell() < len(best):
                    best, mime = buffer.getvalue(), fmt.lower()
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    assert best is not None
    return f"data:image/{mime};base64,{base64.b64encode(best).decode('ascii')}"


def image_paths(
    folder: str | os.PathLike, images: pd.DataFrame | None, *, kind: str, key: str
) -> dict[str, Path]:
    """``key`` value (as text) → the file of its first usable image of ``kind``.

    ``images`` is the run's ``images`` layer; paths are relative to ``folder``.
    """
    if images is None or key not in images or C.PATH not in images:
        return {}
    rows = images[images[key].notna() & images[C.PATH].notna()]
    if C.KIND in rows:
        rows = rows[rows[C.KIND].astype(str) == kind]
    if C.STATUS in rows:
        rows = rows[rows[C.STATUS].astype(str) == C.STATUS_OK]
    out: dict[str, Path] = {}
    for value, rel in zip(rows[key], rows[C.PATH], strict=True):
        name = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        path = Path(folder) / str(rel)
        if name not in out and path.is_file():
            out[name] = path
    return out


def image_uris(
    paths: dict[str, Path], *, px: int = IMAGE_PX, budget: int = BUDGET
) -> dict[str, str]:
    """``data:`` URIs of ``paths`` (values), shrunk to ``px`` (module docstring)."""
    while px >= _MIN_PX:
        uris: dict[str, str] = {}
        total = 0
        for name, path in paths.items():
            uri = _encode(path, px)
            if uri is None:
                continue
            uris[name] = uri
            total += len(uri)
            if total > budget:
                break
        else:
            return uris
        px //= 2
    return {}


def run_image_uris(gpkg: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """(region_id → URI of its overhead image, point_id → URI of its street-view image) of
    a run's ``images`` layer; empty without one."""
    from urbangeo.io.gpkg import list_layers, read_layer

    gpkg = Path(gpkg)
    if C.LAYER_IMAGES not in list_layers(gpkg):
        return {}, {}
    images = pd.DataFrame(read_layer(gpkg, C.LAYER_IMAGES))
    regions = image_paths(gpkg.parent, images, kind=C.KIND_OVERHEAD, key=C.REGION_ID)
    points = image_paths(gpkg.parent, images, kind=C.KIND_STREETVIEW, key=C.POINT_ID)
    return image_uris(regions), image_uris(points, px=64, budget=BUDGET // 2)
