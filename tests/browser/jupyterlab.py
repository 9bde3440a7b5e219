"""Drive a real JupyterLab 4 from tests: a server process and a small page-object API.

This module owns two things the browser tests build on:

- ``start_lab_server``: one ``jupyter lab`` process on 127.0.0.1 with a free port, a random
  token, an optional base URL (JupyterHub-style ``/user/<name>/``) and every Jupyter
  directory isolated in a temporary folder, so a developer's own settings, kernels and
  workspaces never leak in, and nothing reaches the internet. ``start_kernel_gateway``
  starts a Jupyter Kernel Gateway the same way, for a server run with ``gateway_args``.
- page helpers (``open_lab``, ``create_notebook``, ``run_cell`` ...): the only place that
  knows JupyterLab's DOM. Selectors were checked against JupyterLab 4.6.

It must never wait without a bound, never talk to an address other than 127.0.0.1, and
never leave a process it started running.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Locator, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

HOST = "127.0.0.1"

SERVER_START_TIMEOUT_S = 90.0
SERVER_STOP_TIMEOUT_S = 15.0
SERVER_POLL_INTERVAL_S = 0.2
HTTP_REQUEST_TIMEOUT_S = 5.0
KERNEL_SHUTDOWN_TIMEOUT_S = 10.0
LAB_LOAD_TIMEOUT_S = 60.0
KERNEL_READY_TIMEOUT_S = 60.0
KERNEL_POLL_INTERVAL_S = 0.1
CELL_TIMEOUT_S = 30.0
SAVE_TIMEOUT_S = 15.0

# A port picked as free can be taken by someone else before the server binds it
# (``port_retries=0`` makes the server exit instead of moving on): try a few ports.
PORT_ATTEMPTS = 3

# Settings JupyterLab reads from JUPYTERLAB_SETTINGS_DIR. They keep the page quiet and
# deterministic: no "fetch news?" toast, no update check (both would reach the internet),
# and no rename dialog on the first save of an Untitled notebook.
QUIET_LAB_SETTINGS: dict[str, dict[str, object]] = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin": {"renameUntitledFileOnSave": False},
}

# --- selectors (JupyterLab 4.6 DOM) ------------------------------------------------
APP_SHELL = "#main.jp-LabShell"
LAUNCHER = ".jp-Launcher"
NOTEBOOK_PANEL = ".jp-NotebookPanel"
# The visible notebook in the main area; background tabs carry lm-mod-hidden.
CURRENT_NOTEBOOK_PANEL = "#jp-main-dock-panel .jp-NotebookPanel:not(.lm-mod-hidden)"
NEW_LAUNCHER_BUTTON = '#jp-main-dock-panel .lm-TabBar-addButton[title="New Launcher"]'
CELL = ".jp-Notebook .jp-Cell"
CELL_EDITOR = ".jp-InputArea-editor .cm-content"  # CodeMirror 6
INPUT_PROMPT = ".jp-InputArea-prompt"
OUTPUT = ".jp-OutputArea-output"
# In the notebook toolbar; the indicator's data-status is the kernel status.
KERNEL_NAME = ".jp-NotebookPanel-toolbar .jp-KernelName"
EXECUTION_INDICATOR = ".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator"
NO_KERNEL_LABEL = "No Kernel"
SAVE_BUTTON = '.jp-NotebookPanel-toolbar [data-command="docmanager:save"]'
MAIN_TAB = "#jp-main-dock-panel .lm-TabBar-tab"
PAGE_CONFIG = "#jupyter-config-data"
DIRTY_TAB = f"{MAIN_TAB}.jp-mod-current.jp-mod-dirty"

_EXECUTION_COUNT = re.compile(r"^\[(\d+)\]:$")


# --- the server ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def normalize_base_url(base_url: str) -> str:
    """Jupyter Server wants base_url with a leading and a trailing slash."""
    stripped = base_url.strip("/")
    return "/" if not stripped else f"/{stripped}/"


@dataclass
class LabServer:
    """A running ``jupyter lab`` process and what a test needs to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    base_url: str
    root_dir: Path
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:8888/user/tester/`` (no token)."""
        return f"http://{HOST}:{self.port}{self.base_url}"

    def lab_url(self, path: str = "lab", **query: str) -> str:
        """URL of a page under the server, with the token, e.g. ``lab/tree/a.ipynb``."""
        params = urllib.parse.urlencode({**query, "token": self.token})
        return f"{self.url}{path.lstrip('/')}?{params}"

    def api(self, path: str, method: str = "GET", timeout_s: float = HTTP_REQUEST_TIMEOUT_S):
        """Call the REST API (``api/...``) and return the decoded JSON body (or None)."""
        request = urllib.request.Request(
            f"{self.url}{path.lstrip('/')}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with _DIRECT.open(request, timeout=timeout_s) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return text[-max_chars:]

    def stop(self, timeout_s: float = SERVER_STOP_TIMEOUT_S) -> None:
        """Shut kernels down, then the server; kill whatever is still running after that."""
        if self.process.poll() is None:
            self._shutdown_kernels()
        descendants = _descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        # Kernels run in their own session, so they survive a killed server: end them.
        for child in descendants:
            _kill_if_alive(child)

    def _shutdown_kernels(self) -> None:
        try:
            kernels = self.api("api/kernels") or []
            for kernel in kernels:
                self.api(
                    f"api/kernels/{kernel['id']}",
                    method="DELETE",
                    timeout_s=KERNEL_SHUTDOWN_TIMEOUT_S,
                )
        except (OSError, ValueError) as exc:
            # The server may already be gone; stop() falls back to signals and kill.
            print(
                f"[jupyterlab] kernel shutdown through the REST API failed: {exc}", file=sys.stderr
            )


# urllib honours *_proxy environment variables; the tests only ever talk to 127.0.0.1.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _descendants(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill_if_alive(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def isolated_jupyter_env(work_dir: Path, jupyter_path: Sequence[Path]) -> dict[str, str]:
    """Environment for a server whose every Jupyter directory lives under ``work_dir``.

    ``jupyter_path`` holds data directories (with ``kernels/<name>/kernel.json``) that are
    searched before the venv's own ``share/jupyter``.
    """
    dirs = {
        "JUPYTER_CONFIG_DIR": work_dir / "config",
        "JUPYTER_DATA_DIR": work_dir / "data",
        "JUPYTER_RUNTIME_DIR": work_dir / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": work_dir / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": work_dir / "lab-workspaces",
        "IPYTHONDIR": work_dir / "ipython",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    for plugin, values in QUIET_LAB_SETTINGS.items():
        settings_file = dirs["JUPYTERLAB_SETTINGS_DIR"] / f"{plugin}.jupyterlab-settings"
        settings_file.parent.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(json.dumps(values, indent=2))

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JUPYTER", "IPYTHON")) and key.lower() not in _PROXY_VARIABLES
    }
    env.update({key: str(path) for key, path in dirs.items()})
    env["JUPYTER_PATH"] = os.pathsep.join(str(path) for path in jupyter_path)
    # Kernelspecs that say "python" must find the venv's interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def lab_command(
    *,
    port: int,
    token: str,
    root_dir: Path,
    base_url: str,
    python: str = sys.executable,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``jupyter lab`` command line; ``extra_args`` come last, so they can add
    settings (``--gateway-url=...``) or override one of these."""
    return [
        python,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        f"--ServerApp.base_url={base_url}",
        # Nothing may reach the internet: no news feed, no update check, no PyPI lookups.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        *extra_args,
    ]


