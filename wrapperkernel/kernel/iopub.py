"""The worker frames that the kernel publishes on IOPub as they are, and the message each
one becomes: a table from frame class to ``(msg_type, content)``.

A cell's output (stream text, displays, its result, its error, clear_output) crosses the
link as a frame and leaves on IOPub as one message, parented to the request named by the
frame's ``req``. The contents follow the messaging spec's IOPub section ("Streams",
"Display Data", "Update Display Data", "Execution results", "Execution errors", "Clear
output"), field for field.

This module owns the table only. It must never publish, choose a parent, keep state, or
handle a frame that starts, answers or ends a request (``input_request``,
``execute_reply``, ``reply``) or that belongs to the comm router (``address_*``,
``relay_comm``): those stay explicit handlers in ``kernel.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wrapperkernel.workerlink import frames

Publication = tuple[str, dict[str, Any]]


def _stream(frame: frames.StreamFrame) -> Publication:
    return "stream", {"name": frame.name, "text": frame.text}


def _display_data(frame: frames.DisplayDataFrame) -> Publication:
    # One frame type for both: IPython's display publisher says "update" with a flag, and
    # the spec gives update_display_data the same content as display_data.
    msg_type = "update_display_data" if frame.update else "display_data"
    return msg_type, {"data": frame.data, "metadata": frame.metadata,
                      "transient": frame.transient}


def _execute_result(frame: frames.ExecuteResultFrame) -> Publication:
    return "execute_result", {"execution_count": frame.execution_count,
                              "data": frame.data, "metadata": frame.metadata}


def _error(frame: frames.ErrorFrame) -> Publication:
    # The spec ("Execution errors"): an execute_reply's error fields, without its
    # "status" and "execution_count".
    return "error", {"ename": frame.ename, "evalue": frame.evalue,
                     "traceback": frame.traceback}


def _clear_output(frame: frames.ClearOutputFrame) -> Publication:
    return "clear_output", {"wait": frame.wait}


# The table. A frame class that is not here is not a plain publication.
PUBLICATIONS: dict[type[frames.Frame], Callable[[Any], Publication]] = {
    frames.StreamFrame: _stream,
    frames.DisplayDataFrame: _display_data,
    frames.ExecuteResultFrame: _execute_result,
    frames.ErrorFrame: _error,
    frames.ClearOutputFrame: _clear_output,
}


def publication(frame: frames.Frame) -> Publication | None:
    """The IOPub message ``frame`` becomes, or None when it is not a plain publication."""
    build = PUBLICATIONS.get(type(frame))
    return None if build is None else build(frame)
