"""The Jupyter wire protocol as the kernel speaks it: connection file, message contents,
signing, and the asyncio zmq transport. Nothing here knows about the worker or comms.
"""
