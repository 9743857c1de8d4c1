"""An OSM caption: a paragraph of 100-200 words about a place, in one of several styles.

In the spirit of the paper's prompts (functional layout, road network, human activity,
natural elements). Each style (the osm backend's "model") words the same facts differently
and a seed varies the phrasing.
"""

from __future__ import annotations

import random

from urbangeo.captions.osm.features import PlaceFeatures
from urbangeo.captions.osm.writer import Writer
from urbangeo.settings.captions import OSM_STYLES as STYLES

__all__ = ["MAX_WORDS", "MIN_WORDS", "STYLES", "describe"]
MIN_WORDS, MAX_WORDS = 100, 200


def describe(
    feats: PlaceFeatures, *, style: str = "planner", rng: random.Random | None = None
) -> str:
    """A paragraph of 100-200 words about a place, worded in ``style``."""
    rng = rng or random.Random(0)
    writer = Writer(feats, rng)
    sentences = getattr(writer, style)()
    # Fill short paragraphs with grounded generalities; trim long ones from the end of the
    # optional sentences (the closing sentence stays).
    extra = writer.fillers(style)
    text = " ".join(sentences)
    while len(text.split()) < MIN_WORDS and extra:
        sentences.insert(-1, extra.pop(0))
        text = " ".join(sentences)
    while len(text.split()) > MAX_WORDS and len(sentences) > 3:
        sentences.pop(-2)
        text = " ".join(sentences)
    return text
