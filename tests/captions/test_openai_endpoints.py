"""Several OpenAI-compatible endpoints in one caption run, over real HTTP on 127.0.0.1: fake
vLLM replicas that answer alike, each counting its calls and the most requests it had in
flight at once."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import geopandas as gpd
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.captions.helpers import make_run
from tests.captions.test_openai import chat_reply, free_port
from urbangeo import constants as C
from urbangeo.captions.captioners.openai import OpenAICaptioner
from urbangeo.captions.endpoints import (
    MAX_FAILURES_IN_A_ROW,
    Balancer,
    fingerprint_url,
    parse_endpoints,
)
from urbangeo.captions.stages import CaptionsFailedError, caption_stage
from urbangeo.errors import InputError
from urbangeo.io.gpkg import list_layers
from urbangeo.io.http import RetryPolicy
from urbangeo.io.runs import chained_fingerprint, read_stage_records, stage_fingerprint
from urbangeo.settings import CaptionSettings
from urbangeo.settings._base import StageSettings
from urbangeo_cli.captions import caption

FAST = RetryPolicy(max_retries=1, backoff=0.01, max_wait=0.02)
MODELS = ["model-a", "model-b"]


def answer(body: bytes) -> str:
    """The caption every replica gives for a request: a function of the image and the model
    only, so that which replica answered cannot show in the outputs."""
    req = json.loads(body)
    text, image = req["messages"][0]["content"]
    digest = hashlib.sha256(image["image_url"]["url"].encode()).hexdigest()[:12]
    kind = "street" if "street-view" in text["text"] else "top-down"
    return f"A {kind} view {digest} with roofs and trees, by {req['model']}."


class Replica:
    """A chat-completions handler: ``delay`` seconds per request (so that requests overlap),
    then :func:`answer`, or ``status`` for every request."""

    def __init__(self, delay: float = 0.03, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self.calls = 0
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, body: bytes):
        assert method == "POST" and path == "/v1/chat/completions"
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.delay)
            if self.status != 200:
                return self.status, "application/json", b'{"error": "overloaded"}'
            return chat_reply(answer(body))
        finally:
            with self.lock:
                self.in_flight -= 1


def start(loopback, **kw) -> tuple[Replica, str]:
    """A replica and its API root."""
    replica = Replica(**kw)
    return replica, loopback(replica).url + "/v1"


def caption_on(gpkg, base_url, **settings):
    """The caption stage on ``base_url`` (one URL or several), quick retries, the first
    model's caption kept."""
    return caption_stage(
        gpkg,
        backend="openai",
        models=MODELS,
        base_url=base_url,
        retry=FAST,
        select="first",
        **settings,
    )


def captions_table(gpkg) -> pd.DataFrame:
    table = gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)
    return table.sort_values([C.IMAGE_ID, C.MODEL]).reset_index(drop=True)


def cache_lines(folder) -> dict[str, str]:
    """captions.jsonl as key -> caption."""
    lines = (folder / C.CAPTIONS_JSONL).read_text().splitlines()
    return {r["key"]: r["caption"] for r in map(json.loads, lines)}


# ---- balancing -----------------------------------------------------------------------------


def test_balancer_picks_the_least_loaded_and_never_exceeds_a_concurrency():
    balancer = Balancer([3, 1])
    # ties go to the larger endpoint; then the lower share of its concurrency in use
    assert [balancer.acquire() for _ in range(4)] == [0, 1, 0, 0]
    assert balancer.in_flight == [3, 1]
    balancer.release(1, ok=True)
    assert balancer.acquire() == 1  # the only free slot

    # many threads at once: never above an endpoint's own concurrency
    balancer = Balancer([3, 1, 2])
    seen = [0, 0, 0]
    peaks = [0, 0, 0]
    lock = threading.Lock()

    def work() -> None:
        for _ in range(30):
            i = balancer.acquire()
            assert i is not None
            with lock:
                seen[i] += 1
                peaks[i] = max(peaks[i], balancer.in_flight[i])
            time.sleep(0.0005)
            balancer.release(i, ok=True)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(seen) == 240 and all(seen)
    assert all(p <= c for p, c in zip(peaks, [3, 1, 2], strict=True))
    assert balancer.in_flight == [0, 0, 0] and balancer.answered == seen


