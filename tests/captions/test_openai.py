"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import geopandas as gpd
import pytest

from tests.captions.helpers import first_region_id, make_run, png_bytes
from tests.conftest import json_reply
from tests.helpers import Loopback, QuietHandler
from urbangeo import constants as C
from urbangeo.captions.captioners import CaptionError, ImageItem
from urbangeo.captions.captioners.openai import OpenAICaptioner
from urbangeo.captions.prompts import OVERHEAD_PROMPT, STREETVIEW_PROMPT
from urbangeo.captions.stages import caption_stage
from urbangeo.errors import InputError, OutputError
from urbangeo.io.http import RetryPolicy, retry_after_seconds

FAST = RetryPolicy(max_retries=4, backoff=0.01, max_wait=0.05)


def caption_openai(gpkg, server, models: list[str], **settings):
    """The caption stage on ``server``'s chat completions (openai backend), quick retries, the
    first caption kept."""
    return caption_stage(
        gpkg,
        backend="openai",
        models=models,
        base_url=server.url + "/v1",
        retry=FAST,
        select="first",
        **settings,
    )


def chat_reply(text: str) -> tuple[int, str, bytes]:
    return json_reply(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    )


class ChatServer:
    """A chat-completions handler that checks each request and fails on purpose.

    ``fail`` maps a model to the statuses its first requests get (then it succeeds).
    """

    def __init__(self, fail: dict[str, list[int]] | None = None, reply=None) -> None:
        self.fail = {k: list(v) for k, v in (fail or {}).items()}
        self.reply = reply
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, body: bytes):
        assert method == "POST" and path == "/v1/chat/completions"
        req = json.loads(body)
        with self.lock:
            self.bodies.append(req)
            statuses = self.fail.get(req["model"], [])
            status = statuses.pop(0) if statuses else 200
        if status == 429:
            return 429, "application/json", b'{"error": {"message": "slow down"}}'
        if status != 200:
            return status, "application/json", b'{"error": "boom"}'
        text, image = req["messages"][0]["content"]
        assert text["type"] == "text" and image["type"] == "image_url"
        url = image["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        decoded = base64.b64decode(url.split(",", 1)[1])
        assert decoded[:8] == b"\x89PNG\r\n\x1a\n"
        if self.reply is not None:
            return self.reply(req)
        kind = "street" if "street-view" in text["text"] else "top-down"
        return chat_reply(f"A {kind} image with buildings and trees, by {req['model']}.")


def test_request_format_retries_and_cache(tmp_path, loopback, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-test-key")
    handler = ChatServer(fail={"model-a": [429, 500, 503]})
    server = loopback(handler)
    gpkg = make_run(tmp_path, n_regions=2, n_points=1)

    def run(**kw):
        return caption_openai(gpkg, server, ["model-a", "model-b"], **kw)

    result = run()
    assert result.counts["captions"] == 6 and result.counts["failed"] == 0
    # 3 images x 2 models, plus 3 failed attempts of model-a's first request.
    assert len(server.requests) == 9
    first = handler.bodies[0]
    assert first["model"] in ("model-a", "model-b")
    assert first["messages"][0]["role"] == "user"
    prompts = {b["messages"][0]["content"][0]["text"] for b in handler.bodies}
    assert prompts == {OVERHEAD_PROMPT, STREETVIEW_PROMPT}  # images of no known source
    table = gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)
    assert sorted(table[C.MODEL]) == ["model-a"] * 3 + ["model-b"] * 3
    assert table.groupby(C.IMAGE_ID)[C.SELECTED].sum().eq(1).all()
    sv = table[table[C.KIND] == C.KIND_STREETVIEW]
    assert sv[C.CAPTION].str.startswith("A street image").all()
    jsonl = (tmp_path / C.CAPTIONS_JSONL).read_text()
    assert len(jsonl.splitlines()) == 6 and "sk-secret" not in jsonl

    # A rerun pays nothing: zero HTTP requests.
    with pytest.raises(OutputError):
        run()
    before = len(server.requests)
    again = run(overwrite=True)
    assert len(server.requests) == before
    assert again.counts["cached"] == 6


def test_api_key_header_from_environment(loopback, monkeypatch):
    server = loopback(ChatServer())
    monkeypatch.setenv("MY_KEY", "k-123")
    captioner = OpenAICaptioner(["m"], base_url=server.url + "/v1", api_key_env="MY_KEY")
    assert captioner._headers["Authorization"] == "Bearer k-123"
    text = captioner.caption(png_bytes(), "hi", "m", ImageItem("x", C.KIND_OVERHEAD))
    assert text == "A top-down image with buildings and trees, by m."
    assert "k-123" not in json.dumps(captioner.options())
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(InputError, match="MY_KEY"):
        OpenAICaptioner(["m"], base_url=server.url + "/v1", api_key_env="MY_KEY")


def test_retry_after_is_honoured(loopback):
    calls = []

    def handler(method, path, body):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 429, "application/json", b"{}"
        return chat_reply("ok caption")

    # The Retry-After header: the LoopbackServer sends none, so test the policy and parser.
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None
    assert RetryPolicy(backoff=1, max_wait=5).delay(0, retry_after="3") == 3.0
    assert RetryPolicy(backoff=1, max_wait=5).delay(0, retry_after="30") == 5.0
    delays = [RetryPolicy(backoff=1, max_wait=100).delay(k) for k in range(4)]
    assert all(0.5 * 2**k <= d <= 2**k for k, d in enumerate(delays))
    server = loopback(handler)
    policy = RetryPolicy(max_retries=2, backoff=0.2, max_wait=1)
    captioner = OpenAICaptioner(["m"], base_url=server.url + "/v1", retry=policy)
    assert captioner.caption(png_bytes(), "p", "m", ImageItem("x", C.KIND_OVERHEAD)) == "ok caption"
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.1


def test_retry_after_header_from_server(monkeypatch, serve):
    """A server's Retry-After header sets the wait (checked on the client's sleep calls)."""
    waits = []
    monkeypatch.setattr(time, "sleep", lambda s: waits.append(s))

    class Handler(QuietHandler):
        n = 0

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            Handler.n += 1
            if Handler.n == 1:
                self.reply(429, b"", {"Retry-After": "0.7"})
                return
            payload = json.dumps({"choices": [{"message": {"content": "fine"}}]}).encode()
            self.reply(200, payload, {"Content-Type": "application/json"})

    server = serve(Loopback, Handler, "/v1")
    captioner = OpenAICaptioner(["m"], base_url=server.url, retry=FAST)
    assert captioner.caption(png_bytes(), "p", "m", ImageItem("x", C.KIND_OVERHEAD)) == "fine"
    assert waits == [0.05]  # 0.7 s asked, capped by max_wait=0.05


def test_concurrency_is_bounded(tmp_path, loopback):
    inflight, peak = [0], [0]
    lock = threading.Lock()

    def handler(method, path, body):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.05)
        with lock:
            inflight[0] -= 1
        return chat_reply("a caption")

    server = loopback(handler)
    gpkg = make_run(tmp_path, n_regions=4, n_points=2)
    result = caption_openai(gpkg, server, ["a", "b"], concurrency=3)
    assert result.counts["captions"] == 12
    assert 2 <= peak[0] <= 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint(tmp_path):
    gpkg = make_run(tmp_path, n_regions=1, n_points=0)
    started = time.monotonic()
    with pytest.raises(InputError, match="Cannot reach") as info:
        caption_stage(
            gpkg,
            backend="openai",
            models=["m"],
            base_url=f"http://127.0.0.1:{free_port()}/v1",
            retry=RetryPolicy(max_retries=1, backoff=0.01),
        )
    assert "--base-url" in info.value.hint
    assert time.monotonic() - started < 10


