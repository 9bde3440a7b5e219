"""A real wrapperkernel with a headless page attached, for the address-channel tests.

``page_kernel()`` starts a kernel (kernelspec from the ``kernel_env`` install) and a
``HeadlessPage`` on it, and waits until the page really hears the kernel's IOPub (a SUB
socket joins late; a page that missed the install script would turn a correct kernel into
a failed test). ``PageKernel`` bundles both with the waits the tests need: every wait is
bounded and fails with a summary of what did arrive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from headless_page import HeadlessPage, wait_until
from kernel_helpers import CELL_TIMEOUT_S, KernelConnection, Result, running_kernel

WAIT_S = 15.0  # bound on waits for the page; generous, a loaded machine is not a bug
PAGE_JOIN_TIMEOUT_S = 20.0


def describe(result: Result) -> str:
    """What the user saw of a cell, for assertion messages."""
    content = result.content
    error = f"{content.get('ename')}: {content.get('evalue')}" if result.status == "error" else ""
    return (f"status={result.status} {error}\nstdout={result.stdout!r}\nstderr={result.stderr!r}"
            f"\noutputs={result.output_types}")


def strict_json(value: Any) -> str:
    """A canonical JSON text: tells 0 from False and 1 from 1.0, unlike ``==``."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)


def parent_id(msg: dict[str, Any]) -> str:
    return (msg.get("parent_header") or {}).get("msg_id", "")


@dataclass
class PageKernel:
    conn: KernelConnection
    page: HeadlessPage

    def run_ok(self, code: str, timeout: float = CELL_TIMEOUT_S) -> Result:
        result = self.conn.run(code, timeout=timeout)
        assert result.status == "ok", describe(result)
        return result

    def mark(self) -> int:
        """A position in the page's value history, for ``values(since=...)``."""
        return len(self.page.history)

    def values(self, address: str, since: int = 0, comm_id: str | None = None) -> list[Any]:
        """The values the page received for ``address`` (on ``comm_id``, if given)."""
        return [value for cid, addr, value in self.page.history[since:]
                if addr == address and (comm_id is None or cid == comm_id)]

    def wait_values(self, address: str, count: int, since: int = 0,
                    comm_id: str | None = None, timeout: float = WAIT_S) -> list[Any]:
        """Wait until the page has at least ``count`` values for ``address``; returns them."""
        try:
            wait_until(lambda: len(self.values(address, since, comm_id)) >= count, timeout,
                       f"{count} values for {address!r} at the page")
        except TimeoutError as error:
            got = self.values(address, since, comm_id)
            raise AssertionError(f"{error}; got {len(got)}: {got[:20]!r}") from None
        return self.values(address, since, comm_id)

    def wait_installs(self, count: int, timeout: float = WAIT_S) -> None:
        """Wait until the page has connected ``count`` times in all (and is connected)."""
        try:
            wait_until(lambda: self.page.installs >= count and self.page.acked.is_set(),
                       timeout, f"install #{count} and ack")
        except TimeoutError as error:
            raise AssertionError(f"{error}; installs={self.page.installs}, "
                                 f"acked={self.page.acked.is_set()}") from None

    def iopub_since(self, index: int) -> list[dict[str, Any]]:
        return list(self.page.iopub_log[index:])

    def comm_items(self, comm_id: str) -> list[dict[str, Any]]:
        """Every item the kernel sent on ``comm_id``, batches unpacked, in order."""
        items: list[dict[str, Any]] = []
        for msg in self.page.iopub_log:
            content = msg["content"]
            if msg["msg_type"] == "comm_msg" and content.get("comm_id") == comm_id:
                data = content["data"]
                items.extend(data["batch"] if "batch" in data else [data])
        return items


def wait_page_hears_kernel(conn: KernelConnection, page: HeadlessPage) -> None:
    """Wait until the page's IOPub subscription gets the kernel's messages."""
    deadline = time.monotonic() + PAGE_JOIN_TIMEOUT_S
    while True:
        msg_id = conn.send("kernel_info_request", {})
        conn.reply(msg_id)
        try:
            wait_until(lambda sent=msg_id: any(parent_id(m) == sent for m in page.iopub_log), 1.0,
                       "the page to see the kernel's status messages")
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the headless page heard nothing on IOPub within {PAGE_JOIN_TIMEOUT_S} s"
                ) from None


@contextmanager
def page_kernel(**page_options: Any) -> Iterator[PageKernel]:
    """A fresh kernel with a headless page (``HeadlessPage`` options); stops both."""
    with running_kernel() as conn:
        page = HeadlessPage(conn.km.connection_file, **page_options)
        try:
            wait_page_hears_kernel(conn, page)
            yield PageKernel(conn, page)
        finally:
            page.close()


@contextmanager
def connected_page_kernel() -> Iterator[PageKernel]:
    """A fresh kernel whose channel is open: ``comms`` imported and started in it."""
    with page_kernel() as kernel:
        kernel.run_ok("from wrapperkernel import comms\ncomms.start()")
        kernel.page.wait_connected(WAIT_S)
        yield kernel
