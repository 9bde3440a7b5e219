"""What the debugger's variable views leave out, agreed by the kernel and the worker.

IPython keeps its own bookkeeping in the user's namespace (``In``, ``Out``, ``_i3``,
``_3``, ``get_ipython`` ...). Shown in JupyterLab's variables panel, they would bury the
user's variables, whether the view comes from the worker (no thread stopped) or from
pydevd (a thread stopped at a breakpoint, its globals relayed by the kernel).
"""

from __future__ import annotations

HIDDEN_NAMES = frozenset({
    "In", "Out", "get_ipython", "exit", "quit", "open",
    "_", "__", "___", "_ih", "_oh", "_dh", "_i", "_ii", "_iii",
    "__name__", "__doc__", "__package__", "__loader__", "__spec__", "__builtin__",
    "__builtins__", "__annotations__",
})


def hidden(name: str) -> bool:
    if name in HIDDEN_NAMES:
        return True
    # _i7 and _7: IPython's input and output history of cell 7.
    return (name.startswith("_i") and name[2:].isdigit()) or (name[:1] == "_" and name[1:].isdigit())
