"""A frontend with only its kernel connection and a widget manager: the stand-in for VS
Code (which runs local kernels without a Jupyter Server) in the widget-transport tests.

It is one jupyter_client client of its own session (a page's kernel connection) plus a
Node process (``tests/widget_frontend.mjs``) that runs the ES modules of anywidget models
as the kernel sent them. The Python side is the widget manager's wire part: it creates a
model for each ``jupyter.widget`` comm_open with anywidget's module, forwards the model's
custom messages both ways, and restores models from the kernel the way ipywidgets 8 does
after a page load (the ``jupyter.widget.control`` comm's ``request_states``). Nothing in
it knows the address channel: the page client inside the model does all of that.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.session import Session

FRONTEND_JS = Path(__file__).with_name("widget_frontend.mjs")
WIDGET_TARGET = "jupyter.widget"
CONTROL_TARGET = "jupyter.widget.control"
EVAL_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


class WidgetFrontend:
    def __init__(self, connection_file: str, key: bytes) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed; the widget frontend runs models in Node")
        self.client = BlockingKernelClient(connection_file=connection_file,
                                           session=Session(key=key))
        self.client.load_connection_file()
        self.client.start_channels()
        self.node = subprocess.Popen([node, str(FRONTEND_JS)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.models: dict[str, dict[str, Any]] = {}  # comm id -> state (anywidget ones)
        self.reports: queue.Queue[Any] = queue.Queue()
        self.console: list[tuple[str, str]] = []
        self.sent_by_page: list[dict[str, Any]] = []  # custom contents the models sent
        self.received_by_page: list[dict[str, Any]] = []  # custom contents for the models
        self._results: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._write_lock = threading.Lock()
        self._control: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read_iopub, daemon=True),
                         threading.Thread(target=self._read_node, daemon=True)]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ for tests

    def eval(self, code: str, timeout: float = EVAL_TIMEOUT_S) -> Any:
        """Runs ``code`` (an async function body) in the page; its return value."""
        request_id = uuid.uuid4().hex
        answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._results[request_id] = answers
        self._to_node({"op": "eval", "id": request_id, "code": code})
        try:
            answer = answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the page did not finish {code!r} within {timeout} s") from None
        finally:
            self._results.pop(request_id, None)
        if "error" in answer:
            raise RuntimeError(f"the page failed: {answer['error']}")
        return answer["value"]

    def restore(self, timeout: float = EVAL_TIMEOUT_S) -> dict[str, Any]:
        """What a widget manager does when a page loads: ask the kernel for every widget's
        state on a control comm, then create the models. Returns the states."""
        comm_id = uuid.uuid4().hex
        replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._control[comm_id] = replies
        self._shell("comm_open", {"comm_id": comm_id, "target_name": CONTROL_TARGET, "data": {}},
                    metadata={"version": "1.0.0"})
        self._shell("comm_msg", {"comm_id": comm_id, "data": {"method": "request_states"}})
        try:
            data = replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("the kernel did not answer the control comm") from None
        finally:
            self._control.pop(comm_id, None)
        self._shell("comm_close", {"comm_id": comm_id, "data": {}})
        states = data.get("states", {})
        for model_id, entry in states.items():
            self._create(model_id, entry["state"])
        return states

    def close(self) -> None:
        """The page goes away (a closed tab): its models stop, its connection closes."""
        self._stop.set()
        if self.node.poll() is None:
            if self.node.stdin is not None:
                self.node.stdin.close()
            try:
                self.node.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.node.kill()
                self.node.wait(STOP_TIMEOUT_S)
        for thread in self._threads:
            thread.join(STOP_TIMEOUT_S)
        if self.node.stdout is not None:
            self.node.stdout.close()
        self.client.stop_channels()

    # ------------------------------------------------------------------ wire

    def _shell(self, msg_type: str, content: dict[str, Any],
               metadata: dict[str, Any] | None = None) -> None:
        msg = self.client.session.msg(msg_type, content, metadata=metadata or {})
        with self._write_lock:
            self.client.shell_channel.send(msg)

    def _to_node(self, message: dict[str, Any]) -> None:
        if self.node.stdin is None or self.node.poll() is not None:
            return
        try:
            self.node.stdin.write(json.dumps(message) + "\n")
            self.node.stdin.flush()
        except (BrokenPipeError, ValueError):
            # The page went away (close() closed its stdin, or Node exited): what it
            # would have received is gone with it, as with a closed tab.
            return

    def _create(self, model_id: str, state: dict[str, Any]) -> None:
        if state.get("_model_module") != "anywidget" or model_id in self.models:
            return
        self.models[model_id] = state
        self._to_node({"op": "model", "id": model_id, "state": state})

    def _read_iopub(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.client.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "comm_open" and content.get("target_name") == WIDGET_TARGET:
                self._create(content["comm_id"], content["data"]["state"])
            elif kind == "comm_msg" and content["comm_id"] in self._control:
                self._control[content["comm_id"]].put(content["data"])
            elif kind == "comm_msg" and content["comm_id"] in self.models:
                data = content["data"]
                if data.get("method") == "custom":
                    self.received_by_page.append(data["content"])
                    self._to_node({"op": "custom", "id": content["comm_id"],
                                   "content": data["content"]})

    def _read_node(self) -> None:
        assert self.node.stdout is not None
        for line in self.node.stdout:
            message = json.loads(line)
            op = message["op"]
            if op == "send":
                self.sent_by_page.append(message["content"])
                self._shell("comm_msg", {"comm_id": message["id"],
                                         "data": {"method": "custom", "content": message["content"]}})
            elif op == "result":
                answers = self._results.get(message["id"])
                if answers is not None:
                    answers.put(message)
            elif op == "report":
                self.reports.put(message["value"])
            elif op == "console":
                self.console.append((message["level"], message["text"]))
