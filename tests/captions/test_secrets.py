"""A captioning server that echoes the API key never gets it printed, raised or stored."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.captions.helpers import make_run
from tests.helpers import Loopback, QuietHandler
from urbangeo import constants as C
from urbangeo.captions.stages import caption_stage
from urbangeo.errors import InputError
from urbangeo.io.http import AccessDeniedError, RetryPolicy

KEY = "sk-live-0123456789abcdef"
FAST = RetryPolicy(max_retries=2, backoff=0.01, max_wait=0.05)


class EchoServer(Loopback):
    """A loopback server whose ``reply(auth) -> (status, content type, body)`` may echo the
    ``Authorization`` header it got; requests are counted."""

    def __init__(self, reply: Callable[[str], tuple[int, str, str]]) -> None:
        self.requests = 0
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests += 1
                status, ctype, body = reply(self.headers.get("Authorization", ""))
                self.reply(status, body.encode(), {"Content-Type": ctype})

        super().__init__(Handler, "/v1")


@pytest.fixture
def echo_server(serve) -> Callable[..., EchoServer]:
    """``echo_server(reply)``: an :class:`EchoServer`, shut down after the test."""
    return functools.partial(serve, EchoServer)


def error_json(auth: str) -> str:
    """An error body that echoes the header, the bare key and the key in a query string."""
    key = auth.removeprefix("Bearer ")
    return json.dumps({"error": {"message": f"bad header {auth}; key {key}; see ?api_key={key}"}})


def assert_nowhere(folder: Path, *texts: str) -> None:
    """The key is in none of ``texts`` and in no file under ``folder`` (cache, GeoPackage)."""
    for text in texts:
        assert KEY not in text
    for file in folder.rglob("*"):
        if file.is_file():
            assert KEY.encode() not in file.read_bytes(), file


def run(gpkg: Path, server: EchoServer, **kw):
    return caption_stage(
        gpkg,
        backend="openai",
        models=["m"],
        base_url=server.url,
        api_key_env="VLM_KEY",
        retry=FAST,
        select="first",
        **kw,
    )


@pytest.fixture
def gpkg(tmp_path, monkeypatch, caplog) -> Path:
    monkeypatch.setenv("VLM_KEY", KEY)
    caplog.set_level(logging.DEBUG)  # urllib3's debug log too
    return make_run(tmp_path, n_regions=2, n_points=0)


def test_key_echoed_on_401(gpkg, echo_server, capsys, caplog):
    server = echo_server(lambda auth: (401, "application/json", error_json(auth)))
    with pytest.raises(AccessDeniedError) as err:
        run(gpkg, server)
    assert "HTTP 401" in str(err.value) and "***" in str(err.value)
    assert server.requests <= 2  # no retries, the second image stopped too
    out = capsys.readouterr()
    assert_nowhere(gpkg.parent, str(err.value), repr(err.value), out.out, out.err, caplog.text)


def test_key_echoed_on_500_retried_then_failing(gpkg, echo_server, capsys, caplog):
    from urbangeo.captions.stages import CaptionsFailedError

    server = echo_server(lambda auth: (500, "text/plain", f"crash while checking {auth}"))
    with pytest.raises(CaptionsFailedError) as err:  # every call failed: nothing written
        run(gpkg, server)
    assert "All 2 caption calls failed" in str(err.value) and "***" in str(err.value)
    assert server.requests == 2 * (FAST.max_retries + 1)
    out = capsys.readouterr()
    assert "HTTP 500" in out.err and "after 3 tries" in out.err and "***" in out.err
    assert_nowhere(gpkg.parent, str(err.value), out.out, out.err, caplog.text)


@pytest.mark.parametrize(
    "reply",
    [
        lambda auth: (200, "text/html", f"<html>Hello {auth}</html>"),  # not JSON
        lambda auth: (200, "application/json", json.dumps({"choices": [], "echo": auth})),
    ],
    ids=["not-json", "no-choices"],
)
def test_key_echoed_in_a_broken_reply(gpkg, echo_server, capsys, caplog, reply):
    server = echo_server(reply)
    with pytest.raises(InputError) as err:
        run(gpkg, server)
    assert "***" in str(err.value)
    out = capsys.readouterr()
    assert_nowhere(gpkg.parent, str(err.value), out.out, out.err, caplog.text)


def test_key_echoed_in_a_caption_is_not_cached(gpkg, echo_server, capsys, caplog):
    def reply(auth: str):
        caption = f"Roofs and roads; the server says {auth}."
        return 200, "application/json", json.dumps({"choices": [{"message": {"content": caption}}]})

    server = echo_server(reply)
    result = run(gpkg, server)
    assert result.counts["captions"] == 2
    assert "***" in (gpkg.parent / C.CAPTIONS_JSONL).read_text()
    out = capsys.readouterr()
    assert_nowhere(gpkg.parent, out.out, out.err, caplog.text)


def test_the_client_masks_credential_headers_and_posts_json(echo_server):
    from urbangeo.io.http import HttpClient, HttpError

    replies = iter([(503, "text/plain", "busy"), (404, "application/json", error_json("x"))])
    server = echo_server(lambda auth: next(replies))
    with HttpClient(rate_limit=0, backoff=0.01, headers={"Authorization": f"Bearer {KEY}"}) as c:
        assert c.scrub(f"got {KEY} and Bearer {KEY}") == "got *** and ***"
        c.add_secrets("tok-9")
        assert c.scrub("a tok-9 b") == "a *** b"
        with pytest.raises(HttpError) as err:  # 503 retried; a 404 is an error for a POST
            c.post(server.url, {"a": 1}, headers={"X-Api-Key": "other-secret"})
        assert err.value.status == 404 and err.value.tries == 2
        assert c.scrub("other-secret") == "***"
