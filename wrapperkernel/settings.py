"""How wrapperkernel reads its settings from the environment (the ``WRAPPERKERNEL_*``
variables of docs/comms-api.md): the rule for each kind of value, written once.

The kernel reads the address channel's timeouts with these rules, and the worker, which
inherits the kernel's environment, reads the ones it needs (the read timeout, the queue
bound) with the same rules, so the two processes agree on what a setting means.

Must never: read the environment when imported (callers pass it), report a bad
value itself (each caller reports it where its log goes: the kernel's logger, the
worker's diagnostics), or import anything beyond the standard library: both processes
import it early.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# The default timeout of comms.read_value; the kernel's core uses it for reads that carry
# none, and the worker puts it on every read it sends.
READ_TIMEOUT_VARIABLE = "WRAPPERKERNEL_READ_TIMEOUT_S"


def seconds_from_environment(environ: Mapping[str, str], variable: str) -> float | None:
    """The number of seconds ``variable`` is set to, a positive, finite number such as
    "2" or "0.5"; None when it is not set. Any other value ("soon", "0", "-1", "nan",
    "inf") raises ``ValueError`` saying that it is ignored: the caller reports that line
    and keeps its default."""
    text = environ.get(variable)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"ignored {variable}={text!r}: expected a positive number of seconds")
    return value


def whole_number_from_environment(
    environ: Mapping[str, str], variable: str, *, unit: str, minimum: int
) -> int | None:
    """The whole number of ``unit`` that ``variable`` is set to, at least ``minimum``;
    None when it is not set. Any other value raises ``ValueError`` saying that it is
    ignored, as ``seconds_from_environment`` does."""
    text = environ.get(variable)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(f"ignored {variable}={text!r}: expected a whole number of {unit}, "
                         f"at least {minimum}")
    return value
