"""The worker's exit statuses that mean something to the kernel: part of the link's
contract, like the frames. The worker exits with them; the supervisor explains them
(``supervisor.describe_exit``). Exit status 0 stays "the kernel went away"."""

# The worker's reader thread crashed (a bug in wrapperkernel, not in the cell): without a
# reader nothing reaches the worker any more, so it exits at once rather than hang.
# 70 is EX_SOFTWARE of sysexits.h, "internal software error".
READER_CRASHED_EXIT = 70
