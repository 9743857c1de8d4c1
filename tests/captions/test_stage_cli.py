"""The caption stage with consensus, and the commands."""

from __future__ import annotations

import dataclasses
import json

import geopandas as gpd
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.captions.helpers import make_run
from tests.conftest import json_reply
from urbangeo import constants as C
from urbangeo.captions.stages import caption_stage
from urbangeo.errors import InputError, MissingLayerError
from urbangeo.io.gpkg import write_layers
from urbangeo.io.runs import read_stage_records
from urbangeo_cli.captions import caption, captions


def test_osm_stage_with_consensus(tmp_path, spacy_ready, minilm_ready):
    gpkg = make_run(tmp_path, n_regions=2, n_points=1)
    result = caption_stage(gpkg, parser="rule")
    table = gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)
    assert list(table.columns[:9]) == [
        C.IMAGE_ID,
        C.KIND,
        C.REGION_ID,
        C.POINT_ID,
        C.BACKEND,
        C.MODEL,
        C.CAPTION,
        C.SCORE,
        C.SELECTED,
    ]
    assert len(table) == 9 and result.counts["captioned"] == 3
    assert table[C.SCORE].between(0, 1).all()
    per_image = table.groupby(C.IMAGE_ID)
    assert per_image[C.SELECTED].sum().eq(1).all()
    best = table.loc[per_image[C.SCORE].idxmax()]
    assert best[C.SELECTED].all()
    record = read_stage_records(gpkg)["caption"]
    assert record.params["backend"] == "osm" and record.counts["captions"] == 9
    assert (tmp_path / "caption_parses.jsonl").exists()


def test_bad_inputs(tmp_path):
    with pytest.raises(MissingLayerError):
        caption_stage(tmp_path / "none.gpkg")
    gpkg = make_run(tmp_path, n_regions=1, n_points=0)
    with pytest.raises(InputError, match="kind"):
        caption_stage(gpkg, kinds=["aerial"])
    with pytest.raises(InputError, match=r"backend.*not one of the choices"):
        caption_stage(gpkg, backend="llava")
    with pytest.raises(InputError, match="refine"):
        caption_stage(gpkg, refine=True)
    with pytest.raises(InputError, match="base-url"):
        caption_stage(gpkg, backend="openai", models=["m"])
    write_layers(gpkg, {C.LAYER_IMAGES: pd.DataFrame({"image_id": ["x"]})}, overwrite=True)
    with pytest.raises(InputError, match="lacks the column"):
        caption_stage(gpkg)


def test_missing_images_layer_names_the_stage(tmp_path):
    gpkg = make_run(tmp_path, n_regions=1, n_points=0)
    import sqlite3

    with sqlite3.connect(gpkg) as con:  # drop the layer the way GDAL would see it gone
        con.execute("DROP TABLE images")
        con.execute("DELETE FROM gpkg_contents WHERE table_name = 'images'")
    with pytest.raises(MissingLayerError) as info:
        caption_stage(gpkg)
    assert "urbangeo tiles" in info.value.hint and "urbangeo streetview" in info.value.hint


