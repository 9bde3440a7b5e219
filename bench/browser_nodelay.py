"""A Jupyter Server extension for the browser benchmark's diagnosis run only: it turns
Nagle's algorithm off (TCP_NODELAY) on every kernel websocket.

Why: Jupyter Server never calls ``set_nodelay(True)`` on its kernel websockets, and
tornado's HTTP connection turns TCP_NODELAY off once the ``101`` upgrade response is
written. A small frame written while the previous one is not yet acknowledged (a
``kernel_info_reply`` right after the ``busy`` status, an ipywidgets update right after
an echo) then waits for the browser's delayed ACK, about 40 ms on Linux. The benchmark
runs a second server with this extension to show what that costs each path.

Loaded with ``--ServerApp.jpserver_extensions={"browser_nodelay": true}`` from a
PYTHONPATH entry holding this file; it changes nothing else.
"""

from __future__ import annotations

from typing import Any


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from jupyter_server.services.kernels.websocket import KernelWebsocketHandler

    original = KernelWebsocketHandler.write_message

    def write_message(self: Any, message: Any, binary: bool = False) -> Any:
        # At the first frame, not in open(): the upgrade response's own completion would
        # turn TCP_NODELAY off again afterwards.
        if not getattr(self, "_wk_bench_nodelay", False) and self.ws_connection is not None:
            self.set_nodelay(True)
            self._wk_bench_nodelay = True
        return original(self, message, binary=binary)

    KernelWebsocketHandler.write_message = write_message
    serverapp.log.info("browser_nodelay: TCP_NODELAY on kernel websockets (benchmark diagnosis)")