def test_balancer_sets_aside_a_failing_endpoint_but_never_the_last():
    balancer = Balancer([1, 1])
    for n in range(MAX_FAILURES_IN_A_ROW - 1):
        assert balancer.acquire(tried=[1]) == 0
        assert not balancer.release(0, ok=False), n
    assert balancer.acquire(tried=[1]) == 0
    balancer.release(0, ok=True)  # an answer resets the count
    for _ in range(MAX_FAILURES_IN_A_ROW - 1):
        balancer.acquire(tried=[1])
        assert not balancer.release(0, ok=False)
    balancer.acquire(tried=[1])
    assert balancer.release(0, ok=False)  # set aside
    assert balancer.aside == {0} and balancer.live() == [1]
    assert balancer.acquire() == 1
    assert balancer.acquire(tried=[1]) is None  # nothing else left
    # the last endpoint stays, however it fails (even unreachable)
    assert not balancer.release(1, ok=False, unreachable=True)
    assert balancer.live() == [1]
    # an unreachable one goes at once
    other = Balancer([2, 2])
    other.acquire()
    assert other.release(0, ok=False, unreachable=True) and other.aside == {0}


def test_calls_are_split_by_each_endpoints_concurrency(tmp_path, loopback):
    big, big_url = start(loopback, delay=0.04)
    small, small_url = start(loopback, delay=0.04)
    gpkg = make_run(tmp_path, n_regions=8, n_points=4)
    result = caption_on(gpkg, (big_url + "#3", small_url + "#1"))
    calls = 12 * len(MODELS)
    assert result.counts["captions"] == calls and result.counts["failed"] == 0
    # every (image, model) asked once, somewhere; both replicas worked, the larger more
    assert big.calls + small.calls == calls
    assert small.calls >= 1 and big.calls > small.calls
    assert big.peak <= 3 and small.peak <= 1
    assert big.peak >= 2  # the pool is the sum of the concurrencies: requests overlapped
    assert len(cache_lines(tmp_path)) == calls


def test_outputs_equal_a_single_endpoint_run(tmp_path, loopback):
    one, one_url = start(loopback, delay=0.0)
    a, a_url = start(loopback, delay=0.01)
    b, b_url = start(loopback, delay=0.01)
    single, several = tmp_path / "single", tmp_path / "several"
    single.mkdir()
    several.mkdir()
    gpkg1 = make_run(single, n_regions=4, n_points=2)
    gpkg2 = make_run(several, n_regions=4, n_points=2)
    caption_on(gpkg1, one_url)
    caption_on(gpkg2, [a_url + "#2", b_url + "#2"])
    assert a.calls and b.calls and a.calls + b.calls == one.calls == 12
    pd.testing.assert_frame_equal(captions_table(gpkg1), captions_table(gpkg2))
    assert cache_lines(single) == cache_lines(several)  # same keys, same captions


def test_the_cache_is_reused_when_the_replicas_change(tmp_path, loopback):
    first, first_url = start(loopback, delay=0.0)
    gpkg = make_run(tmp_path, n_regions=3, n_points=1)
    caption_on(gpkg, first_url)
    assert first.calls == 8
    keys = cache_lines(tmp_path)
    before = captions_table(gpkg)
    b, b_url = start(loopback)
    c, c_url = start(loopback)
    # what `urbangeo run` compares: the record made with one URL is the one these replicas
    # would make, so the runner skips the stage
    records = read_stage_records(gpkg)
    replicas = CaptionSettings(
        backend="openai", models=MODELS, select="first", base_url=(first_url + "#2", b_url, c_url)
    )
    assert records["caption"].fingerprint == chained_fingerprint("caption", replicas, records)
    again = caption_on(gpkg, [b_url + "#4", c_url], overwrite=True)
    assert b.calls == c.calls == 0  # the endpoint is not part of a call's identity
    assert again.counts["cached"] == len(keys) == 8
    assert cache_lines(tmp_path) == keys
    pd.testing.assert_frame_equal(captions_table(gpkg), before)


