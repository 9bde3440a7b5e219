"""Starts, watches and replaces the worker process.

The worker inherits one end of a socketpair (no network port) and runs in its own
process group, so that SIGINT reaches it only when the kernel forwards it. The supervisor
reads frames from the worker, hands each to ``on_frame``, and when the worker is gone
(exit, signal, or a corrupt link) calls ``on_exit`` with a sentence saying what
happened, then starts a fresh worker.

It owns the worker's lifecycle only; it must never interpret frames.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wrapperkernel.workerlink import frames

log = logging.getLogger("wrapperkernel.supervisor")

STOP_GRACE_S = 2.0


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "the worker process stopped answering"
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"the worker process was killed by signal {number} ({name})"
    from wrapperkernel.workerlink.exits import READER_CRASHED_EXIT

    if returncode == READER_CRASHED_EXIT:
        return (f"the worker process exited with code {returncode}: its reader thread "
                "crashed (a bug in wrapperkernel, not in your code: please report it with "
                "the traceback from the kernel's log)")
    return f"the worker process exited with code {returncode}"


class WorkerSupervisor:
    def __init__(
        self,
        on_frame: Callable[[Any], None],
        on_exit: Callable[[str], None],
        env: dict[str, str] | None = None,
    ) -> None:
        self._on_frame = on_frame
        self._on_exit = on_exit
        self.env = env  # of the worker processes started from now on (None: the kernel's)
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.Transport | None = None
        self._watch: asyncio.Task | None = None
        self._stopping = False
        self.generation = 0
        # Frames for the next worker, sent while the previous one is gone and the new one
        # is not started yet (requests queued behind a crashed cell).
        self._held: list[bytes] = []
        # Frames sent during one turn of the event loop go out in one write: a burst of
        # page values costs one system call and one wake-up of the worker, not one each.
        self._pending: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        kernel_end, worker_end = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "wrapperkernel.worker",
                "--fd",
                str(worker_end.fileno()),
                pass_fds=(worker_end.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                process_group=0,
                env=self.env,
            )
        finally:
            worker_end.close()
        # Imported here, not at the top: the kernel answers kernel_info before it pays
        # for the pydantic models (see app.py).
        from wrapperkernel.workerlink import frames
        from wrapperkernel.workerlink.framing import FrameDecoder

        decoder: FrameDecoder[frames.WorkerToKernel] = FrameDecoder(frames.WORKER_TO_KERNEL)
        loop = asyncio.get_running_loop()
        link = _Link(decoder, self._on_frame, loop.create_future())
        self._writer, _ = await loop.create_connection(lambda: link, sock=kernel_end)
        for data in self._held:
            self._writer.write(data)
        self._held.clear()
        self.generation += 1
        self._watch = asyncio.create_task(self._read(link, self._process, self.generation))

    def send(self, frame: frames.Frame) -> None:
        """Queue ``frame`` for the worker: written at the end of this turn of the event
        loop, or by ``flush``. A dead worker's frames are discarded by restart."""
        from wrapperkernel.workerlink.framing import encode

        self.send_encoded(encode(frame))

    def send_encoded(self, data: bytes) -> None:
        """As ``send``, for a frame already encoded (``framing.encode_body``)."""
        self._pending.append(data)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write the queued frames now (a request the worker should start on at once)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if self._writer is None or self._writer.is_closing():
            self._held.append(data)
            return
        self._writer.write(data)

    def interrupt(self) -> None:
        if self._process and self._process.returncode is None:
            os.kill(self._process.pid, signal.SIGINT)

    async def _read(
        self, link: _Link, process: asyncio.subprocess.Process, generation: int
    ) -> None:
        from wrapperkernel.workerlink.framing import FramingError

        reason = ""
        try:
            ended = await link.ended
            if ended is not None:
                raise ended
        except FramingError as error:
            reason = f"the worker sent a corrupt frame ({error})"
            log.error("%s; killing it", reason)
            _kill(process)
        except ConnectionError as error:
            reason = f"the link to the worker broke ({error})"
        except Exception as error:  # noqa: BLE001 - the one catch-all of this loop
            # A frame the kernel could not handle: the worker counts as broken, as for a
            # corrupt frame. Its running request gets an error reply saying so (on_exit),
            # and a fresh worker starts, instead of a read task that ends in silence.
            reason = (f"the kernel could not handle a frame from the worker "
                      f"({type(error).__name__}: {error})")
            log.error("%s; killing it\n%s", reason, traceback.format_exc())
            _kill(process)
        if generation == self.generation and self._writer is not None:
            # From now on, frames wait for the next worker instead of the dead one.
            self._writer.close()
            self._writer = None
        returncode = await _wait(process)
        if self._stopping or generation != self.generation:
            return
        self._on_exit(reason or describe_exit(returncode))
        await self.start()

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is None or process.returncode is not None:
            return
        from wrapperkernel.workerlink.frames import ShutdownFrame

        self.send(ShutdownFrame())
        self.flush()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except asyncio.TimeoutError:
            _kill(process)
            await process.wait()


class _Link(asyncio.Protocol):
    """The kernel's end of the link: every chunk the worker wrote is decoded, and its
    frames handled, in the event loop's own read callback (one per chunk, so a worker
    that floods output leaves the kernel's other work its turns). ``ended`` gets the
    reason reading stopped: None for a clean end of the stream, else the exception
    (``FramingError``, ``ConnectionError``, or what handling a frame raised)."""

    def __init__(self, decoder: Any, on_frame: Callable[[Any], None],
                 ended: asyncio.Future[BaseException | None]) -> None:
        self._decoder = decoder
        self._on_frame = on_frame
        self.ended = ended
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.ended.done():
            return  # already broken: the supervisor is replacing this worker
        try:
            for frame in self._decoder.feed(data):
                self._on_frame(frame)
        except Exception as error:  # noqa: BLE001 - handed to the supervisor, which decides
            self._end(error)
            if self._transport is not None:
                self._transport.pause_reading()

    def eof_received(self) -> bool:
        from wrapperkernel.workerlink.framing import FramingError

        try:
            self._decoder.eof()
        except FramingError as error:  # the stream ended inside a frame
            self._end(error)
        else:
            self._end(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not isinstance(exc, ConnectionError):
            exc = ConnectionError(str(exc))
        self._end(exc)

    def _end(self, reason: BaseException | None) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            process.kill()
        except ProcessLookupError:
            log.debug("worker %s already gone", process.pid)


async def _wait(process: asyncio.subprocess.Process) -> int | None:
    try:
        return await asyncio.wait_for(process.wait(), STOP_GRACE_S)
    except asyncio.TimeoutError:
        _kill(process)
        return await process.wait()
