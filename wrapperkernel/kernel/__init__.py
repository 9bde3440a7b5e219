"""The kernel process: answers every Jupyter request, supervises the worker, relays comms.

It never runs user code, so it is never blocked by it.
"""
