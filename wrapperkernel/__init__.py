"""wrapperkernel: a Jupyter kernel for Python whose page and running program talk at any time.

The package is split into rooms that mirror the architecture:

- ``wrapperkernel.wire``     the Jupyter wire protocol (connection file, message contents,
                             asyncio zmq transport).
- ``wrapperkernel.workerlink`` the private kernel<->worker link (frames and framing).
- ``wrapperkernel.kernel``   the kernel process: request handlers, worker supervision, the
                             comm router, the address adapter, the comm-package relay,
                             composition root.
- ``wrapperkernel.address``  the address channel's kernel side: its sans-I/O core, outbox,
                             page script and defaults.
- ``wrapperkernel.worker``   the worker process hosting IPython.
- ``wrapperkernel.comms`` / ``wrapperkernel.widgets``  the user API imported by cells.

Importing this package must stay cheap: the kernel process imports it on startup.
"""

__version__ = "0.1.0"
