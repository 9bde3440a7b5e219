"""The address channel as cell code sees it: ``from wrapperkernel import comms``.

Owns the user-facing surface (DESIGN.md, "User API"): the module functions, the
``Listener`` type and ``CommsError``. The work is done by the worker's ``CommsRuntime``
(``wrapperkernel.worker.comms_runtime``), which each call finds through
``IPython.get_ipython().wrapperkernel_comms``; see docs/comms-api.md.

Must never: hold mutable module-level state (a restarted worker gets a fresh runtime,
nothing here can go stale), or import anything heavy at import time (no IPython, no
pydantic): importing this module must stay cheap everywhere, inside the kernel or not.

Threading model, in short: values from the page arrive on the worker's reader thread.
Callbacks given to ``subscribe`` run on ONE dispatcher thread, in arrival order, never
two at once; a listener is fed directly, so a slow callback never holds it up. Every
function here may be called from any thread, including from inside a callback.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import TracebackType

    from wrapperkernel.worker.comms_runtime import CommsRuntime

__all__ = [
    "CommsError",
    "Listener",
    "listen",
    "read_value",
    "send",
    "start",
    "subscribe",
    "sync",
    "unsubscribe",
]

DEFAULT_READ_TIMEOUT_S = 3.0


class CommsError(Exception):
    """The address channel could not do what was asked; the message says why and what to do.

    Raised when no page connects (the notebook is not open in a browser tab), when the
    kernel reports that an earlier ``send`` was not delivered, when the page cannot answer
    a ``read_value``, when the kernel does not answer in time, and outside wrapperkernel.
    """


class Listener:
    """The values the page sends to one address, in arrival order; made by ``listen()``.

    Iterating blocks until the next value arrives and ends (StopIteration) once the
    listener is closed, from any thread. ``get(timeout)`` takes one value. As a context
    manager it closes itself on exit. Values are queued without limit until read, unless
    ``latest_only`` is set: then only the newest unread value is kept.

    Waits are interruptible: Ctrl-C / "Interrupt kernel" stops a blocked ``get`` or loop.
    """

    def __init__(
        self,
        address: str,
        *,
        latest_only: bool = False,
        on_close: Callable[[Listener], None] | None = None,
    ) -> None:
        self._address = address
        self._latest_only = latest_only
        self._on_close = on_close
        self._values: deque[Any] = deque(maxlen=1 if latest_only else None)
        self._changed = threading.Condition(threading.Lock())
        self._closed = False

    @property
    def address(self) -> str:
        return self._address

    @property
    def latest_only(self) -> bool:
        return self._latest_only

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, timeout: float | None = None) -> Any:
        """Wait for the next value and return it (None is a value like any other).

        Blocks for at most ``timeout`` seconds (forever when None), then raises
        ``TimeoutError``. Raises ``CommsError`` if the listener is or gets closed.
        """
        if timeout is not None:
            _check_wait(timeout, "timeout", allow_zero=True)
        has_value, value = self._take(timeout)
        if has_value:
            return value
        if self._closed:
            raise CommsError(f"The listener of {self._address!r} is closed; call listen() again.")
        raise TimeoutError(
            f"No value for {self._address!r} arrived from the page within {timeout:g} s."
        )

    def close(self) -> None:
        """Stop listening: unread values are dropped and a waiting loop or ``get`` ends.

        Closing twice is harmless. When this was the address's last listener or
        subscriber, the kernel stops forwarding its values.
        """
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._values.clear()
            self._changed.notify_all()
        if self._on_close is not None:
            self._on_close(self)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        has_value, value = self._take(None)
        if has_value:
            return value
        raise StopIteration

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._values)} unread"
        return f"<Listener {self._address!r} {state}>"

    def _take(self, timeout: float | None) -> tuple[bool, Any]:
        """(True, value) for the next value; (False, None) when closed or timed out."""
        # Condition.wait is interruptible by signals, so KeyboardInterrupt reaches a
        # main thread blocked here.
        with self._changed:
            ready = self._changed.wait_for(lambda: self._values or self._closed, timeout)
            if ready and self._values and not self._closed:
                return True, self._values.popleft()
            return False, None

    def _deliver(self, value: Any) -> None:
        """Queue a value from the page; called by the runtime on the reader thread."""
        with self._changed:
            if self._closed:
                return
            self._values.append(value)  # maxlen=1 drops the older unread value
            self._changed.notify_all()


def _check_wait(seconds: object, name: str, *, allow_zero: bool = False) -> float:
    """A finite, positive (or zero when allowed) number of seconds, else TypeError/ValueError."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(seconds).__name__}")
    value = float(seconds)
    if not (value >= 0 if allow_zero else value > 0) or math.isinf(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {seconds!r}")
    return value


# The worker's runtime, set when it installs itself: a call then skips looking up the
# shell (2 µs, a third of a ``send``).
_installed: CommsRuntime | None = None


def _runtime() -> CommsRuntime:
    if _installed is not None:
        return _installed
    import IPython  # here, not at the top: importing this module must stay cheap

    runtime = getattr(IPython.get_ipython(), "wrapperkernel_comms", None)
    if runtime is None:
        raise CommsError(
            "wrapperkernel.comms works only in code run by the wrapperkernel kernel (a "
            "notebook or console whose kernel is wrapperkernel); this Python process is not "
            "a wrapperkernel worker. Select the wrapperkernel kernel and run the cell again."
        )
    return runtime


def start(timeout_s: float | None = None) -> None:
    """Make sure the page client is installed and connected; blocks until it is.

    Waits for the kernel's answer: it installs the client in the open notebook page and
    gives up after about 3 s when no page connects (nbclient, papermill, jupyter console,
    closed tab). ``timeout_s`` bounds the wait (default 10 s). Raises ``CommsError``
    with the kernel's explanation. Calling it again after a failure retries. ``%widgets``
    does the same.
    """
    _runtime().start(timeout_s)


def send(address: str, value: Any) -> None:
    """Send ``value`` (any JSON value: dict, list, str, int, float, bool, None) to ``address``.

    Fast once the channel is connected: the value is handed to the kernel and the call
    returns without waiting for delivery. If delivery fails, the *next* call of this
    module raises ``CommsError`` saying how many values were not delivered; call
    ``sync()`` to wait for everything sent so far. The first call (or the first after a
    failure) blocks like ``start()``, and a call blocks while the values not yet
    delivered fill the queue bound (``WRAPPERKERNEL_COMM_QUEUE_BYTES``, 1 MiB): a page
    that reads slowly slows the sender down instead of filling memory; Ctrl-C ends that
    wait. ``address`` is a non-empty string not starting with '#' (ValueError
    otherwise); a value that is not JSON (a set, an object, NaN) raises TypeError.
    """
    _runtime().send(address, value)


def subscribe(address: str, callback: Callable[[str, Any], object]) -> int:
    """Call ``callback(address, value)`` for every value the page sends to ``address``.

    Returns an id for ``unsubscribe``. Callbacks run on one dispatcher thread, in the
    order values arrived, never two at once (also across addresses), so they must not
    block for long. A callback that raises prints its traceback to stderr (it shows in
    the output of the running or last cell) and later values are still delivered.
    Blocks like ``start()`` if the channel is not connected yet.
    """
    return _runtime().subscribe(address, callback)


def unsubscribe(subscription_id: int) -> bool:
    """Stop the callback registered under ``subscription_id``; False if there was none.

    Values already queued for it are not delivered. Never blocks, never raises for an
    earlier failed send.
    """
    return _runtime().unsubscribe(subscription_id)


def listen(address: str, *, latest_only: bool = False) -> Listener:
    """A ``Listener``: iterate over (or ``get``) the values the page sends to ``address``.

    With ``latest_only=True`` only the newest unread value is kept (for sliders and other
    controls whose intermediate positions do not matter). Close it (or use ``with``) when
    done. Blocks like ``start()`` if the channel is not connected yet.
    """
    return _runtime().listen(address, latest_only=latest_only)


def read_value(address: str, timeout: float = DEFAULT_READ_TIMEOUT_S) -> Any:
    """Ask the page for its current value of ``address`` and return it; blocks.

    The page answers from its synced variable for the address
    (``wrapperkernel_comm.newSyncedVariable``). Raises ``CommsError`` when the page has
    no value for it or does not answer within ``timeout`` seconds.
    """
    return _runtime().read_value(address, timeout)


def sync(timeout_s: float | None = None) -> None:
    """Block until everything sent before this call has been delivered to the page
    (acknowledged by it, or handed to a connection that went away since).

    Raises ``CommsError`` saying how many values were not delivered, if any. Use it before a cell ends
    when the page must have every value, or to surface delivery errors at a known point.
    ``timeout_s`` bounds the wait (default 10 s).
    """
    _runtime().sync(timeout_s)
