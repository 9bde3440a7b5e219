"""``Chart``: a streaming line chart, program -> page, drawn on a canvas by ``chart.js``.

Owns the chart's points on the program side and what travels to the page:

- the window: the last ``window`` points of each series, kept for a rendering (the saved
  notebook's picture, a page that binds) in ``Series``;
- the points appended since the last message, and when the next message may leave
  (``PointBuffer``, pure: time comes in as an argument), at most one message per
  ``MIN_SEND_INTERVAL_S``, whatever the append rate;
- the one flusher thread per displayed chart that sends them (``comms.send``).

Wire format (docs/widgets.md, "Chart"), one value on the chart's address::

    {"epoch": 3, "reset": false, "series": [
        {"name": "loss", "index": 0, "count": 1234, "x": [...], "y": [...]}]}

``count`` is how many points the series got in this epoch (since creation or the last
``clear()``), counting the ones in the message, so the page can drop a point it already
has (a snapshot and a delta may cross: the snapshot answers "bound" on the dispatcher
thread while the flusher sends). ``reset`` marks a snapshot (the window as a whole: the
rendering's config, the answer to "bound", ``clear()``); ``epoch`` grows with each
``clear()``. ``x`` and ``y`` are columns: packed little-endian float64 (binary values of
the channel, ``_packed``) in the flusher's messages, JSON lists in the snapshots that
must be JSON (the rendering's config, the answer to "bound"). A non-finite y is a gap in
the line: NaN in a packed column, ``null`` in a list (JSON has no NaN).

Must never: send one message per point, hold the widget lock while sending or calling
the host, keep more than ``window`` points per series, or let a value the channel cannot
carry (NaN in JSON, an object that is neither JSON nor bytes) reach ``comms.send``.
"""

from __future__ import annotations

import array
import math
import numbers
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wrapperkernel.threads import internal_thread
from wrapperkernel.widgets._base import Widget
from wrapperkernel.widgets._html import attrs, text

