"""Subshells (JEP 91): threads of the worker that serve requests beside the main shell.

Each subshell is one thread with a queue of its own; it runs its requests one at a time
in the shell the main thread uses, so it shares the namespace (and IPython's execution
count and history, as in ipykernel). The kernel hands each subshell one request at a
time, as it does the main shell. A subshell thread has its own request state
(``CellContext.serve_on_this_thread``): what it prints, displays or asks with
``input()`` goes to its own request.

Only the main thread receives SIGINT, so an interrupt stops the main shell's cell and
never a subshell's (as in ipykernel). A deleted subshell's thread ends once its running
request is over; a request still running when the worker ends ends with it.

It never reads from the link: the reader thread hands it frames.
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Callable

from wrapperkernel.workerlink import frames

# How long the reader thread waits for a deleted, idle subshell's thread to end. A
# subshell still running a request ends later, when the request does.
JOIN_WAIT_S = 1.0
_STOP = object()


class Subshells:
    def __init__(self, serve: Callable[[frames.KernelToWorker], None],
                 on_thread_start: Callable[[], None], log: Callable[[str], None]) -> None:
        self._serve = serve
        self._on_thread_start = on_thread_start
        self._log = log
        self._threads: dict[str, tuple[threading.Thread, queue.SimpleQueue[object]]] = {}

    def create(self, subshell: str) -> None:
        if subshell in self._threads:
            self._log(f"subshell {subshell} exists already")
            return
        jobs: queue.SimpleQueue[object] = queue.SimpleQueue()
        # Not hidden from the debugger: a subshell runs the user's code.
        thread = threading.Thread(target=self._run, args=(jobs,), daemon=True,
                                  name=f"subshell-{subshell[:8]}")
        self._threads[subshell] = (thread, jobs)
        thread.start()

    def delete(self, subshell: str) -> None:
        entry = self._threads.pop(subshell, None)
        if entry is None:
            self._log(f"delete of subshell {subshell}, which does not exist")
            return
        thread, jobs = entry
        jobs.put(_STOP)
        thread.join(JOIN_WAIT_S)

    def submit(self, job: frames.KernelToWorker, subshell: str) -> bool:
        """Queue ``job`` for its subshell; False if there is no such subshell."""
        entry = self._threads.get(subshell)
        if entry is None:
            return False
        entry[1].put(job)
        return True

    def _run(self, jobs: queue.SimpleQueue[object]) -> None:
        self._on_thread_start()
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            try:
                self._serve(job)  # type: ignore[arg-type]
            except BaseException:  # noqa: BLE001 - the one catch-all of this thread's loop
                # The runner answers every Exception itself; this is a SystemExit or
                # similar that escaped it. The thread must go on serving its subshell.
                self._log("a subshell's request ended with:\n" + traceback.format_exc())
