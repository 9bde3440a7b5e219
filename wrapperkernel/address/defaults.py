"""The address channel's constants that more than one side needs: default timeouts,
the acknowledgement pacing, and the prefix of the protocol's own addresses
(DESIGN.md, "The address channel").

A module of its own, of constants only, so that the kernel can read them before it pays
for the address core (the worker's environment needs the page client's heartbeat timeout
before the worker starts), and so that the program side (``wrapperkernel.comms_base``)
can share them without importing the core.
"""

WAIT_FOR_CONNECTION_S = 3.0
HEARTBEAT_REQUEST_THRESHOLD_S = 1.0
HEARTBEAT_TIMEOUT_S = 0.5
READ_TIMEOUT_S = 3.0

# Addresses starting with this belong to the protocol (#ping, #ack...), never to a program.
PRIVATE_PREFIX = "#"

# How the page acknowledges the kernel's messages (#ack): at once after this many
# messages, else this long after the first unacknowledged one. The kernel passes both
# to the page client; the acknowledgement's delay adds to how long a send stays
# unanswered, so it is short next to the queue bound's worth of pacing (about 1 s).
# It also sets how soon values reach a page through Jupyter Server: its kernel
# websockets leave Nagle's algorithm on, so a small frame that follows another one
# waits until the browser's TCP acknowledges the first, which it delays (~40 ms) unless
# the page sends something. An #ack is that something: 8 ms keeps a page that receives
# a value per frame (60 fps) from getting them in bunches (bench/browser_bench.py).
ACK_EVERY_MSGS = 16
ACK_DELAY_S = 0.008
