"""``make run``, the README's first command, on a fresh clone, as the current user.

The test clones the committed HEAD of this repository into a temporary folder and runs
``make run`` there as is: the clone's make creates the clone's own ``.venv``, installs
wrapperkernel and its test extras into it, installs the kernelspec into that venv and
starts JupyterLab. Nothing is borrowed from this checkout's venv, so the test sees what
a user of a fresh clone sees (as root in CI, where Jupyter refuses to start without
``--allow-root``). The full install is affordable: pip takes its wheels from the local
wheel folder and cache, about 45 s here out of the test's under-a-minute total; the wait
below allows far more, but it is a bound, not a measurement.

Only variables a user may pass are given (PORT on a free port of 127.0.0.1, TOKEN). The
environment is cleaned of what would leak from the outer run: make's own variables, this
suite's Jupyter folders (conftest's kernel_env sets JUPYTER_PATH for the whole session)
and the display, so no browser opens and ``make run`` must notice there is none. Jupyter's
config, data and runtime folders point into the temporary folder, so the user's own setup
can neither help nor break the run, and nothing is left behind.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CLONE_TIMEOUT_S = 60
# venv + pip install of everything + kernelspec + JupyterLab start; ~50 s measured here.
SERVE_TIMEOUT_S = 240
STOP_TIMEOUT_S = 20
REQUEST_TIMEOUT_S = 10
POLL_INTERVAL_S = 0.5

# Variables that would make the clone's make use something other than its own defaults.
LEAKING_VARIABLES = (
    "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
    "VENV", "PY", "PYTHON", "PORT", "TOKEN", "NO_BROWSER", "VIRTUAL_ENV",
    "JUPYTER_PATH", "JUPYTER_TOKEN", "JUPYTER_CONFIG_PATH", "IPYTHONDIR",
    "DISPLAY", "WAYLAND_DISPLAY", "BROWSER",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_env(jupyter_home: Path) -> dict[str, str]:
    jupyter_home.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in LEAKING_VARIABLES}
    env["JUPYTER_CONFIG_DIR"] = str(jupyter_home / "config")
    env["JUPYTER_DATA_DIR"] = str(jupyter_home / "data")
    env["JUPYTER_RUNTIME_DIR"] = str(jupyter_home / "runtime")
    env["IPYTHONDIR"] = str(jupyter_home / "ipython")
    return env


def processes_in_group(pgid: int) -> list[psutil.Process]:
    alive = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return alive


def stop_group(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """Stops `make run` and everything it started; returns what was still alive after."""
    pgid = process.pid  # start_new_session: the group is named after make's pid
    for sig, grace_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and processes_in_group(pgid):
            time.sleep(POLL_INTERVAL_S)
        if not processes_in_group(pgid):
            break
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    return processes_in_group(pgid)


def get(url: str, token: str | None) -> tuple[int, bytes, str]:
    headers = {} if token is None else {"Authorization": f"token {token}"}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


class MakeRun:
    def __init__(self, clone: Path, process: subprocess.Popen[bytes], log: Path, port: int, token: str):
        self.clone, self.process, self.log, self.port, self.token = clone, process, log, port, token
        self.base = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def api(self, path: str) -> object:
        status, body, _ = get(self.base + path, self.token)
        assert status == 200, f"GET {path} answered {status}: {body[:500]!r}"
        return json.loads(body)


@pytest.fixture
def make_run() -> Iterator[MakeRun]:
    workdir = Path(tempfile.mkdtemp(prefix="wk-make-run-"))
    process = None
    left: list[psutil.Process] = []
    try:
        clone = workdir / "wrapperkernel"
        subprocess.run(
            ["git", "clone", "--quiet", str(REPO_ROOT), str(clone)],
            check=True, capture_output=True, timeout=CLONE_TIMEOUT_S,
        )
        port = free_port()
        token = secrets.token_hex(16)
        log = workdir / "make-run.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                ["make", "run", f"PORT={port}", f"TOKEN={token}"],
                cwd=clone, env=run_env(workdir / "jupyter"), stdin=subprocess.DEVNULL,
                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )
        yield MakeRun(clone, process, log, port, token)
    finally:
        if process is not None:
            left = stop_group(process)
            for survivor in left:
                survivor.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    assert not left, f"processes of `make run` still alive after stopping it: {left}"


def wait_until_serving(run: MakeRun) -> None:
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        if run.process.poll() is not None:
            pytest.fail(
                f"`make run` exited with {run.process.returncode} before serving; its last output:\n"
                + run.output()[-3000:]
            )
        try:
            status, _, _ = get(run.base + "/api/status", run.token)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status = None
        if status == 200:
            return
        time.sleep(POLL_INTERVAL_S)
    pytest.fail(f"`make run` did not serve within {SERVE_TIMEOUT_S} s; its last output:\n{run.output()[-3000:]}")


@pytest.mark.timeout(SERVE_TIMEOUT_S + 4 * STOP_TIMEOUT_S + CLONE_TIMEOUT_S)
def test_make_run_on_a_fresh_clone_serves_the_demo_with_the_wrapperkernel_kernelspec(
    make_run: MakeRun,
) -> None:
    run = make_run
    wait_until_serving(run)

    # The URL the user is told to open, with the token, and no complaint about a browser.
    notebook_url = f"{run.base}/lab/tree/demo.ipynb?token={run.token}"
    output = run.output()
    assert f"Open {notebook_url}" in output, output[-3000:]
    assert "No web browser found" not in output, output[-3000:]
    status, page, content_type = get(notebook_url, None)
    assert (status, content_type.split(";")[0]) == (200, "text/html"), page[:500]
    assert b"JupyterLab" in page

    # The token is what lets one in.
    assert get(run.base + "/api/status", None)[0] == 403

    # The server's root is the examples folder (the notebook given to jupyter lab).
    listing = run.api("/api/contents")
    entries = {entry["name"]: entry["type"] for entry in listing["content"]}
    assert entries.get("demo.ipynb") == "notebook", entries

    specs = run.api("/api/kernelspecs")["kernelspecs"]
    assert "wrapperkernel" in specs, sorted(specs)
    spec = specs["wrapperkernel"]["spec"]
    assert spec["display_name"] == "Python (wrapperkernel)"
    assert spec["argv"][1:4] == ["-m", "wrapperkernel", "run"]
    # The kernel runs under the clone's own venv, which make run created.
    assert Path(spec["argv"][0]).parent.resolve() == (run.clone / ".venv" / "bin").resolve()
