"""Smoke test in a real JupyterLab: the kernel is offered, starts, and shows every output kind.

Runs against wrapperkernel by default; ``WRAPPERKERNEL_BROWSER_KERNEL=python3`` runs the same
checks against ipykernel, which is how the harness itself is known to be right.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect

from .jupyterlab import (
    LabServer,
    create_notebook,
    kernel_display_name,
    launcher_card,
    open_lab,
    open_launcher,
    run_cell,
)

if TYPE_CHECKING:
    from .conftest import KernelUnderTest, LabServerFactory

pytestmark = pytest.mark.browser

LOGO_LOAD_TIMEOUT_MS = 10_000
RENDER_TIMEOUT_MS = 10_000


def assert_launcher_logo(page: Page, server: LabServer, kernel: KernelUnderTest) -> None:
    """The kernel's notebook card is there and its logo was served from the kernelspec."""
    open_launcher(page)
    card = launcher_card(page, kernel.display_name)
    expect(card).to_have_count(1)
    logo = card.locator("img.jp-Launcher-kernelIcon")
    expect(logo).to_be_visible()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0",
        arg=logo.element_handle(),
        timeout=LOGO_LOAD_TIMEOUT_MS,
    )
    src = logo.get_attribute("src") or ""
    resource_prefix = f"{server.base_url}kernelspecs/{kernel.name}/"
    assert src.startswith(resource_prefix), f"logo src {src!r} is not under {resource_prefix!r}"
    logo_file = src.removeprefix(resource_prefix).split("?")[0]
    assert (kernel.spec_dir / logo_file).is_file(), f"{logo_file} is not in {kernel.spec_dir}"


def test_launcher_shows_kernel_with_logo(
    lab_page: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest
) -> None:
    assert_launcher_logo(lab_page, lab_server, kernel_under_test)


def test_notebook_runs_print_rich_display_and_error(
    lab_page: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest
) -> None:
    page = lab_page
    create_notebook(page, kernel_under_test.display_name)

    assert kernel_display_name(page) == kernel_under_test.display_name
    sessions = lab_server.api("api/sessions")
    assert [s["kernel"]["name"] for s in sessions] == [kernel_under_test.name]
    assert len(lab_server.api("api/kernels")) == 1, "the notebook started more than one kernel"

    printed = run_cell(page, 'print("hello from wrapperkernel")')
    assert printed.text == "hello from wrapperkernel"

    rich = run_cell(
        page,
        "from IPython.display import HTML, display; display(HTML(\"<b id='wk-rich'>rich</b>\"))",
    )
    expect(rich.cell.locator(".jp-OutputArea-output b#wk-rich")).to_have_text(
        "rich", timeout=RENDER_TIMEOUT_MS
    )

    error = run_cell(page, "1/0")
    assert "ZeroDivisionError" in error.text
    assert error.execution_count == rich.execution_count + 1 == printed.execution_count + 2


def test_lab_under_a_base_url(
    page: Page, lab_server_factory: LabServerFactory, kernel_under_test: KernelUnderTest
) -> None:
    """A JupyterHub-style prefix: the page, the kernelspec logo and the kernel all work."""
    server = lab_server_factory(base_url="/user/tester/")
    open_lab(page, server)
    assert page.url.startswith(f"http://127.0.0.1:{server.port}/user/tester/lab")
    assert_launcher_logo(page, server, kernel_under_test)
    create_notebook(page, kernel_under_test.display_name)
    assert run_cell(page, "print(6 * 7)").text == "42"
