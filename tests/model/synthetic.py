"""Synthetic runs for the model tests: coloured shapes at positions, described by captions.

Each image is a 64 px picture of one shape (square, circle, triangle) in one colour (red, green,
blue, yellow) in one quadrant, on a noisy grey background; its caption names the three, then
adds a long filler shared by every caption (so captions exceed CLIP's 77 tokens). There is
learnable signal (colour, shape and position words ↔ pixels) and nothing else.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from PIL import Image, ImageDraw

from urbangeo import constants as C
from urbangeo.io.gpkg import write_layers

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
}
SHAPES = ("square", "circle", "triangle")
POSITIONS = {
    "top left": (0, 0),
    "top right": (1, 0),
    "bottom left": (0, 1),
    "bottom right": (1, 1),
}
FILLER = (
    " The rest of the scene is an empty grey surface with a little noise, no buildings, no "
    "trees, no cars, no people and no text; the light is even and the picture is sharp."
)
CRS = "EPSG:32635"
#: Both kinds of images, for :func:`make_run`.
BOTH = (C.KIND_STREETVIEW, C.KIND_OVERHEAD)


def combos() -> list[tuple[str, str, str]]:
    """Every (colour, shape, position), in a fixed order (48 of them)."""
    return list(itertools.product(COLORS, SHAPES, POSITIONS))


def draw(color: str, shape: str, position: str, *, size: int = 64, seed: int = 0) -> Image.Image:
    """The picture of one combination."""
    rng = np.random.default_rng(seed)
    background = rng.integers(100, 156, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(background)
    draw_ = ImageDraw.Draw(img)
    half = size // 2
    col, row = POSITIONS[position]
    margin = size // 10
    box = (
        col * half + margin,
        row * half + margin,
        col * half + half - margin,
        row * half + half - margin,
    )
    fill = COLORS[color]
    if shape == "square":
        draw_.rectangle(box, fill=fill)
    elif shape == "circle":
        draw_.ellipse(box, fill=fill)
    else:
        x0, y0, x1, y1 = box
        draw_.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return img


def caption(color: str, shape: str, position: str, *, filler: bool = True) -> str:
    """The caption of one combination."""
    text = f"A {color} {shape} in the {position} corner of the picture."
    return text + (FILLER if filler else "")


def regions_frame(n: int) -> gpd.GeoDataFrame:
    """``n`` square regions of 100 m in a row, ids ``r0``..."""
    geoms = [
        shapely.box(500_000 + 100 * i, 6_700_000, 500_100 + 100 * i, 6_700_100) for i in range(n)
    ]
    return gpd.GeoDataFrame({C.REGION_ID: [f"r{i}" for i in range(n)]}, geometry=geoms, crs=CRS)


def make_run(
    folder: Path,
    *,
    n: int = 48,
    per_region: int = 1,
    kinds: tuple[str, ...] = (C.KIND_STREETVIEW,),
    extra_statuses: bool = True,
    spatial_images: bool = False,
) -> Path:
    """A run folder with ``run.gpkg`` (regions, images, captions) and the image files.

    ``n`` combinations (cycled, with a different background noise when repeated), each drawn
    once per kind; ``per_region`` consecutive images share a region. With ``extra_statuses``
    the images layer also lists a missing and a failed image (no file), which must be ignored,
    and every image gets a second, unselected, wrong caption.
    """
    folder.mkdir(parents=True, exist_ok=True)
    all_combos = combos()
    images, captions = [], []
    n_regions = -(-n // per_region)
    for i in range(n):
        color, shape, position = all_combos[i % len(all_combos)]
        region = f"r{i // per_region}"
        for kind in kinds:
            image_id = f"{kind[:2]}{i:04d}"
            rel = Path("images") / kind / f"{image_id}.png"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            draw(color, shape, position, seed=i).save(folder / rel)
            images.append(
                {
                    C.IMAGE_ID: image_id,
                    C.KIND: kind,
                    C.REGION_ID: region,
                    C.POINT_ID: f"p{i}",
                    C.PATH: rel.as_posix(),
                    C.STATUS: C.STATUS_OK,
                }
            )
            captions.append(
                {
                    C.IMAGE_ID: image_id,
                    C.BACKEND: "synthetic",
                    C.MODEL: "truth",
                    C.CAPTION: caption(color, shape, position),
                    C.SCORE: 0.9,
                    C.SELECTED: True,
                }
            )
            if extra_statuses:
                captions.append(
                    {
                        C.IMAGE_ID: image_id,
                        C.BACKEND: "synthetic",
                        C.MODEL: "liar",
                        C.CAPTION: "a purple hexagon in the middle",
                        C.SCORE: 0.1,
                        C.SELECTED: False,
                    }
                )
    if extra_statuses:
        for status in (C.STATUS_MISSING, C.STATUS_FAILED):
            image_id = f"x-{status}"
            images.append(
                {
                    C.IMAGE_ID: image_id,
                    C.KIND: kinds[0],
                    C.REGION_ID: "r0",
                    C.POINT_ID: "p0",
                    C.PATH: f"images/{kinds[0]}/{image_id}.png",
                    C.STATUS: status,
                }
            )
            captions.append(
                {
                    C.IMAGE_ID: image_id,
                    C.BACKEND: "synthetic",
                    C.MODEL: "truth",
                    C.CAPTION: "never used",
                    C.SCORE: 1.0,
                    C.SELECTED: True,
                }
            )
    image_frame: pd.DataFrame = pd.DataFrame(images)
    if spatial_images:
        xs = 500_050 + 100 * image_frame[C.REGION_ID].str[1:].astype(int)
        image_frame = gpd.GeoDataFrame(
            image_frame, geometry=gpd.points_from_xy(xs, [6_700_050] * len(xs)), crs=CRS
        )
    path = folder / "run.gpkg"
    write_layers(
        path,
        {
            C.LAYER_REGIONS: regions_frame(n_regions),
            C.LAYER_IMAGES: image_frame,
            C.LAYER_CAPTIONS: pd.DataFrame(captions),
        },
        overwrite=True,
    )
    return path
