"""The address channel between the page and the user program, as seen by the kernel.

``core``    the connection state machine (sans-I/O): events in, actions out.
``outbox``  batching and pacing of outgoing comm messages under Jupyter Server's
            IOPub rate limits (sans-I/O).

Nothing in this package performs I/O, reads a clock, starts a thread or logs: the
kernel's adapters translate frames to events and actions to frames.
"""
