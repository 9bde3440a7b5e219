"""Serves one kernel request at a time on the worker's main thread.

Each handler turns a request frame into the frames that answer it. User code runs only
in ``on_execute``; completion, inspection and history read the shell's state.
"""

from __future__ import annotations

import traceback
from typing import Any

from wrapperkernel.worker.shell import CellContext, DebuggerInterrupted, WorkerShell
from wrapperkernel.workerlink import frames


class RequestRunner:
    def __init__(self, shell: WorkerShell, context: CellContext) -> None:
        self.shell = shell
        self.context = context
        self._handlers = {
            "execute": self.on_execute,
            "complete": self.on_complete,
            "inspect": self.on_inspect,
            "history": self.on_history,
        }

    def run(self, job: frames.KernelToWorker) -> None:
        handler = self._handlers[job.type]
        try:
            handler(job)
        except Exception as error:  # noqa: BLE001 - the one catch-all of the worker's loop
            # A bug or a bad argument in completion, inspection or history must cost an
            # error reply, never the user's namespace.
            self._fail(job, error)

    def refuse(self, job: frames.KernelToWorker, error: Exception) -> None:
        """Answer ``job`` with ``error`` without running it (its subshell is gone)."""
        self._fail(job, error)

    def _fail(self, job: frames.KernelToWorker, error: Exception) -> None:
        ename, evalue = type(error).__name__, str(error)
        stb = traceback.format_exception(error)
        self.context.output.flush()
        if isinstance(job, frames.ExecuteFrame):
            self.context.emit(frames.ExecuteReplyFrame(
                req=job.req, status="error", execution_count=self.shell.execution_count - 1,
                next_execution_count=self.shell.execution_count,
                ename=ename, evalue=evalue, traceback=stb,
            ))
        else:
            content = {"status": "error", "ename": ename, "evalue": evalue, "traceback": stb}
            self.context.send(frames.ReplyFrame(req=job.req, content=content))

    def on_execute(self, job: frames.ExecuteFrame) -> None:
        context = self.context
        shell = self.shell
        context.req = job.req
        context.allow_stdin = job.allow_stdin
        context.last_error = None
        context.formatting_value = False  # a display hook that raised never finished
        context.display_hook_failed = False
        context.executing = True
        try:
            result = shell.run_cell(job.code, store_history=job.store_history, silent=job.silent)
        except (KeyboardInterrupt, DebuggerInterrupted):
            # The interrupt landed in IPython's own bookkeeping rather than in the cell
            # (or at a debugger's prompt that IPython ran outside the cell's code).
            result = None
            context.last_error = ("KeyboardInterrupt", "", ["KeyboardInterrupt"])
        finally:
            context.executing = False
        user_expressions: dict[str, Any] = {}
        if job.user_expressions:
            user_expressions = shell.user_expressions(job.user_expressions)
        payload = shell.payload_manager.read_payload()
        shell.payload_manager.clear_payload()
        context.flush_output()
        # As ipykernel does: the number of the last recorded cell (this one, if recorded).
        count = shell.execution_count - 1
        if result is not None and result.success and not context.display_hook_failed:
            # Not validated here: the kernel validates every frame it reads.
            reply = frames.ExecuteReplyFrame.model_construct(
                req=job.req,
                status="ok",
                execution_count=count,
                next_execution_count=shell.execution_count,
                user_expressions=user_expressions,
                payload=payload,
            )
        else:
            ename, evalue, stb = context.last_error or _describe(result)
            reply = frames.ExecuteReplyFrame(
                req=job.req,
                status="error",
                execution_count=count,
                next_execution_count=shell.execution_count,
                user_expressions=user_expressions,
                payload=payload,
                ename=ename,
                evalue=evalue,
                traceback=stb,
            )
        context.emit(reply)

    def on_complete(self, job: frames.CompleteFrame) -> None:
        from IPython.core.completer import provisionalcompleter, rectify_completions

        code, cursor_pos = job.code, job.cursor_pos
        with provisionalcompleter():
            completions = list(
                rectify_completions(code, self.shell.Completer.completions(code, cursor_pos))
            )
        if completions:
            start, end = completions[0].start, completions[0].end
        else:
            start = end = cursor_pos
        content = {
            "status": "ok",
            "matches": [c.text for c in completions],
            "cursor_start": start,
            "cursor_end": end,
            "metadata": {
                "_jupyter_types_experimental": [
                    {
                        "start": c.start,
                        "end": c.end,
                        "text": c.text,
                        "type": c.type,
                        "signature": c.signature,
                    }
                    for c in completions
                ]
            },
        }
        self.context.send(frames.ReplyFrame(req=job.req, content=content))

    def on_inspect(self, job: frames.InspectFrame) -> None:
        from IPython.utils.tokenutil import token_at_cursor

        name = token_at_cursor(job.code, job.cursor_pos)
        content: dict[str, Any] = {"status": "ok", "found": False, "data": {}, "metadata": {}}
        try:
            bundle = self.shell.object_inspect_mime(name, detail_level=job.detail_level)
        except KeyError:
            pass  # not found is an ordinary answer, said by found=False
        else:
            if not self.shell.enable_html_pager:
                bundle.pop("text/html", None)
            content.update(found=True, data=bundle)
        self.context.send(frames.ReplyFrame(req=job.req, content=content))

    def on_history(self, job: frames.HistoryFrame) -> None:
        manager = self.shell.history_manager
        if job.hist_access_type == "tail":
            items = manager.get_tail(job.n or 10, raw=job.raw, output=job.output, include_latest=True)
        elif job.hist_access_type == "range":
            items = manager.get_range(job.session, job.start, job.stop, raw=job.raw, output=job.output)
        else:
            items = manager.search(
                job.pattern, raw=job.raw, output=job.output, n=job.n, unique=job.unique
            )
        # IPython numbers the running session 0 in get_range; clients need the real number
        # (they pass it back in the next range request).
        current = manager.session_number
        history = [[item[0] or current, *item[1:]] for item in items]
        content = {"status": "ok", "history": history}
        self.context.send(frames.ReplyFrame(req=job.req, content=content))


def _describe(result: Any) -> tuple[str, str, list[str]]:
    error = None if result is None else (result.error_before_exec or result.error_in_exec)
    if error is None:
        return ("UnknownError", "the cell failed without an exception", [])
    return (type(error).__name__, str(error), [f"{type(error).__name__}: {error}"])
