"""The connection file the kernel is launched with (Jupyter's "kernel specs" docs).

This is the one boundary model that is not pydantic: it is read before the kernel
answers its first ``kernel_info_request``, and importing pydantic there costs about as
much as everything else the kernel needs to bind its sockets. The checks below are the
whole schema; a bad file raises ``ConnectionFileError`` saying which field is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PORT_FIELDS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class ConnectionFileError(ValueError):
    """The connection file is missing, not JSON, or has a missing or mistyped field."""


@dataclass(frozen=True)
class ConnectionInfo:
    shell_port: int
    iopub_port: int
    stdin_port: int
    control_port: int
    hb_port: int
    transport: str = "tcp"
    ip: str = "127.0.0.1"
    key: str = ""
    signature_scheme: str = "hmac-sha256"
    kernel_name: str = ""

    @classmethod
    def load(cls, path: str | Path) -> ConnectionInfo:
        try:
            raw = json.loads(Path(path).read_bytes())
        except (OSError, ValueError) as error:
            raise ConnectionFileError(f"cannot read connection file {path}: {error}") from error
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "connection info") -> ConnectionInfo:
        if not isinstance(raw, dict):
            raise ConnectionFileError(f"{source}: expected a JSON object")
        fields: dict[str, Any] = {}
        for name in PORT_FIELDS:
            value = raw.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
                raise ConnectionFileError(f"{source}: {name} must be a port number, got {value!r}")
            fields[name] = value
        for name in ("transport", "ip", "key", "signature_scheme", "kernel_name"):
            if name in raw:
                if not isinstance(raw[name], str):
                    raise ConnectionFileError(f"{source}: {name} must be a string")
                fields[name] = raw[name]
        if fields.get("transport", "tcp") not in ("tcp", "ipc"):
            raise ConnectionFileError(f"{source}: transport must be 'tcp' or 'ipc'")
        return cls(**fields)

    def ports(self) -> dict[str, int]:
        """The five ports by their connection-file names (``shell_port`` ...)."""
        return {name: getattr(self, name) for name in PORT_FIELDS}

    def address(self, port: int) -> str:
        if self.transport == "tcp":
            return f"tcp://{self.ip}:{port}"
        return f"ipc://{self.ip}-{port}"
