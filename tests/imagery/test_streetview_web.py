"""Google, Mapillary and Baidu providers against loopback servers speaking their APIs."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from tests.imagery.helpers import X0, Y0, grid, jpeg_bytes, make_run, points
from urbangeo import constants as C
from urbangeo.imagery.coords import wgs84_to_bd09
from urbangeo.imagery.stages import streetview_stage
from urbangeo.io.gpkg import read_layer
from urbangeo.io.http import AccessDeniedError
from urbangeo_cli.imagery import streetview

KEY = "TOPSECRET-KEY-4711"
IMAGE = jpeg_bytes((10, 20, 30), size=(80, 60))


@pytest.fixture
def run(tmp_path):
    regions = grid(2, 1)
    sv = points([(X0 + 100, Y0 + 100), (X0 + 1500, Y0 + 500)], [10.0, 95.0], regions)
    return make_run(tmp_path, regions, sv), sv


def _images(gpkg):
    return read_layer(gpkg, C.LAYER_IMAGES).set_index(C.IMAGE_ID)


def assert_no_key(*texts):
    for text in texts:
        assert KEY not in text


def google_handler(sv, denied=False, fail_images=False):
    def handler(path, query, headers):
        if path == "/maps/api/streetview/metadata":
            assert query["key"] == KEY
            if denied:
                return (
                    200,
                    {},
                    json.dumps(
                        {"status": "REQUEST_DENIED", "error_message": f"key {KEY} is invalid"}
                    ).encode(),
                )
            lat, lon = map(float, query["location"].split(","))
            if abs(lon - sv[C.LON][1]) < 1e-6 and abs(lat - sv[C.LAT][1]) < 1e-6:
                return 200, {}, b'{"status": "ZERO_RESULTS"}'
            return (
                200,
                {},
                json.dumps({"status": "OK", "pano_id": "PANO0", "date": "2022-06"}).encode(),
            )
        if path == "/maps/api/streetview":
            if fail_images:
                return 500, {}, b"oops"
            return 200, {"Content-Type": "image/jpeg"}, IMAGE
        return 404, {}, b""

    return handler


def test_google_metadata_first_then_images(run, header_server, monkeypatch, tmp_path):
    gpkg, sv = run
    server = header_server(google_handler(sv))
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", KEY)
    result = streetview_stage(
        gpkg, provider="google", base_url=server.url, headings=(0, 180), rate_limit=0
    )
    assert result.counts == {"ok": 2, "missing": 2, "failed": 0}
    images = _images(gpkg)
    assert images.loc["sv_0_10", C.SOURCE] == "google:PANO0"
    assert images.loc["sv_0_190", C.STATUS] == C.STATUS_OK
    assert images.loc["sv_1_95", C.STATUS] == C.STATUS_MISSING
    assert "no Street View" in images.loc["sv_1_275", C.REASON]
    assert (tmp_path / images.loc["sv_0_10", C.PATH]).read_bytes() == IMAGE
    paths = [p for p, _ in server.requests]
    # One metadata call per point; images only where a panorama exists.
    assert sum(p.startswith("/maps/api/streetview/metadata") for p in paths) == 2
    image_calls = [p for p in paths if p.startswith("/maps/api/streetview?")]
    assert len(image_calls) == 2
    assert all(
        "size=640x640" in p and "fov=90" in p and "return_error_code=true" in p for p in image_calls
    )
    assert {p.split("heading=")[1].split("&")[0] for p in image_calls} == {"10.00", "190.00"}
    assert_no_key(gpkg.read_bytes().decode("latin-1"))


def test_google_denied_key_is_clear_and_secret(run, header_server, monkeypatch, caplog):
    gpkg, sv = run
    server = header_server(google_handler(sv, denied=True))
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AccessDeniedError, match="REQUEST_DENIED") as err:
        streetview_stage(gpkg, provider="google", base_url=server.url, rate_limit=0)
    assert "GOOGLE_MAPS_API_KEY" in err.value.hint
    assert_no_key(str(err.value), caplog.text)
    assert len(server.requests) <= 2  # no call after the denial
    # urllib3 logged the request URLs at DEBUG level, with the key scrubbed.
    assert "/maps/api/streetview/metadata" in caplog.text and "key=***" in caplog.text


def test_failures_keep_the_key_out_of_the_manifest_and_the_cli(run, header_server, monkeypatch):
    gpkg, sv = run
    server = header_server(google_handler(sv, fail_images=True))
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", KEY)
    monkeypatch.setenv("URBANGEO_GOOGLE_URL", server.url)
    args = ["--gpkg", str(gpkg), "--provider", "google", "--rate-limit", "0", "--retries", "1"]
    result = CliRunner().invoke(streetview, args)
    # One image failed, the other point has none: nothing usable, so exit 1 (rows kept).
    assert result.exit_code == 1, result.output
    assert "No streetview image could be made: 1 failed" in result.output
    images = _images(gpkg)
    failed = images.loc["sv_0_10"]
    assert failed[C.STATUS] == C.STATUS_FAILED and "HTTP 500" in failed[C.REASON]
    assert "after 2 tries" in failed[C.REASON]
    assert "key=***" in failed[C.REASON]
    assert_no_key(result.output, gpkg.read_bytes().decode("latin-1"), str(images.to_dict()))
    # HTTP 401/403 from the server: a clear error naming the variable, no key, exit 1.
    server.close()
    forbidden = header_server(lambda path, query, headers: (401, {}, b"no"))
    result = CliRunner().invoke(
        streetview,
        ["--gpkg", str(gpkg), "--provider", "google", "--base-url", forbidden.url, "--overwrite"],
    )
    assert result.exit_code == 1
    assert "HTTP 401" in result.output and "GOOGLE_MAPS_API_KEY" in result.output
    assert_no_key(result.output)


def test_missing_key_is_explained(run, monkeypatch):
    gpkg, _ = run
    monkeypatch.delenv("MAPILLARY_TOKEN", raising=False)
    result = CliRunner().invoke(streetview, ["--gpkg", str(gpkg), "--provider", "mapillary"])
    assert result.exit_code == 1 and "MAPILLARY_TOKEN" in result.output


def test_mapillary_nearest_image_facing_the_heading(run, header_server, monkeypatch):
    gpkg, sv = run
    lon0, lat0 = sv[C.LON][0], sv[C.LAT][0]

    def handler(path, query, headers):
        if path == "/images":
            assert headers.get("Authorization") == f"OAuth {KEY}"
            assert query["fields"] == "id,thumb_1024_url,computed_geometry,compass_angle"
            w, s, e, n = map(float, query["bbox"].split(","))
            if not (w < lon0 < e and s < lat0 < n):
                return 200, {}, b'{"data": []}'
            data = [
                # nearest, but facing away from the road heading (10)
                {
                    "id": "1",
                    "thumb_1024_url": f"{server.url}/thumb/1.jpg",
                    "computed_geometry": {"type": "Point", "coordinates": [lon0, lat0]},
                    "compass_angle": 190.0,
                },
                {
                    "id": "2",
                    "thumb_1024_url": f"{server.url}/thumb/2.jpg",
                    "computed_geometry": {"type": "Point", "coordinates": [lon0 + 1e-4, lat0]},
                    "compass_angle": 25.0,
                },
                {
                    "id": "3",
                    "thumb_1024_url": f"{server.url}/thumb/3.jpg",
                    "computed_geometry": {"type": "Point", "coordinates": [lon0 + 3e-4, lat0]},
                    "compass_angle": 12.0,
                },
            ]
            return 200, {}, json.dumps({"data": data}).encode()
        if path.startswith("/thumb/"):
            assert "Authorization" not in headers  # the token stays with the API
            return 200, {"Content-Type": "image/jpeg"}, IMAGE
        return 404, {}, b""

    server = header_server(handler)
    monkeypatch.setenv("MAPILLARY_TOKEN", KEY)
    result = streetview_stage(gpkg, provider="mapillary", base_url=server.url, rate_limit=0)
    assert result.counts == {"ok": 1, "missing": 1, "failed": 0}
    images = _images(gpkg)
    assert images.loc["sv_0_10", C.SOURCE] == "mapillary:2"  # 5.5 m away, 15 degrees off
    assert "no Mapillary image" in images.loc["sv_1_95", C.REASON]
    assert all(KEY not in p for p, _ in server.requests)


def test_baidu_uses_bd09_and_reads_its_status_codes(run, header_server, monkeypatch):
    gpkg, sv = run
    expected = [wgs84_to_bd09(sv[C.LON][i], sv[C.LAT][i]) for i in range(2)]
    seen = []

    def handler(path, query, headers):
        assert path == "/panorama/v2" and query["ak"] == KEY
        assert query["coordtype"] == "bd09ll"
        assert (query["width"], query["height"]) == ("1024", "512")
        lon, lat = map(float, query["location"].split(","))
        seen.append((lon, lat))
        if abs(lon - float(expected[1][0])) < 1e-6:
            return 200, {"Content-Type": "application/json"}, b'{"status": 402}'
        return 200, {"Content-Type": "image/jpeg"}, IMAGE

    server = header_server(handler)
    monkeypatch.setenv("BAIDU_MAP_AK", KEY)
    result = streetview_stage(gpkg, provider="baidu", base_url=server.url, rate_limit=0)
    assert result.counts == {"ok": 1, "missing": 1, "failed": 0}
    for (lon, lat), (want_lon, want_lat) in zip(sorted(seen), sorted(expected), strict=True):
        assert lon == pytest.approx(float(want_lon), abs=1e-6)
        assert lat == pytest.approx(float(want_lat), abs=1e-6)
    images = _images(gpkg)
    assert "Baidu status 402" in images.loc["sv_1_95", C.REASON]
    assert images.loc["sv_0_10", C.SOURCE] == "baidu"
    # A rejected key (Baidu answers HTTP 200 with a JSON status) stops the run.
    denied = header_server(
        lambda path, query, headers: (
            200,
            {"Content-Type": "application/json"},
            json.dumps({"status": 200, "message": f"APP不存在 {KEY}"}).encode(),
        )
    )
    with pytest.raises(AccessDeniedError, match="status 200") as err:
        streetview_stage(gpkg, provider="baidu", base_url=denied.url, overwrite=True)
    assert_no_key(str(err.value))


def test_resume_skips_paid_requests(run, header_server, monkeypatch):
    gpkg, sv = run
    server = header_server(google_handler(sv))
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", KEY)
    streetview_stage(gpkg, provider="google", base_url=server.url, rate_limit=0)
    before = len(server.requests)
    result = streetview_stage(gpkg, provider="google", base_url=server.url, rate_limit=0)
    assert len(server.requests) == before  # ok and missing images are both remembered
    assert result.counts == {"ok": 1, "missing": 1, "failed": 0}
