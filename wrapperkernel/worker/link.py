"""The worker's end of the private link to the kernel: a blocking socket shared by several threads.

Sending is serialised by one lock so frames from the main thread, the output flusher and
the comm dispatcher never interleave on the byte stream. Receiving happens on one reader
thread only (``frames()``), which yields validated frames until the kernel goes away.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

from wrapperkernel.workerlink import frames
from wrapperkernel.workerlink.framing import FrameDecoder, encode

RECV_CHUNK_BYTES = 256 * 1024


class KernelGone(Exception):
    """The kernel closed the link: the worker has nobody left to work for."""


class Link:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()

    def send(self, frame: frames.Frame) -> None:
        self.send_encoded(encode(frame))

    def send_encoded(self, data: bytes) -> None:
        """Bytes of whole frames (``framing.encode`` / ``encode_body``)."""
        with self._send_lock:
            try:
                self._sock.sendall(data)
            except OSError as error:
                raise KernelGone(f"cannot send to the kernel: {error}") from error

    def frames(self) -> Iterator[frames.KernelToWorker]:
        decoder: FrameDecoder[frames.KernelToWorker] = FrameDecoder(frames.KERNEL_TO_WORKER)
        while True:
            try:
                data = self._sock.recv(RECV_CHUNK_BYTES)
            except OSError as error:
                raise KernelGone(f"cannot read from the kernel: {error}") from error
            if not data:
                decoder.eof()
                raise KernelGone("the kernel closed the link")
            yield from decoder.feed(data)
