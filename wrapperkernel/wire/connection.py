"""The connection file the kernel is launched with (Jupyter's "kernel specs" docs)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


class ConnectionInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    transport: Literal["tcp", "ipc"] = "tcp"
    ip: str = "127.0.0.1"
    shell_port: int
    iopub_port: int
    stdin_port: int
    control_port: int
    hb_port: int
    key: str = ""
    signature_scheme: str = "hmac-sha256"
    kernel_name: str = ""

    @classmethod
    def load(cls, path: str | Path) -> ConnectionInfo:
        return cls.model_validate_json(Path(path).read_bytes())

    def address(self, port: int) -> str:
        if self.transport == "tcp":
            return f"tcp://{self.ip}:{port}"
        return f"ipc://{self.ip}-{port}"