def start_lab_server(
    *,
    work_dir: Path,
    jupyter_path: Sequence[Path],
    base_url: str = "/",
    startup_timeout_s: float = SERVER_START_TIMEOUT_S,
    extra_args: Sequence[str] = (),
    python: str = sys.executable,
) -> LabServer:
    """Start ``jupyter lab`` and return once ``api/status`` answers. The caller must stop().

    ``extra_args`` are appended to the command line (see ``lab_command``); ``python`` is
    the interpreter of the virtualenv whose JupyterLab and server extensions run (the
    kernels still come from ``jupyter_path``)."""
    base_url = normalize_base_url(base_url)
    work_dir.mkdir(parents=True, exist_ok=True)
    root_dir = work_dir / "root"
    root_dir.mkdir(exist_ok=True)

    def command(port: int, token: str) -> list[str]:
        return lab_command(
            port=port,
            token=token,
            root_dir=root_dir,
            base_url=base_url,
            python=python,
            extra_args=extra_args,
        )

    env = isolated_jupyter_env(work_dir, jupyter_path)
    if python != sys.executable:
        # ``python -m jupyter lab`` runs the first ``jupyter-lab`` on PATH: python's own.
        env["PATH"] = os.pathsep.join([str(Path(python).parent), env["PATH"]])
    return _start_server(
        "jupyter lab",
        command,
        work_dir=work_dir,
        root_dir=root_dir,
        env=env,
        base_url=base_url,
        ready_path="api/status",
        startup_timeout_s=startup_timeout_s,
    )


