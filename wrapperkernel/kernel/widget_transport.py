"""The address channel's widget transport: one ``jupyter.widget`` model on the page's own
kernel connection, whose ES module is the page client (docs/comms-api.md, "Transports").

Where a page has no Jupyter Server to open a second websocket to (VS Code, Voila, any
frontend without a server for the tab), it still has the widget manager that ipywidgets
use. The kernel opens one model there, an anywidget ``AnyModel`` whose ``_esm`` is
``js/wrapperkernel_comm.js`` plus an ``initialize`` hook: every widget manager that
creates the model (when the kernel opens it, or when a reloaded page restores it from the
kernel) runs the page client, which picks its transport (``attach`` in the JS file).

The model is the kernel's, not the worker's: its messages are answered by the kernel's
event loop, also while a cell runs, and it lives as long as the kernel process. All pages
share its comm; IOPub gives every message to every page, so each message names the page
it is for. The messages, inside ipywidgets' ``{"method": "custom", "content": ...}``:

- page -> kernel: ``{"page": P, "open": {"kernel_id": K}}``, ``{"page": P, "json": T}``
  (T is the JSON text of an address payload, as the websocket transport's comm_msg data),
  ``{"page": P, "close": true}``;
- kernel -> page: ``{"page": P, "data": D, "seq": N}``, ``{"page": P, "close": true}``,
  and ``{"install": config}`` for every page (a reinstall: pages without a client for
  this kernel install one).

P is a page's own fresh id. The core knows that page by the connection id
``<model comm id>/<P>``, so it never collides with a websocket page's comm id, and feeds
it the same events as a websocket page: one state machine, two transports.

This module owns the model's ipywidgets side (its state, ``request_state``, its entry in
a ``jupyter.widget.control`` reply) and the translation above. It decides nothing about
the address channel itself.

Must never: publish a message for a page that did not open through it; let a malformed
message from a page raise (it is logged and dropped, the model serves on); import the
Python ``anywidget`` or ``ipywidgets`` packages (the kernel process has no widgets; only
the frontend needs anywidget).
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wrapperkernel.address.page_script import render_widget_module
from wrapperkernel.address.payloads import with_buffers
from wrapperkernel.wire.transport import Transport

log = logging.getLogger("wrapperkernel.address")

WIDGET_TARGET = "jupyter.widget"
WIDGET_PROTOCOL_VERSION = "2.1.0"
ANYWIDGET_ID = "wrapperkernel.address_channel"
# The anywidget versions the model asks for when the kernel's environment has no anywidget
# to read the version from (the frontend's anywidget is what runs the model).
ANYWIDGET_FALLBACK_RANGE = ">=0.9.0"
MAX_PAGE_ID_CHARS = 128

# How the page client reaches the kernel: "auto" (the websocket where the page has a
# Jupyter Server, else the widget comm), "websocket" only, or "widget" only.
TRANSPORTS = ("auto", "websocket", "widget")


@functools.cache
def anywidget_range() -> str:
    """The ``_model_module_version`` for the frontend's anywidget: the installed anywidget's
    minor series, as anywidget's own widgets ask for, else a lenient range."""
    import importlib.metadata  # only when a widget model is made: it imports email, zipfile, csv

    try:
        version = importlib.metadata.version("anywidget")
    except importlib.metadata.PackageNotFoundError:
        return ANYWIDGET_FALLBACK_RANGE
    major, _, rest = version.partition(".")
    minor = rest.split(".", 1)[0]
    return f"~{major}.{minor}.*" if major.isdigit() and minor.isdigit() else ANYWIDGET_FALLBACK_RANGE


@dataclass(frozen=True, slots=True)
class Opened:
    connection_id: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Received:
    connection_id: str
    data: Any


@dataclass(frozen=True, slots=True)
class Closed:
    connection_id: str


PageEvent = Opened | Received | Closed


