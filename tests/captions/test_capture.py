"""CAPTURE on hand-built scene graphs, against hand-computed F1s."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest

from urbangeo.captions.capture import CaptureScorer, capture_score
from urbangeo.captions.scenegraph import SceneGraph
from urbangeo.errors import InputError

EPS_TOL = 1e-5  # CAPTURE's eps = 1e-6 shifts the F1s in the 6th decimal


def f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def weighted(fo: float, fa: float, fr: float) -> float:
    return (5 * fo + 5 * fa + 2 * fr) / 12


class FakeEmbedder:
    """Fixed 2-d unit vectors, so that cosine similarities are known by hand."""

    VECTORS: ClassVar[dict[str, tuple[float, float]]] = {
        "boat": (1.0, 0.0),
        "ship": (0.8, 0.6),
        "lamp": (0.0, 1.0),
        "bench": (0.6, 0.8),
        "sky": (-0.6, 0.8),
    }

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([self.VECTORS[t] for t in texts])


def exact_scorer() -> CaptureScorer:
    return CaptureScorer(parser="rule", synonyms=False, soft=False)


def test_exact_matching():
    cand = SceneGraph(
        ["building", "car", "tree"], [("car", "red"), ("building", "tall")], [("car", "on", "road")]
    )
    ref = SceneGraph(
        ["car", "road", "tree", "sky"],
        {"car": ["red"], "sky": ["blue"]},
        [("car", "on", "road"), ("tree", "near", "building")],
    )
    result = exact_scorer().pair(cand, ref)
    # objects: car, tree match: P = 2/3, R = 2/4; attributes: red: P = R = 1/2;
    # relations: 1 of 1 candidate, 1 of 2 references.
    assert result.objects.precision == pytest.approx(2 / 3, abs=EPS_TOL)
    assert result.objects.recall == pytest.approx(1 / 2, abs=EPS_TOL)
    assert result.objects.f1 == pytest.approx(4 / 7, abs=EPS_TOL)
    assert result.attributes.f1 == pytest.approx(1 / 2, abs=EPS_TOL)
    assert result.relations.f1 == pytest.approx(2 / 3, abs=EPS_TOL)
    assert result.score == pytest.approx(weighted(4 / 7, 1 / 2, 2 / 3), abs=EPS_TOL)
    assert float(result) == result.score
    # Weights: objects only.
    only_obj = CaptureScorer(parser="rule", synonyms=False, soft=False, alpha=1, beta=0, gamma=0)
    assert only_obj.pair(cand, ref).score == pytest.approx(4 / 7, abs=EPS_TOL)


def test_attributes_are_matched_as_words_one_per_pair():
    # "red" twice in the candidate (car and roof), once in the reference: one match.
    cand = SceneGraph(["car", "roof"], [("car", "red"), ("roof", "red")], [])
    ref = SceneGraph(["car"], [("car", "red")], [])
    result = exact_scorer().pair(cand, ref)
    assert result.attributes.precision == pytest.approx(1 / 2, abs=EPS_TOL)
    assert result.attributes.recall == pytest.approx(1.0, abs=EPS_TOL)
    assert result.attributes.f1 == pytest.approx(2 / 3, abs=EPS_TOL)


def test_empty_element_types_score_zero_as_in_the_reference():
    graph = SceneGraph(["car"], [], [])
    result = exact_scorer().pair(graph, graph)
    assert result.objects.f1 == pytest.approx(1.0, abs=EPS_TOL)
    assert result.attributes.f1 == 0.0 and result.relations.f1 == 0.0
    assert result.score == pytest.approx(5 / 12, abs=EPS_TOL)
    nothing = exact_scorer().pair(SceneGraph(), SceneGraph())
    assert nothing.score == 0.0


def test_synonym_matching(wordnet_ready):
    cand = SceneGraph(
        ["automobile", "sidewalk", "tree"], [("automobile", "big")], [("automobile", "on", "road")]
    )
    ref = SceneGraph(["car", "pavement", "street"], [("car", "large")], [("car", "on", "route")])
    scorer = CaptureScorer(parser="rule", synonyms=True, soft=False)
    result = scorer.pair(cand, ref)
    # automobile~car and sidewalk~pavement share WordNet lemmas, tree/street do not: 2 of 3.
    # big~large; (automobile, on, road)~(car, on, route) element by element.
    assert result.objects.f1 == pytest.approx(2 / 3, abs=EPS_TOL)
    assert result.attributes.f1 == pytest.approx(1.0, abs=EPS_TOL)
    assert result.relations.f1 == pytest.approx(1.0, abs=EPS_TOL)
    assert result.score == pytest.approx(weighted(2 / 3, 1, 1), abs=EPS_TOL)
    # The reference's character containment also pairs "tree" with "street".
    char = CaptureScorer(parser="rule", synonyms=True, soft=False, substring="char")
    assert char.pair(cand, ref).objects.f1 == pytest.approx(1.0, abs=EPS_TOL)
    # Whole-word containment: "car" ~ "red car".
    assert scorer.pair(SceneGraph(["car"]), SceneGraph(["red car"])).objects.f1 == pytest.approx(
        1.0, abs=EPS_TOL
    )
    # Without synonyms, nothing but "on" matches.
    assert exact_scorer().pair(cand, ref).objects.f1 == 0.0


def test_soft_matching_with_known_vectors():
    embed = FakeEmbedder()
    scorer = CaptureScorer(parser="rule", synonyms=False, soft=embed)
    cand = SceneGraph(["boat", "lamp", "sky"])
    ref = SceneGraph(["ship", "bench"])
    result = scorer.pair(cand, ref)
    # cos: boat.ship .8, boat.bench .6, lamp.ship .6, lamp.bench .8, sky.ship 0, sky.bench .28
    # candidate side: .8 + .8 + .28 = 1.88 of 3; reference side: .8 + .8 = 1.6 of 2.
    p, r = 1.88 / 3, 1.6 / 2
    assert result.objects.precision == pytest.approx(p, abs=EPS_TOL)
    assert result.objects.recall == pytest.approx(r, abs=EPS_TOL)
    assert result.objects.f1 == pytest.approx(f1(p, r), abs=EPS_TOL)
    assert result.score == pytest.approx(5 * f1(p, r) / 12, abs=EPS_TOL)


def test_soft_matching_only_for_what_is_left():
    embed = FakeEmbedder()
    scorer = CaptureScorer(parser="rule", synonyms=False, soft=embed)
    result = scorer.pair(SceneGraph(["boat", "lamp"]), SceneGraph(["lamp", "ship"]))
    # lamp matches exactly (1); boat.ship = .8 on both sides: P = R = 1.8 / 2.
    assert result.objects.f1 == pytest.approx(0.9, abs=EPS_TOL)
    assert all("lamp" not in call for call in embed.calls)
    # Embeddings are cached: a second pair embeds nothing new.
    before = len(embed.calls)
    scorer.pair(SceneGraph(["boat", "lamp"]), SceneGraph(["lamp", "ship"]))
    assert len(embed.calls) == before


def test_soft_matching_of_relations_joins_the_triple():
    vectors = {"boat on water": (1.0, 0.0), "ship in sea": (0.6, 0.8)}
    scorer = CaptureScorer(
        parser="rule", synonyms=False, soft=lambda texts: np.array([vectors[t] for t in texts])
    )
    result = scorer.pair(
        SceneGraph([], [], [("boat", "on", "water")]), SceneGraph([], [], [("ship", "in", "sea")])
    )
    assert result.relations.f1 == pytest.approx(0.6, abs=EPS_TOL)


def test_several_references_are_averaged():
    scorer = exact_scorer()
    cand = SceneGraph(["car", "tree"])
    a, b = SceneGraph(["car", "tree"]), SceneGraph(["car", "bus"])
    both = scorer.score(cand, [a, b])
    assert both.score == pytest.approx(
        (scorer.pair(cand, a).score + scorer.pair(cand, b).score) / 2
    )
    assert both.objects.f1 == pytest.approx((1 + 0.5) / 2, abs=EPS_TOL)
    with pytest.raises(InputError):
        scorer.score(cand, [])


def test_capture_score_on_text(spacy_ready, wordnet_ready, minilm_ready):
    text = "A red car is parked on the street next to tall buildings and green trees."
    same = capture_score(text, text)
    assert same.score == pytest.approx(1.0, abs=1e-4)
    near = capture_score(text, "A red automobile stands on the road beside high buildings.")
    far = capture_score(text, "Several boats float on a calm lake under a cloudy sky.")
    assert 0.4 < near.score < 1.0 and far.score < near.score
    assert not math.isnan(far.score)
    with pytest.raises(InputError):
        capture_score(text, 42)