def kernel_gateway_command(*, port: int, token: str, python: str = sys.executable) -> list[str]:
    """A Jupyter Kernel Gateway (``jupyter kernelgateway``, its websocket personality) on
    127.0.0.1 that asks for ``token`` and lets its clients list kernels, as a Jupyter
    Server in gateway mode needs."""
    return [
        python,
        "-m",
        "jupyter",
        "kernelgateway",
        f"--KernelGatewayApp.ip={HOST}",
        f"--KernelGatewayApp.port={port}",
        "--KernelGatewayApp.port_retries=0",
        f"--KernelGatewayApp.auth_token={token}",
        "--JupyterWebsocketPersonality.list_kernels=True",
    ]


def start_kernel_gateway(
    *,
    work_dir: Path,
    jupyter_path: Sequence[Path],
    startup_timeout_s: float = SERVER_START_TIMEOUT_S,
) -> LabServer:
    """Start a kernel gateway whose kernels come from ``jupyter_path``; return once its
    ``api/kernelspecs`` answers. The caller must stop() it (after the servers using it).

    The gateway speaks the same REST API for kernels as Jupyter Server, with the same
    ``Authorization: token`` header, so a ``LabServer`` handle reaches it and stops it
    (its kernels first)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    root_dir = work_dir / "root"
    root_dir.mkdir(exist_ok=True)
    return _start_server(
        "jupyter kernelgateway",
        lambda port, token: kernel_gateway_command(port=port, token=token),
        work_dir=work_dir,
        root_dir=root_dir,
        env=isolated_jupyter_env(work_dir, jupyter_path),
        base_url="/",
        ready_path="api/kernelspecs",
        startup_timeout_s=startup_timeout_s,
    )


def gateway_args(gateway: LabServer) -> list[str]:
    """``jupyter lab`` arguments that send every kernel to ``gateway``."""
    return [f"--gateway-url={gateway.url}", f"--GatewayClient.auth_token={gateway.token}"]


def _start_server(
    name: str,
    command: Callable[[int, str], list[str]],
    *,
    work_dir: Path,
    root_dir: Path,
    env: dict[str, str],
    base_url: str,
    ready_path: str,
    startup_timeout_s: float,
) -> LabServer:
    """Run ``command(port, token)`` on a free port with a random token until ``ready_path``
    answers; a server that exits (its port taken meanwhile) is tried on another port."""
    failures: list[str] = []
    log_name = name.replace(" ", "-")
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        token = secrets.token_hex(24)
        log_path = work_dir / f"{log_name}-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command(port, token),
                cwd=root_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = LabServer(process, port, token, base_url, root_dir, log_path, env)
        try:
            _wait_until_ready(server, startup_timeout_s, ready_path, name)
        except _ServerExited:
            failures.append(f"attempt {attempt} (port {port}):\n{server.log_tail()}")
            server.stop()
            continue
        except BaseException:
            server.stop()
            raise
        return server
    raise RuntimeError(f"{name} did not start:\n" + "\n".join(failures))


class _ServerExited(RuntimeError):
    pass


def _wait_until_ready(
    server: LabServer, timeout_s: float, ready_path: str = "api/status", name: str = "jupyter lab"
) -> None:
    deadline = time.monotonic() + timeout_s
    status_url = f"{server.url}{ready_path}?token={server.token}"
    last_error = "no attempt yet"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise _ServerExited(f"exit code {server.process.returncode}")
        try:
            with _DIRECT.open(status_url, timeout=HTTP_REQUEST_TIMEOUT_S) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(SERVER_POLL_INTERVAL_S)
    raise TimeoutError(
        f"{name} at {server.url} not ready after {timeout_s:.0f} s "
        f"(last error: {last_error}); log {server.log_path}:\n{server.log_tail()}"
    )


# --- the page ------------------------------------------------------------------------


@dataclass(frozen=True)
class CellResult:
    """What ``run_cell`` saw once the cell finished."""

    cell: Locator
    execution_count: int
    text: str
    html: str


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def open_lab(
    page: Page, server: LabServer, path: str = "lab", timeout_s: float = LAB_LOAD_TIMEOUT_S
) -> None:
    """Load a JupyterLab page (``lab``, ``lab/tree/x.ipynb``...) and wait for the shell."""
    page.goto(server.lab_url(path), timeout=_ms(timeout_s))
    wait_lab_ready(page, timeout_s)


def wait_lab_ready(page: Page, timeout_s: float = LAB_LOAD_TIMEOUT_S) -> None:
    """Wait until the application has started: the shell is shown and the splash is gone."""
    page.locator(APP_SHELL).wait_for(state="visible", timeout=_ms(timeout_s))
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=_ms(timeout_s))


def launcher_card(page: Page, display_name: str, category: str = "Notebook") -> Locator:
    """The launcher card of a kernel (``category`` is "Notebook" or "Console"), in the
    visible launcher: a launcher in a background tab has the same cards."""
    return page.locator(LAUNCHER).filter(visible=True).first.locator(
        f'.jp-LauncherCard[data-category="{category}"][title={json.dumps(display_name)}]'
    )


def open_launcher(page: Page, timeout_s: float = LAB_LOAD_TIMEOUT_S) -> Locator:
    """Show a launcher (opening a new one if none is visible) and return it."""
    launcher = page.locator(LAUNCHER).filter(visible=True)
    if launcher.count() == 0:
        add_button = page.locator(NEW_LAUNCHER_BUTTON).filter(visible=True)
        if add_button.count() > 0:
            add_button.first.click(timeout=_ms(timeout_s))
        else:  # no tab in the main area, so no "+" button: use the shortcut
            page.keyboard.press("Control+Shift+L")
    launcher.first.wait_for(state="visible", timeout=_ms(timeout_s))
    return launcher.first


def create_notebook(
    page: Page, kernel_display_name: str, timeout_s: float = KERNEL_READY_TIMEOUT_S
) -> Locator:
    """Click the kernel's notebook card in the launcher; return the new notebook panel
    once its kernel is idle."""
    open_launcher(page, timeout_s)
    panels_before = page.locator(NOTEBOOK_PANEL).count()
    card = launcher_card(page, kernel_display_name)
    card.click(timeout=_ms(timeout_s))
    page.wait_for_function(
        f"n => document.querySelectorAll('{NOTEBOOK_PANEL}').length > n",
        arg=panels_before,
        timeout=_ms(timeout_s),
    )
    panel = current_notebook(page)
    panel.locator(CELL_EDITOR).first.wait_for(state="visible", timeout=_ms(timeout_s))
    wait_kernel_idle(page, timeout_s)
    return panel


def current_notebook(page: Page) -> Locator:
    return page.locator(CURRENT_NOTEBOOK_PANEL)


def _toolbar_state(page: Page) -> tuple[str, str]:
    """(kernel name, kernel status) from the current notebook's toolbar; "" when absent.
    Reads without waiting, so polling loops keep their own deadline."""
    name, status = page.evaluate(
        """([panelSelector, nameSelector, indicatorSelector]) => {
            const panel = document.querySelector(panelSelector);
            return [
                panel?.querySelector(nameSelector)?.textContent.trim() ?? '',
                panel?.querySelector(indicatorSelector)?.dataset.status ?? '',
            ];
        }""",
        [CURRENT_NOTEBOOK_PANEL, KERNEL_NAME, EXECUTION_INDICATOR],
    )
    return str(name), str(status)


def kernel_display_name(page: Page) -> str:
    """The kernel name shown in the current notebook's toolbar ("No Kernel" if none)."""
    return _toolbar_state(page)[0]


