"""Runs the wrapperkernel kernel process, and on SIGUSR1 writes what it has imported.

Used as a kernelspec's program (``python tests/modules_probe.py OUT -f CONNECTION_FILE``):
it installs a SIGUSR1 handler that writes ``sorted(sys.modules)`` as JSON to ``OUT``
(atomically: a reader never sees half a file), then runs ``python -m wrapperkernel run``
in this same process. The kernel installs no SIGUSR1 handler of its own, and the
worker it spawns is a fresh interpreter that does not inherit this one. Tests read the
file to check which modules the kernel process loaded by a point of their choosing.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
from pathlib import Path


def main() -> None:
    out = Path(sys.argv[1])

    def dump(signum: int, frame: object) -> None:
        partial = out.with_suffix(".partial")
        partial.write_text(json.dumps(sorted(sys.modules)))
        os.replace(partial, out)

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["wrapperkernel", "run", *sys.argv[2:]]
    runpy.run_module("wrapperkernel", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
