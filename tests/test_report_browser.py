"""The report in a real browser: headless Chromium opens index.html and every SVG from disk, driven over the
DevTools pipe.

The DevTools protocol over ``--remote-debugging-pipe`` (JSON messages separated by NUL on file descriptors
3 and 4) needs no websocket client, so the test adds no dependency. Skipped where Chromium is absent
(CI installs Debian's chromium). What is measured: no text of any figure lies outside the figure or on
another tick label, at one and at four weight origins; the page opens with its summary and warnings, draws
its intervals, sorts and filters its tables, and never scrolls sideways.
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

import pandas as pd
import pytest

from conftest import resnet_like_layers, write_hand_run
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

    def open(self, path: Path) -> None:
        """Load ``path`` and wait until it has loaded."""
        self.page("Page.enable")
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.page("Page.navigate", url=path.as_uri())
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        reply = self.page("Runtime.evaluate", returnByValue=True, awaitPromise=True, expression=expression)
        assert "exceptionDetails" not in reply, reply
        return reply["result"]["value"]

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
            scripts: document.querySelectorAll("script").length,
            text: document.body.innerText,
        })""",
    )["result"]["value"]
    shot = base64.b64decode(browser.page("Page.captureScreenshot", format="png")["data"])
    (tmp_path / "screenshot.png").write_bytes(shot)

    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    assert len(state["images"]) >= 8
    assert all(i["complete"] and i["width"] > 0 for i in state["images"]), state["images"]
    assert state["scripts"] == 1 and XSS in state["text"]  # the page's own sorting script, no other
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


#: Every text of an SVG figure whose box leaves the figure, and the x tick labels of each panel whose boxes
#: overlap their neighbour's (matplotlib names the groups ``axes_N`` and ``xtick_N``).
_MEASURE_SVG = """(() => {
    const figure = document.documentElement.getBoundingClientRect();
    const texts = Array.from(document.querySelectorAll("text"));
    const outside = texts.map(t => [t.textContent, t.getBoundingClientRect()]).filter(([, r]) =>
        r.width > 0 && (r.left < figure.left - 0.5 || r.top < figure.top - 0.5 ||
                        r.right > figure.right + 0.5 || r.bottom > figure.bottom + 0.5))
        .map(([text, r]) => ({text, left: r.left, top: r.top, right: r.right, bottom: r.bottom}));
    const overlapping = [];
    for (const axes of document.querySelectorAll("g[id^=axes_]")) {
        const ticks = Array.from(axes.querySelectorAll("g[id^=xtick_] text"))
            .map(t => [t.textContent, t.getBoundingClientRect()]).filter(([, r]) => r.width > 0)
            .sort((a, b) => a[1].left - b[1].left);
        for (let i = 1; i < ticks.length; i++) {
            if (ticks[i][1].left < ticks[i - 1][1].right - 0.5) {
                overlapping.push([ticks[i - 1][0], ticks[i][0]]);
            }
        }
    }
    return {width: figure.width, height: figure.height, texts: texts.length, outside, overlapping};
})()"""


@pytest.mark.parametrize("origins", [1, 4])
def test_no_figure_text_is_clipped_or_overlaps_at_one_and_four_weight_origins(browser, tmp_path, origins):
    names = (
        "random",
        "imagenet",
        "checkpoint:/data/checkpoints/arcface-r50-webface-long-name",
        "checkpoint:x",
    )
    # one origin: a few long layer names at close depths; four: every layer of a 72-layer catalogue, 2 seeds
    many = {"layers": resnet_like_layers(), "seeds": (0, 1)} if origins > 1 else {}
    run = write_hand_run(tmp_path / "run", origins=names[-origins:], **many)
    build_report([load_run(run)], tmp_path / "report")
    svgs = sorted((tmp_path / "report" / "figures").glob("*.svg"))
    kinds = {svg.stem.split("-")[0] for svg in svgs}
    assert {"depth", "groups", "residual", "weight", "heatmap", "vip"} <= kinds, kinds
    for svg in svgs:
        browser.open(svg)
        measured = browser.evaluate(_MEASURE_SVG)
        assert measured["texts"] > 10 and measured["width"] > 300, (svg.name, measured)
        assert measured["outside"] == [], (svg.name, measured["outside"][:5])
        assert measured["overlapping"] == [], (svg.name, measured["overlapping"][:5])


