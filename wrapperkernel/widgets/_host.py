"""What the widgets of one IPython shell share: re-rendering for persistence, start failures.

Owns the persistence schedule (docs/widgets.md, "Persistence"). JupyterLab saves the
output MODEL, not the DOM, so a widget whose value changed must be displayed again,
through ``update_display_data`` on its ``display_id``, for the saved notebook to show it.
Re-rendering replaces the widget's DOM, so it is not done on every slider step: a widget
is re-rendered once its value has been still for ``RERENDER_DEBOUNCE_S``, and every
changed widget right after each cell (IPython's ``post_execute`` event, which runs
before the cell's reply, so the update is parented to that cell). While the page holds a
control (pointer down on a slider, an input method composing text), its re-render waits
for the release, since replacing the DOM would end the drag.

One ``WidgetHost`` per shell, kept on the shell as ``wrapperkernel_widgets`` (like the
comms runtime): a restarted worker gets a fresh one, and nothing here is module state.

Threads: ``schedule`` is called from any thread (the dispatcher thread for page values,
the main thread for program values); the re-render thread sleeps until the earliest
deadline; ``flush`` runs on the main thread. Must never: call widget code while holding
the lock, or let a failing re-render stop the thread.

What the host needs of a widget is the ``Rerenderable`` protocol below (ask whether the
page holds it, re-render it). This module imports no widget module: the widgets depend
on the host, never the other way round.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from wrapperkernel.comms_base import report_callback_error
from wrapperkernel.threads import internal_thread

RERENDER_DEBOUNCE_S = 0.5
SHELL_ATTRIBUTE = "wrapperkernel_widgets"


class Rerenderable(Protocol):
    """A widget as the host sees it (``Widget`` in ``_base`` is the one implementation).

    The host keys its schedule by the widget, so it must hash by identity, as objects
    do by default.
    """

    def held_by_page(self) -> bool:
        """True while the page holds the control: re-rendering now would disturb the user."""
        ...

    def rerender(self) -> None:
        """Update the widget's outputs if its HTML changed since it was last published."""
        ...


class WidgetHost:
    def __init__(self, debounce_s: float = RERENDER_DEBOUNCE_S) -> None:
        self._debounce_s = debounce_s
        self._lock = threading.Condition(threading.Lock())
        self._due: dict[Rerenderable, float] = {}  # widget -> monotonic deadline
        self._thread: threading.Thread | None = None
        self._shell: Any = None
        # The execution count of the cell in which comms.start() last failed: the other
        # widgets of that cell do not wait again for a page that is not there.
        self._start_failed_in: int | None = None

    @staticmethod
    def of_shell(shell: Any) -> WidgetHost:
        """The shell's host, made (and hooked to ``post_execute``) on first use."""
        # dict.setdefault is atomic: two threads asking at once get the same host.
        host: WidgetHost = shell.__dict__.setdefault(SHELL_ATTRIBUTE, WidgetHost())
        host._attach(shell)
        return host

    def _attach(self, shell: Any) -> None:
        with self._lock:
            if self._shell is not None:
                return
            self._shell = shell
        shell.events.register("post_execute", self.flush)

    @property
    def execution_count(self) -> int | None:
        return getattr(self._shell, "execution_count", None)

    def note_start_failed(self) -> None:
        """A page did not connect in the running cell: its other widgets must not wait again."""
        self._start_failed_in = self.execution_count

    def start_failed_in_this_cell(self) -> bool:
        """True when ``note_start_failed`` was called during the running cell."""
        return self._start_failed_in == self.execution_count

    def schedule(self, widget: Rerenderable) -> None:
        """Re-render ``widget`` once it has not changed for the debounce time."""
        with self._lock:
            self._due[widget] = time.monotonic() + self._debounce_s
            if self._thread is None:
                self._thread = internal_thread(self._run, "widgets-rerender")
                self._thread.start()
            self._lock.notify()

    def flush(self) -> None:
        """Re-render every widget with a pending change now (the ``post_execute`` hook).

        A widget the page holds (a slider being dragged) waits for its release instead.
        """
        with self._lock:
            widgets = list(self._due)
            self._due.clear()
        for widget in widgets:
            self._rerender_or_wait(widget)

    def _rerender_or_wait(self, widget: Rerenderable) -> None:
        if widget.held_by_page():
            self.schedule(widget)  # checked again after the debounce time, and on release
            return
        _rerender(widget)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._due:
                    self._lock.wait()
                now = time.monotonic()
                ready = [widget for widget, deadline in self._due.items() if deadline <= now]
                if not ready:
                    self._lock.wait(min(self._due.values()) - now)
                    continue
                for widget in ready:
                    del self._due[widget]
            for widget in ready:
                self._rerender_or_wait(widget)


def _rerender(widget: Rerenderable) -> None:
    try:
        widget.rerender()
    except Exception as error:  # noqa: BLE001 - the one catch-all of the re-render loop
        report_callback_error(
            f"wrapperkernel.widgets: re-rendering {widget!r} failed; the saved notebook may "
            "show an older value.", error, own_frames=0)