def test_caption_command(tmp_path, loopback, monkeypatch):
    monkeypatch.setenv("VLM_KEY", "secret-token")
    seen = []

    def handler(method, path, body):
        seen.append(json.loads(body)["model"])
        return json_reply({"choices": [{"message": {"content": "Roofs, roads and trees."}}]})

    server = loopback(handler)
    gpkg = make_run(tmp_path, n_regions=2, n_points=0)
    args = [
        "--gpkg",
        str(gpkg),
        "--backend",
        "openai",
        "--base-url",
        server.url + "/v1",
        "--model",
        "a",
        "--model",
        "b",
        "--api-key-env",
        "VLM_KEY",
        "--select",
        "first",
        "--concurrency",
        "2",
        "--progress",
        "json",
    ]
    out = CliRunner().invoke(caption, args)
    assert out.exit_code == 0, out.output
    assert sorted(seen) == ["a", "a", "b", "b"]
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert any(e["event"] == "progress" and e["task"] == "caption" for e in events)
    assert "secret-token" not in out.output
    again = CliRunner().invoke(caption, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    again = CliRunner().invoke(caption, [*args, "--overwrite"])
    assert again.exit_code == 0 and len(seen) == 4
    bad = CliRunner().invoke(
        caption, ["--gpkg", str(gpkg), "--backend", "openai", "--model", "a", "--overwrite"]
    )
    assert bad.exit_code == 1 and "--base-url" in bad.output


def test_score_command(spacy_ready):
    out = CliRunner().invoke(
        captions,
        [
            "score",
            "A red car on the road.",
            "A red car on the street.",
            "--parser",
            "rule",
            "--no-synonyms",
            "--no-soft",
            "--graphs",
        ],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    # objects car/road vs car/street: 1 of 2; attributes red = red; relations differ.
    assert data["objects"]["f1"] == pytest.approx(0.5, abs=1e-5)
    assert data["attributes"]["f1"] == pytest.approx(1.0, abs=1e-5)
    assert data["score"] == pytest.approx((5 * 0.5 + 5 * 1.0) / 12, abs=1e-5)
    assert data["graphs"][0]["relations"] == [["car", "on", "road"]]


def test_old_spellings_still_work(tmp_path, loopback):
    """-o for --gpkg and --max-retries for --retries: accepted, with a deprecation warning."""
    statuses = [500]

    def handler(method, path, body):
        if statuses:
            return statuses.pop(), "application/json", b'{"error": "busy"}'
        return json_reply({"choices": [{"message": {"content": "Roofs and roads."}}]})

    server = loopback(handler)
    gpkg = make_run(tmp_path, n_regions=2, n_points=0)
    args = ["-o", str(gpkg), "--backend", "openai", "--base-url", server.url + "/v1"]
    out = CliRunner().invoke(caption, [*args, "--model", "m", "--max-retries", "0"])
    assert out.exit_code == 0, out.output
    assert "-o for the run's GeoPackage is deprecated" in out.output
    assert "--max-retries is deprecated; use --retries" in out.output
    # no retry: the one image whose first request got 500 failed, the other was captioned
    assert len(server.requests) == 2
    assert read_stage_records(gpkg)["caption"].counts["failed"] == 1
    assert "--max-retries" not in CliRunner().invoke(caption, ["--help"]).output


def test_settings_choose_the_captioner(tmp_path):
    from urbangeo.captions.captioners.openai import DEFAULT_RETRY
    from urbangeo.captions.stages import stage_captioner
    from urbangeo.settings import CaptionSettings

    s = CaptionSettings(
        backend="openai", models=("m",), base_url="http://127.0.0.1:9/v1", retries=2, timeout=5
    )
    captioner = stage_captioner(tmp_path / "run.gpkg", s)
    try:
        # --retries sets the number of retries; the captioner keeps its own backoff
        assert captioner.retry == dataclasses.replace(DEFAULT_RETRY, max_retries=2)
        assert captioner.timeout == 5 and captioner.pool_size == s.concurrency
    finally:
        captioner.close()


def test_an_injected_captioner_and_settings_object(tmp_path):
    from urbangeo.captions.captioners import Captioner
    from urbangeo.settings import CaptionSettings

    class Echo(Captioner):
        name = "echo"
        closed = False

        def caption(self, image, prompt, model, item):
            return f"{model} sees {item.image_id}."

        def close(self):
            self.closed = True

    gpkg = make_run(tmp_path, n_regions=2, n_points=1)
    echo = Echo(["x", "y"])
    settings = CaptionSettings(select="first", kinds=(C.KIND_OVERHEAD,))
    result = caption_stage(gpkg, settings, captioner=echo)
    assert result.counts["captions"] == 4 and not echo.closed  # the caller owns it
    table = gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)
    assert set(table[C.BACKEND]) == {"echo"} and not table["truncated"].any()
    assert read_stage_records(gpkg)["caption"].params["select"] == "first"