def test_non_json_reply(tmp_path, loopback):
    server = loopback(lambda m, p, b: (200, "text/html", b"<html>Welcome to nginx</html>"))
    gpkg = make_run(tmp_path, n_regions=1, n_points=0)
    with pytest.raises(InputError, match="not JSON") as info:
        caption_stage(gpkg, backend="openai", models=["m"], base_url=server.url + "/v1", retry=FAST)
    assert "/v1" in info.value.hint
    assert not (tmp_path / C.CAPTIONS_JSONL).exists()


def test_model_not_found_is_fatal(tmp_path, loopback):
    server = loopback(lambda m, p, b: json_reply({"error": {"message": "no model x"}}, 404))
    gpkg = make_run(tmp_path, n_regions=1, n_points=0)
    with pytest.raises(InputError, match=r"HTTP 404.*no model x"):
        caption_stage(gpkg, backend="openai", models=["x"], base_url=server.url + "/v1")


def test_undecodable_image_and_empty_caption(tmp_path, loopback):
    def reply(req):
        return chat_reply("   " if req["model"] == "silent" else "Roofs and roads.")

    handler = ChatServer(reply=reply)
    server = loopback(handler)
    broken_id = f"overhead_{first_region_id()}"
    gpkg = make_run(tmp_path, n_regions=3, n_points=0, broken=(broken_id,))
    result = caption_openai(gpkg, server, ["talky", "silent"])
    # The broken image fails for both models without a request; "silent" fails everywhere.
    assert result.counts["captions"] == 2
    assert result.counts["failed"] == 4
    assert len(server.requests) == 4
    table = gpd.read_file(gpkg, layer=C.LAYER_CAPTIONS)
    assert broken_id not in set(table[C.IMAGE_ID])
    assert set(table[C.MODEL]) == {"talky"}
    # Failures are not cached: a rerun asks again for them only.
    caption_openai(gpkg, server, ["talky", "silent"], overwrite=True)
    assert len(server.requests) == 6


def test_missing_images_are_skipped(tmp_path, loopback):
    server = loopback(ChatServer())
    gpkg = make_run(tmp_path, n_regions=2, n_points=1, missing=("sv_p0",))
    result = caption_stage(
        gpkg, backend="openai", models=["m"], base_url=server.url + "/v1", select="first"
    )
    assert result.counts["skipped"] == 1 and result.counts["captions"] == 2


def test_bad_base_url():
    with pytest.raises(InputError, match="not an http"):
        OpenAICaptioner(["m"], base_url="localhost:8000")


def test_caption_error_on_client_error(loopback):
    server = loopback(lambda m, p, b: json_reply({"error": {"message": "image too big"}}, 400))
    captioner = OpenAICaptioner(["m"], base_url=server.url + "/v1", retry=FAST)
    with pytest.raises(CaptionError, match=r"HTTP 400.*image too big"):
        captioner.caption(png_bytes(), "p", "m", ImageItem("x", C.KIND_OVERHEAD))
    assert len(server.requests) == 1
