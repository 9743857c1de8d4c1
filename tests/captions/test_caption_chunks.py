"""The caption stage in chunks (issue #16, item 3): memory holds ``--chunk-size`` images' calls,
parses and choices; the rows wait in a spool file until the table is written, and the caches
are indexed on disk instead of loaded. The outputs are those of one chunk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from tests.captions.helpers import cache_records, make_run
from tests.helpers import run_limited
from urbangeo import constants as C
from urbangeo.captions import cache as cache_module
from urbangeo.captions import selection
from urbangeo.captions.cache import CaptionCache
from urbangeo.captions.scenegraph import CachedParser, SceneGraph
from urbangeo.captions.stages import PARSES_JSONL, caption_stage
from urbangeo.io import gpkg as gpkg_module
from urbangeo.io.runs import read_stage_records


@pytest.fixture
def appends(monkeypatch) -> list[str]:
    """The layers written by appending rows to what an earlier write of the same layer wrote."""
    seen: list[str] = []
    write = gpkg_module._write_frame

    def spy(path, layer, frame, *, append):
        if append:
            seen.append(layer)
        return write(path, layer, frame, append=append)

    monkeypatch.setattr(gpkg_module, "_write_frame", spy)
    return seen


def test_chunks_write_what_one_chunk_does(tmp_path, appends, spacy_ready, minilm_ready):
    runs = {}
    for size in (8192, 3):
        folder = tmp_path / f"c{size}"
        folder.mkdir()
        gpkg = make_run(folder, n_regions=5, n_points=2)  # 7 images: chunks of 3, 3 and 1
        runs[size] = (folder, gpkg, caption_stage(gpkg, parser="rule", workers=1, chunk_size=size))
    (one, gpkg1, r1), (many, gpkg3, r3) = runs[8192], runs[3]
    assert appends == [C.LAYER_CAPTIONS] * 2  # the second run wrote its table in 3 parts
    assert r1.counts == r3.counts and r3.counts["captions"] == 21
    assert cache_records(one) == cache_records(many)
    parses = (one / PARSES_JSONL).read_text(encoding="utf-8")
    assert parses == (many / PARSES_JSONL).read_text(encoding="utf-8")
    t1 = gpd.read_file(gpkg1, layer=C.LAYER_CAPTIONS)
    t3 = gpd.read_file(gpkg3, layer=C.LAYER_CAPTIONS)
    pd.testing.assert_frame_equal(t1, t3, check_exact=True)
    assert t3[C.SCORE].notna().all() and t3.groupby(C.IMAGE_ID)[C.SELECTED].sum().eq(1).all()
    # the same record (the chunk size is a runtime setting), and no spool left behind
    rec1, rec3 = (
        read_stage_records(gpkg1)["caption"],
        read_stage_records(gpkg3)["caption"],
    )
    assert rec1.params == rec3.params and rec1.fingerprint == rec3.fingerprint
    assert not list(many.glob(".urbangeo-spool-*"))


def test_a_run_stopped_in_a_later_chunk_keeps_everything_before(
    tmp_path, monkeypatch, spacy_ready, minilm_ready
):
    gpkg = make_run(tmp_path, n_regions=5, n_points=2)
    caption_stage(gpkg, parser="rule", workers=1, select="first")
    before = gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)
    table = selection.Selector.table
    chunks: list[int] = []

    def stop_in_the_third(self, calls):
        chunks.append(len(calls))
        if len(chunks) == 3:
            raise KeyboardInterrupt
        return table(self, calls)

    monkeypatch.setattr(selection.Selector, "table", stop_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        caption_stage(gpkg, parser="rule", workers=1, chunk_size=3, overwrite=True)
    # the table of the first run is still there; no spool is left; every call made is cached
    pd.testing.assert_frame_equal(gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS), before)
    assert not list(tmp_path.glob(".urbangeo-spool-*"))
    assert chunks == [9, 9, 3]
    monkeypatch.setattr(selection.Selector, "table", table)
    stale = tmp_path / ".urbangeo-spool-killed.parquet"  # what a SIGKILL would leave
    stale.write_bytes(b"PAR1")
    again = caption_stage(gpkg, parser="rule", workers=1, chunk_size=3, overwrite=True)
    assert again.counts["cached"] == again.counts["captions"] == 21
    assert gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)[C.SCORE].notna().all()
    assert not stale.exists()


def test_the_call_cache_reads_its_records_from_the_file(tmp_path, monkeypatch):
    path = tmp_path / C.CAPTIONS_JSONL
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5)]
    cache = CaptionCache(path)
    with cache.appending():
        for i in range(5):
            cache.put(keys[i], f'caption {i} \u00e9\n"quoted"', model="m")
    with open(path, "ab") as f:
        f.write(b'{"key": "' + b"9" * 64 + b'", "caption": "torn')  # a kill in mid-write
    again = CaptionCache(path)
    assert len(again) == 5 and again.torn_lines == 1
    assert again.get(keys[3])["caption"] == 'caption 3 \u00e9\n"quoted"'
    assert again.get("9" * 64) is None and keys[4] in again
    again.put("9" * 64, "after the torn line")
    assert CaptionCache(path).get("9" * 64)["caption"] == "after the torn line"
    # two keys that share their place in the index are told apart by the line read back
    monkeypatch.setattr(cache_module, "_index_key", lambda key: 0)
    same = CaptionCache(tmp_path / "same.jsonl")
    same.put("a" * 64, "first")
    same.put("b" * 64, "second")
    assert same.get("b" * 64)["caption"] == "second" and same.get("a" * 64) is None


class Counting:
    """A parser that counts its calls."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def parse(self, text: str) -> SceneGraph:
        self.calls.append(text)
        return SceneGraph(text.split()[:1], attributes={text.split()[0]: ("big",)})


