"""Fixtures for the real-browser tests: the kernel under test, JupyterLab servers, Chromium.

Everything here is started on 127.0.0.1 by the fixtures themselves and stopped by them.
The kernel under test is wrapperkernel, installed from this checkout into a temporary
prefix. ``WRAPPERKERNEL_BROWSER_KERNEL=python3`` runs the same tests against ipykernel,
which is how the harness itself is checked.

Environment:
- ``WRAPPERKERNEL_BROWSER_KERNEL``: ``wrapperkernel`` (default) or ``python3``.
- ``WRAPPERKERNEL_BROWSER_BASE_URL``: base URL of the default server (default ``/``).
- ``WRAPPERKERNEL_BROWSER_ARTIFACTS``: folder for failure screenshots (default: pytest's
  temporary folder of the test).
- ``WRAPPERKERNEL_BROWSER_CHROMIUM``: the Chromium binary (default ``/usr/bin/chromium``).
- ``CI=true``: a missing Chromium fails the tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from . import jupyterlab
from .jupyterlab import LabServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_PATH = Path(os.environ.get("WRAPPERKERNEL_BROWSER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Only 127.0.0.1 is reachable: no proxy, and every host name fails to resolve.
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
VIEWPORT = {"width": 1400, "height": 900}
PAGE_DEFAULT_TIMEOUT_S = 30.0
KERNEL_INSTALL_TIMEOUT_S = 120.0

KERNEL_ENV = "WRAPPERKERNEL_BROWSER_KERNEL"
BASE_URL_ENV = "WRAPPERKERNEL_BROWSER_BASE_URL"
ARTIFACTS_ENV = "WRAPPERKERNEL_BROWSER_ARTIFACTS"

CONSOLE_KEY = pytest.StashKey[list[str]]()
ARTIFACTS_KEY = pytest.StashKey[Path]()


@dataclass(frozen=True)
class KernelChoice:
    display_name: str
    install_args: tuple[str, ...]  # after "<python> -m"; "--prefix <dir>" is appended


KERNEL_CHOICES = {
    "wrapperkernel": KernelChoice("Python (wrapperkernel)", ("wrapperkernel", "install")),
    # The reference kernel, to check the harness while wrapperkernel is being written.
    "python3": KernelChoice(
        "Python 3 (ipykernel)",
        ("ipykernel", "install", "--name", "python3", "--display-name", "Python 3 (ipykernel)"),
    ),
}


@dataclass(frozen=True)
class KernelUnderTest:
    """A kernelspec installed into a temporary Jupyter data directory."""

    name: str
    display_name: str
    data_dir: Path  # an entry for JUPYTER_PATH: holds kernels/<name>/kernel.json

    @property
    def spec_dir(self) -> Path:
        return self.data_dir / "kernels" / self.name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """On a failed browser test, attach a screenshot path, the page console and server logs."""
    report = yield
    if report.when != "call" or not report.failed:
        return report
    funcargs = getattr(item, "funcargs", {})
    page = funcargs.get("page")
    if isinstance(page, Page) and not page.is_closed():
        folder = item.stash.get(ARTIFACTS_KEY, Path.cwd())
        try:
            shot = jupyterlab.screenshot(page, folder / f"{item.name}.png")
            report.sections.append(("browser screenshot", str(shot)))
        except Exception as exc:  # noqa: BLE001 - a failed screenshot must not hide the failure
            report.sections.append(("browser screenshot", f"not taken: {exc}"))
        console = item.stash.get(CONSOLE_KEY, [])
        report.sections.append(("browser console (last 50)", "\n".join(console[-50:])))
    factory = funcargs.get("lab_server_factory")
    for server in factory.started if isinstance(factory, LabServerFactory) else []:
        report.sections.append((f"jupyter lab log {server.log_path}", server.log_tail()))
    return report


# --- kernel and servers ----------------------------------------------------------------


@pytest.fixture(scope="session")
def kernel_under_test(tmp_path_factory: pytest.TempPathFactory) -> KernelUnderTest:
    """Install the kernelspec under test into a temporary prefix (once per session)."""
    name = os.environ.get(KERNEL_ENV, "wrapperkernel")
    if name not in KERNEL_CHOICES:
        pytest.fail(f"{KERNEL_ENV}={name!r}: choose one of {sorted(KERNEL_CHOICES)}")
    choice = KERNEL_CHOICES[name]
    prefix = tmp_path_factory.mktemp("kernel-prefix")
    command = [sys.executable, "-m", *choice.install_args, "--prefix", str(prefix)]
    try:
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,  # "-m wrapperkernel" imports this checkout
            capture_output=True,
            text=True,
            timeout=KERNEL_INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"installing the {name} kernelspec took over {KERNEL_INSTALL_TIMEOUT_S:.0f} s: {command}"
        )
    data_dir = prefix / "share" / "jupyter"
    kernel = KernelUnderTest(name, choice.display_name, data_dir)
    spec_file = kernel.spec_dir / "kernel.json"
    if result.returncode != 0 or not spec_file.is_file():
        hint = (
            f" (set {KERNEL_ENV}=python3 to check the harness against ipykernel)"
            if name != "python3"
            else ""
        )
        pytest.fail(
            f"could not install the {name} kernelspec{hint}.\n"
            f"command: {' '.join(command)}\nexit code: {result.returncode}; "
            f"{spec_file} {'exists' if spec_file.is_file() else 'missing'}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    installed_name = json.loads(spec_file.read_text()).get("display_name")
    if installed_name != choice.display_name:
        pytest.fail(
            f"{spec_file}: display_name is {installed_name!r}, expected {choice.display_name!r}"
        )
    return kernel


class LabServerFactory:
    """Starts JupyterLab servers that all see the kernel under test; stops them all."""

    def __init__(self, root: Path, kernel: KernelUnderTest) -> None:
        self._root = root
        self._kernel = kernel
        self.started: list[LabServer] = []
        self._count = 0

    def __call__(
        self, base_url: str = "/", extra_args: Sequence[str] = (), python: str = sys.executable
    ) -> LabServer:
        """Start a server; ``extra_args`` are appended to its command line (for example
        ``--gateway-url=...``); ``python`` runs it (another virtualenv's JupyterLab)."""
        # Numbered by every server started so far, so a stopped one's folder is not reused.
        work_dir = self._root / f"server-{self._count}"
        self._count += 1
        server = jupyterlab.start_lab_server(
            work_dir=work_dir,
            jupyter_path=[self._kernel.data_dir],
            base_url=base_url,
            extra_args=extra_args,
            python=python,
        )
        self.started.append(server)
        specs = (server.api("api/kernelspecs") or {}).get("kernelspecs", {})
        if self._kernel.name not in specs:
            pytest.fail(
                f"jupyter lab at {server.url} does not list kernel {self._kernel.name!r} "
                f"(it lists {sorted(specs)}); log {server.log_path}"
            )
        return server

    def stop(self, server: LabServer) -> None:
        """Stop one server now (before something it depends on, such as a kernel gateway)."""
        self.started.remove(server)
        server.stop()

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()


@pytest.fixture(scope="session")
def lab_server_factory(
    tmp_path_factory: pytest.TempPathFactory, kernel_under_test: KernelUnderTest
) -> Iterator[LabServerFactory]:
    """Call it to start another server, e.g. ``lab_server_factory(base_url="/user/tester/")``."""
    factory = LabServerFactory(tmp_path_factory.mktemp("lab"), kernel_under_test)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def lab_server(lab_server_factory: LabServerFactory) -> LabServer:
    """The session's JupyterLab (base URL from WRAPPERKERNEL_BROWSER_BASE_URL, default /)."""
    return lab_server_factory(base_url=os.environ.get(BASE_URL_ENV, "/"))


# --- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    if CHROMIUM_PATH.is_file() and os.access(CHROMIUM_PATH, os.X_OK):
        return CHROMIUM_PATH
    message = (
        f"Chromium not found at {CHROMIUM_PATH}: install Debian's chromium package "
        "(apt-get install chromium); the browser tests do not use Playwright's own download"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser(chromium_executable: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_executable), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A fresh browser context and page; console messages are kept for failure reports."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(PAGE_DEFAULT_TIMEOUT_S * 1000)
    page = context.new_page()
    console: list[str] = []
    # Read by pytest_runtest_makereport when the test fails.
    request.node.stash[CONSOLE_KEY] = console
    request.node.stash[ARTIFACTS_KEY] = Path(os.environ.get(ARTIFACTS_ENV) or tmp_path)

    def keep(message: ConsoleMessage) -> None:
        console.append(f"{message.type}: {message.text}")

    page.on("console", keep)
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def lab_page(page: Page, lab_server: LabServer) -> Iterator[Page]:
    """``page`` with JupyterLab loaded from ``lab_server``; kernels it started are shut down."""
    jupyterlab.open_lab(page, lab_server)
    yield page
    shut_down_sessions(lab_server)


def shut_down_sessions(server: LabServer) -> None:
    """End every session (and its kernel) so tests do not share kernels."""
    for session in server.api("api/sessions") or []:
        server.api(
            f"api/sessions/{session['id']}",
            method="DELETE",
            timeout_s=jupyterlab.KERNEL_SHUTDOWN_TIMEOUT_S,
        )


# How long JupyterLab may take to save its workspace after notebooks are closed.
WORKSPACE_SAVE_S = 10.0


@pytest.fixture
def lab(lab_page: Page, lab_server: LabServer) -> Iterator[Page]:
    """``lab_page`` with an empty workspace; afterwards its notebooks are saved, closed and
    gone from the saved workspace (else a later test's page would reopen them, with new
    sessions or a dialog about their missing kernels)."""
    lab_page.goto(lab_server.lab_url("lab", reset=""))
    jupyterlab.wait_lab_ready(lab_page)
    yield lab_page
    while lab_page.locator(jupyterlab.NOTEBOOK_PANEL).count() > 0:
        if lab_page.locator(jupyterlab.DIRTY_TAB).count() > 0:
            jupyterlab.save_notebook(lab_page)
        lab_page.locator(f"{jupyterlab.MAIN_TAB}.jp-mod-current .lm-TabBar-tabCloseIcon").click()
        lab_page.wait_for_timeout(200)
    deadline = time.monotonic() + WORKSPACE_SAVE_S
    while any(key.startswith("notebook:") for key in workspace_keys(lab_server)):
        assert time.monotonic() < deadline, "JupyterLab did not save the closed notebooks"
        time.sleep(0.2)


def workspace_keys(server: LabServer) -> list[str]:
    workspace = server.api("lab/api/workspaces/default") or {}
    return list(workspace.get("data", {}))
