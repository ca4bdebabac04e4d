"""The report in a real browser: headless Chromium opens index.html from disk, driven over the DevTools pipe.

The DevTools protocol over ``--remote-debugging-pipe`` (JSON messages separated by NUL on file descriptors
3 and 4) needs no websocket client, so the test adds no dependency. Skipped where Chromium is absent
(CI installs Debian's chromium).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from faceprobe.report.html import build_report
from faceprobe.report.run import load_run
from test_report import synthetic_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
XSS = "<script>alert(1)</script>"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


class DevTools:
    """A headless Chromium and one page, spoken to with DevTools protocol commands over a pipe."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # the browser expects the pipe on fds 3 and 4: move ours above them first so dup2 cannot clobber one
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
        os.close(to_browser)
        os.close(from_browser)

        def pipes_on_3_and_4() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        flags = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-sync"
        flags += " --disable-background-networking --disable-component-update --window-size=1400,1000"
        flags += " --remote-debugging-pipe"
        self.process = subprocess.Popen(
            [CHROMIUM, *flags.split(), f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=pipes_on_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in high:
            os.close(fd)
        self._buffer, self._next_id, self.events = b"", 0, []
        target = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)[
            "sessionId"
        ]

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and wait for its reply; events that arrive meanwhile are kept in ``events``."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout=60)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def page(self, method: str, **params) -> dict:
        return self.send(method, self.session, **params)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive(deadline - time.monotonic()))
        return next(e for e in self.events if e.get("method") == method)

    def _receive(self, timeout: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(timeout, 0))
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self._read, 1 << 20)
            assert chunk, "Chromium closed the DevTools pipe"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        finally:
            self.process.wait(timeout=30)
            os.close(self._write)
            os.close(self._read)


@pytest.fixture
def browser(tmp_path):
    devtools = DevTools(tmp_path / "profile")
    yield devtools
    devtools.close()


def test_report_opens_with_every_figure_loaded_no_console_error_and_names_as_text(browser, tmp_path):
    run = synthetic_run(tmp_path / "run", attributes=("Smiling", XSS, "Control_Random"))
    index = build_report([load_run(run)], tmp_path / "report")
    for method in ("Page.enable", "Runtime.enable", "Log.enable"):
        browser.page(method)
    start = time.monotonic()
    browser.page("Page.navigate", url=index.as_uri())
    browser.wait_for("Page.loadEventFired")
    seconds = time.monotonic() - start
    state = browser.page(
        "Runtime.evaluate",
        returnByValue=True,
        expression="""({
            images: Array.from(document.images, i => ({width: i.naturalWidth, complete: i.complete})),
            scripts: document.scripts.length,
            text: document.body.innerText,
        })""",
    )["result"]["value"]
    shot = base64.b64decode(browser.page("Page.captureScreenshot", format="png")["data"])
    (tmp_path / "screenshot.png").write_bytes(shot)

    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    assert len(state["images"]) >= 6
    assert all(i["complete"] and i["width"] > 0 for i in state["images"]), state["images"]
    assert state["scripts"] == 0 and XSS in state["text"]
    problems = [
        e
        for e in browser.events
        if e.get("method") in ("Runtime.exceptionThrown", "Page.javascriptDialogOpening")
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert problems == []
    assert seconds < 10, f"the page took {seconds:.1f} s to load"
    for markdown in (tmp_path / "report" / "tables").glob("*.md"):
        assert XSS not in markdown.read_text()
    for svg in (tmp_path / "report" / "figures").glob("*.svg"):
        assert "<script" not in svg.read_text()
