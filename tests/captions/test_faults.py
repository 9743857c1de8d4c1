"""Faults of the caption stage (issue #14): huge replies, every call failing, bad settings."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
from click.testing import CliRunner

from tests.captions.helpers import make_run
from tests.captions.test_openai import chat_reply
from urbangeo import constants as C
from urbangeo.io.gpkg import list_layers
from urbangeo.io.runs import read_stage_records
from urbangeo.settings.captions import MAX_CAPTION_CHARS
from urbangeo_cli.captions import caption

#: A reply far beyond any caption: 3 MB of words (the issue saw 18 MB stored whole).
HUGE = ("tree roof road " * 200_000).strip()


def _openai_args(gpkg, server, *more: str) -> list[str]:
    return [
        "--gpkg", str(gpkg), "--backend", "openai", "--base-url", server.url + "/v1",
        "--model", "m", "--select", "first", "--progress", "json", *more,
    ]  # fmt: skip


def test_a_huge_caption_is_cut_and_flagged(tmp_path, loopback):
    def handler(method, path, body):
        text = json.loads(body)["messages"][0]["content"][0]["text"]
        return chat_reply(HUGE if "street-view" in text else "Roofs and roads.")

    server = loopback(handler)
    gpkg = make_run(tmp_path, n_regions=2, n_points=1)
    out = CliRunner().invoke(caption, _openai_args(gpkg, server))
    assert out.exit_code == 0, out.output[-2000:]
    assert len(out.output) < 100_000  # the caption is not echoed either
    warnings = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    warned = [e["text"] for e in warnings if e.get("level") == "warning"]
    assert any("1 caption" in t and f"{MAX_CAPTION_CHARS:,}" in t for t in warned), warned

    cache = tmp_path / C.CAPTIONS_JSONL
    assert cache.stat().st_size < 3 * MAX_CAPTION_CHARS
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    long = [r for r in records if r["kind"] == C.KIND_STREETVIEW]
    assert len(long) == 1 and long[0]["truncated"] is True
    assert 0 < len(long[0]["caption"]) <= MAX_CAPTION_CHARS
    assert HUGE.startswith(long[0]["caption"])
    assert not any(r.get("truncated") for r in records if r["kind"] == C.KIND_OVERHEAD)

    table = gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)
    assert table[C.CAPTION].str.len().max() <= MAX_CAPTION_CHARS
    flags = dict(zip(table[C.KIND], table["truncated"], strict=False))
    assert flags == {C.KIND_STREETVIEW: True, C.KIND_OVERHEAD: False}
    assert read_stage_records(gpkg)["caption"].counts["truncated"] == 1

    # From the cache on a rerun: still cut, still flagged, no request.
    before = len(server.requests)
    again = CliRunner().invoke(caption, _openai_args(gpkg, server, "--overwrite"))
    assert again.exit_code == 0 and len(server.requests) == before
    table = gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)
    assert table["truncated"].sum() == 1


def test_a_cache_written_before_the_cap_is_cut_when_read(tmp_path):
    from urbangeo.captions.cache import CaptionCache

    path = tmp_path / C.CAPTIONS_JSONL
    path.write_text(json.dumps({"key": "k", "caption": HUGE}) + "\n")
    record = CaptionCache(path).get("k")
    assert len(record["caption"]) <= MAX_CAPTION_CHARS and record["truncated"] is True


def test_every_call_failing_exits_non_zero(tmp_path, loopback):
    server = loopback(lambda m, p, b: (500, "application/json", b'{"error": "boom"}'))
    gpkg = make_run(tmp_path, n_regions=2, n_points=0)
    out = CliRunner().invoke(caption, _openai_args(gpkg, server, "--max-retries", "0"))
    assert out.exit_code == 1, out.output
    assert len(server.requests) == 2
    error = [json.loads(line) for line in out.stdout.splitlines() if '"error"' in line][-1]
    assert "All 2 caption calls failed" in error["text"] and "HTTP 500" in error["text"]
    assert "same command" in error["hint"] and "continues" in error["hint"]
    assert C.LAYER_CAPTIONS not in list_layers(gpkg)
    assert "caption" not in read_stage_records(gpkg)


def test_every_call_failing_raises_in_python(tmp_path, loopback):
    from urbangeo.captions.stages import CaptionsFailedError, caption_stage
    from urbangeo.io.http import RetryPolicy

    server = loopback(lambda m, p, b: (503, "text/plain", b"down"))
    gpkg = make_run(tmp_path, n_regions=1, n_points=1)
    with pytest.raises(CaptionsFailedError, match="All 2 caption calls failed"):
        caption_stage(
            gpkg,
            backend="openai",
            models=["m"],
            base_url=server.url + "/v1",
            retry=RetryPolicy(max_retries=0),
        )


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--max-tokens", "-5", "at least 1"),
        ("--timeout", "-1", "more than 0"),
        ("--radius", "nan", "finite"),
        ("--temperature", "9", "at most 2"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(tmp_path, loopback, flag, value, says):
    server = loopback(lambda m, p, b: chat_reply("Roofs."))
    gpkg = make_run(tmp_path, n_regions=1, n_points=0)
    out = CliRunner().invoke(caption, _openai_args(gpkg, server, flag, value))
    assert out.exit_code == 1, out.output
    assert flag in out.output and says in out.output
    assert server.requests == []
    assert not (tmp_path / C.CAPTIONS_JSONL).exists()
    assert C.LAYER_CAPTIONS not in list_layers(gpkg)
