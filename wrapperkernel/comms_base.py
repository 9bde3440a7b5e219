"""The vocabulary the address channel's program side shares: ``CommsError``, ``Listener``,
the argument checks, the ``CommsBackend`` protocol, the report of a failing user callback,
and which backend serves this process.

``wrapperkernel.comms`` (the user API), the worker's ``AddressRuntime`` (its backend) and
``wrapperkernel.widgets`` all import this module; it imports none of them (only the
address channel's constants), so the three never import each other for a type.

Must never: import anything heavy (no IPython, no pydantic, no zmq): the user API imports
it at import time, inside the kernel or not.
"""

from __future__ import annotations

import math
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from wrapperkernel.address.defaults import PRIVATE_PREFIX

if TYPE_CHECKING:
    from types import TracebackType


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
            check_wait(timeout, "timeout", allow_zero=True)
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

    def put(self, value: Any) -> None:
        """Queue a value, as if the page had sent it (the backend calls this on the
        worker's reader thread); ignored once the listener is closed."""
        with self._changed:
            if self._closed:
                return
            self._values.append(value)  # maxlen=1 drops the older unread value
            self._changed.notify_all()


def check_wait(seconds: object, name: str, *, allow_zero: bool = False) -> float:
    """A finite, positive (or zero when allowed) number of seconds, else TypeError/ValueError."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(seconds).__name__}")
    value = float(seconds)
    if not (value >= 0 if allow_zero else value > 0) or math.isinf(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {seconds!r}")
    return value


def check_address(address: object) -> None:
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, got {type(address).__name__}")
    if not address:
        raise ValueError("address must be a non-empty string, like '/plot/points'")
    if not address.isascii():
        try:
            address.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"address {address!r} holds a lone surrogate, which has no UTF-8 form"
            ) from None
    if address.startswith(PRIVATE_PREFIX):
        raise ValueError(
            f"address {address!r} starts with '#', which is reserved for the wrapperkernel "
            "protocol; use an address without a leading '#'."
        )


class CommsBackend(Protocol):
    """What ``wrapperkernel.comms`` calls into: the worker's ``AddressRuntime``, or a test's
    stand-in. Each method does what the function of the same name in ``comms`` documents;
    a ``None`` timeout is the backend's configured default."""

    def start(self, timeout_s: float | None = None) -> None: ...
    def send(self, address: str, value: Any) -> None: ...
    def subscribe(self, address: str, callback: Callable[[str, Any], object], *,
                  wait_for_page: bool = True) -> int: ...
    def unsubscribe(self, subscription_id: int) -> bool: ...
    def listen(self, address: str, *, latest_only: bool = False) -> Listener: ...
    def read_value(self, address: str, timeout: float | None = None) -> Any: ...
    def sync(self, timeout_s: float | None = None) -> None: ...


# The one piece of process state of the program side: the backend serving this process,
# set by the worker when it installs its runtime. Kept here rather than found through
# IPython each time, because that lookup (``get_ipython()``) costs more than a whole
# ``send``; a restarted worker is a new process, so it can never go stale.
_backend: list[CommsBackend] = []


def install_backend(backend: CommsBackend) -> None:
    """Make ``backend`` the one that ``wrapperkernel.comms`` calls from now on."""
    _backend[:] = [backend]


def uninstall_backend() -> None:
    """Forget the installed backend: ``comms`` calls look it up on the IPython shell again."""
    _backend.clear()


def find_backend() -> CommsBackend:
    """The installed backend, else the one the running IPython shell carries, else an error
    that says how to get one."""
    if _backend:
        return _backend[0]
    import IPython  # here, not at the top: importing this module must stay cheap

    backend = getattr(IPython.get_ipython(), "wrapperkernel_comms", None)
    if backend is None:
        raise CommsError(
            "wrapperkernel.comms works only in code run by the wrapperkernel kernel (a "
            "notebook or console whose kernel is wrapperkernel); this Python process is not "
            "a wrapperkernel worker. Select the wrapperkernel kernel and run the cell again."
        )
    return backend


def report_callback_error(what: str, error: BaseException, *, own_frames: int = 1) -> None:
    """A user callback raised: write ``what`` and its traceback to stderr, where it shows in
    the output of the running or last cell. ``what`` says who raised and what happens
    next. ``own_frames`` is how many frames of ours (the caller's loop) to cut from the top
    of the traceback, so that the user sees their own code first."""
    tb = error.__traceback__
    for _ in range(own_frames):
        if tb is None:
            break
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(error), error, tb))
    sys.stderr.write(f"{what}\n{text}")
    sys.stderr.flush()
