"""The caption stage's worker processes: the same outputs with any number, errors that say what
happened and keep what was done, and no more workers than cores."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

from tests.captions.helpers import cache_records, make_run
from urbangeo import constants as C
from urbangeo.captions import calls as caption_calls
from urbangeo.captions import scenegraph
from urbangeo.captions.cache import CaptionCache
from urbangeo.captions.captioners.osm import OSMCaptioner
from urbangeo.captions.stages import PARSES_JSONL, caption_stage
from urbangeo.captions.workers import WorkerError, WorkerPool, choose_workers
from urbangeo.errors import InputError
from urbangeo.settings import CaptionSettings


def _kotka() -> Path:
    from urbangeo.geo.boundary import get_city

    return get_city("kotka").osm_path()


@pytest.fixture
def small_chunks(monkeypatch):
    """One image per captioning task and three captions per parsing task, so that a small run
    is spread over several tasks and both workers."""
    monkeypatch.setattr(caption_calls, "CHUNK_IMAGES", 1)
    monkeypatch.setattr(scenegraph, "PARSE_BATCH", 3)


@pytest.fixture
def started(monkeypatch) -> list[int]:
    """The sizes of the worker pools that started processes."""
    sizes: list[int] = []
    start = WorkerPool._start

    def spy(self):
        if self._executor is None:
            sizes.append(self.workers)
        return start(self)

    monkeypatch.setattr(WorkerPool, "_start", spy)
    return sizes


def test_two_workers_write_what_one_does(
    tmp_path, small_chunks, started, spacy_ready, minilm_ready
):
    runs = {}
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        gpkg = make_run(folder, n_regions=4, n_points=2)
        result = caption_stage(gpkg, parser="rule", workers=workers)
        runs[workers] = (folder, gpkg, result)
    assert started == [2]  # the second run really used two processes, the first none
    (one, gpkg1, r1), (two, gpkg2, r2) = runs[1], runs[2]
    assert r1.counts == r2.counts and r1.counts["captions"] == 18
    assert cache_records(one) == cache_records(two)
    # images in their order, each with its three styles: the order does not depend on timing
    assert [r["image_id"] for r in cache_records(two)][::3] == [
        f"overhead_{rid}" for rid in gpd.read_file(gpkg2, layer=C.LAYER_REGIONS)[C.REGION_ID]
    ] + ["sv_p0", "sv_p1"]
    parses = (one / PARSES_JSONL).read_text(encoding="utf-8")
    assert parses == (two / PARSES_JSONL).read_text(encoding="utf-8")
    assert len(parses.splitlines()) == 18
    t1 = gpd.read_file(gpkg1, layer=C.LAYER_CAPTIONS)
    t2 = gpd.read_file(gpkg2, layer=C.LAYER_CAPTIONS)
    pd.testing.assert_frame_equal(t1, t2, check_exact=True)
    assert t2[C.SCORE].notna().all() and t2.groupby(C.IMAGE_ID)[C.SELECTED].sum().eq(1).all()


class Failing(OSMCaptioner):
    """An OSM captioner that fails on one image, by raising or by killing its process."""

    def __init__(self, *args, fail: str, how: str = "raise", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail, self.how = fail, how

    def caption_many(self, image, item, requests):
        if item.image_id == self.fail:
            if self.how == "exit":
                os._exit(3)  # a worker that dies (killed, out of memory)
            raise RuntimeError(f"boom on {item.image_id}")
        return super().caption_many(image, item, requests)


def _first_regions(gpkg: Path, n: int) -> list[str]:
    return list(gpd.read_file(gpkg, layer=C.LAYER_REGIONS)[C.REGION_ID][:n])


def test_an_error_in_a_worker_says_where_and_keeps_what_was_done(tmp_path, small_chunks):
    gpkg = make_run(tmp_path, n_regions=5, n_points=0)
    regions = _first_regions(gpkg, 5)
    bad = f"overhead_{regions[2]}"
    captioner = Failing(osm_path=_kotka(), fail=bad)
    with pytest.raises(WorkerError, match=rf"image {bad}: RuntimeError: boom") as info:
        caption_stage(gpkg, captioner=captioner, workers=2, select="first")
    assert "boom on" in str(info.value) and "continues" in (info.value.hint or "")
    kept = CaptionCache(tmp_path / C.CAPTIONS_JSONL)
    done = {json.loads(line)["image_id"] for line in kept.path.read_text().splitlines()}
    # the images before the failing one were settled before its error; nothing of it exists
    assert {f"overhead_{r}" for r in regions[:2]} <= done and bad not in done
    assert C.LAYER_CAPTIONS not in gpd.list_layers(gpkg)["name"].tolist()
    # the same command continues: what was kept is not asked for again
    again = caption_stage(gpkg, workers=1, select="first", osm=_kotka())
    assert again.counts["cached"] == 3 * len(done) and again.counts["captions"] == 15


def test_a_worker_that_dies_is_a_clear_error_and_finished_work_is_kept(tmp_path, small_chunks):
    gpkg = make_run(tmp_path, n_regions=5, n_points=0)
    bad = f"overhead_{_first_regions(gpkg, 5)[2]}"
    captioner = Failing(osm_path=_kotka(), fail=bad, how="exit")
    with pytest.raises(WorkerError, match="stopped unexpectedly") as info:
        caption_stage(gpkg, captioner=captioner, workers=2, select="first")
    assert "--workers 1" in (info.value.hint or "")
    # the failing image started only after one of the first two finished, which was kept
    records = CaptionCache(tmp_path / C.CAPTIONS_JSONL)
    assert len(records) >= 3 and len(records) % 3 == 0
    again = caption_stage(gpkg, workers=1, select="first", osm=_kotka())
    assert again.counts["cached"] == len(records)


def test_auto_never_exceeds_the_usable_cores(monkeypatch, tmp_path, started):
    for cores in (1, 2, 3, 16):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert choose_workers("auto") == cores
        assert choose_workers("auto", tasks=2) == min(cores, 2)
    assert choose_workers(3, tasks=100) == 3 and choose_workers(8, tasks=0) == 1
    # one usable core: the stage starts no process at all
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    gpkg = make_run(tmp_path, n_regions=2, n_points=0)
    assert CaptionSettings().workers == "auto"
    caption_stage(gpkg, select="first")
    assert started == []


@pytest.mark.parametrize("value", [0, -1, "many", True, 1.5])
def test_bad_worker_counts_are_refused(value):
    with pytest.raises(InputError, match=r"workers \(--workers\)"):
        CaptionSettings(workers=value)
    assert CaptionSettings(workers="2").workers == 2
    assert "workers" not in CaptionSettings(workers=2).to_dict(runtime=False)  # runtime


def _thread_report(chunk: int) -> tuple[int, str | None, list[int]]:
    import numpy  # noqa: F401 - loads BLAS
    from threadpoolctl import threadpool_info

    return chunk, os.environ.get("OMP_NUM_THREADS"), [p["num_threads"] for p in threadpool_info()]


def test_each_worker_runs_one_blas_thread():
    seen = []
    with WorkerPool(2) as pool:
        pool.run(_thread_report, [1, 2, 3], lambda chunk, out: seen.append(out))
    assert [chunk for chunk, _, _ in seen] == [1, 2, 3]
    for _, omp, threads in seen:
        assert omp == "1" and threads and set(threads) == {1}


def test_batched_parses_are_the_single_parses(tmp_path, spacy_ready):
    texts = [
        "A wide road with parked cars runs past a tall red building.",
        "Trees line the quiet residential street, and a small park lies to the north.",
        "Green space covers about 12% of the area. No buildings are mapped here.",
        "A wide road with parked cars runs past a tall red building.",  # a repeat
    ]
    parser = scenegraph.RuleParser()
    single = [parser.parse(t) for t in texts]
    assert parser.parse_many(texts, batch_size=2) == single
    one = scenegraph.CachedParser(parser, tmp_path / "one.jsonl")
    for t in texts:
        one.parse(t)
    many = scenegraph.CachedParser(parser, tmp_path / "many.jsonl")
    calls = []
    many.parse_many(texts, progress=calls.append)
    assert (tmp_path / "one.jsonl").read_text() == (tmp_path / "many.jsonl").read_text()
    assert sum(calls) == 3 and len(scenegraph.CachedParser(parser, tmp_path / "many.jsonl")) == 3


def test_a_cache_session_flushes_each_record(tmp_path):
    cache = CaptionCache(tmp_path / C.CAPTIONS_JSONL)
    with cache.appending():
        pass
    assert not cache.path.exists()  # nothing put, no file (a failed first call leaves none)
    with cache.appending():
        cache.put("k1", "first caption", model="m")
        assert CaptionCache(cache.path).get("k1")["caption"] == "first caption"
        with cache.appending():  # nested sessions share the file
            cache.put("k2", "second caption", model="m")
        cache.put("k3", "third caption", model="m")
    cache.put("k4", "after the session", model="m")
    assert [json.loads(line)["key"] for line in cache.path.read_text().splitlines()] == [
        "k1",
        "k2",
        "k3",
        "k4",
    ]


def _span(chunk: int) -> tuple[int, float, float]:
    import time

    started = time.monotonic()
    time.sleep(0.3)
    return chunk, started, time.monotonic()


def test_one_worker_fewer_while_this_process_is_busy():
    # While this process works in another thread (the stage loading WordNet and MiniLM), a
    # chunk starts only when the one before it has come back: 2 processes on 2 cores, not 3.
    busy = {"now": True}
    spans: dict[int, tuple[float, float]] = {}

    def settle(chunk: int, out: tuple[int, float, float]) -> None:
        spans[chunk] = out[1:]
        if chunk == 3:
            busy["now"] = False

    with WorkerPool(2) as pool:
        pool.busy = lambda: busy["now"]
        pool.run(_span, list(range(1, 9)), settle)
    assert sorted(spans) == list(range(1, 9))
    for a in (1, 2, 3):  # one at a time while busy
        assert spans[a][1] <= spans[a + 1][0]
    later = [spans[c] for c in range(5, 9)]  # then both workers again
    assert any(s2 < e1 for (_, e1), (s2, _) in itertools.pairwise(later))
