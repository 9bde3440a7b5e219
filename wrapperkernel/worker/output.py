"""Captures everything the cell writes to stdout and stderr and sends it to the kernel.

Text is coalesced: a print loop of 200,000 lines becomes a few dozen stream frames, so
that no client's high-water mark drops any of it, and the frames go out in the order the
text was written (a switch between stdout and stderr flushes first). Text written by C
code or child processes straight to file descriptors 1 and 2 is captured through pipes.

This module owns the std streams of the worker. It must never lose text silently: when
the kernel is gone the worker is about to exit anyway.
"""

from __future__ import annotations

import codecs
import io
import os
import select
import threading
from collections.abc import Callable

from wrapperkernel.threads import internal_thread
from wrapperkernel.workerlink.frames import StreamFrame

FLUSH_BYTES = 64 * 1024
# Long enough to coalesce a burst of prints, short enough that a human sees output as live.
FLUSH_INTERVAL_S = 0.01


class OutputBuffer:
    """Ordered, coalescing buffer of stream text, each piece for the request of the
    thread that wrote it (``current_req``: several shells may run at once)."""

    def __init__(self, send: Callable[[StreamFrame], None]) -> None:
        self._send = send
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._name: str | None = None
        self._req = ""
        self._parts: list[str] = []
        self._size = 0
        self.current_req: Callable[[], str] = lambda: ""
        self._flusher = internal_thread(self._flush_soon, "output-flusher")
        self._flusher.start()

    def write(self, name: str, text: str) -> None:
        if not text:
            return
        req = self.current_req()
        with self.lock:
            if (self._name != name or self._req != req) and self._parts:
                self.flush_locked()
            first = not self._parts
            self._name = name
            self._req = req
            self._parts.append(text)
            self._size += len(text)
            if self._size >= FLUSH_BYTES:
                self.flush_locked()
            elif first:
                self._wake.notify()

    def flush(self) -> None:
        with self.lock:
            self.flush_locked()

    def flush_locked(self) -> None:
        if not self._parts:
            return
        text = "".join(self._parts)
        name = self._name
        self._parts = []
        self._size = 0
        self._send(StreamFrame(req=self._req, name=name, text=text))  # type: ignore[arg-type]

    def _flush_soon(self) -> None:
        with self.lock:
            while True:
                while not self._parts:
                    self._wake.wait()
                self._wake.wait(FLUSH_INTERVAL_S)
                self.flush_locked()


class CapturedStream(io.TextIOBase):
    """What ``sys.stdout`` / ``sys.stderr`` become in the worker."""

    def __init__(self, name: str, buffer: OutputBuffer, fileno: int) -> None:
        self._name_ = name
        self._buffer = buffer
        self._fileno = fileno

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"<{self._name_}>"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fileno

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._buffer.write(self._name_, text)
        return len(text)

    def flush(self) -> None:
        self._buffer.flush()


class FdCapture:
    """Redirects file descriptor ``fd`` into a pipe whose contents join the buffer."""

    def __init__(self, fd: int, name: str, buffer: OutputBuffer) -> None:
        self._name = name
        self._buffer = buffer
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self._read_end = read_end
        self._busy = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        internal_thread(self._pump, f"fd-{name}").start()

    def _pump(self) -> None:
        while True:
            select.select([self._read_end], [], [])
            with self._busy:
                data = os.read(self._read_end, 65536)
                if not data:
                    return
                self._buffer.write(self._name, self._decoder.decode(data))

    def drain(self, max_rounds: int = 50) -> None:
        """Wait (briefly, bounded) until what is in the pipe right now reached the buffer."""
        for _ in range(max_rounds):
            with self._busy:
                readable, _, _ = select.select([self._read_end], [], [], 0)
            if not readable:
                return
            select.select([], [], [], 0.001)
