"""A headless Chromium driven over the DevTools protocol with only ``Target`` and
``Runtime``: no Playwright, so the browser does not copy every websocket frame to a
debugger.

Why it exists: Playwright enables the ``Network`` domain on every page, so Chromium
sends each websocket frame it receives to Playwright (binary frames base64-encoded), and
Playwright's driver passes it on to the Python client. With 1 MiB frames that is most of
the browser's CPU time; a user's browser does none of it. The program -> page runs are
measured in this browser as well as in Playwright's, side by side.

It starts Chromium with ``--remote-debugging-port=0`` in a profile of its own, reads
the port from ``DevToolsActivePort``, opens one page and evaluates functions in it
(``Runtime.evaluate`` with ``awaitPromise``). Every wait has a timeout; ``close()``
ends the browser process group.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tornado.websocket import websocket_connect

START_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 10.0
# What Playwright adds so that a headless page is not throttled (timers, rAF).
UNTHROTTLED = [
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--hide-scrollbars",
    "--mute-audio",
]


class CdpError(RuntimeError):
    """Chromium answered with an error, or did not answer in time."""


class RawChromium:
    def __init__(self, executable: Path, profile: Path, args: list[str],
                 window: tuple[int, int]) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self._profile = profile
        self._process = subprocess.Popen(
            [str(executable), "--headless", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
             *args, *UNTHROTTLED, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # A loop on a thread of its own: Playwright's sync API keeps a loop running in the
        # calling thread, where run_until_complete would refuse to run.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raw-chromium",
                                        daemon=True)
        self._thread.start()
        self._ids = itertools.count(1)
        self._socket: Any = None
        self._session: str | None = None

    @property
    def pid(self) -> int:
        return self._process.pid

    def _run(self, coroutine: Any, timeout_s: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise CdpError(f"Chromium did not answer within {timeout_s:.0f} s") from exc

    def _browser_url(self) -> str:
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.is_file() or len(port_file.read_text().splitlines()) < 2:
            if self._process.poll() is not None:
                raise CdpError(f"Chromium exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                raise CdpError(f"no {port_file} after {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        return f"ws://127.0.0.1:{port}{path}"

    async def _call(self, method: str, params: dict[str, Any], session: str | None) -> Any:
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._socket.write_message(json.dumps(message))
        while True:
            raw = await self._socket.read_message()
            if raw is None:
                raise CdpError("the DevTools connection closed")
            reply = json.loads(raw)
            if reply.get("id") != call_id:
                continue  # an event: none is enabled but Target's own
            if "error" in reply:
                raise CdpError(f"{method}: {reply['error']}")
            return reply["result"]

    def open(self, url: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Open ``url`` in a new page and attach to it."""
        async def go() -> str:
            self._socket = await websocket_connect(self._browser_url(), max_message_size=2**30)
            target = await self._call("Target.createTarget", {"url": url}, None)
            attached = await self._call("Target.attachToTarget",
                                        {"targetId": target["targetId"], "flatten": True}, None)
            return attached["sessionId"]

        self._session = self._run(go(), timeout_s)

    def evaluate(self, function: str, arg: Any = None, timeout_s: float = 120.0) -> Any:
        """``function(arg)`` in the page, awaited; its JSON value."""
        expression = f"({function})({json.dumps(arg)})"
        result = self._run(self._call("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
        }, self._session), timeout_s)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"page function failed: {text}")
        return result["result"].get("value")

    def wait_for(self, predicate: str, timeout_s: float) -> None:
        """Poll ``predicate()`` (page JS returning a boolean) until it is true."""
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(f"() => Boolean(({predicate})())", timeout_s=timeout_s):
            if time.monotonic() > deadline:
                raise CdpError(f"not true within {timeout_s:.0f} s: {predicate}")
            time.sleep(0.1)

    def close(self) -> None:
        if self._socket is not None:
            self._loop.call_soon_threadsafe(self._socket.close)
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=CLOSE_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
