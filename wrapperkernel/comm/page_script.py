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
import importlib.resources
import json
from pathlib import Path

from wrapperkernel.comm.core import HEARTBEAT_TIMEOUT_S

JS_FILE_NAME = "wrapperkernel_comm.js"
INSTALLER_NAME = "wrapperkernel_comm_install"

# Inside <script>, "</script" ends the element and "<!--" changes how the browser
# tokenizes what follows; escaping these characters in JSON keeps the same value.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def render_install_html(
    kernel_id: str, *, debug: bool = False, heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
) -> str:
    """The ``text/html`` of the install display: the JS client plus its installer call."""
    config = {
        "kernel_id": kernel_id,
        "debug": debug,
        "heartbeat_timeout_ms": round(heartbeat_timeout_s * 1000),
    }
    config_json = json.dumps(config, ensure_ascii=True).translate(_SCRIPT_SAFE)
    return (
        '<script type="text/javascript">\n'
        f"{_js_source()}\n"
        f"globalThis.{INSTALLER_NAME}({config_json});\n"
        "</script>"
    )


@functools.cache
def _js_source() -> str:
    # An installed wheel carries the file in wrapperkernel/_static (pyproject's
    # force-include); an editable install reads it from the repository's js/ folder.
    packaged = importlib.resources.files("wrapperkernel") / "_static" / JS_FILE_NAME
    if packaged.is_file():
        source = packaged.read_text(encoding="utf-8")
    else:
        source = (Path(__file__).resolve().parents[2] / "js" / JS_FILE_NAME).read_text(
            encoding="utf-8"
        )
    lowered = source.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise RuntimeError(f"{JS_FILE_NAME} must not contain '</script' or '<!--'")
    return source
