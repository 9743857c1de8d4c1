"""Consensus selection: the caption that agrees with the others."""

from __future__ import annotations

import math

import pytest

from tests.captions.test_capture import exact_scorer
from urbangeo.captions.capture import CaptureScorer
from urbangeo.captions.consensus import select_caption
from urbangeo.captions.scenegraph import SceneGraph
from urbangeo.errors import InputError


def test_means_against_the_others_by_hand():
    a = SceneGraph(["car", "tree", "road"])
    b = SceneGraph(["car", "tree", "bus"])
    c = SceneGraph(["boat", "lake", "tree"])
    scorer = CaptureScorer(parser="rule", synonyms=False, soft=False, alpha=1, beta=0, gamma=0)
    result = select_caption([a, b, c], scorer=scorer)
    # Object F1s: a-b 2/3, a-c 1/3, b-c 1/3 (symmetric here).
    assert result.scores == pytest.approx(
        [(2 / 3 + 1 / 3) / 2, (2 / 3 + 1 / 3) / 2, 1 / 3], abs=1e-5
    )
    assert result.index == 0  # a tie goes to the first
    assert result.best == result.scores[0]


def test_single_caption_and_empty():
    result = select_caption(["only one"], scorer=exact_scorer())
    assert result.index == 0 and math.isnan(result.scores[0])
    with pytest.raises(InputError):
        select_caption([])


def test_consensus_picks_the_caption_that_agrees(spacy_ready, wordnet_ready, minilm_ready):
    captions = [
        "A busy street with parked cars, tall office buildings and green trees along the "
        "sidewalk. Pedestrians walk past shops.",
        "Several boats float on a quiet lake surrounded by hills and a sandy beach.",
        "Tall buildings line a busy street where cars are parked under green trees, and "
        "pedestrians walk past small shops.",
        "Cars drive on a wide street lined with tall buildings, trees and shops; people walk "
        "on the sidewalk.",
    ]
    result = select_caption(captions)
    assert result.index in (0, 2, 3)
    assert min(range(4), key=lambda i: result.scores[i]) == 1
