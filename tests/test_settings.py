"""The rule for a setting in seconds, which the kernel and the worker share: both read
``WRAPPERKERNEL_READ_TIMEOUT_S`` from the same environment and must agree on it."""

from __future__ import annotations

import logging

import pytest

from wrapperkernel.address.defaults import READ_TIMEOUT_S
from wrapperkernel.kernel.app import address_timing_overrides
from wrapperkernel.settings import READ_TIMEOUT_VARIABLE, seconds_from_environment
from wrapperkernel.worker.address_runtime import read_timeout_from_environment


@pytest.mark.parametrize(("text", "seconds"), [("2", 2.0), ("0.5", 0.5), (" 1e-3 ", 0.001)])
def test_a_positive_number_of_seconds_is_read(text: str, seconds: float) -> None:
    assert seconds_from_environment({"X_S": text}, "X_S") == seconds


def test_an_unset_variable_is_none() -> None:
    assert seconds_from_environment({}, "X_S") is None


@pytest.mark.parametrize("text", ["soon", "", "0", "-1", "nan", "inf", "-inf", "1e999"])
def test_anything_else_is_ignored_with_a_line_that_says_so(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        seconds_from_environment({"X_S": text}, "X_S")
    assert str(raised.value) == f"ignored X_S={text!r}: expected a positive number of seconds"


@pytest.mark.parametrize("text", ["1.25", "soon", "inf"])
def test_the_kernel_and_the_worker_read_the_read_timeout_alike(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {READ_TIMEOUT_VARIABLE: text}
    worker_log: list[str] = []
    worker = read_timeout_from_environment(worker_log.append, environ)
    with caplog.at_level(logging.WARNING, logger="wrapperkernel"):
        kernel = address_timing_overrides(environ).get("read_timeout_s", READ_TIMEOUT_S)
    assert kernel == worker
    assert [r.getMessage() for r in caplog.records] == worker_log