def test_the_parse_cache_keeps_a_few_graphs_and_reads_the_others_back(tmp_path):
    path = tmp_path / PARSES_JSONL
    texts = [f'car{i} on a road, \u00e9 "q"\n' for i in range(6)]
    parser = Counting()
    cached = CachedParser(parser, path, keep=2)
    graphs = [cached.parse(t) for t in texts]
    assert len(cached._cache) == 2 and len(cached) == 6
    assert cached.parse(texts[0]) == graphs[0] and len(parser.calls) == 6  # read back
    with open(path, "a", encoding="utf-8") as f:  # another parser's parse of the same text
        f.write(json.dumps({"parser": "other", "text": texts[1], "graph": {}}) + "\n")
    again = CachedParser(Counting(), path, keep=1)
    assert [again.parse(t) for t in texts] == graphs and not again.parser.calls
    assert texts[5] in again and "car9" not in again


CHILD = r"""
import json, sys, resource
from urbangeo.captions.stages import caption_stage
from urbangeo.progress import set_mode

set_mode("none")
small, big = sys.argv[1:3]
caption_stage(small, parser="rule", workers=1)  # warm-up: imports, models, threads
limit = int((vm_mb() + {budget}) * 2**20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
result = caption_stage(big, parser="rule", workers=1)
print("RESULT " + json.dumps(result.counts))
"""
#: What the stage may add to the child's address space, and what each cache file holds.
BUDGET_MB = 256
CACHE_MB = 320


def _fill_caches(folder: Path) -> None:
    """Write CACHE_MB of earlier calls and parses (of other images) into each cache file."""
    caption = "a street " * 4000  # 36 kB
    n = CACHE_MB * 2**20 // len(caption)
    with open(folder / C.CAPTIONS_JSONL, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"key": f"{i:064x}", "model": "old", "caption": caption}) + "\n")
    words = [f"street{j}" for j in range(2000)]
    graph = SceneGraph(words, attributes={w: ("wide",) for w in words}).to_dict()
    line = json.dumps({"parser": "rule", "text": "", "graph": graph})
    n = CACHE_MB * 2**20 // len(line)
    with open(folder / PARSES_JSONL, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"parser": "rule", "text": f"old caption {i}", "graph": graph}))
            f.write("\n")


def test_caches_larger_than_the_memory_limit(tmp_path, spacy_ready, minilm_ready):
    small = make_run(tmp_path / "small", n_regions=2, n_points=1)
    big = make_run(tmp_path / "big", n_regions=4, n_points=1)
    _fill_caches(big.parent)
    assert 2 * CACHE_MB > 2 * BUDGET_MB  # loading both files cannot fit
    stdout = run_limited(CHILD.format(budget=BUDGET_MB), small, big)
    counts = json.loads(next(x for x in stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert counts["captions"] == 15 and counts["failed"] == 0 and counts["cached"] == 0
    table = gpd.read_file(big, layer=C.LAYER_CAPTIONS)
    assert table[C.SCORE].notna().all() and table.groupby(C.IMAGE_ID)[C.SELECTED].sum().eq(1).all()
