"""The static part of ``kernel_info_reply`` (messaging spec, "Kernel info")."""

from __future__ import annotations

import importlib.util
import platform
import sys
from typing import Any

from wrapperkernel import __version__

PROTOCOL_VERSION = "5.5"
DEBUGGER = importlib.util.find_spec("debugpy") is not None


def kernel_info_content() -> dict[str, Any]:
    python = ".".join(str(part) for part in sys.version_info[:3])
    return {
        "status": "ok",
        "protocol_version": PROTOCOL_VERSION,
        "implementation": "wrapperkernel",
        "implementation_version": __version__,
        "language_info": {
            "name": "python",
            "version": python,
            "mimetype": "text/x-python",
            "codemirror_mode": {"name": "ipython", "version": sys.version_info[0]},
            "pygments_lexer": f"ipython{sys.version_info[0]}",
            "nbconvert_exporter": "python",
            "file_extension": ".py",
        },
        "banner": (
            f"Python {sys.version.split()[0]} ({platform.python_implementation()}) on "
            f"{sys.platform}\nwrapperkernel {__version__}: IPython runs your cells in a worker "
            "process; the page and your program can talk while cells run.\n"
        ),
        "help_links": [
            {"text": "Python Reference", "url": f"https://docs.python.org/{python[:4].rstrip('.')}"},
            {"text": "IPython Reference", "url": "https://ipython.readthedocs.io/en/stable/"},
            {"text": "wrapperkernel comms", "url": "https://pypi.org/project/wrapperkernel/"},
        ],
        # JEP 92: list only what is really implemented. Subshells: JEP 91. The debugger
        # needs debugpy in the worker's Python (the kernel's own: the worker runs it).
        "supported_features": ["kernel subshells", *(["debugger"] if DEBUGGER else [])],
        "debugger": DEBUGGER,
    }
