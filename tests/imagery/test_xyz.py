"""XYZ tiles: mosaics warped exactly onto each region, fetched politely and cached."""

from __future__ import annotations

import math
import re
import socket
import time

import numpy as np
import pytest
from pyproj import Transformer

from tests.imagery.helpers import (
    UTM35,
    coded_tile,
    decode_tile_pixels,
    grid,
    make_run,
    read_png,
)
from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.imagery.manifest import ImagesFailedError
from urbangeo.imagery.sources.xyz import auto_zoom, resolve_xyz
from urbangeo.imagery.stages import tiles_stage
from urbangeo.io.gpkg import read_layer
from urbangeo.io.http import (
    UNREACHABLE_TRIES,
    AccessDeniedError,
    HttpClient,
    HttpError,
    UnreachableError,
)
from urbangeo.io.runs import read_stage_records

TILE_PATH = re.compile(r"^/(\d+)/(\d+)/(\d+)\.png$")
R = 6378137.0


def tile_handler(missing=frozenset()):
    cache = {}

    def handler(path, query, headers):
        m = TILE_PATH.match(path)
        if not m:
            return 400, {}, b"bad"
        z, x, y = map(int, m.groups())
        if (x, y) in missing:
            return 404, {}, b""
        if (z, x, y) not in cache:
            cache[(z, x, y)] = coded_tile(z, x, y)
        return 200, {"Content-Type": "image/png"}, cache[(z, x, y)]

    return handler


def global_pixels(x, y, zoom):
    """Web-mercator global pixel coordinates (256 px tiles) of UTM35 points."""
    mx, my = Transformer.from_crs(UTM35, "EPSG:3857", always_xy=True).transform(x, y)
    scale = 256 * 2**zoom / (2 * math.pi * R)
    return (mx + math.pi * R) * scale, (math.pi * R - my) * scale


def test_mosaic_covers_exactly_each_region(tmp_path, header_server):
    server = header_server(tile_handler())
    regions = grid(2, 2)
    gpkg = make_run(tmp_path, regions)
    zoom, size = 15, 128
    result = tiles_stage(
        gpkg,
        xyz=server.url + "/{z}/{x}/{y}.png",
        zoom=zoom,
        size=size,
        resampling="nearest",
        rate_limit=0,
    )
    assert result.counts == {"ok": 4, "missing": 0, "failed": 0}
    images = read_layer(gpkg, C.LAYER_IMAGES).set_index(C.IMAGE_ID)
    for region in regions.itertuples():
        row = images.loc[f"overhead_{region.region_id}"]
        assert row[C.SOURCE] == f"xyz:{server.url}/{{z}}/{{x}}/{{y}}.png@z15"
        gx, gy = decode_tile_pixels(read_png(tmp_path / row[C.PATH]))
        minx, _, maxx, maxy = region.geometry.bounds
        step = (maxx - minx) / size
        cx, cy = np.meshgrid(
            minx + (np.arange(size) + 0.5) * step, maxy - (np.arange(size) + 0.5) * step
        )
        want_x, want_y = global_pixels(cx, cy, zoom)
        dx = (gx - np.floor(want_x)) % 4096
        dy = (gy - np.floor(want_y)) % 4096
        dx, dy = np.minimum(dx, 4096 - dx), np.minimum(dy, 4096 - dy)
        assert dx.max() <= 1 and dy.max() <= 1
        assert np.mean((dx == 0) & (dy == 0)) > 0.95
    # Every tile was fetched once, with urbangeo's User-Agent.
    paths = [p for p, _ in server.requests]
    assert len(paths) == len(set(paths))
    assert all(h["User-Agent"].startswith("urbangeo/") for _, h in server.requests)
    cached = list((tmp_path / "images/.tilecache").rglob("*.png"))
    assert len(cached) == len(paths)
    # A rerun from scratch reuses the tile cache: no request at all.
    before = len(server.requests)
    tiles_stage(
        gpkg,
        xyz=server.url + "/{z}/{x}/{y}.png",
        zoom=zoom,
        size=size,
        resampling="nearest",
        overwrite=True,
    )
    assert len(server.requests) == before