def kernel_status(page: Page) -> str:
    """The current notebook's kernel status from the toolbar's execution indicator
    (``idle``, ``busy``, ``starting``, ``connecting``, ``unknown``, ...)."""
    return _toolbar_state(page)[1]


def current_notebook_path(page: Page) -> str:
    """Server path of the current notebook, read from its tab's tooltip ("Path: ...")."""
    panel_id = current_notebook(page).get_attribute("id")
    title = page.locator(f'{MAIN_TAB}[data-id="{panel_id}"]').get_attribute("title") or ""
    match = re.search(r"^Path: (.*)$", title, flags=re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no path in the notebook tab's title {title!r}")
    return match.group(1)


def wait_notebook_shown(
    page: Page, path: str | None = None, timeout_s: float = LAB_LOAD_TIMEOUT_S
) -> Locator:
    """Wait until a notebook (the one at server path ``path``, if given) is the current one
    with its editor and tab ready, e.g. restored after ``reload_page``; return its panel.
    A restored tab gets its "Path: ..." tooltip some time after the panel is shown."""
    page.wait_for_function(
        """([panelSelector, tabSelector, editorSelector, path]) => {
            const panel = document.querySelector(panelSelector);
            if (panel === null || panel.querySelector(editorSelector) === null) return false;
            const tab = document.querySelector(`${tabSelector}[data-id="${panel.id}"]`);
            const match = /^Path: (.*)$/m.exec(tab?.title ?? '');
            return match !== null && (path === null || match[1] === path);
        }""",
        arg=[CURRENT_NOTEBOOK_PANEL, MAIN_TAB, CELL_EDITOR, path],
        timeout=_ms(timeout_s),
    )
    return current_notebook(page)


def page_api(page: Page, path: str, timeout_s: float = HTTP_REQUEST_TIMEOUT_S):
    """GET the server's REST API (``api/...``) as the page does: same base URL and token."""
    config = json.loads(page.locator(PAGE_CONFIG).text_content() or "{}")
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(page.url))
    response = page.request.get(
        f"{origin}{config['baseUrl']}{path.lstrip('/')}",
        headers={"Authorization": f"token {config['token']}"},
        timeout=_ms(timeout_s),
    )
    if not response.ok:
        raise RuntimeError(f"GET {path}: HTTP {response.status}")
    return response.json()