def test_page_opens_with_summary_and_warnings_draws_intervals_sorts_filters_and_wraps(browser, tmp_path):
    data = {"shortened": {"Bald": [120, 300]}, "skipped_images": ["000017.jpg", "000023.jpg"]}
    run = write_hand_run(tmp_path / "run", n_eval=60, nan_rows=2, manifest_data=data)
    index = build_report([load_run(run)], tmp_path / "report")
    browser.open(index)
    page = browser.evaluate("""({
        sections: Array.from(document.querySelectorAll("section"), s => s.id),
        warnings: Array.from(document.querySelectorAll("#summary .warnings li"), li => li.textContent),
        summaryImages: document.querySelectorAll("#summary img").length,
        summaryTable: Array.from(document.querySelectorAll("#summary table tbody tr"), r => r.className),
        cells: Array.from(document.querySelectorAll("#summary table tbody td"), td => td.textContent),
        scrollWidth: document.documentElement.scrollWidth,
        width: document.documentElement.clientWidth,
        images: Array.from(document.images, i => [i.alt, i.getBoundingClientRect().width]),
        body: document.querySelector("section").getBoundingClientRect().width,
    })""")
    assert page["sections"][0] == "summary"
    warnings = " | ".join(page["warnings"])
    for fragment in (
        "Bald: draw shortened to 120 train + 300 val",
        "2 images skipped",
        "2 probe rows without an accuracy",
        "fewer than 100 images",
        "Other: Young",
    ):
        assert fragment in warnings, warnings
    assert page["summaryImages"] == 1  # the attribute x layer heat map
    assert page["summaryTable"] and all("few" in c for c in page["summaryTable"])  # 60 images: greyed
    assert any("±" in cell for cell in page["cells"])
    assert page["scrollWidth"] <= page["width"], "the page scrolls sideways"
    for alt, width in page["images"]:  # every figure at least half the page, multi-panel ones all of it
        assert width >= 0.45 * page["body"], (alt, width)
        if alt.endswith("(thesis Figs 5.1-5.3)"):
            assert width >= 0.9 * page["body"], (alt, width)

    # the 95% intervals are drawn: one translucent band per curve of the depth figure
    (depth,) = (tmp_path / "report" / "figures").glob("depth-*.csv")  # one model, one seed
    curves = pd.read_csv(depth)
    browser.open(depth.with_suffix(".svg"))
    bands = browser.evaluate(
        'Array.from(document.querySelectorAll("path, use"))'  # a band is a <use> of a <defs> path
        '.filter(p => getComputedStyle(p).fillOpacity === "0.15").length'
    )
    assert bands == len(curves.groupby(["panel", "series"]))

    # sorting by a column orders the rows by its numbers; the filter box hides rows not matching
    browser.open(index)
    table = 'document.querySelector("#summary table")'
    column = browser.evaluate(
        f"Array.from({table}.tHead.rows[0].cells).findIndex(c => c.textContent.startsWith('layer accuracy'))"
    )
    assert column >= 0
    values = browser.evaluate(f"""(() => {{
        const head = {table}.tHead.rows[0].cells[{column}];
        head.click();
        const up = Array.from({table}.tBodies[0].rows, r => parseFloat(r.cells[{column}].dataset.v));
        head.click();
        const down = Array.from({table}.tBodies[0].rows, r => parseFloat(r.cells[{column}].dataset.v));
        const box = {table}.previousElementSibling;
        box.value = "Smiling";
        box.dispatchEvent(new Event("input"));
        const shown = Array.from({table}.tBodies[0].rows).filter(r => !r.hidden).map(r => r.textContent);
        return {{up, down, shown, box: box.tagName}};
    }})()""")
    assert values["up"] == sorted(values["up"]) and values["down"] == sorted(values["up"], reverse=True)
    assert values["box"] == "INPUT" and values["shown"] and all("Smiling" in row for row in values["shown"])