def test_missing_tiles_make_missing_regions_and_are_cached(tmp_path, header_server):
    regions = grid(2, 1)
    gpkg = make_run(tmp_path, regions)
    zoom = 14
    # Remove every tile under the second region.
    b = regions.geometry.iloc[1].bounds
    x0, y0 = global_pixels(b[0] + 1, b[3] - 1, zoom)
    x1, y1 = global_pixels(b[2] - 1, b[1] + 1, zoom)
    gone = {
        (x, y)
        for x in range(int(x0 // 256), int(x1 // 256) + 1)
        for y in range(int(y0 // 256), int(y1 // 256) + 1)
    }
    server = header_server(tile_handler(missing=gone))
    url = server.url + "/{z}/{x}/{y}.png"
    result = tiles_stage(gpkg, xyz=url, zoom=zoom, size=64)
    assert result.counts[C.STATUS_MISSING] == 1
    row = (
        read_layer(gpkg, C.LAYER_IMAGES)
        .set_index(C.IMAGE_ID)
        .loc[f"overhead_{regions[C.REGION_ID].iloc[1]}"]
    )
    assert row[C.STATUS] == C.STATUS_MISSING and "image data" in row[C.REASON]
    assert list((tmp_path / "images/.tilecache").rglob("*.404"))
    before = len(server.requests)
    tiles_stage(gpkg, xyz=url, zoom=zoom, size=64, overwrite=True)
    assert len(server.requests) == before  # 404s are remembered too


def test_url_without_placeholders_is_refused(tmp_path):
    gpkg = make_run(tmp_path, grid(1, 1))
    with pytest.raises(InputError, match=r"lacks \{y\}") as err:
        tiles_stage(gpkg, xyz="https://tiles.example.org/{z}/{x}/tile.png")
    assert "{z}/{x}/{y}" in err.value.hint
    with pytest.raises(InputError, match="neither a tile URL nor a known xyzservices"):
        resolve_xyz("No.SuchProvider")


def test_named_providers():
    url, _ = resolve_xyz("Esri.WorldImagery")
    assert url.startswith("https://server.arcgisonline.com/") and "{z}/{y}/{x}" in url
    with pytest.raises(InputError, match="needs an API key"):
        resolve_xyz("Thunderforest.OpenCycleMap")
    url, _ = resolve_xyz("Thunderforest.OpenCycleMap", key="k-123")
    assert "apikey=k-123" in url and "{z}/{x}/{y}" in url


def test_forbidden_stops_at_once_without_leaking_the_key(tmp_path, header_server, monkeypatch):
    server = header_server(lambda path, query, headers: (403, {}, b"denied"))
    gpkg = make_run(tmp_path, grid(3, 2))
    monkeypatch.setenv("URBANGEO_TILE_KEY", "sekret-tile-key")
    with pytest.raises(AccessDeniedError, match="HTTP 403") as err:
        tiles_stage(
            gpkg,
            xyz=server.url + "/{z}/{x}/{y}.png?key={key}",
            zoom=15,
            concurrency=4,
            rate_limit=0,
        )
    assert "sekret-tile-key" not in str(err.value)
    assert "URBANGEO_TILE_KEY" in err.value.hint
    # No retry storm: only the requests already in flight when the first 403 came back.
    assert 1 <= len(server.requests) <= 4


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_stops_the_stage_quickly(tmp_path):
    """Offline, or a typo in the host: a few quick tries, then one clear error (not minutes
    of backoff per tile and a run that reports only failed images)."""
    gpkg = make_run(tmp_path, grid(3, 2))
    client = HttpClient(concurrency=4, backoff=0.01, rate_limit=0, service="The tile server")
    with pytest.raises(UnreachableError, match=r"Cannot reach 127\.0\.0\.1:") as err:
        tiles_stage(
            gpkg,
            xyz=f"http://127.0.0.1:{_closed_port()}/{{z}}/{{x}}/{{y}}.png",
            zoom=15,
            client=client,
        )
    assert "internet connection" in err.value.hint and "continues" in err.value.hint
    # Each thread's request tried UNREACHABLE_TRIES times at most, not retries + 1 = 6 times.
    assert UNREACHABLE_TRIES <= client.requests_sent <= UNREACHABLE_TRIES * client.concurrency


def test_a_server_that_answered_is_retried_in_full_when_it_goes_down(header_server):
    server = header_server(lambda path, query, headers: (200, {}, b"ok"))
    client = HttpClient(backoff=0.01, retries=4, rate_limit=0)
    with client:
        assert client.get(server.url + "/x").content == b"ok"
        # the service is down now (its keep-alive connection would still answer: a closed port)
        before = client.requests_sent
        with pytest.raises(HttpError, match="after 5 tries"):
            client.get(f"http://127.0.0.1:{_closed_port()}/y")
        assert client.requests_sent - before == 5


def test_retries_honour_retry_after(header_server):
    calls = []

    def handler(path, query, headers):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 429, {"Retry-After": "1"}, b""
        if len(calls) == 2:
            return 503, {}, b""
        return 200, {}, b"ok"

    server = header_server(handler)
    with HttpClient(backoff=0.01, rate_limit=0) as client:
        response = client.get(server.url + "/x")
    assert response.content == b"ok" and len(calls) == 3
    assert calls[1] - calls[0] >= 0.95  # waited as Retry-After said, not the 10 ms backoff
    assert calls[2] - calls[1] < 0.5


def test_timeouts_are_retried_then_reported_without_secrets(header_server):
    server = header_server(lambda path, query, headers: (200, {}, b"late"), latency=0.3)
    client = HttpClient(backoff=0.01, retries=2, timeout=0.05, rate_limit=0, secrets=["s3cr3t"])
    with client, pytest.raises(HttpError, match="after 3 tries") as err:
        client.get(server.url + "/x", params={"key": "s3cr3t"})
    assert "s3cr3t" not in str(err.value)
    assert len(server.requests) == 3


def test_rate_limit_spaces_requests(header_server):
    server = header_server(lambda path, query, headers: (200, {}, b"ok"))
    with HttpClient(rate_limit=20, concurrency=2) as client:
        start = time.monotonic()
        for _ in range(6):
            client.get(server.url + "/x")
        elapsed = time.monotonic() - start
    assert elapsed >= 5 / 20 - 0.01


def test_auto_zoom_matches_the_ground_resolution():
    # At 60 N a zoom-z pixel is 40075016.686 * cos(60) / (256 * 2**z) m: z15 = 2.45 m is the
    # first not coarser than 1000 m / 256 px = 3.9 m; z14 = 4.9 m is too coarse.
    assert auto_zoom(1000, 256, 60.0) == 15
    assert auto_zoom(250, 256, 0.0) == 18  # 0.6 m at z18 <= 0.98 m; z17 = 1.19 m
    assert auto_zoom(250, 256, 0.0, max_zoom=17) == 17


def test_server_errors_make_failed_rows_that_a_rerun_retries(tmp_path, header_server):
    state = {"fail": True}

    def handler(path, query, headers):
        if state["fail"]:
            return 500, {}, b"down"
        return tile_handler()(path, query, headers)

    server = header_server(handler)
    gpkg = make_run(tmp_path, grid(2, 1))
    url = server.url + "/{z}/{x}/{y}.png"
    # Every image failed: an error (not a run that reads like a success), the rows kept.
    with pytest.raises(ImagesFailedError, match="No overhead image could be made: 2") as err:
        tiles_stage(gpkg, xyz=url, zoom=14, size=32, retries=0, rate_limit=0)
    assert "HTTP 500" in err.value.message and "Rerun" in err.value.hint
    assert read_stage_records(gpkg)["tiles"].counts["failed"] == 2
    reasons = read_layer(gpkg, C.LAYER_IMAGES)[C.REASON]
    assert all("HTTP 500" in r for r in reasons)
    assert not list((tmp_path / "images/.tilecache").rglob("*.*"))  # errors are not cached
    state["fail"] = False
    result = tiles_stage(gpkg, xyz=url, zoom=14, size=32, retries=0, rate_limit=0)
    assert result.counts == {"ok": 2, "missing": 0, "failed": 0}
