"""Contents of the Jupyter messages the kernel handles, as pydantic models.

Parsed once at the boundary (``parse``); handlers receive typed objects. Unknown extra
fields are accepted, as the messaging spec asks of every implementation; missing or
mistyped required fields raise ``BadRequest`` with a sentence naming the field.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

M = TypeVar("M", bound=BaseModel)


class BadRequest(Exception):
    """The peer sent a request whose content does not match the messaging spec."""


class _Content(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ExecuteRequest(_Content):
    code: str
    silent: bool = False
    store_history: bool = True
    user_expressions: dict[str, str] = Field(default_factory=dict)
    allow_stdin: bool = True
    stop_on_error: bool = True


class CompleteRequest(_Content):
    code: str
    cursor_pos: int | None = None


class InspectRequest(_Content):
    code: str
    cursor_pos: int | None = None
    detail_level: Literal[0, 1] = 0


class IsCompleteRequest(_Content):
    code: str


class HistoryRequest(_Content):
    hist_access_type: Literal["tail", "range", "search"] = "tail"
    output: bool = False
    raw: bool = True
    session: int = 0
    start: int = 0
    stop: int | None = None
    n: int | None = None
    pattern: str = "*"
    unique: bool = False


class ShutdownRequest(_Content):
    restart: bool = False


class CommInfoRequest(_Content):
    target_name: str | None = None
    # Clients from before protocol 5.1 call the filter ``target``.
    target: str | None = None


class InputReply(_Content):
    value: str = ""


class DebugRequest(_Content):
    """A Debug Adapter Protocol request, as the content of a ``debug_request``
    (messaging spec, "Debug request"): the kernel relays it to the debugger."""

    type: Literal["request"]
    seq: int
    command: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class DeleteSubshellRequest(_Content):
    subshell_id: str


class CommOpen(_Content):
    comm_id: str
    target_name: str
    data: dict[str, Any] = Field(default_factory=dict)
    target_module: str | None = None


class CommMsg(_Content):
    comm_id: str
    data: Any = None


class CommClose(_Content):
    comm_id: str
    data: Any = None


def parse(model: type[M], content: Any) -> M:
    try:
        return model.model_validate(content)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "content"
        raise BadRequest(f"content.{where}: {first['msg']}") from error
