"""Prompts (the paper's defaults, file overrides) and the JSONL call cache."""

from __future__ import annotations

import json

import pytest

from urbangeo import constants as C
from urbangeo.captions.cache import CaptionCache, call_key
from urbangeo.captions.prompts import SATELLITE_PROMPT, Prompts, load_prompts
from urbangeo.errors import InputError


def test_default_prompts_are_the_papers():
    p = load_prompts()
    assert p.satellite == SATELLITE_PROMPT
    assert p.satellite.startswith("You are an expert in urban analysis. Please describe the")
    assert "functional layout, road network design, human activity, and natural elements" in (
        p.satellite
    )
    assert "street-view image" in p.for_kind(C.KIND_STREETVIEW)
    assert p.for_kind(C.KIND_SATELLITE) == p.satellite


def test_prompt_files(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text('satellite = "Describe the tile."\nmerge = "{caption} + {details} ({kind})"\n')
    p = load_prompts(toml)
    assert p.satellite == "Describe the tile." and p.streetview == Prompts().streetview
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"streetview": "Describe the street."}))
    assert load_prompts(js).streetview == "Describe the street."
    txt = tmp_path / "p.txt"
    txt.write_text("  One prompt for all.\n")
    assert load_prompts(txt).satellite == load_prompts(txt).streetview == "One prompt for all."


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("bad.toml", "satelite = 'typo'", "unknown keys"),
        ("bad.toml", "satellite = ''", "empty"),
        ("bad.toml", "satellite = [", "not valid"),
        ("bad.toml", "merge = '{caption} {nope}'", "placeholder"),
        ("empty.txt", "  ", "empty"),
    ],
)
def test_bad_prompt_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        load_prompts(path)
    with pytest.raises(InputError, match="Cannot read"):
        load_prompts(tmp_path / "missing.toml")


def test_call_key_covers_every_part():
    base = call_key("img", "openai", "m", "prompt", {"t": 1})
    assert base == call_key("img", "openai", "m", "prompt", {"t": 1})
    others = [
        call_key("img2", "openai", "m", "prompt", {"t": 1}),
        call_key("img", "osm", "m", "prompt", {"t": 1}),
        call_key("img", "openai", "m2", "prompt", {"t": 1}),
        call_key("img", "openai", "m", "prompt2", {"t": 1}),
        call_key("img", "openai", "m", "prompt", {"t": 2}),
    ]
    assert len({base, *others}) == 6


def test_cache_survives_a_torn_line(tmp_path):
    path = tmp_path / C.CAPTIONS_JSONL
    cache = CaptionCache(path)
    cache.put("k1", "first caption", model="m")
    cache.put("k2", "second caption", model="m")
    with open(path, "a") as f:
        f.write('{"key": "k3", "capt')  # killed in mid-write
    reopened = CaptionCache(path)
    assert reopened.get("k1")["caption"] == "first caption"
    assert "k3" not in reopened and reopened.torn_lines == 1
    reopened.put("k4", "after the crash")
    assert CaptionCache(path).get("k4")["caption"] == "after the crash"
    assert len(CaptionCache(path)) == 3
