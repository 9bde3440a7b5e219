"""The HTML of a widget output: the root element, the page binder script and the CSS.

Owns turning a widget's state into ``text/html``. Pure: strings in, a string out; the only
I/O is reading the packaged ``page.js`` and ``widgets.css`` once.

The HTML carries the widget's current value twice: as the control's own state (the
``value``/``checked``/``selected`` attributes and the readout text), so a saved notebook
shows the widget as it was left even where no script runs, and in the script's config,
which seeds the page's synced variable (docs/widgets.md, "Persistence").

Must never: let a value close the ``<script>`` or ``<style>`` element early or escape an
attribute; depend on a global stylesheet (every output carries its own, scoped to
``.wk-widget``).
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import json
from collections.abc import Mapping
from typing import Any

JS_FILE_NAME = "page.js"
CSS_FILE_NAME = "widgets.css"
BINDER = "globalThis.wrapperkernel_widgets.bind"

# Inside <script>, "</script" ends the element and "<!--" changes how the browser
# tokenizes what follows; escaping these characters in JSON keeps the same value.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def attrs(values: Mapping[str, Any]) -> str:
    """`` name="value"`` pairs, escaped; True is a bare boolean attribute, False/None drop it."""
    parts = []
    for name, value in values.items():
        if value is None or value is False:
            continue
        if value is True:
            parts.append(f" {name}")
        else:
            parts.append(f' {name}="{html.escape(str(value), quote=True)}"')
    return "".join(parts)


def text(value: str) -> str:
    return html.escape(value, quote=False)


def json_attr(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def render(
    *,
    widget_id: str,
    kind: str,
    value: Any,
    body: str,
    config: Mapping[str, Any],
    extra_js: str | None = None,
) -> str:
    """The whole output: root element, style, the widget's ``body`` and the binder call.

    ``extra_js`` names a packaged script that runs after page.js and before the binder
    call (the chart's view, which registers itself with the binder).
    """
    root = attrs({
        "class": f"wk-widget wk-{kind}",
        "data-wk-widget": widget_id,
        "data-wk-kind": kind,
        "data-wk-value": json_attr(value),
        # Lumino looks for keyboard shortcuts from the focused element up to the first
        # element with this attribute, so the controls carry it too: arrow keys move the
        # slider and Enter presses the button instead of moving between notebook cells.
        "data-lm-suppress-shortcuts": "true",
    })
    extra = "" if extra_js is None else _script_source(extra_js) + "\n"
    config_json = json.dumps(dict(config), ensure_ascii=True, allow_nan=False).translate(
        _SCRIPT_SAFE
    )
    return (
        f"<div{root}>"
        f"<style>{_css_source()}</style>"
        f"{body}"
        f'<script type="text/javascript">\n{_js_source()}\n'
        f"{extra}"
        f"{BINDER}(document.currentScript, {config_json});\n</script>"
        "</div>"
    )


def _read(name: str) -> str:
    return (importlib.resources.files(__package__) / name).read_text(encoding="utf-8")


def _js_source() -> str:
    return _script_source(JS_FILE_NAME)


@functools.cache
def _script_source(name: str) -> str:
    source = _read(name)
    lowered = source.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise RuntimeError(f"{name} must not contain '</script' or '<!--'")
    return source


@functools.cache
def _css_source() -> str:
    source = _read(CSS_FILE_NAME)
    if "</style" in source.lower():
        raise RuntimeError(f"{CSS_FILE_NAME} must not contain '</style'")
    return source
