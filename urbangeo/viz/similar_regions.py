"""The offline map's similar regions (issue #17): what the page needs so that a click on a
region outlines the :data:`SIMILAR_TOP` regions whose embeddings are most like its own (cosine
similarity, computed in the browser), and the legend entry that says so."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd

from urbangeo.progress import message

__all__ = ["MAX_SIMILAR_REGIONS", "SIMILAR_LAYER", "SIMILAR_TOP", "similar_data", "similar_legend"]

#: The most embedded regions for which the map holds the embeddings (click-to-highlight).
MAX_SIMILAR_REGIONS = 20_000
#: How many similar regions a click outlines.
SIMILAR_TOP = 10
#: Outline of the similar regions (magenta: no fill colour of the map is near it), and of the
#: region clicked.
SIMILAR_COLOR = "#ff00ff"
QUERY_COLOR = "#000000"
#: The similar-regions layer's name (layer list, legend).
SIMILAR_LAYER = "Similar regions"


def similar_data(embeddings: pd.DataFrame | None, region_ids: pd.Index) -> dict | None:
    """What the page needs to outline similar regions: the ids of the regions on the map with
    a non-zero embedding, their unit-length vectors as little-endian float16 in base64, the
    dimension, the number to outline and the colours (None: no embeddings, fewer than two, or
    more than :data:`MAX_SIMILAR_REGIONS`)."""
    if embeddings is None:
        return None
    frame = embeddings[embeddings.index.astype(str).isin(region_ids)]
    values = frame.to_numpy(dtype=np.float64)
    norms = np.linalg.norm(values, axis=1)
    frame, values, norms = frame[norms > 0], values[norms > 0], norms[norms > 0]
    if len(frame) < 2:
        return None
    if len(frame) > MAX_SIMILAR_REGIONS:
        message(
            f"The map leaves out the similar-region highlighting: {len(frame):,} embedded "
            f"regions, more than {MAX_SIMILAR_REGIONS:,} (use `urbangeo similar`)."
        )
        return None
    unit = (values / norms[:, None]).astype("<f2")
    return {
        "ids": [str(i) for i in frame.index],
        "dim": int(unit.shape[1]),
        "vectors": base64.b64encode(unit.tobytes()).decode("ascii"),
        "top": SIMILAR_TOP,
        "color": SIMILAR_COLOR,
        "query_color": QUERY_COLOR,
    }


def similar_legend() -> dict:
    """The legend entry of the similar-regions layer (it says what a click does)."""
    return {
        "layer": SIMILAR_LAYER,
        "title": "Similar regions: click a region",
        "items": [
            (QUERY_COLOR, "the region clicked", "line"),
            (
                SIMILAR_COLOR,
                f"its {SIMILAR_TOP} most similar regions (cosine similarity of embeddings)",
                "line",
            ),
        ],
    }