class WidgetTransport:
    def __init__(self, transport: Transport,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.transport = transport
        # The page client's install config (page_script.install_config), set by open().
        self.install_config: dict[str, Any] = {}
        self._new_id = new_id
        self.model_id: str | None = None
        self._pages: dict[str, str] = {}  # connection id -> the page's own id

    # ------------------------------------------------------------------ the model

    @property
    def is_open(self) -> bool:
        return self.model_id is not None

    def owns(self, comm_id: str) -> bool:
        """Whether ``comm_id`` is the model's comm."""
        return comm_id is not None and comm_id == self.model_id

    def carries(self, connection_id: str) -> bool:
        """Whether the core's connection ``connection_id`` is a page on this transport."""
        return connection_id in self._pages

    def state(self) -> dict[str, Any]:
        """The model's ipywidgets state: an anywidget model with no view of its own."""
        return {
            "_model_name": "AnyModel",
            "_model_module": "anywidget",
            "_model_module_version": anywidget_range(),
            "_view_name": "AnyView",
            "_view_module": "anywidget",
            "_view_module_version": anywidget_range(),
            "_view_count": None,
            "_dom_classes": [],
            "tabbable": None,
            "tooltip": None,
            "_anywidget_id": ANYWIDGET_ID,
            "_esm": render_widget_module(),
            "install_config": self.install_config,
        }

    def control_entry(self) -> dict[str, Any]:
        """The model as an entry of a ``jupyter.widget.control`` ``update_states`` reply."""
        return {
            "model_name": "AnyModel",
            "model_module": "anywidget",
            "model_module_version": anywidget_range(),
            "state": self.state(),
        }

    def open(self, parent: dict[str, Any] | None, install_config: dict[str, Any]) -> bool:
        """Opens the model on IOPub (once per kernel); False if it was open already."""
        if self.model_id is not None:
            return False
        self.install_config = install_config
        self.model_id = self._new_id()
        self.transport.publish("comm_open", {
            "comm_id": self.model_id,
            "target_name": WIDGET_TARGET,
            "data": {"state": self.state(), "buffer_paths": []},
        }, parent=parent, metadata={"version": WIDGET_PROTOCOL_VERSION})
        log.info("address channel widget model %s open", self.model_id)
        return True

    def add_to_control_reply(self, data: Any) -> None:
        """A worker's ``update_states`` reply lists the worker's widgets: add the model, so a
        page that restores widgets from the kernel (a reload, Voila) creates it too."""
        if self.model_id is None or not isinstance(data, dict):
            return
        states = data.get("states")
        if data.get("method") == "update_states" and isinstance(states, dict):
            states[self.model_id] = self.control_entry()

    # ------------------------------------------------------------------ page -> kernel

    def on_page_msg(self, data: Any, parent: dict[str, Any] | None,
                    buffers: list[Any] | None = None) -> list[PageEvent]:
        """A comm_msg from a page on the model's comm: the address-channel events in it
        (at most one), after answering ipywidgets' own requests."""
        if not isinstance(data, dict):
            log.warning("ignored a message on the widget model that is not an object: %.200r",
                        data)
            return []
        method = data.get("method")
        if method == "request_state":
            self.transport.publish("comm_msg", {
                "comm_id": self.model_id,
                "data": {"method": "update", "state": self.state(), "buffer_paths": []},
            }, parent=parent)
            return []
        if method == "update":
            # The model has no state a page may change; ipywidgets sends its own
            # bookkeeping here (e.g. _view_count).
            return []
        if method != "custom":
            log.warning("ignored a widget model message with method %.80r", method)
            return []
        content = data.get("content")
        problem = _content_problem(content)
        if problem:
            log.warning("ignored a malformed widget-transport message: %s", problem)
            return []
        connection_id = f"{self.model_id}/{content['page']}"
        if "open" in content:
            self._pages[connection_id] = content["page"]
            return [Opened(connection_id, content["open"])]
        if connection_id not in self._pages:
            log.info("ignored a widget-transport message from page %.80r, which is not open",
                     content["page"])
            return []
        if "close" in content:
            return [Closed(connection_id)]
        try:
            payload = json.loads(content["json"])
        except ValueError as error:
            log.warning("ignored a widget-transport message whose json is not JSON: %s", error)
            return []
        payload, problem = with_buffers(payload, buffers or [])
        if problem:
            log.warning("%s", problem)
        return [] if payload is None else [Received(connection_id, payload)]

    def forget(self, connection_id: str) -> None:
        """The core has closed this page's connection (it left, or went stale)."""
        self._pages.pop(connection_id, None)

    # ------------------------------------------------------------------ kernel -> page

    def send(self, connection_id: str, data: Any, seq: int,
             buffers: list[memoryview] | None = None) -> None:
        """``data`` carries its ``buffer_paths`` already; ``buffers`` go with the message."""
        self._custom({"page": self._pages[connection_id], "data": data, "seq": seq},
                     buffers)

    def close(self, connection_id: str) -> None:
        page = self._pages.pop(connection_id, None)
        if page is not None:
            self._custom({"page": page, "close": True})

    def broadcast_install(self, config: dict[str, Any]) -> None:
        """Every page that has the model and no client for this kernel installs one."""
        self._custom({"install": config})

    def _custom(self, content: dict[str, Any], buffers: list[memoryview] | None = None) -> None:
        if self.model_id is None:
            raise RuntimeError("the widget model is not open")
        self.transport.publish("comm_msg", {
            "comm_id": self.model_id, "data": {"method": "custom", "content": content},
        }, parent=None, buffers=buffers or None)


def _content_problem(content: Any) -> str:
    """Why a custom message's content is not a page message, or ''."""
    if not isinstance(content, dict):
        return f"content is {type(content).__name__}, not an object"
    page = content.get("page")
    if not isinstance(page, str) or not page or len(page) > MAX_PAGE_ID_CHARS:
        return f"'page' is {page!r:.80}, not a page id"
    kinds = [key for key in ("open", "json", "close") if key in content]
    if len(kinds) != 1:
        return f"{len(kinds)} of open/json/close in a message from page {page!r}"
    if "open" in content and not isinstance(content["open"], dict):
        return "'open' is not an object"
    if "json" in content and not isinstance(content["json"], str):
        return "'json' is not a string"
    if "close" in content and content["close"] is not True:
        return "'close' is not true"
    return ""
