"""The connection file parser: valid files load, bad ones say which field is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wrapperkernel.wire.connection import ConnectionFileError, ConnectionInfo

GOOD = {"shell_port": 5001, "iopub_port": 5002, "stdin_port": 5003, "control_port": 5004,
        "hb_port": 5005, "ip": "127.0.0.1", "key": "secret", "transport": "tcp",
        "signature_scheme": "hmac-sha256", "kernel_name": "wrapperkernel"}


def test_a_jupyter_client_connection_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "kernel-abc.json"
    path.write_text(json.dumps(GOOD))
    info = ConnectionInfo.load(path)
    assert (info.shell_port, info.hb_port, info.key) == (5001, 5005, "secret")
    assert info.address(info.iopub_port) == "tcp://127.0.0.1:5002"


@pytest.mark.parametrize(("change", "field"), [
    ({"shell_port": "5001"}, "shell_port"),
    ({"hb_port": None}, "hb_port"),
    ({"iopub_port": 70000}, "iopub_port"),
    ({"stdin_port": True}, "stdin_port"),
    ({"key": 5}, "key"),
    ({"transport": "udp"}, "transport"),
])
def test_a_bad_field_is_named(change: dict, field: str) -> None:
    with pytest.raises(ConnectionFileError, match=field):
        ConnectionInfo.from_dict({**GOOD, **change})


def test_a_missing_port_and_bad_json_are_clear_errors(tmp_path: Path) -> None:
    missing = {k: v for k, v in GOOD.items() if k != "control_port"}
    with pytest.raises(ConnectionFileError, match="control_port"):
        ConnectionInfo.from_dict(missing)
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConnectionFileError, match="cannot read connection file"):
        ConnectionInfo.load(path)


def test_comm_timeouts_come_from_the_environment() -> None:
    from wrapperkernel.kernel.app import address_timings_from_environment

    timings = address_timings_from_environment({
        "WRAPPERKERNEL_WAIT_FOR_CONNECTION_S": "10",
        "WRAPPERKERNEL_HEARTBEAT_TIMEOUT_S": "0.25",
        "WRAPPERKERNEL_READ_TIMEOUT_S": "not a number",
    })
    assert timings.wait_for_connection_s == 10.0
    assert timings.heartbeat_timeout_s == 0.25
    assert timings.read_timeout_s == 3.0  # the bad value is ignored, the default stays
    assert timings.heartbeat_request_threshold_s == 1.0
