"""The HTML that installs the page client ``wrapperkernel_comm`` (DESIGN.md, lifecycle step 1).

Owns one thing: turning a kernel id and the channel's timing into the ``text/html`` of
the install ``display_data`` — a ``<script>`` holding ``js/wrapperkernel_comm.js`` and
the call ``wrapperkernel_comm_install(config)``. The config carries the timeouts from
Python so the page and the kernel agree on them.

Must never: do I/O other than reading the packaged JS file once, or let a value in the
config close the ``<script>`` element early.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from wrapperkernel.address.defaults import ACK_DELAY_S, ACK_EVERY_MSGS, HEARTBEAT_TIMEOUT_S

JS_FILE_NAME = "wrapperkernel_comm.js"
INSTALLER_NAME = "wrapperkernel_comm_install"
# Hands a widget transport's model to the client (kernel/widget_transport.py).
ATTACH_NAME = "wrapperkernel_comm_attach"
# The install config as JSON, set by the kernel for its worker (see install_config).
WORKER_ENV = "WRAPPERKERNEL_PAGE_CLIENT"

# Inside <script>, "</script" ends the element and "<!--" changes how the browser
# tokenizes what follows; escaping these characters in JSON keeps the same value.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def render_install_html(config: dict[str, object]) -> str:
    """The ``text/html`` of the install display: the JS client plus its installer call
    with ``config`` (``install_config``)."""
    config_json = json.dumps(config, ensure_ascii=True).translate(_SCRIPT_SAFE)
    return (
        '<script type="text/javascript">\n'
        f"{_js_source()}\n"
        f"globalThis.{INSTALLER_NAME}({config_json});\n"
        "</script>"
    )


def install_config(
    kernel_id: str, *, debug: bool = False, heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
    transport: str = "auto", install_id: str | None = None,
) -> dict[str, object]:
    """The argument of ``wrapperkernel_comm_install``. Widget outputs carry it too, so
    that after a page reload they can install the client themselves (widgets/page.js).

    ``transport`` is how the client reaches the kernel ("auto", "websocket", "widget");
    ``install_id`` names one installation (the install display's id): a page that gets the
    same installation twice, from the script and from the widget model, keeps the first."""
    return {
        "kernel_id": kernel_id,
        "transport": transport,
        "install_id": install_id,
        "debug": debug,
        "heartbeat_timeout_ms": round(heartbeat_timeout_s * 1000),
        "ack_every_msgs": ACK_EVERY_MSGS,
        "ack_delay_ms": round(ACK_DELAY_S * 1000),
    }


def js_path() -> Path:
    """The page client's file: in wrapperkernel/_static in an installed wheel (pyproject's
    force-include), in the repository's js/ folder for an editable install."""
    import importlib.resources  # here: it imports tempfile, shutil, bz2 and lzma

    packaged = importlib.resources.files("wrapperkernel") / "_static" / JS_FILE_NAME
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "js" / JS_FILE_NAME


@functools.cache
def _js_source() -> str:
    source = js_path().read_text(encoding="utf-8")
    lowered = source.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise RuntimeError(f"{JS_FILE_NAME} must not contain '</script' or '<!--'")
    return source


def render_widget_module() -> str:
    """The ES module of the widget transport's model (kernel/widget_transport.py): the JS
    client, then anywidget's ``initialize`` hook, which hands the model to the client's
    ``wrapperkernel_comm_attach`` in every page that creates the model."""
    return (
        f"{_js_source()}\n"
        "export default {\n"
        "  initialize({ model }) {\n"
        f"    globalThis.{ATTACH_NAME}(model, model.get(\"install_config\"));\n"
        "  },\n"
        "};\n"
    )
