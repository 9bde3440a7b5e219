"""The worker's main loop: the composition root of the worker process.

Threads and their jobs:
- main thread: runs requests one at a time (cells, completion, inspection, history);
  user code runs here so that SIGINT becomes KeyboardInterrupt in it.
- reader thread: reads frames from the kernel and routes them; it never runs user code.
- output flusher and fd pumps (``output``); the address channel's callback dispatcher
  (``callbacks``) and send flusher (``send_batcher``), both started on first use; the
  debugger's thread (``debugger``). All of them are hidden from the debugger
  (``wrapperkernel/threads.py``): a breakpoint never pauses them.

When the kernel goes away the worker exits at once: it has nobody left to work for.
"""

from __future__ import annotations

import _signal
import argparse
import builtins
import ctypes
import faulthandler
import getpass
import logging
import os
import queue
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from wrapperkernel import pydantic_plugins
from wrapperkernel.threads import internal_thread
from wrapperkernel.worker.link import KernelGone, Link
from wrapperkernel.worker.output import CapturedStream, FdCapture, OutputBuffer
from wrapperkernel.workerlink import frames
from wrapperkernel.workerlink.exits import READER_CRASHED_EXIT

PR_SET_PDEATHSIG = 1
# How long a cell waits for comm messages that arrived before it to be handled; a
# callback that blocks longer does not hold cells back for ever.
COMM_BARRIER_WAIT_S = 1.0
# Python hands the GIL to a waiting thread every 5 ms by default; the comm reader and
# dispatcher threads then answer a page up to 5 ms late, per hand-over, while a cell
# spins in pure Python. A shorter interval costs nothing while those threads sleep, and
# two CPU-bound threads ran no slower with 0.1 ms than with 5 ms here.
SWITCH_INTERVAL_S = float(os.environ.get("WRAPPERKERNEL_SWITCH_INTERVAL_S", "0.0001"))


class InputReplyError(RuntimeError):
    """The frontend answered ``input()`` with an input_reply the kernel could not use."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wrapperkernel.worker")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket to the kernel")
    args = parser.parse_args(argv)
    Worker(socket.socket(fileno=args.fd)).run()


def _import_from_working_directory() -> None:
    """Make ``import mod`` find ``mod.py`` in the current directory, also after
    ``os.chdir``, as IPython and ipykernel do.

    ``python -m`` put the absolute folder the worker started in first on ``sys.path``;
    that folder is replaced by ``''`` (the current directory, looked up at each import),
    placed before site-packages like IPython's ``init_path``: after the standard library,
    so that a notebook's ``random.py`` does not shadow it. ``python -P`` /
    ``PYTHONSAFEPATH`` asked for no such entry, and gets none.
    """
    started_in = os.getcwd()
    if sys.path and sys.path[0] and os.path.realpath(sys.path[0]) == os.path.realpath(started_in):
        del sys.path[0]
    if "" in sys.path or getattr(sys.flags, "safe_path", False):  # the flag is new in 3.11
        return
    position = next((index for index, entry in enumerate(sys.path)
                     if os.path.basename(entry) in ("site-packages", "dist-packages")), 0)
    sys.path.insert(position, "")


def _die_with_parent() -> None:
    """Ask Linux to kill us if the kernel dies without closing the link."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the closed link still ends the worker


