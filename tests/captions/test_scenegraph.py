"""Scene-graph parsing: the rule-based spaCy parser, FACTUAL's output format, the cache."""

from __future__ import annotations

import json

import pytest

from urbangeo.captions.scenegraph import (
    CachedParser,
    RuleParser,
    SceneGraph,
    capture_filter,
    get_parser,
    parse_factual_output,
)
from urbangeo.errors import InputError


def test_scenegraph_normalises():
    g = SceneGraph(["Car", "car ", "tree"], {"car": ["Red", "red"]}, [("car", "on", "road")] * 2)
    assert g.objects == ("car", "tree")
    assert g.attributes == (("car", "red"),)
    assert g.relations == (("car", "on", "road"),)
    assert g.phrases() == ["red car", "tree"]
    assert SceneGraph.from_dict(json.loads(json.dumps(g.to_dict()))) == g


def test_capture_filter_rules():
    graph = SceneGraph(
        ["car", "scene", "parking lot", "blue"],
        [("car", "red"), ("sky", "clear"), ("scene", "busy")],
        [("car", "on", "road"), ("car", "under", "sky")],
    )
    nouns = {"car", "scene", "parking", "lot", "road"}
    out = capture_filter(graph, nouns, {"scene"})
    # "scene" is a stop word; "blue" and "sky" are not nouns of the text. Attributes and
    # relations are kept by noun-ness only (stop words do not apply to them).
    assert out.objects == ("car", "parking lot")
    assert out.attributes == (("car", "red"), ("scene", "busy"))
    assert out.relations == (("car", "on", "road"),)


def test_parse_factual_output():
    entities, relations = parse_factual_output(
        "( car , is , red ) , ( car , is , 2 ) , ( car , parked on , street ) , ( tree , tall )"
    )
    assert [e["head"] for e in entities] == ["car", "street"]
    assert entities[0]["attributes"] == {"red"} and entities[0]["quantity"] == "2"
    assert relations == [(0, "parked on", 1)]
    lone, none = parse_factual_output("( sky )")
    assert [e["head"] for e in lone] == ["sky"] and none == []


def test_rule_parser(spacy_ready):
    parser = RuleParser()
    g = parser.parse(
        "The street is lined with tall buildings and green trees. A red car is parked next to "
        "the old church. There are several boats floating on the water. The sky is clear."
    )
    assert {"street", "building", "tree", "car", "church", "boat", "water", "sky"} <= set(g.objects)
    assert {
        ("building", "tall"),
        ("tree", "green"),
        ("car", "red"),
        ("church", "old"),
        ("sky", "clear"),
    } <= set(g.attributes)
    assert ("boat", "several") not in g.attributes  # a quantity, not an attribute
    assert {
        ("street", "line with", "building"),
        ("street", "line with", "tree"),
        ("car", "park next to", "church"),
        ("boat", "float on", "water"),
    } <= set(g.relations)
    # Stop words ("image", "scene") are not objects; compounds are kept.
    g2 = parser.parse("The image shows a scene with a parking lot. A traffic light stands there.")
    assert "image" not in g2.objects and "scene" not in g2.objects
    assert {"parking lot", "traffic light"} <= set(g2.objects)


def test_cached_parser(tmp_path, spacy_ready):
    calls = []

    class Counting:
        name = "counting"

        def parse(self, text):
            calls.append(text)
            return SceneGraph([text.split()[0]])

    path = tmp_path / "parses.jsonl"
    cached = CachedParser(Counting(), path)
    assert cached.parse("car road") == SceneGraph(["car"])
    cached.parse("car road")
    assert calls == ["car road"]
    again = CachedParser(Counting(), path)
    assert again.parse("car road") == SceneGraph(["car"]) and calls == ["car road"]


def test_parser_choice(monkeypatch, tmp_path):
    from urbangeo.captions import scenegraph

    monkeypatch.setattr(scenegraph, "factual_location", lambda model=None: None)
    assert get_parser("auto").name == "rule"
    with pytest.raises(InputError, match="FACTUAL"):
        get_parser("factual")
    with pytest.raises(InputError, match="Unknown parser"):
        get_parser("llm")


_PARSE_IN_A_FRESH_PROCESS = """
import json, sys
from urbangeo.captions.scenegraph import RuleParser, load_spacy
load_spacy()
hidden = "torch" not in sys.modules
graphs = [g.to_dict() for g in RuleParser().parse_many(json.loads(sys.argv[1]))]
import torch  # works as usual afterwards
print(json.dumps({"hidden": hidden, "torch": torch.__name__, "graphs": graphs}))
"""


def test_spacy_loads_without_torch_and_parses_the_same(spacy_ready):
    import subprocess
    import sys

    import torch  # noqa: F401 - this process parses with torch imported, as a parent may

    texts = [
        "A wide road with parked cars runs past a tall red building.",
        "Trees line the quiet residential street, and a small park lies to the north.",
        "Boats floating on the water near a long concrete pier.",
    ]
    out = subprocess.run(
        [sys.executable, "-c", _PARSE_IN_A_FRESH_PROCESS, json.dumps(texts)],
        check=True,
        capture_output=True,
        text=True,
    )
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh["hidden"] and fresh["torch"] == "torch"  # spaCy loaded without it, then it works
    assert fresh["graphs"] == [g.to_dict() for g in RuleParser().parse_many(texts)]
    assert all(g["objects"] for g in fresh["graphs"])