# ---- failures ------------------------------------------------------------------------------


def test_a_dead_endpoint_is_set_aside_and_its_calls_served_by_the_others(
    tmp_path, loopback, capsys, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-shown")
    live, live_url = start(loopback, delay=0.01)
    dead = f"http://user:pw-never-shown@127.0.0.1:{free_port()}/v1"
    gpkg = make_run(tmp_path, n_regions=3, n_points=2)
    result = caption_on(gpkg, [dead + "#4", live_url + "#2"])
    assert result.counts["captions"] == 10 and result.counts["failed"] == 0
    assert live.calls == 10
    err = capsys.readouterr().err
    assert "set aside for this run" in err and "cannot be reached" in err
    assert dead.split("@")[1] in err and "user:***@" in err  # named, its password masked
    assert "pw-never-shown" not in err and "sk-never-shown" not in err
    assert err.count("set aside") == 1


def test_an_endpoint_failing_in_a_row_is_set_aside(tmp_path, loopback, capsys):
    sick, sick_url = start(loopback, delay=0.0, status=503)
    well, well_url = start(loopback, delay=0.01)
    gpkg = make_run(tmp_path, n_regions=3, n_points=2)
    result = caption_on(gpkg, [sick_url + "#1", well_url + "#2"])
    assert result.counts["captions"] == 10 and result.counts["failed"] == 0
    assert well.calls == 10
    # one call at a time there: exactly MAX_FAILURES_IN_A_ROW calls, each with its retries
    assert sick.calls == MAX_FAILURES_IN_A_ROW * (FAST.max_retries + 1)
    err = capsys.readouterr().err
    assert f"{MAX_FAILURES_IN_A_ROW} calls in a row failed" in err and "HTTP 503" in err


def test_all_endpoints_dead_stops_the_stage_as_one_does(tmp_path):
    gpkg = make_run(tmp_path, n_regions=1, n_points=1)
    urls = [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"]
    started = time.monotonic()
    with pytest.raises(InputError, match="Cannot reach") as info:
        caption_on(gpkg, urls)
    assert "set aside before" in info.value.message
    assert "--base-url" in info.value.hint
    assert C.LAYER_CAPTIONS not in list_layers(gpkg)
    assert time.monotonic() - started < 20


def test_every_endpoint_failing_every_call_is_the_stages_error(tmp_path, loopback):
    a, a_url = start(loopback, delay=0.0, status=500)
    b, b_url = start(loopback, delay=0.0, status=502)
    gpkg = make_run(tmp_path, n_regions=1, n_points=1)
    with pytest.raises(CaptionsFailedError, match="All 4 caption calls failed"):
        caption_on(gpkg, [a_url, b_url])
    assert a.calls and b.calls  # each call tried both before it failed


# ---- settings, fingerprint, command line ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("http://gpu1:8000/v1#0", "v1#0': what follows its last '#' is not a number"),
        ("http://gpu1:8000/v1#x", "v1#x': what follows its last '#' is not a number"),
        ("http://gpu1:8000/v1#999", "1 to 256"),
        ("gpu1:8000/v1", "not an http(s) URL"),
        ("http:///v1", "not an http(s) URL"),
    ],
)
def test_bad_endpoints_are_refused_before_any_work(tmp_path, loopback, value, says):
    replica, url = start(loopback)
    gpkg = make_run(tmp_path, n_regions=1, n_points=0)
    args = ["--gpkg", str(gpkg), "--backend", "openai", "--model", "m"]
    out = CliRunner().invoke(caption, [*args, "--base-url", url, "--base-url", value])
    assert out.exit_code == 1, out.output
    assert says in out.output and "--base-url" in out.output
    assert replica.calls == 0
    assert not (tmp_path / C.CAPTIONS_JSONL).exists()
    with pytest.raises(InputError, match="given twice"):
        CaptionSettings(backend="openai", base_url=(url, url + "/#3"))
    with pytest.raises(InputError) as info:
        parse_endpoints([value], 4)
    assert info.value.hint