class Worker:
    def __init__(self, sock: socket.socket) -> None:
        self.link = Link(sock)
        self.jobs: queue.SimpleQueue[frames.KernelToWorker] = queue.SimpleQueue()
        # The answer to each input() waiting, by the request that asked (shells run at once).
        self.input_replies: dict[str, queue.SimpleQueue[frames.InputReplyFrame]] = {}
        self._input_lock = threading.Lock()
        self.barriers: dict[str, threading.Event] = {}
        # A private copy of the original stderr: crash reports reach the kernel's log even
        # after fd 2 is redirected into the cell output.
        self.diagnostics = os.fdopen(os.dup(2), "w", buffering=1)
        faulthandler.enable(self.diagnostics)
        # Our own and the comm package's log lines go to the kernel's log, not into the
        # user's cell output; the root logger stays the user's to configure. The comm
        # package logs as "Comm" (comm/base_comm.py: "No such comm target registered",
        # "No such comm", "Exception in comm_msg" with its traceback); with no handler
        # of its own, logging's last resort would write those to sys.stderr, which is the
        # running cell's output. ipykernel shows them in no cell either (it publishes
        # them as stderr parented to the page's comm message, which no cell owns).
        handler = logging.StreamHandler(self.diagnostics)
        handler.setFormatter(logging.Formatter("[wrapperkernel worker %(levelname)s %(name)s] %(message)s"))
        for name in ("wrapperkernel", "Comm"):
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            logger.propagate = False

    def log(self, text: str) -> None:
        print(f"[wrapperkernel worker {os.getpid()}] {text}", file=self.diagnostics)

    def run(self) -> None:
        _die_with_parent()
        _import_from_working_directory()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.output = OutputBuffer(self.link.send)
        sys.stdout.flush()
        sys.stderr.flush()
        drains = [FdCapture(1, "stdout", self.output).drain, FdCapture(2, "stderr", self.output).drain]
        sys.stdout = CapturedStream("stdout", self.output, 1)
        sys.stderr = CapturedStream("stderr", self.output, 2)

        from IPython import __version__ as ipython_version

        from wrapperkernel.worker.shell import CellContext, WorkerShell

        self.context = CellContext(send=self.link.send, output=self.output, drains=drains)
        self.output.current_req = lambda: self.context.req
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        self.shell = WorkerShell.instance()
        self.shell.init_context(self.context)
        builtins.input = self._input  # type: ignore[assignment]
        getpass.getpass = self._getpass  # type: ignore[assignment]
        signal.signal(signal.SIGINT, self._on_sigint)

        from wrapperkernel.worker.address_runtime import AddressRuntime

        self.address = AddressRuntime(self.link.send, log=self.log,
                                      send_encoded=self.link.send_encoded)
        self.address.install(self.shell)
        # Values a cell sent reach the kernel before its reply does.
        self.context.drains.append(self.address.flush)
        from wrapperkernel.worker.relay import WorkerRelay

        self.relay = WorkerRelay(self.link.send, self.address.dispatcher.submit,
                                 self.link.send_encoded)
        self.relay.install()
        from wrapperkernel.worker.debugger import WorkerDebugger

        self.debugger = WorkerDebugger(self.link.send, self.shell, self.log)

        from wrapperkernel.worker.subshells import Subshells

        self.subshells = Subshells(self._serve_in_subshell, self.context.serve_on_this_thread,
                                   self.log)
        from wrapperkernel.worker.requests import RequestRunner

        # Before the reader starts: a subshell's thread may need it at once.
        runner = self.runner = RequestRunner(self.shell, self.context)
        # The user's program builds its pydantic models with their plugins.
        pydantic_plugins.release()
        internal_thread(self._read, "kernel-reader").start()
        self.link.send(frames.ReadyFrame(pid=os.getpid(), ipython_version=ipython_version))
        while True:
            try:
                job = self.jobs.get()
            except KeyboardInterrupt:
                continue  # an interrupt that arrived after its cell had finished
            barrier = self.barriers.pop(getattr(job, "req", ""), None)
            if barrier is not None and not barrier.wait(COMM_BARRIER_WAIT_S):
                self.log("a comm callback is still running; the cell starts anyway")
            if isinstance(job, frames.ExecuteFrame):
                self.debugger.before_cell()
            runner.run(job)
            self._reclaim_sigint()

    def _serve_in_subshell(self, job: frames.KernelToWorker) -> None:
        if isinstance(job, frames.ExecuteFrame):
            self.debugger.before_cell()
        self.runner.run(job)

    # ------------------------------------------------------------------ reader thread

    def _read(self) -> None:
        try:
            for frame in self.link.frames():
                self._route(frame)
        except KernelGone as gone:
            self.log(f"{gone}; exiting")
            os._exit(0)
        except Exception:  # noqa: BLE001 - the one catch-all of this loop: report, then exit
            self.log(f"reader thread failed; exiting with status {READER_CRASHED_EXIT}:\n"
                     + traceback.format_exc())
            os._exit(READER_CRASHED_EXIT)
        os._exit(0)  # frames() ends only by raising; kept so the thread never just returns

    def _route(self, frame: frames.KernelToWorker) -> None:
        if isinstance(frame, frames.InputReplyFrame):
            with self._input_lock:
                waiting = self.input_replies.get(frame.req)
            if waiting is None:
                self.log(f"an input_reply for {frame.req}, which waits for no input: dropped")
            else:
                waiting.put(frame)
        elif isinstance(frame, frames.SubshellCreateFrame):
            self.subshells.create(frame.subshell)
        elif isinstance(frame, frames.SubshellDeleteFrame):
            self.subshells.delete(frame.subshell)
        elif getattr(frame, "subshell", None) is not None:
            subshell = frame.subshell  # type: ignore[attr-defined]
            if not self.subshells.submit(frame, subshell):
                # Answered, so that the kernel's queue for it never waits for ever.
                self.log(f"a request for subshell {subshell}, which does not exist")
                self.runner.refuse(frame, LookupError(
                    f"the worker has no subshell {subshell!r}; create a new subshell"))
        elif isinstance(frame, (frames.AddressValueFrame, frames.AddressReplyFrame,
                                frames.AddressReadRequestFrame)):
            self.address.on_frame(frame)
        elif isinstance(frame, frames.RelayCommFrame):
            self.relay.on_frame(frame)
        elif isinstance(frame, (frames.DebuggerStartFrame, frames.DebuggerStopFrame,
                                frames.DebugQueryFrame)):
            self.debugger.on_frame(frame)
        elif isinstance(frame, frames.ShutdownFrame):
            self.context.flush_output()
            os._exit(0)
        elif isinstance(frame, frames.ExecuteFrame):
            # Comm messages that arrived before this cell are handled before it runs, as
            # in a kernel that handles everything in order: the cell waits (briefly,
            # bounded) until the dispatcher passed this point.
            handled = self.address.dispatcher.barrier()
            if handled is not None:
                self.barriers[frame.req] = handled
            self.jobs.put(frame)
        else:
            self.jobs.put(frame)

    # ------------------------------------------------------------------ signals, stdin

    def _on_sigint(self, signum: int, stack: Any) -> None:
        if not self.context.executing:
            self.log("SIGINT while no cell runs: ignored")
            return
        from wrapperkernel.worker.shell import DebuggerInterrupted, debugger_on_stack

        if debugger_on_stack(stack):
            # A debugger would catch a KeyboardInterrupt at its prompt and prompt again.
            raise DebuggerInterrupted("interrupted at the debugger's prompt; the debugger "
                                      "has stopped")
        self.debugger.release_for_interrupt(stack)  # a cell stopped at a breakpoint
        raise KeyboardInterrupt

    def _reclaim_sigint(self) -> None:
        """Take SIGINT back from a debugger that kept it after its cell.

        pdb's ``continue`` makes pdb's own handler SIGINT's and only pdb's next prompt
        gives it back: left alone, it would turn the interrupt of a later cell into a
        debugger prompt in that cell. A handler the user's code installed is kept.
        """
        bdb = sys.modules.get("bdb")
        if bdb is None:
            return
        handler = _signal.getsignal(signal.SIGINT)  # signal.getsignal makes an enum of it
        if bdb is not None and isinstance(getattr(handler, "__self__", None), bdb.Bdb):
            signal.signal(signal.SIGINT, self._on_sigint)

    def _input(self, prompt: Any = "") -> str:
        return self._ask(str(prompt), password=False)

    def _getpass(self, prompt: str = "Password: ", stream: Any = None) -> str:
        return self._ask(prompt, password=True)

    def _ask(self, prompt: str, password: bool) -> str:
        from IPython.core.error import StdinNotImplementedError

        if not self.context.allow_stdin:
            raise StdinNotImplementedError(
                "input() is not available: the frontend that ran this cell does not "
                "support stdin (allow_stdin is false)."
            )
        req = self.context.req
        answers: queue.SimpleQueue[frames.InputReplyFrame] = queue.SimpleQueue()
        with self._input_lock:
            self.input_replies[req] = answers  # a stale answer to an earlier prompt is gone
        try:
            self.context.emit(frames.InputRequestFrame(req=req, prompt=prompt, password=password))
            reply = answers.get()
        finally:
            with self._input_lock:
                if self.input_replies.get(req) is answers:
                    del self.input_replies[req]
        if reply.error is not None:
            raise InputReplyError(
                f"input() got no answer: the frontend's input_reply was malformed "
                f"({reply.error}). Run the cell again to be asked again; if it keeps "
                "happening, the frontend has a bug."
            )
        return reply.value
