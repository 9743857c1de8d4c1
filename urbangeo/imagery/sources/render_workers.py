"""Rendered OSM map tiles drawn in worker processes (``tiles --workers``).

Drawing is Python and GDAL work that threads cannot spread (rasterio builds every shape from
its ``__geo_interface__``), so the blocks of :func:`~.render.blocks` go to worker processes
(:func:`urbangeo.io.processes.ordered_map`): each block is sent only the shapes that meet it,
as WKB (which keeps every coordinate exactly), and the worker burns, colours and masks it as
:func:`~.render.render_covered` does, and encodes the tiles as the tiles stage does when it is
given the stage's PNG settings. The results come back in the blocks' order, so the images, the
files and the manifest rows are the one-process run's, byte for byte. At most ``workers + 1``
blocks are in flight: memory stays bounded however many regions there are.

Starting a worker costs about 0.35 s of CPU (a fresh interpreter importing numpy, shapely and
rasterio), so runs with little to draw stay in one process (:func:`worth_it`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely

from urbangeo import constants as C
from urbangeo.imagery.sources.base import Tile
from urbangeo.imagery.sources.coverage import coverage_mask
from urbangeo.imagery.sources.render import (
    Block,
    MapFeatures,
    burn_shapes,
    cut_squares,
    shapes_meeting,
)
from urbangeo.io.processes import ordered_map

#: Drawing is spread over worker processes only when one core would take about this long
#: (starting a worker costs about 0.3 s): smaller runs are drawn in this process.
PARALLEL_MIN_SECONDS = 1.0
#: What one core spends per shape burnt into a block and per pixel (colour, mask and PNG),
#: measured on a 2-core Xeon (benchmarks/bench_tiles_workers.py).
SECONDS_PER_SHAPE = 50e-6
SECONDS_PER_PIXEL = 15e-9


@dataclass(frozen=True)
class BlockTask:
    """What a worker process needs to draw one block: the shapes that meet it (WKB, in
    drawing order) with their classes, the coverage (WKB; None: everywhere) and, to encode the
    tiles there, the PNG settings text (None: the images are sent back)."""

    block: Block
    shapes: np.ndarray
    classes: np.ndarray
    coverage: bytes | None
    size: int
    png_settings: str | None = None
    photographic: bool = False

    def __str__(self) -> str:
        x, y = (round(float(v)) for v in self.block.box[:2])
        return f"the block of {len(self.block.members)} region(s) from ({x}, {y})"


def render_task(task: BlockTask) -> list[tuple[int, Tile]]:
    """The tile of each square of a block, in a worker process: the arrays of
    :func:`~.render.render_covered` (WKB keeps every coordinate exactly), encoded as the tiles stage
    encodes them when ``task.png_settings`` is set."""
    from urbangeo.imagery.png import encode_png

    coverage = None if task.coverage is None else shapely.from_wkb(task.coverage)
    box, pixel = task.block.box, task.block.pixel
    classes = burn_shapes(shapely.from_wkb(task.shapes), task.classes, box, pixel)
    valid = coverage_mask(coverage, box, pixel, classes.shape)
    out = []
    for i, image, share in cut_squares(task.block, classes, valid, task.size):
        if task.png_settings is None:
            out.append((i, Tile(C.STATUS_OK, image, valid_share=share)))
            continue
        data = encode_png(
            image, settings=task.png_settings, photographic=task.photographic, valid_share=share
        )
        out.append((i, Tile(C.STATUS_OK, valid_share=share, data=data)))
    return out


def worth_it(features: MapFeatures, plan: list[Block], size: int) -> bool:
    """Whether drawing ``plan`` takes long enough to pay for starting worker processes: about
    :data:`PARALLEL_MIN_SECONDS` of one core, at the costs per shape and per pixel measured on
    a 2-core Xeon. The blocks' shapes are counted only until that is reached (the workers'
    tasks look them up again)."""
    seconds = sum(len(b.members) for b in plan) * size * size * SECONDS_PER_PIXEL
    for b in plan:
        if seconds >= PARALLEL_MIN_SECONDS:
            break
        seconds += len(shapes_meeting(features, b.box)) * SECONDS_PER_SHAPE
    return seconds >= PARALLEL_MIN_SECONDS


def render_in_workers(
    features: MapFeatures,
    plan: list[Block],
    *,
    workers: int,
    size: int = 256,
    coverage: shapely.Geometry | None = None,
    png_settings: str | None = None,
    photographic: bool = False,
) -> Iterator[tuple[int, Tile]]:
    """The tiles of :func:`~.render.render_covered`'s squares in its order (``plan``: its
    :func:`~.render.blocks`), drawn in ``workers`` processes, each block sent only the shapes
    that meet it; at most ``workers + 1`` blocks in flight, so memory stays bounded. With
    ``png_settings`` the workers encode the tiles too (``Tile.data``)."""
    wkb = None if coverage is None else shapely.to_wkb(coverage)

    def tasks() -> Iterator[BlockTask]:
        for b in plan:
            hits = shapes_meeting(features, b.box)
            shapes = shapely.to_wkb(features.geometries[hits])
            classes = features.classes[hits]
            yield BlockTask(b, shapes, classes, wkb, size, png_settings, photographic)

    for drawn in ordered_map(render_task, tasks(), workers=workers, what=str):
        yield from drawn
