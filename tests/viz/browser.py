"""Headless Chromium driven over the DevTools protocol through a pipe (no extra package): open a
page, evaluate JavaScript (awaiting promises), take screenshots. Used by the map tests and by
``benchmarks/bench_map_scale.py``."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Headless, and reaching nothing on its own (no updates, no background requests).
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
)


def require_chromium() -> None:
    """:func:`tests.conftest.require` Chromium."""
    from tests.conftest import require  # not at the top: the benchmarks import this module

    require(CHROMIUM is not None, "Chromium", "apt-get install --no-install-recommends chromium")


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page (``width`` × ``height`` CSS pixels).

    ``--remote-debugging-pipe``: Chromium reads protocol messages from fd 3 and writes them
    to fd 4, each a JSON object ended by a NUL byte.
    """

    def __init__(self, width: int = 1000, height: int = 800, timeout: float = 120.0) -> None:
        if CHROMIUM is None:
            raise BrowserError("Chromium is not installed")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="urbangeo-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # in the child, before exec: the pipe ends as fds 3 and 4
            high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                *HEADLESS,
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=fds,
            close_fds=False,  # fds 3 and 4 (dup2 makes them inheritable; others are not)
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]
            self.call("Page.enable", session=True)
            self.call("Runtime.enable", session=True)
            self.call(
                "Emulation.setDeviceMetricsOverride",
                session=True,
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except Exception:
            self.close()
            raise

    # -- protocol ------------------------------------------------------------------------
    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError("Chromium closed the pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, *, session: bool = False, timeout: float | None = None, **params):
        """Send one command and return its result (events met on the way are kept)."""
        self._id += 1
        message: dict = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event is not None:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    # -- page ----------------------------------------------------------------------------
    def open(self, url: str, timeout: float | None = None) -> None:
        """Navigate to ``url`` and wait for its load event."""
        self.events = [e for e in self.events if e.get("method") == "Runtime.exceptionThrown"]
        self.call("Page.navigate", session=True, url=url)
        self.wait_event("Page.loadEventFired", timeout=timeout)

    def js(self, expression: str, timeout: float | None = None):
        """The value of ``expression`` (a promise is awaited); a thrown error raises."""
        result = self.call(
            "Runtime.evaluate",
            session=True,
            timeout=timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error: {text}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """The page's uncaught JavaScript errors so far (read from the events met)."""
        self.js("0")
        out = []
        for event in self.events:
            if event.get("method") == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                out.append(details.get("exception", {}).get("description") or details["text"])
        return out

    def screenshot(self, path: str | os.PathLike) -> Path:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(BrowserError, OSError):
                    self.call("Browser.close", timeout=10)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for fd in (self._to_child, self._from_child):
                with contextlib.suppress(OSError):
                    os.close(fd)
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def opened_map(page: Path, timeout: float | None = None) -> Iterator[Browser]:
    """A browser showing the map ``page``, once it is drawn (``urbangeo.ready()``)."""
    with Browser() as browser:
        browser.open(page.as_uri(), timeout=timeout)
        browser.js("urbangeo.ready()", timeout=timeout)
        yield browser
