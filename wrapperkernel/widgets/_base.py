"""The common part of every widget: value, display, page binding, persistence, observers.

A widget is one value at one address, ``/wrapperkernel/widgets/<uuid>/value``, shared by
the program and the page through the address channel (``wrapperkernel.comms``):

- program -> page: setting ``.value`` sends the new value to the address;
- page -> program (``Control`` only): the widget subscribes to its address when first
  displayed; the page's values arrive on the comms dispatcher thread, which updates
  ``.value``, feeds ``changes()`` iterators and calls the observers, in that order.
  Because the program subscribes, the kernel also sends a page's value on to the other
  pages showing the widget (docs/widgets.md, "Several pages"): the widget does nothing
  for that;
- page events on ``.../<uuid>/page``: ``"bound"`` when a rendering of the widget binds to
  the page client (the program answers with its current value on ``.../<uuid>/current``,
  so the page catches up with values that raced the output, or after a reload);
  ``"hold"`` / ``"release"`` around a drag or an input method composition, during which
  the re-render for persistence waits (``_host``).

A widget is what ``_host`` calls a ``Rerenderable``: the host asks ``held_by_page()`` and
calls ``rerender()``; it never imports this module.

Subclasses say how to check a value (``_check``: from the program, raises; ``_from_page``:
from the page, raises ValueError for a value to ignore) and how to draw themselves
(``_body`` and ``_config``).

Must never: hold the widget lock while calling user code, sending or publishing; treat
0, False, "" as "no value"; raise at the user from the dispatcher thread (a bad page value
or a failing observer is reported on stderr and the next value is still delivered).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from wrapperkernel import comms
from wrapperkernel.comms_base import report_callback_error
from wrapperkernel.widgets._host import WidgetHost
from wrapperkernel.widgets._html import render as render_html

ADDRESS_PREFIX = "/wrapperkernel/widgets"
# The page holds a control (a drag, an input method composing) at most this long: a
# page that vanished mid-drag must not stop re-rendering for good.
HOLD_MAX_S = 30.0

log = logging.getLogger("wrapperkernel.widgets")


class Widget:
    """A value shown in the page; ``display()`` it, read and set ``.value``."""

    _kind: ClassVar[str]

    def __init__(self, value: Any, *, label: str) -> None:
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {type(label).__name__}")
        self._id = uuid.uuid4().hex
        self._address = f"{ADDRESS_PREFIX}/{self._id}/value"
        self._display_id = f"wrapperkernel-widget-{self._id}"
        self._label = label
        self._lock = threading.Lock()
        # Held while one rendering is published, so renderings leave in state order.
        self._render_lock = threading.Lock()
        self._value = self._check(value)
        self._host: WidgetHost | None = None
        self._displayed = False
        self._live = False  # connected to the page at display time
        self._closed = False
        self._published: str | None = None  # the HTML last displayed
        self._send_failed = False
        self._events_address = f"{ADDRESS_PREFIX}/{self._id}/page"
        self._current_address = f"{ADDRESS_PREFIX}/{self._id}/current"
        self._subscriptions: list[int] = []
        self._held_until: float | None = None  # monotonic end of the page's hold

    # ------------------------------------------------------------------ public API

    @property
    def address(self) -> str:
        """The address of the widget's value on the address channel."""
        return self._address

    @property
    def display_id(self) -> str:
        """The ``display_id`` of the widget's outputs (updated for persistence)."""
        return self._display_id

    @property
    def value(self) -> Any:
        """The current value: the page's latest while displayed; set it to update the page."""
        with self._lock:
            return self._value

    @value.setter
    def value(self, new: Any) -> None:
        checked = self._check(new)
        with self._lock:
            self._value = checked
            displayed, live = self._displayed, self._live and not self._closed
        if live:
            self._send(checked)
        if displayed:
            self._schedule()

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, new: str) -> None:
        if not isinstance(new, str):
            raise TypeError(f"label must be a str, got {type(new).__name__}")
        with self._lock:
            self._label = new
        self.rerender()

    def display(self) -> None:
        """Show the widget in the output of the running cell (again, if it is shown already).

        Installs the page client first (``comms.start()``) so the widget's script finds
        it, and (for controls) subscribes to the page's values. Without a page (nbclient,
        papermill, console) the widget is shown anyway, with a note on stderr: its value
        then changes only from the program.
        """
        self._connect()
        with self._render_lock:
            with self._lock:
                self._displayed = True
                html = self._render_locked()
                self._published = html
            self._publish(html, update=False)

    def close(self) -> None:
        """Stop following the page: unsubscribe, end ``changes()`` iterators, stop sending.

        The outputs stay as they are. Closing twice is harmless.
        """
        with self._lock:
            self._closed = True
            self._held_until = None
            subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            comms.unsubscribe(subscription)

    def held_by_page(self) -> bool:
        """True while the page holds the control (a slider dragged, text being composed).

        The re-render for persistence waits meanwhile, since replacing the output's DOM
        would end the drag; the hold ends on release, on ``close()``, or ``HOLD_MAX_S``
        after it began.
        """
        with self._lock:
            return self._held_until is not None and time.monotonic() < self._held_until

    def rerender(self) -> None:
        """Update the widget's outputs now if its HTML changed since it was last published.

        The widget does this by itself (docs/widgets.md, "Persistence"): shortly after a
        change and after every cell. Does nothing before ``display()``.
        """
        with self._render_lock:
            with self._lock:
                if not self._displayed:
                    return
                html = self._render_locked()
                if html == self._published:
                    return
                self._published = html
            self._publish(html, update=True)

    def _ipython_display_(self) -> None:
        self.display()

    def _repr_html_(self) -> str:
        """A snapshot of the widget's HTML (``display()`` shows the live widget)."""
        with self._lock:
            return self._render_locked()

    def __repr__(self) -> str:
        with self._lock:
            fields = self._repr_fields()
        text = ", ".join(f"{name}={value!r}" for name, value in fields.items())
        return f"{type(self).__name__}({text})"

    # ------------------------------------------------------------------ for subclasses

    def _check(self, value: Any) -> Any:
        """``value`` as this widget holds it; TypeError/ValueError if it cannot hold it."""
        raise NotImplementedError

    def _body(self, control_id: str) -> str:
        """The HTML between the root element's style and script (lock held)."""
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        """Kind-specific fields of the page binder's config (lock held)."""
        return {}

    def _repr_fields(self) -> dict[str, Any]:
        return {"value": self._value, "label": self._label}

    def _snapshot_locked(self) -> Any:
        """The value a rendering starts from and a binding page catches up with (lock
        held). A chart's is its window of points, not ``.value``."""
        return self._value

    def _persisted_locked(self) -> Any:
        """The value on the root element's ``data-wk-value`` (lock held)."""
        return self._value

    def _extra_script(self) -> str | None:
        """A packaged script the output carries after page.js (a chart's drawing code)."""
        return None

    # ------------------------------------------------------------------ internals

    def _subscribe_page(self) -> None:
        """Subscribe to what the page sends for this widget."""
        self._subscriptions.append(comms.subscribe(self._events_address, self._on_page_event,
                                                   wait_for_page=False))

    def _on_page_event(self, address: str, event: Any) -> None:
        """A rendering bound, or the page grabbed or released the control; dispatcher thread."""
        with self._lock:
            if self._closed:
                return
            if event == "hold":
                self._held_until = time.monotonic() + HOLD_MAX_S
            elif event == "release":
                self._held_until = None
            value = self._snapshot_locked()
        if event == "bound":
            self._send(value, self._current_address)
        elif event == "release":
            self._schedule()  # a re-render postponed by the hold may be due now

    def _binding_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "events_address": self._events_address, "current_address": self._current_address,
        }
        client = _page_client_config()
        if client is not None:
            config["client"] = client  # a reloaded page installs the client from it
        return config

    def _connect(self) -> None:
        """Start the page client and subscribe, once; remember a failure per cell."""
        import IPython  # here, not at the top: importing wrapperkernel.widgets stays cheap

        shell = IPython.get_ipython()
        if shell is not None and self._host is None:
            self._host = WidgetHost.of_shell(shell)
        if self._live or self._closed:
            return
        host = self._host
        # A page did not connect earlier in this cell: do not wait again.
        waited = host is not None and host.start_failed_in_this_cell()
        try:
            if not waited:
                comms.start()
        except comms.CommsError as error:
            # No page yet (Voila executes the notebook before its page connects; nbclient
            # never has one). The widget subscribes all the same and follows a page that
            # connects later. Said in the kernel's log, not in the user's output.
            if host is not None:
                host.note_start_failed()
            log.info("%s is shown before a page connected; it follows the page once one "
                     "connects. %s", type(self).__name__, error)
        try:
            self._subscribe_page()
        except comms.CommsError as error:
            with self._lock:  # a half-made subscription must not be made twice next time
                subscriptions, self._subscriptions = self._subscriptions, []
            for subscription in subscriptions:
                comms.unsubscribe(subscription)
            _note(
                f"{type(self).__name__} is shown without a live connection to the page, so "
                f"its value changes only from the program. {error}"
            )
            return
        self._live = True

    def _send(self, value: Any, address: str | None = None) -> None:
        try:
            comms.send(self._address if address is None else address, value)
        except comms.CommsError as error:
            if not self._send_failed:
                # Not lost: the widget's output is re-rendered with it, and a page that
                # connects later catches up when its rendering binds.
                log.info("%r: no page got the new value yet. %s", self, error)
            self._send_failed = True
            return
        self._send_failed = False

    def _schedule(self) -> None:
        if self._host is not None:
            self._host.schedule(self)

    def _render_locked(self) -> str:
        return render_html(
            widget_id=self._id,
            kind=self._kind,
            value=self._persisted_locked(),
            body=self._body(f"wk-{self._id}"),
            extra_js=self._extra_script(),
            config={
                "id": self._id,
                "address": self._address,
                "kind": self._kind,
                "value": self._snapshot_locked(),
                **self._binding_config(),
                **self._config(),
            },
        )

    def _publish(self, html: str, *, update: bool) -> None:
        from IPython.display import publish_display_data

        publish_display_data(
            {"text/html": html, "text/plain": repr(self)},
            transient={"display_id": self._display_id},
            update=update,
        )


