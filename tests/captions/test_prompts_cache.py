"""Prompts (the paper's defaults, file overrides) and the JSONL call cache."""

from __future__ import annotations

import json

import pytest

from urbangeo import constants as C
from urbangeo.captions.cache import CaptionCache, call_key
from urbangeo.captions.prompts import (
    MAP_PROMPT,
    OVERHEAD_PROMPT,
    SATELLITE_PROMPT,
    Prompts,
    load_prompts,
)
from urbangeo.errors import InputError, UrbangeoWarning

ESRI = "xyz:https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/"


def test_default_prompts_are_the_papers_for_imagery():
    p = load_prompts()
    assert p.overhead is None  # chosen by each image's source
    paper = p.for_kind(C.KIND_OVERHEAD, source="raster:/data/orthophoto.tif")
    assert paper == SATELLITE_PROMPT
    assert paper.startswith("You are an expert in urban analysis. Please describe the")
    assert "satellite image" in paper
    assert "functional layout, road network design, human activity, and natural elements" in paper
    assert p.for_kind(C.KIND_OVERHEAD, source=ESRI + "{z}/{y}/{x}@z17") == SATELLITE_PROMPT
    assert "street-view image" in p.for_kind(C.KIND_STREETVIEW)
    assert p.for_kind(C.KIND_STREETVIEW, source="osm:/x.pbf") == p.streetview


def test_overhead_prompt_says_what_the_image_is():
    """A rendered OSM map is not called a satellite image; an unknown source is an overhead
    image; all three ask for the same four aspects."""
    p = Prompts()
    rendered = p.for_kind(C.KIND_OVERHEAD, source="osm:/data/sao-paulo.osm.pbf")
    assert rendered == MAP_PROMPT and "map rendered from OpenStreetMap" in rendered
    osm_tiles = p.for_kind(C.KIND_OVERHEAD, source="xyz:https://tile.openstreetmap.org/{z}")
    assert osm_tiles == p.for_kind(C.KIND_OVERHEAD) == OVERHEAD_PROMPT
    for text in (MAP_PROMPT, OVERHEAD_PROMPT):
        assert "satellite" not in text and "overhead image" in text
        assert text.endswith(SATELLITE_PROMPT.split("focusing on")[1])
    # a prompt of the user's is used for every overhead image, whatever its source
    mine = Prompts(overhead="Describe the tile.")
    assert mine.for_kind(C.KIND_OVERHEAD, source="osm:/x.pbf") == "Describe the tile."
    assert mine.for_kind(C.KIND_OVERHEAD, source=ESRI) == "Describe the tile."


def test_prompt_files(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text('overhead = "Describe the tile."\nmerge = "{caption} + {details} ({kind})"\n')
    p = load_prompts(toml)
    assert p.overhead == "Describe the tile." and p.streetview == Prompts().streetview
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"streetview": "Describe the street."}))
    assert load_prompts(js).streetview == "Describe the street."
    txt = tmp_path / "p.txt"
    txt.write_text("  One prompt for all.\n")
    assert load_prompts(txt).overhead == load_prompts(txt).streetview == "One prompt for all."


def test_old_prompt_key_satellite_still_works_with_a_message(tmp_path):
    old = tmp_path / "old.toml"
    old.write_text('satellite = "Describe the tile."\n')
    with pytest.warns(UrbangeoWarning, match="key 'satellite' is deprecated; use 'overhead'"):
        p = load_prompts(old)
    assert p.for_kind(C.KIND_OVERHEAD, source="osm:/x.pbf") == "Describe the tile."
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"satellite": "a", "overhead": "b"}))
    with pytest.raises(InputError, match="both 'satellite' and 'overhead'"):
        load_prompts(both)


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("bad.toml", "satelite = 'typo'", "unknown keys"),
        ("bad.toml", "overhead = ''", "empty"),
        ("bad.toml", "overhead = [", "not valid"),
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
