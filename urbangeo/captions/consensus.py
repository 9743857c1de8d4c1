"""Consensus-based caption selection (UrbanLN): the caption that agrees most with the others.

Each caption's consensus score is the mean of its CAPTURE scores (as candidate) against every
other caption of the same image (as reference); the highest is selected. Ties go to the
earliest caption.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from urbangeo.captions.capture import CaptureScorer, default_scorer
from urbangeo.captions.scenegraph import SceneGraph
from urbangeo.errors import InputError


@dataclass(frozen=True)
class Consensus:
    """Each caption's mean CAPTURE score against the others, and the chosen one's index.

    With a single caption there is nothing to agree with: its score is NaN and it is chosen.
    """

    scores: tuple[float, ...]
    index: int

    @property
    def best(self) -> float:
        """The chosen caption's score."""
        return self.scores[self.index]


def select_caption(
    captions: Sequence[str | SceneGraph], *, scorer: CaptureScorer | None = None
) -> Consensus:
    """Score each caption against the other captions of the same image and choose one."""
    if not captions:
        raise InputError("select_caption needs at least one caption.")
    if len(captions) == 1:
        return Consensus((math.nan,), 0)
    scorer = scorer or default_scorer()
    graphs = scorer.prepare(captions)
    scores = []
    for i, cand in enumerate(graphs):
        others = [scorer.pair(cand, ref).score for j, ref in enumerate(graphs) if j != i]
        scores.append(sum(others) / len(others))
    index = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return Consensus(tuple(scores), index)