def wait_kernel_idle(page: Page, timeout_s: float = KERNEL_READY_TIMEOUT_S) -> None:
    """Wait until the current notebook's kernel is started, connected and ``idle``.

    The toolbar alone cannot tell: before the session exists it already shows the kernel
    name (from the launcher's preference) next to a default ``idle`` status. So the server
    must also report the notebook's kernel as idle with the page's websocket connected;
    from then on the toolbar status is the real kernel's.
    """
    deadline = time.monotonic() + timeout_s
    last_seen = "nothing yet"
    while True:
        name, status = kernel_display_name(page), kernel_status(page)
        if name and name != NO_KERNEL_LABEL and status == "idle":
            path = current_notebook_path(page)
            sessions = [s for s in page_api(page, "api/sessions") if s.get("path") == path]
            kernel = (sessions[0].get("kernel") or {}) if sessions else {}
            if kernel.get("connections", 0) >= 1 and kernel.get("execution_state") == "idle":
                if kernel_status(page) == "idle":
                    return
            last_seen = f"server kernel {kernel or 'missing'} for {path!r}"
        else:
            last_seen = f"toolbar name {name!r}, status {status!r}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"kernel not idle after {timeout_s:.0f} s ({last_seen})")
        time.sleep(KERNEL_POLL_INTERVAL_S)


