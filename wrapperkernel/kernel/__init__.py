"""The kernel process: answers every Jupyter request, supervises the worker, runs the
address channel's core, and relays the ``comm`` package's comms to the worker.

It never runs user code, so it is never blocked by it.
"""
