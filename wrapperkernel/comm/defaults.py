"""The address channel's default timeouts (DESIGN.md, "The address channel").

A module of its own so the kernel can read them before it pays for the comm core: the
worker's environment needs the page client's heartbeat timeout before the worker starts.
"""

WAIT_FOR_CONNECTION_S = 3.0
HEARTBEAT_REQUEST_THRESHOLD_S = 1.0
HEARTBEAT_TIMEOUT_S = 0.5
READ_TIMEOUT_S = 3.0