def set_cell_text(page: Page, cell: Locator, code: str) -> None:
    """Replace the text of a code cell's CodeMirror 6 editor with ``code``."""
    editor = cell.locator(CELL_EDITOR)
    editor.click()
    page.keyboard.press("Control+A")
    # insert_text goes in as one input event: no auto-indent, no auto-closed brackets.
    page.keyboard.insert_text(code)


def _active_cell_index(page: Page) -> int:
    cells = page.locator(f"{CURRENT_NOTEBOOK_PANEL} {CELL}")
    index = cells.evaluate_all(
        "cells => cells.findIndex(c => c.classList.contains('jp-mod-active'))"
    )
    if index < 0:
        raise RuntimeError("the current notebook has no active cell")
    return int(index)


def prompt_text(cell: Locator) -> str:
    """The input prompt of a cell: ``[ ]:``, ``[*]:`` or ``[3]:``."""
    return cell.locator(INPUT_PROMPT).inner_text().strip()


@dataclass(frozen=True)
class StartedCell:
    """A cell ``start_cell`` submitted; ``wait_cell`` waits for it to finish."""

    cell: Locator
    index: int
    prompt_before: str


def start_cell(page: Page, code: str) -> StartedCell:
    """Type ``code`` into the active cell and run it with Shift+Enter, without waiting.

    Shift+Enter moves the focus to the next cell, so a following ``run_cell`` or
    ``start_cell`` uses a fresh cell.
    """
    index = _active_cell_index(page)
    cell = page.locator(f"{CURRENT_NOTEBOOK_PANEL} {CELL}").nth(index)
    before = prompt_text(cell)
    set_cell_text(page, cell, code)
    page.keyboard.press("Shift+Enter")
    return StartedCell(cell=cell, index=index, prompt_before=before)


def wait_cell(page: Page, started: StartedCell, timeout_s: float = CELL_TIMEOUT_S) -> CellResult:
    """Wait until a cell from ``start_cell`` finished and return what it shows.

    The cell counts as finished when its prompt shows a new execution count (JupyterLab sets
    it from the execute_reply, after the outputs arrived).
    """
    cell = started.cell
    try:
        page.wait_for_function(
            """([cell, promptSelector, before, pattern]) => {
                const text = cell.querySelector(promptSelector)?.textContent.trim() ?? '';
                return text !== before && new RegExp(pattern).test(text);
            }""",
            arg=[
                cell.element_handle(),
                INPUT_PROMPT,
                started.prompt_before,
                _EXECUTION_COUNT.pattern,
            ],
            timeout=_ms(timeout_s),
        )
    except PlaywrightTimeoutError as exc:
        raise TimeoutError(
            f"cell {started.index} did not finish within {timeout_s:.0f} s "
            f"(prompt {prompt_text(cell)!r}, kernel {kernel_status(page)!r})"
        ) from exc
    match = _EXECUTION_COUNT.match(prompt_text(cell))
    assert match is not None
    return CellResult(
        cell=cell,
        execution_count=int(match.group(1)),
        text=cell_output_text(cell),
        html="".join(cell.locator(OUTPUT).evaluate_all("nodes => nodes.map(n => n.innerHTML)")),
    )


def cell_output_text(cell: Locator) -> str:
    """The visible text of a cell's outputs, one output per line (also while it runs)."""
    outputs = cell.locator(OUTPUT)
    return "\n".join(text.rstrip("\n") for text in outputs.all_inner_texts())


