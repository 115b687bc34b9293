"""Open a page in headless Chromium the way a person would, and report what happened (Chrome DevTools protocol).

    with Browser() as browser:
        page = browser.open(Path("report.html"), screenshot=Path("shot.png"))
        page.console_errors, page.requests, page.evaluate("document.title")

Chromium is Debian's `chromium` (or $UNLEARNOPS_CHROMIUM), started with `--remote-debugging-port=0`
and a fresh profile, without GPU, sync, updates or background traffic (`--no-sandbox` as root); the
protocol is spoken over a websocket (websocket-client). What is collected: every console message
and uncaught exception, every log entry (CSP violations, failed loads), and every request the page
made (its URL), so a test can assert that nothing came from the network.

Run as a script to refresh the README's screenshot: `python tests/browser.py report.html docs/img/report.png`.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIMEOUT_S = 90.0


@dataclass
class Page:
    session: str
    browser: Browser
    console: list[dict[str, Any]] = field(default_factory=list)  # {"level", "text"} from console.* and the Log domain
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # URLs, in the order they were requested
    failed: list[str] = field(default_factory=list)

    @property
    def console_errors(self) -> list[dict[str, Any]]:
        return [entry for entry in self.console if entry["level"] in ("error", "warning")]

    @property
    def network_requests(self) -> list[str]:
        """Requests to anything but the page itself and data: URIs (the network, another file, a blob)."""
        return [url for url in self.requests if not (url.startswith("data:") or url == self.browser.opened_url)]

    def evaluate(self, expression: str) -> Any:
        result = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                                   session=self.session)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


class Browser:
    def __init__(self, chromium: str | None = None, *, width: int = 1100):
        from unlearnops.report.render import chromium_command, find_chromium

        self.chromium = chromium or find_chromium()
        if self.chromium is None:
            raise RuntimeError("no Chromium found")
        self.width = width
        self._profile = tempfile.TemporaryDirectory(prefix="unlearnops-browser-")
        command = [*chromium_command(self.chromium, Path(self._profile.name)), "--remote-debugging-port=0",
                   "--remote-allow-origins=*", "--hide-scrollbars", "about:blank"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self._socket = None
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.opened_url: str | None = None

    def __enter__(self) -> Browser:
        import websocket

        url = self._devtools_url()
        self._socket = websocket.create_connection(url, timeout=TIMEOUT_S, suppress_origin=True)
        return self

    def __exit__(self, *_exc) -> None:
        try:
            if self._socket is not None:
                self._socket.send(json.dumps({"id": 0, "method": "Browser.close"}))
                self._socket.close()
        except Exception:
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._profile.cleanup()

    def _devtools_url(self) -> str:
        deadline = time.monotonic() + TIMEOUT_S
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                return found.group(1)
        raise RuntimeError(f"Chromium did not start its DevTools endpoint:\n{''.join(seen[-20:])}")

    # ---- the protocol ---------------------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._socket.send(json.dumps(message))
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            reply = json.loads(self._socket.recv())
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)
        raise TimeoutError(f"{method}: no reply within {TIMEOUT_S} s")

    def _wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if any(e["method"] == method and e.get("sessionId") == session for e in self._events):
                return
            reply = json.loads(self._socket.recv())
            if "method" in reply:
                self._events.append(reply)
        raise TimeoutError(f"{method} did not come within {TIMEOUT_S} s")

    def open(self, path: Path, *, screenshot: Path | None = None, settle_s: float = 0.5) -> Page:
        """Load a local file, wait for its load event, collect what happened, optionally screenshot the whole page."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(session, self)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                  session=session)
        self._events.clear()
        self.opened_url = Path(path).resolve().as_uri()
        self.call("Page.navigate", {"url": self.opened_url}, session=session)
        self._wait_for("Page.loadEventFired", session)
        time.sleep(settle_s)
        self.call("Runtime.evaluate", {"expression": "1"}, session=session)  # drains the events that came meanwhile
        self._collect(page)
        if screenshot is not None:
            size = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
            shot = self.call("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": self.width, "height": size["height"], "scale": 1},
            }, session=session)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        return page

    def _collect(self, page: Page) -> None:
        for event in self._events:
            if event.get("sessionId") != page.session:
                continue
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled":
                text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
                page.console.append({"level": {"warn": "warning"}.get(params.get("type"), params.get("type")), "text": text})
            elif event["method"] == "Log.entryAdded":
                entry = params.get("entry", {})
                page.console.append({"level": entry.get("level"), "text": entry.get("text", "") + " " + entry.get("url", "")})
            elif event["method"] == "Runtime.exceptionThrown":
                page.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif event["method"] == "Network.requestWillBeSent":
                page.requests.append(params.get("request", {}).get("url", ""))
            elif event["method"] == "Network.loadingFailed":
                page.failed.append(params.get("errorText", ""))


if __name__ == "__main__":
    html, png = Path(sys.argv[1]), Path(sys.argv[2])
    with Browser() as browser:
        opened = browser.open(html, screenshot=png)
    print(f"{png}: {png.stat().st_size} bytes; console errors {opened.console_errors}; network {opened.network_requests}")