@pytest.mark.parametrize(
    "value", ["user:s3cret@gpu1/v1", "http://user:s3cret@gpu1/v1#x", "http://user:s3#cret@gpu1/v1"]
)
def test_a_password_never_shows_in_an_error(value):
    with pytest.raises(InputError) as info:
        parse_endpoints([value], 4)
    assert "s3" not in str(info.value) and "user:***@" in str(info.value)


def test_endpoints_and_their_concurrency():
    endpoints = parse_endpoints(["http://gpu1:8000/v1#16", " https://gpu2/v1 "], 4)
    assert [(e.url, e.concurrency) for e in endpoints] == [
        ("http://gpu1:8000/v1", 16),
        ("https://gpu2/v1", 4),
    ]
    captioner = OpenAICaptioner(
        ["m"], base_url=("http://127.0.0.1:9/v1#16", "http://127.0.0.1:10/v1/"), pool_size=3
    )
    try:
        assert captioner.concurrency == 19  # the stage's pool
        assert [e.url for e in captioner.endpoints] == [
            "http://127.0.0.1:9/v1/chat/completions",
            "http://127.0.0.1:10/v1/chat/completions",
        ]
        assert captioner.url == captioner.endpoints[0].url
    finally:
        captioner.close()


def test_one_url_keeps_its_fingerprint_and_replicas_change_none():
    base = {"backend": "openai", "models": ("m",)}
    one = CaptionSettings(**base, base_url="http://gpu1:8000/v1")  # run.toml's plain string
    assert one.base_url == ("http://gpu1:8000/v1",)
    assert one == CaptionSettings(**base, base_url=["http://gpu1:8000/v1"])
    # the fingerprint sees what `base_url: str` gave before: the plain string
    generic = StageSettings.to_dict(one, runtime=False)
    assert generic["base_url"] == ["http://gpu1:8000/v1"]
    assert one.to_dict(runtime=False) == {**generic, "base_url": "http://gpu1:8000/v1"}
    # run.toml and the Python API keep the whole list
    assert one.to_dict()["base_url"] == ["http://gpu1:8000/v1"]
    assert CaptionSettings().to_dict(runtime=False)["base_url"] is None

    fp = stage_fingerprint("caption", one, {"tiles": "t", "streetview": "s"})
    for replicas in [
        ("http://gpu1:8000/v1#16",),
        ("http://gpu1:8000/v1#16", "http://gpu2:8000/v1#8"),
        ("http://gpu1:8000/v1", "http://gpu3:8000/v1", "http://gpu2:8000/v1#2"),
    ]:
        other = CaptionSettings(**base, base_url=replicas)
        assert other.to_dict()["base_url"] == list(replicas)
        assert stage_fingerprint("caption", other, {"tiles": "t", "streetview": "s"}) == fp
    moved = CaptionSettings(**base, base_url="http://gpu9:8000/v1")
    assert stage_fingerprint("caption", moved, {"tiles": "t", "streetview": "s"}) != fp
    assert fingerprint_url(["http://a/v1#3", "http://b/v1"]) == "http://a/v1"


def test_the_command_takes_several_endpoints(tmp_path, loopback):
    a, a_url = start(loopback, delay=0.02)
    b, b_url = start(loopback, delay=0.02)
    gpkg = make_run(tmp_path, n_regions=3, n_points=1)
    args = ["--gpkg", str(gpkg), "--backend", "openai", "--model", "m", "--select", "first"]
    out = CliRunner().invoke(caption, [*args, "--base-url", a_url + "#2", "--base-url", b_url])
    assert out.exit_code == 0, out.output
    assert a.calls + b.calls == 4 and a.calls and b.calls
    text = CliRunner().invoke(caption, ["--help"]).output
    assert "--base-url URL[#N]" in text and "least-loaded" in " ".join(text.split())
