"""The widgets: Button, Slider, Select, Checkbox, Text (page <-> program) and Progress.

Each class says which values it holds (``_check``, ``_from_page``) and how it is drawn
(``_body``: a plain HTML control with a ``<label for>``, plus a readout where the value
is not visible in the control itself). Everything else is in ``_base``.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable, Sequence
from typing import Any

from wrapperkernel.widgets._base import Control, Widget, check_json
from wrapperkernel.widgets._html import attrs, json_attr, text

_UNSET: Any = object()
MAX_DECIMALS = 10


def _label_html(label: str, control_id: str) -> str:
    if label == "":
        return ""
    return f'<label class="wk-label"{attrs({"for": control_id})}>{text(label)}</label>'


def _aria_label(label: str, fallback: str) -> str | None:
    """An accessible name for a control without a visible label."""
    return fallback if label == "" else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _decimals(number: float) -> int:
    """How many decimals ``number`` needs when written out (0.25 -> 2, 3.0 -> 0)."""
    exponent = decimal.Decimal(repr(float(number))).normalize().as_tuple().exponent
    return min(MAX_DECIMALS, max(0, -exponent)) if isinstance(exponent, int) else 0


def _float_decimals(low: float, step: float) -> int:
    """Decimals that show every position of a float slider (at least one)."""
    return max(_decimals(step), _decimals(low), 1)


class Button(Control):
    """A button; ``.value`` (alias ``.clicks``) counts the clicks made in the page.

    ``on_click(callback)`` calls ``callback(button)`` for every click, on the comms
    dispatcher thread. Setting ``.value`` (e.g. to 0) resets the count.
    """

    _kind = "button"

    def __init__(self, label: str = "Click", *, value: int = 0) -> None:
        super().__init__(value, label=label)
        self._click_handlers: dict[Callable[[Button], object], Callable[[Any], None]] = {}

    @property
    def clicks(self) -> int:
        return self.value

    def on_click(
        self, callback: Callable[[Button], object], *, remove: bool = False
    ) -> Callable[[Button], object]:
        """Call ``callback(button)`` for every click in the page; ``remove=True`` stops it.

        Returns ``callback``, so it can be used as a decorator.
        """
        if remove:
            handler = self._click_handlers.pop(callback, None)
            if handler is not None:
                self.unobserve(handler)
            return callback
        if not callable(callback):
            raise TypeError(f"callback must be callable as callback(button), got {callback!r}")

        def handler(clicks: Any) -> None:
            callback(self)

        self._click_handlers[callback] = handler
        self.observe(handler)
        return callback

    def _check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"a Button's value is its click count, an int; got {value!r}")
        if value < 0:
            raise ValueError(f"a Button's click count cannot be negative; got {value!r}")
        return value

    def _body(self, control_id: str) -> str:
        title = "clicked once" if self._value == 1 else f"clicked {self._value} times"
        button = attrs({
            "type": "button",
            "class": "wk-control",
            "id": control_id,
            "data-wk-control": True,
            "data-lm-suppress-shortcuts": "true",
            "data-wk-clicks": self._value,
            "title": title,
        })
        return f"<button{button}>{text(self._label)}</button>"


class Slider(Control):
    """A range slider: ``Slider(0, 10, value=5)``; ``Slider(0.0, 1.0, step=0.05)``.

    Integer when ``min``, ``max``, ``step`` and ``value`` are all ints, float otherwise.
    ``value`` defaults to ``min``; ``step`` to 1 (int) or a hundredth of the range
    (float). Values outside [min, max] are clamped; values from the page are snapped to
    the step.
    """

    _kind = "slider"

    def __init__(
        self,
        min: float = 0,
        max: float = 100,
        value: float | None = None,
        step: float | None = None,
        *,
        label: str = "",
    ) -> None:
        for name, number in (("min", min), ("max", max), ("value", value), ("step", step)):
            if number is not None and (not _is_number(number) or not math.isfinite(number)):
                raise TypeError(f"Slider {name} must be a finite int or float, got {number!r}")
        if not min < max:
            raise ValueError(f"Slider min must be less than max, got min={min!r}, max={max!r}")
        if step is not None and not step > 0:
            raise ValueError(f"Slider step must be > 0, got {step!r}")
        self._integer = all(isinstance(n, int) for n in (min, max, value, step) if n is not None)
        if self._integer:
            self._min, self._max = int(min), int(max)
            self._step: float = int(step) if step is not None else 1
        else:
            self._min, self._max = float(min), float(max)
            self._step = float(step) if step is not None else (self._max - self._min) / 100
        self._decimals = 0 if self._integer else _float_decimals(self._min, self._step)
        super().__init__(self._min if value is None else value, label=label)

    @property
    def min(self) -> float:
        return self._min

    @property
    def max(self) -> float:
        return self._max

    @property
    def step(self) -> float:
        return self._step

    def _check(self, value: Any) -> float:
        if not _is_number(value) or not math.isfinite(value):
            raise TypeError(f"a Slider's value must be a finite number, got {value!r}")
        if self._integer:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"this Slider holds ints (min, max, step are ints); got {value!r}")
            value = int(value)
        else:
            value = float(value)
        return min(self._max, max(self._min, value))

    def _from_page(self, value: Any) -> float:
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError("not a finite number")
        steps = round((value - self._min) / self._step)
        snapped = self._min + steps * self._step
        snapped = int(round(snapped)) if self._integer else round(snapped, self._decimals)
        return min(self._max, max(self._min, snapped))

    def _format(self, value: float) -> str:
        return str(value) if self._integer else f"{value:.{self._decimals}f}"

    def _body(self, control_id: str) -> str:
        control = attrs({
            "type": "range",
            "class": "wk-control",
            "id": control_id,
            "data-wk-control": True,
            "data-lm-suppress-shortcuts": "true",
            "min": self._min,
            "max": self._max,
            "step": self._step,
            "value": self._value,
            "aria-label": _aria_label(self._label, "Slider"),
        })
        readout = attrs({"class": "wk-readout", "for": control_id, "data-wk-readout": True})
        return (
            f"{_label_html(self._label, control_id)}<input{control}>"
            f"<output{readout}>{text(self._format(self._value))}</output>"
        )

    def _config(self) -> dict[str, Any]:
        return {"integer": self._integer, "decimals": self._decimals}

    def _repr_fields(self) -> dict[str, Any]:
        return {
            "min": self._min, "max": self._max, "value": self._value,
            "step": self._step, "label": self._label,
        }


class Select(Control):
    """A drop-down list: ``Select(["red", "green"], value="green")``.

    Options are JSON values (str, number, bool, None), shown with ``str()`` unless they
    are strings; ``.value`` is the selected option itself (default: the first).
    """

    _kind = "select"

    def __init__(self, options: Sequence[Any], value: Any = _UNSET, *, label: str = "") -> None:
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
            raise TypeError(f"Select options must be a list, got {type(options).__name__}")
        if len(options) == 0:
            raise ValueError("Select needs at least one option")
        self._options = [check_json(option, "each Select option") for option in options]
        self._option_keys = [json_attr(option) for option in self._options]
        super().__init__(self._options[0] if value is _UNSET else value, label=label)

    @property
    def options(self) -> list[Any]:
        return list(self._options)

    def _index(self, value: Any) -> int:
        try:
            key = json_attr(value)
        except (TypeError, ValueError):
            return -1
        return self._option_keys.index(key) if key in self._option_keys else -1

    def _check(self, value: Any) -> Any:
        index = self._index(value)
        if index < 0:
            raise ValueError(f"{value!r} is not one of the options {self._options!r}")
        return self._options[index]

    def _body(self, control_id: str) -> str:
        selected = self._index(self._value)
        options = "".join(
            f"<option{attrs({'value': i, 'selected': i == selected})}>"
            f"{text(str(option))}</option>"
            for i, option in enumerate(self._options)
        )
        control = attrs({
            "class": "wk-control",
            "id": control_id,
            "data-wk-control": True,
            "data-lm-suppress-shortcuts": "true",
            "aria-label": _aria_label(self._label, "Select"),
        })
        return f"{_label_html(self._label, control_id)}<select{control}>{options}</select>"

    def _config(self) -> dict[str, Any]:
        return {"options": self._options}

    def _repr_fields(self) -> dict[str, Any]:
        return {"options": self._options, "value": self._value, "label": self._label}


class Checkbox(Control):
    """A checkbox; ``.value`` is True when it is checked."""

    _kind = "checkbox"

    def __init__(self, value: bool = False, *, label: str = "") -> None:
        super().__init__(value, label=label)

    def _check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"a Checkbox's value must be True or False, got {value!r}")
        return value

    def _body(self, control_id: str) -> str:
        control = attrs({
            "type": "checkbox",
            "class": "wk-control",
            "id": control_id,
            "data-wk-control": True,
            "data-lm-suppress-shortcuts": "true",
            "checked": self._value,
            "aria-label": _aria_label(self._label, "Checkbox"),
        })
        return f"<input{control}>{_label_html(self._label, control_id)}"


class Text(Control):
    """A one-line text field; ``.value`` is its text, updated as the user types."""

    _kind = "text"

    def __init__(self, value: str = "", *, label: str = "", placeholder: str = "") -> None:
        if not isinstance(placeholder, str):
            raise TypeError(f"placeholder must be a str, got {type(placeholder).__name__}")
        self._placeholder = placeholder
        super().__init__(value, label=label)

    def _check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"a Text's value must be a str, got {value!r}")
        return value

    def _body(self, control_id: str) -> str:
        control = attrs({
            "type": "text",
            "class": "wk-control",
            "id": control_id,
            "data-wk-control": True,
            "data-lm-suppress-shortcuts": "true",
            "value": self._value,
            "placeholder": self._placeholder or None,
            "spellcheck": "false",
            "aria-label": _aria_label(self._label, "Text"),
        })
        return f"{_label_html(self._label, control_id)}<input{control}>"


class Progress(Widget):
    """A progress bar, program -> page only: ``Progress(max=10)``; set ``.value``.

    ``value`` is clamped to [0, max]. ``max`` can be changed while it is shown.
    """

    _kind = "progress"

    def __init__(self, value: float = 0, max: float = 100, *, label: str = "") -> None:
        self._max = self._check_max(max)
        super().__init__(value, label=label)

    @property
    def max(self) -> float:
        return self._max

    @max.setter
    def max(self, new: float) -> None:
        checked = self._check_max(new)
        with self._lock:
            self._max = checked
            clamped = self._value > checked
        if clamped:
            self.value = checked  # the page's bar must not stay beyond the new end
        self.rerender()

    @staticmethod
    def _check_max(value: Any) -> float:
        if not _is_number(value) or not math.isfinite(value) or not value > 0:
            raise ValueError(f"Progress max must be a finite number > 0, got {value!r}")
        return value

    def _check(self, value: Any) -> float:
        if not _is_number(value) or not math.isfinite(value):
            raise TypeError(f"a Progress value must be a finite number, got {value!r}")
        return min(self._max, max(0, value))

    def _body(self, control_id: str) -> str:
        control = attrs({
            "class": "wk-control",
            "id": control_id,
            "data-wk-control": True,
            "data-lm-suppress-shortcuts": "true",
            "value": self._value,
            "max": self._max,
            "aria-label": _aria_label(self._label, "Progress"),
        })
        percent = round(100 * self._value / self._max)
        readout = attrs({"class": "wk-readout", "data-wk-readout": True})
        return (
            f"{_label_html(self._label, control_id)}<progress{control}></progress>"
            f"<span{readout}>{percent} %</span>"
        )

    def _config(self) -> dict[str, Any]:
        return {"max": self._max}

    def _repr_fields(self) -> dict[str, Any]:
        return {"value": self._value, "max": self._max, "label": self._label}