def run_cell(page: Page, code: str, timeout_s: float = CELL_TIMEOUT_S) -> CellResult:
    """Type ``code`` into the active cell, run it with Shift+Enter and wait until it finished.

    The cell counts as finished when its prompt shows a new execution count (JupyterLab sets
    it from the execute_reply, after the outputs arrived). Shift+Enter moves the focus to the
    next cell, so a following ``run_cell`` uses a fresh cell.
    """
    return wait_cell(page, start_cell(page, code), timeout_s)


def append_cell(page: Page, timeout_s: float = CELL_TIMEOUT_S) -> Locator:
    """Add an empty code cell below the last one of the current notebook and make it the
    active cell (e.g. after a reload, when the first cell is the active one)."""
    cells = page.locator(f"{CURRENT_NOTEBOOK_PANEL} {CELL}")
    count = cells.count()
    if count == 0:
        raise RuntimeError("the current notebook has no cell to append to")
    # A click on the prompt selects the cell in command mode; "b" inserts a cell below.
    cells.nth(count - 1).locator(INPUT_PROMPT).click(timeout=_ms(timeout_s))
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.wait_for_function(
        """([selector, count]) => {
            const cells = document.querySelectorAll(selector);
            return cells.length === count + 1
                && cells[count].classList.contains('jp-mod-active');
        }""",
        arg=[f"{CURRENT_NOTEBOOK_PANEL} {CELL}", count],
        timeout=_ms(timeout_s),
    )
    return cells.nth(count)


# The page keeps every status change of the current notebook's execution indicator in
# this global, so a short flip (busy -> idle -> busy) cannot slip between two samples.
_STATUS_LOG = "__wrapperkernelTestKernelStatuses"


def record_kernel_statuses(page: Page) -> None:
    """Start (or restart) recording every kernel status the current notebook's toolbar
    shows; read them with ``recorded_kernel_statuses``."""
    page.evaluate(
        """([logName, panelSelector, indicatorSelector]) => {
            const previous = globalThis[logName];
            if (previous !== undefined) previous.observer.disconnect();
            const panel = document.querySelector(panelSelector);
            if (panel === null) throw new Error('no current notebook panel');
            const statuses = [];
            const read = () => {
                const status = panel.querySelector(indicatorSelector)?.dataset.status ?? '';
                if (statuses[statuses.length - 1] !== status) statuses.push(status);
            };
            // The indicator is re-rendered by React: watch the whole panel, not one node.
            const observer = new MutationObserver(read);
            observer.observe(panel, {
                subtree: true, childList: true, attributes: true,
                attributeFilter: ['data-status'],
            });
            read();
            globalThis[logName] = {observer, statuses};
        }""",
        [_STATUS_LOG, CURRENT_NOTEBOOK_PANEL, EXECUTION_INDICATOR],
    )


def recorded_kernel_statuses(page: Page) -> list[str]:
    """The statuses seen since ``record_kernel_statuses``, consecutive repeats folded."""
    return list(
        page.evaluate(
            "logName => globalThis[logName] === undefined ? [] : [...globalThis[logName].statuses]",
            _STATUS_LOG,
        )
    )


def save_notebook(page: Page, timeout_s: float = SAVE_TIMEOUT_S) -> None:
    """Save the current notebook (toolbar's save button) and wait until its tab is clean."""
    current_notebook(page).locator(SAVE_BUTTON).click(timeout=_ms(timeout_s))
    page.locator(DIRTY_TAB).wait_for(state="detached", timeout=_ms(timeout_s))


def reload_page(page: Page, timeout_s: float = LAB_LOAD_TIMEOUT_S) -> None:
    """Reload the page and wait for JupyterLab to be back (open documents are restored)."""
    page.reload(timeout=_ms(timeout_s))
    wait_lab_ready(page, timeout_s)


def screenshot(page: Page, path: Path | str) -> Path:
    """Write a screenshot of the whole page to ``path`` (parents created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    return target
