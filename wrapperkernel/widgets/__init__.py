"""Widgets on the address channel, as cell code sees them: ``from wrapperkernel import widgets``.

Owns the user-facing widget classes (docs/widgets.md): ``Button``, ``Slider``, ``Select``,
``Checkbox``, ``Text`` (the page changes them; ``.value`` follows the page while a cell
runs), ``Progress`` and ``Chart``, a streaming line chart (the program changes them).
Each is plain HTML in an output, bound
by a small script to the page client ``wrapperkernel_comm``; no JupyterLab extension and
no ipywidgets. The layout of the package:

- ``_base``: value, display, page binding, observers, ``changes()`` iterators;
- ``_controls``: the widget classes;
- ``_chart``: ``Chart``, its window of points and its batched sends; ``chart.js`` draws it;
- ``_host``: re-rendering for persistence (what a saved notebook shows); it sees a
  widget only through its ``Rerenderable`` protocol, so it imports no widget module;
- ``_html``, ``page.js``, ``widgets.css``: the output's HTML, script and style.

Must never: hold mutable module-level state (per-shell state lives on the shell, like
the comms runtime), or import IPython at import time.
"""

from __future__ import annotations

from wrapperkernel.widgets._base import ADDRESS_PREFIX, Changes, Control, Widget
from wrapperkernel.widgets._chart import Chart
from wrapperkernel.widgets._controls import Button, Checkbox, Progress, Select, Slider, Text
from wrapperkernel.widgets._host import RERENDER_DEBOUNCE_S

__all__ = [
    "ADDRESS_PREFIX",
    "RERENDER_DEBOUNCE_S",
    "Button",
    "Changes",
    "Chart",
    "Checkbox",
    "Control",
    "Progress",
    "Select",
    "Slider",
    "Text",
    "Widget",
]