# At most this many messages a second per chart: a page draws at its frame rate anyway,
# and the channel then carries a few large values instead of many small ones.
MIN_SEND_INTERVAL_S = 1 / 30
# While points keep coming, the saved output is re-rendered at most this often (the
# host's debounce alone would wait for the stream to pause).
PERSIST_EVERY_S = 10.0
DEFAULT_WINDOW = 500
MAX_WINDOW = 100_000
MAX_SERIES = 16
DEFAULT_HEIGHT = 240
LEGEND_DECIMALS = 4
_INT_X = 2**1000  # an int x of this size or more may not fit a float


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _y(value: Any, series: str) -> float | None:
    """A y as the chart keeps it: a float, or None for a gap (None, NaN, inf, overflow)."""
    if type(value) is float:  # the common case first: a loop's appends are most of the work
        return value if math.isfinite(value) else None
    if value is None:
        return None
    if not _is_real(value):
        raise TypeError(f"a Chart y must be a real number or None, got {value!r} for {series!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range: no place on the chart
        return None
    return number if math.isfinite(number) else None


def _x(value: Any) -> float:
    kind = type(value)
    if (kind is float and math.isfinite(value)) or (kind is int and -_INT_X < value < _INT_X):
        return value  # the common cases, checked first
    if not _is_real(value):
        raise TypeError(f"a Chart x must be a real number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"a Chart x must be within float's range, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"a Chart x must be finite, got {value!r}")
    # An int stays an int: the page shows 3, not 3.0, and JSON carries it as written.
    return int(value) if isinstance(value, numbers.Integral) else number


def _format(value: float | None) -> str:
    return "–" if value is None else f"{value:.{LEGEND_DECIMALS}g}"


class Series:
    """One named line: its window of points and how many it got in this epoch."""

    def __init__(self, name: str, index: int, window: int) -> None:
        self.name = name
        self.index = index
        self.xs: deque[float] = deque(maxlen=window)
        self.ys: deque[float | None] = deque(maxlen=window)
        self.count = 0  # points appended in this epoch, also the next running x

    def clear(self) -> None:
        self.xs.clear()
        self.ys.clear()
        self.count = 0


class PointBuffer:
    """The chart's points: the window of each series, the points not sent yet, the pacing.

    Pure and not thread-safe: the chart calls it under its lock, with the time.
    """

    def __init__(self, window: int, names: Sequence[str],
                 min_interval_s: float = MIN_SEND_INTERVAL_S) -> None:
        self.window = window
        self.min_interval_s = min_interval_s
        self.series: dict[str, Series] = {}
        self.epoch = 0
        # name -> (xs, ys) appended since the last take; at most `window` each.
        self._pending: dict[str, tuple[deque[float], deque[float | None]]] = {}
        self._reset_pending = False
        self._sent_at: float | None = None
        for name in names:
            self.add_series(name)

    def add_series(self, name: str) -> Series:
        if not isinstance(name, str) or name == "":
            raise TypeError(f"a Chart series name must be a non-empty str, got {name!r}")
        if len(self.series) >= MAX_SERIES:
            raise ValueError(f"a Chart has at most {MAX_SERIES} series; cannot add {name!r}")
        series = Series(name, len(self.series), self.window)
        self.series[name] = series
        return series

    def get(self, name: str) -> Series:
        series = self.series.get(name)
        return series if series is not None else self.add_series(name)

    def add(self, series: Series, x: float | None, y: float | None) -> None:
        """Append a checked point; ``x=None`` means the series' running index."""
        px: float = series.count if x is None else x
        series.xs.append(px)
        series.ys.append(y)
        series.count += 1
        pending = self._pending.get(series.name)
        if pending is None:
            pending = self._pending[series.name] = (deque(maxlen=self.window),
                                                    deque(maxlen=self.window))
        pending[0].append(px)
        pending[1].append(y)

    def clear(self) -> None:
        self.epoch += 1
        for series in self.series.values():
            series.clear()
        self._pending.clear()
        self._reset_pending = True

    def has_pending(self) -> bool:
        return self._reset_pending or bool(self._pending)

    def due_in(self, now_s: float) -> float:
        """Seconds until a message may leave (0: now)."""
        if self._sent_at is None:
            return 0.0
        return max(0.0, self._sent_at + self.min_interval_s - now_s)

    def take(self, now_s: float) -> dict[str, Any] | None:
        """The message to send now, or None (nothing new, or too soon after the last)."""
        if not self.has_pending() or self.due_in(now_s) > 0:
            return None
        self._sent_at = now_s
        if self._reset_pending:
            self._reset_pending = False
            self._pending.clear()
            return self.snapshot()  # a clear, and whatever came after it
        message = {
            "epoch": self.epoch,
            "reset": False,
            "series": [
                _columns(self.series[name], xs, ys) for name, (xs, ys) in self._pending.items()
            ],
        }
        self._pending.clear()
        return message

    def snapshot(self) -> dict[str, Any]:
        """The whole window, as a reset message."""
        return {
            "epoch": self.epoch,
            "reset": True,
            "series": [_columns(s, s.xs, s.ys) for s in self.series.values()],
        }


def _columns(series: Series, xs: Iterable[float], ys: Iterable[float | None]) -> dict[str, Any]:
    # JSON number lists: what the saved output and a binding rendering get. The running
    # loop's messages are packed (_packed).
    return {"name": series.name, "index": series.index, "count": series.count,
            "x": list(xs), "y": list(ys)}


def _packed(message: dict[str, Any]) -> dict[str, Any]:
    """A message with its columns as packed little-endian float64 (NaN for a gap): binary
    values of the channel, 8 bytes a number, never parsed as JSON by the page."""
    return {**message, "series": [
        {**item, "x": _float64(item["x"]), "y": _float64(item["y"])} for item in message["series"]
    ]}


def _float64(values: list[float | None]) -> bytes:
    packed = array.array("d", (math.nan if v is None else v for v in values))
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


class Chart(Widget):
    """A streaming line chart: ``chart = Chart(series=("loss", "val"))``, then
    ``chart.append(y)``, ``chart.append(x, y)``, ``chart.append(y, series="val")`` or
    ``chart.append({"loss": 0.3, "val": 0.4})``, from a running loop.

    Keeps the last ``window`` points of each series (in the program and in the page).
    Appends are cheap and batched: the page gets at most one message per
    ``MIN_SEND_INTERVAL_S`` and draws at its frame rate. ``y_range=(low, high)`` fixes
    the y axis (default: fit the visible points). A y of None, NaN or inf is a gap.
    Appending to a series not named yet adds it.
    """

    _kind = "chart"

    def __init__(
        self,
        series: str | Sequence[str] = ("y",),
        *,
        window: int = DEFAULT_WINDOW,
        title: str = "",
        height: int = DEFAULT_HEIGHT,
        y_range: tuple[float, float] | None = None,
        x_label: str = "",
        y_label: str = "",
    ) -> None:
        names = [series] if isinstance(series, str) else series
        if not isinstance(names, Sequence) or isinstance(names, bytes):
            raise TypeError(f"Chart series must be a name or a list of names, got {series!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"Chart series names must differ, got {list(names)!r}")
        if isinstance(window, bool) or not isinstance(window, int):
            raise TypeError(f"Chart window must be an int (points per series), got {window!r}")
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"Chart window must be in [1, {MAX_WINDOW}], got {window}")
        if isinstance(height, bool) or not isinstance(height, int) or not 40 <= height <= 4000:
            raise ValueError(f"Chart height must be an int in [40, 4000] (pixels), got {height!r}")
        self._y_range = _check_range(y_range)
        for name, label in (("x_label", x_label), ("y_label", y_label)):
            if not isinstance(label, str):
                raise TypeError(f"Chart {name} must be a str, got {type(label).__name__}")
        self._x_label, self._y_label, self._height = x_label, y_label, height
        self._points = PointBuffer(window, list(names))
        super().__init__(None, label=title)
        self._wake = threading.Condition(self._lock)
        self._flusher: threading.Thread | None = None
        self._flusher_idle = False
        self._rerendered_at = 0.0

    # ------------------------------------------------------------------ public API

    @property
    def title(self) -> str:
        return self.label

    @title.setter
    def title(self, new: str) -> None:
        self.label = new

    @property
    def window(self) -> int:
        return self._points.window

    @property
    def series(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._points.series)

    @property
    def value(self) -> dict[str, list[tuple[float, float | None]]]:  # type: ignore[override]
        """The window: series name -> its points ``(x, y)``, oldest first (read-only)."""
        with self._lock:
            return {s.name: list(zip(s.xs, s.ys, strict=True)) for s in self._points.series.values()}

    def points(self, series: str | None = None) -> list[tuple[float, float | None]]:
        """The points kept of ``series`` (default: the first), oldest first."""
        with self._lock:
            found = self._series_locked(series, create=False)
            return list(zip(found.xs, found.ys, strict=True))

    def append(self, *args: Any, series: str | None = None) -> None:
        """Add one point: ``append(y)``, ``append(x, y)``, ``append(y, series="val")``,
        ``append({"loss": 0.3, "val": 0.4})`` or ``append(x, {"loss": ..., ...})``.

        Without x, x is the series' running index (0, 1, 2 ... since the last clear).
        """
        if len(args) == 1:
            x, y = None, args[0]
        elif len(args) == 2:
            x, y = _x(args[0]), args[1]
        else:
            raise TypeError(f"append takes (y) or (x, y), got {len(args)} arguments")
        if type(y) is float or not isinstance(y, Mapping):
            value = _y(y, series or "the first series")
            with self._lock:
                first = not self._points.has_pending()
                self._points.add(self._series_locked(series, create=True), x, value)
                schedule = self._added_locked(first)
            if schedule:
                self._schedule()
            return
        if series is not None:
            raise TypeError("append: give either a dict of series or series=, not both")
        items = [(name, _y(value, name)) for name, value in y.items()]
        with self._lock:
            first = not self._points.has_pending()
            targets = [(self._series_locked(name, create=True), value) for name, value in items]
            for target, value in targets:
                self._points.add(target, x, value)
            schedule = self._added_locked(first)
        if schedule:
            self._schedule()

    def extend(self, *args: Any, series: str | None = None) -> None:
        """Add many points at once: ``extend(ys)``, ``extend(xs, ys)``, ``extend(ys,
        series="val")``, ``extend({"loss": ys, "val": ys2})`` or ``extend(xs, {...})``.

        Columns are sequences or iterables (lists, tuples, ranges, numpy arrays) of the
        same length.
        """
        if len(args) == 1:
            xs, ys = None, args[0]
        elif len(args) == 2:
            xs, ys = [_x(x) for x in _column(args[0], "xs")], args[1]
        else:
            raise TypeError(f"extend takes (ys) or (xs, ys), got {len(args)} arguments")
        if isinstance(ys, Mapping):
            if series is not None:
                raise TypeError("extend: give either a dict of series or series=, not both")
            columns = [(name, [_y(v, name) for v in _column(values, name)])
                       for name, values in ys.items()]
        else:
            columns = [(series, [_y(v, series or "the first series") for v in _column(ys, "ys")])]
        for name, values in columns:
            if xs is not None and len(values) != len(xs):
                raise ValueError(f"extend: {len(xs)} xs but {len(values)} ys for {name or 'ys'!r}")
        with self._lock:
            first = not self._points.has_pending()
            targets = [(self._series_locked(name, create=True), values) for name, values in columns]
            for target, values in targets:
                for i, value in enumerate(values):
                    self._points.add(target, None if xs is None else xs[i], value)
            schedule = self._added_locked(first)
        if schedule:
            self._schedule()

    def clear(self) -> None:
        """Remove every point (the series stay); running indexes start at 0 again."""
        with self._lock:
            first = not self._points.has_pending()
            self._points.clear()
            schedule = self._added_locked(first)
        if schedule:
            self._schedule()

    def close(self) -> None:
        super().close()
        with self._lock:
            self._wake.notify_all()

    # ------------------------------------------------------------------ Widget hooks

    def _check(self, value: Any) -> None:
        if value is not None:
            raise TypeError("a Chart's value is its points: use append(), extend(), clear()")
        return None

    def _snapshot_locked(self) -> Any:
        return self._points.snapshot()

    def _persisted_locked(self) -> Any:
        """The last point of each series, on the root element (a reader of the file sees it)."""
        return {s.name: [s.xs[-1], s.ys[-1]] if s.xs else None
                for s in self._points.series.values()}

    def _body(self, control_id: str) -> str:
        keys = []
        for s in self._points.series.values():
            key = attrs({"class": f"wk-chart-key wk-chart-series-{s.index % MAX_SERIES}",
                         "data-wk-series": s.name})
            last = s.ys[-1] if s.ys else None
            keys.append(
                f'<span{key}><span class="wk-chart-swatch"></span>{text(s.name)} '
                f'<span class="wk-chart-last">{text(_format(last))}</span></span>'
            )
        title = f'<span class="wk-chart-title">{text(self._label)}</span>' if self._label else ""
        described = ", ".join(
            f"{s.name} last {_format(s.ys[-1] if s.ys else None)}"
            for s in self._points.series.values()
        )
        canvas = attrs({
            "class": "wk-control wk-chart-canvas",
            "id": control_id,
            "data-wk-control": True,
            "role": "img",
            "aria-label": f"Line chart{': ' + self._label if self._label else ''} ({described})",
            "style": f"height: {self._height}px",
        })
        return (f'<div class="wk-chart-head">{title}<span class="wk-chart-legend">'
                f'{"".join(keys)}</span></div><canvas{canvas}></canvas>')

    def _config(self) -> dict[str, Any]:
        return {
            "window": self._points.window,
            "height": self._height,
            "y_range": None if self._y_range is None else list(self._y_range),
            "x_label": self._x_label,
            "y_label": self._y_label,
            "min_interval_ms": round(MIN_SEND_INTERVAL_S * 1000),
        }

    def _extra_script(self) -> str:
        return "chart.js"

    def _repr_fields(self) -> dict[str, Any]:
        return {
            "series": tuple(self._points.series),
            "window": self._points.window,
            "points": sum(len(s.xs) for s in self._points.series.values()),
            "title": self._label,
        }

    def display(self) -> None:
        super().display()
        with self._lock:
            self._rerendered_at = time.monotonic()
            self._start_flusher_locked()

    # ------------------------------------------------------------------ internals

    def _series_locked(self, name: str | None, *, create: bool) -> Series:
        if name is None:
            if not self._points.series:
                raise ValueError("this Chart has no series")
            return next(iter(self._points.series.values()))
        if not isinstance(name, str):
            raise TypeError(f"a Chart series name must be a str, got {name!r}")
        if create:
            return self._points.get(name)
        found = self._points.series.get(name)
        if found is None:
            raise ValueError(f"{name!r} is not a series of this Chart: {list(self._points.series)}")
        return found

    def _added_locked(self, first: bool) -> bool:
        """Points were added (``first``: none were waiting before); True: schedule a re-render.

        Wakes the flusher only when it has nothing to send: one waiting out the interval
        takes the new points when it wakes anyway, and waking it per append would spin
        it at the append rate. The re-render is scheduled here, by the appending thread,
        for the first points of each message (at most once per interval): scheduled
        only by the flusher, the last appends of a cell could miss the re-render after
        the cell (``post_execute`` runs on the main thread, maybe before the flusher).
        """
        if self._flusher_idle:
            self._wake.notify()
        return first and self._displayed

    def _start_flusher_locked(self) -> None:
        if self._flusher is None and not self._closed:
            self._flusher = internal_thread(self._flush_loop, f"chart-flusher-{self._id[:8]}")
            self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                while not self._points.has_pending() and not self._closed:
                    self._flusher_idle = True
                    self._wake.wait()
                self._flusher_idle = False
                if self._closed:
                    return
                now = time.monotonic()
                delay = self._points.due_in(now)
                if delay > 0:
                    self._wake.wait(delay)  # more points may join this message meanwhile
                    continue
                message = self._points.take(now)
                if not self._live:
                    message = None  # no page: the rendering carries the window
                persist = now - self._rerendered_at >= PERSIST_EVERY_S
            if message is not None:
                self._send(_packed(message))
            self._schedule()
            if persist and not self.held_by_page():
                self._rerendered_at = now
                self.rerender()


def _check_range(y_range: Any) -> tuple[float, float] | None:
    if y_range is None:
        return None
    if (not isinstance(y_range, Sequence) or isinstance(y_range, str) or len(y_range) != 2
            or not all(_is_real(v) and math.isfinite(v) for v in y_range)):
        raise TypeError(f"Chart y_range must be None or (low, high), finite numbers; got {y_range!r}")
    low, high = float(y_range[0]), float(y_range[1])
    if not low < high:
        raise ValueError(f"Chart y_range must have low < high, got {y_range!r}")
    return low, high


def _column(values: Any, what: str) -> list[Any]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise TypeError(f"extend: {what} must be a sequence of numbers, got {type(values).__name__}")
    return list(values)