Observer = Callable[[Any], object]


class Control(Widget):
    """A widget the page changes: ``.value`` follows the page; ``observe``, ``changes``."""

    def __init__(self, value: Any, *, label: str) -> None:
        super().__init__(value, label=label)
        self._observers: list[Observer] = []
        self._changes: list[Changes] = []

    def observe(self, callback: Observer) -> Observer:
        """Call ``callback(new_value)`` for every value the page sets; returns ``callback``.

        Usable as a decorator. Runs on the comms dispatcher thread, after ``.value`` was
        updated, one callback at a time: keep it short. Values set by the program do not
        call it. An exception is printed on stderr and later values are still delivered.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable as callback(new_value), got {callback!r}")
        with self._lock:
            self._observers.append(callback)
        return callback

    def unobserve(self, callback: Observer) -> bool:
        """Remove ``callback`` (its first registration); False if it was not observing."""
        with self._lock:
            try:
                self._observers.remove(callback)
            except ValueError:
                return False
            return True

    def changes(self, *, latest_only: bool = False) -> Changes:
        """An iterator over the values the page sets from now on (see ``Changes``).

        With ``latest_only=True`` only the newest unread value is kept (a slider's
        intermediate positions are skipped when the loop is slower than the hand).
        """
        changes = Changes(self, latest_only=latest_only)
        with self._lock:
            closed = self._closed
            if not closed:
                self._changes.append(changes)
        if closed:
            # Outside the lock: closing calls back into _changes_closed, which takes it.
            # Nothing can have fed it: it never joined self._changes.
            changes.close()
        return changes

    def close(self) -> None:
        super().close()
        with self._lock:
            changes, self._changes = self._changes, []
        for iterator in changes:
            iterator.close()

    def _subscribe_page(self) -> None:
        self._subscriptions.append(comms.subscribe(self._address, self._on_page_value,
                                                   wait_for_page=False))
        super()._subscribe_page()

    def _from_page(self, value: Any) -> Any:
        """A value the page sent, as this widget holds it; ValueError to ignore it."""
        try:
            return self._check(value)
        except TypeError as error:
            raise ValueError(str(error)) from None

    def _on_page_value(self, address: str, raw: Any) -> None:
        """Runs on the comms dispatcher thread for every value the page sends."""
        try:
            value = self._from_page(raw)
        except ValueError as error:
            _note(f"{type(self).__name__} ignored a value from the page ({raw!r}): {error}")
            return
        with self._lock:
            if self._closed:
                return
            self._value = value
            observers = list(self._observers)
            changes = list(self._changes)
        self._schedule()
        for iterator in changes:
            iterator.put(value)
        for callback in observers:
            try:
                self._call_observer(callback, value)
            except Exception as error:  # noqa: BLE001 - one failing observer must not stop the rest
                report_callback_error(
                    f"wrapperkernel.widgets: the observer {callback!r} of {self!r} raised; "
                    "later values are still delivered.", error)

    def _call_observer(self, callback: Observer, value: Any) -> None:
        callback(value)

    def _changes_closed(self, changes: Changes) -> None:
        with self._lock:
            if changes in self._changes:
                self._changes.remove(changes)


class Changes(comms.Listener):
    """The values the page sets on one widget, in arrival order; made by ``changes()``.

    A ``comms.Listener`` (iteration, ``get(timeout)``, ``close()``, context manager,
    ``latest_only``) fed by the widget instead of by the address channel: values arrive
    on the dispatcher thread right after ``.value`` is updated, so while the loop body
    runs, ``widget.value`` is the yielded value or a newer one. It also ends when its
    widget is closed. Waits are interruptible (Ctrl-C / "Interrupt kernel").
    """

    def __init__(self, widget: Control, *, latest_only: bool = False) -> None:
        super().__init__(widget.address, latest_only=latest_only,
                         on_close=lambda changes: widget._changes_closed(changes))
        self._widget = widget

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<changes of {self._widget!r}, {state}>"


def check_json(value: Any, what: str) -> Any:
    """``value`` if it is JSON (what the address channel carries), else TypeError."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} must be a JSON value (str, number, bool, None, list, dict): {error}") from None
    return value


def _note(text: str) -> None:
    sys.stderr.write(f"wrapperkernel.widgets: {text}\n")
    sys.stderr.flush()


@functools.cache
def _page_client_config() -> dict[str, Any] | None:
    """The page client's install config, from the kernel (None outside a worker)."""
    from wrapperkernel.address.page_script import WORKER_ENV

    text = os.environ.get(WORKER_ENV)
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError:
        return None
    return config if isinstance(config, dict) else None
