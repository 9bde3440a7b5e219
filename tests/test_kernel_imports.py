"""The kernel process imports only what it needs; the rest waits for the request that needs it.

The worker hosts IPython, and the kernel process never runs user code, so the kernel
loads neither IPython nor debugpy at startup, nor the packages ``jupyter_client.session``
imports for features the kernel does not use (tornado, dateutil; see
``wrapperkernel/wire/session.py``). Those are memory the kernel would carry for its whole
life (docs/benchmarks.md, the memory-bench section). The checks read the kernel process's
``sys.modules`` through ``tests/modules_probe.py``, and then make the requests that do
need a deferred module, to show they are still answered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_helpers import REPLY_TIMEOUT_S, KernelConnection, running_kernel

PROBE = Path(__file__).resolve().parent / "modules_probe.py"
PROBE_KERNEL = "wrapperkernel-modules-probe"
# Packages the kernel process must not import at startup, nor while it relays cells.
NOT_AT_STARTUP = ("IPython", "debugpy", "tornado", "dateutil", "curses", "ipykernel",
                  "matplotlib_inline", "comm")
# Standard modules the kernel's startup path no longer imports: pydantic's plugin lookup
# (wrapperkernel/pydantic_plugins.py), the temporary folder (cellfiles.temporary_root)
# and the command line the kernelspec runs (cli.kernelspec_run).
STDLIB_NOT_AT_STARTUP = ("importlib.metadata", "email", "zipfile", "tempfile", "argparse")
POLL_S = 0.05


def top_level(modules: list[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.fixture
def probed(kernel_env: Path, tmp_path: Path) -> Iterator[tuple[KernelConnection, Path]]:
    spec_dir = kernel_env / "share" / "jupyter" / "kernels" / PROBE_KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "modules.json"
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(PROBE), str(out), "-f", "{connection_file}"],
        "display_name": "wrapperkernel (modules probe)", "language": "python",
        "interrupt_mode": "signal",
    }))
    with running_kernel(PROBE_KERNEL) as connection:
        yield connection, out


def kernel_modules(connection: KernelConnection, out: Path) -> list[str]:
    """What the kernel process has imported by now."""
    out.unlink(missing_ok=True)
    os.kill(connection.km.provisioner.process.pid, signal.SIGUSR1)  # type: ignore[union-attr]
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while not out.exists():
        assert time.monotonic() < deadline, "the probe wrote no module list"
        time.sleep(POLL_S)
    return json.loads(out.read_text())


def test_the_kernel_process_loads_neither_ipython_nor_debugpy_until_a_request_needs_them(
        probed: tuple[KernelConnection, Path]) -> None:
    connection, out = probed
    assert connection.run("x = 1\nprint(x + 1)").stdout == "2\n"
    assert connection.request("comm_info_request", {}).content["status"] == "ok"
    loaded = top_level(kernel_modules(connection, out))
    assert "wrapperkernel" in loaded and "pydantic" in loaded  # the probe sees the kernel
    assert sorted(loaded & set(NOT_AT_STARTUP)) == []
    modules = kernel_modules(connection, out)
    assert sorted(set(modules) & set(STDLIB_NOT_AT_STARTUP)) == []
    assert "wrapperkernel.kernel.debugger" not in modules

    # is_complete is answered in the kernel, from IPython's input transformers: the first
    # request loads them, and the answers are IPython's.
    answers = [connection.request("is_complete_request", {"code": code}).content
               for code in ("for i in range(3):", "x = 1", "%%time", "print(")]
    assert answers == [{"status": "incomplete", "indent": "    "}, {"status": "complete"},
                       {"status": "incomplete", "indent": ""},
                       {"status": "incomplete", "indent": ""}]
    assert "IPython" in top_level(kernel_modules(connection, out))


def test_session_comes_without_tornado_and_dateutil_and_reads_dates_as_before() -> None:
    """In a fresh interpreter: the kernel's Session import loads neither package; a signed
    message's header dates, in each ISO 8601 form jupyter_client parses, go back on the
    wire as the real dateutil would give them; and both packages import for real after."""
    script = textwrap.dedent("""
        import json, sys
        from wrapperkernel.wire.session import import_session_class
        Session = import_session_class()
        before = sorted(n for n in sys.modules if n.split(".")[0] in ("tornado", "dateutil"))
        session = Session(key=b"secret")
        dates = json.loads(sys.argv[1])
        echoed = []
        for date in dates:
            header = {**session.msg_header("execute_request"), "date": date}
            wire = session.serialize({"header": header, "parent_header": {"date": date},
                                      "metadata": {}, "content": {}})
            _, parts = session.feed_identities(wire)
            message = session.deserialize(parts)
            reply = session.serialize(session.msg("execute_reply", {}, parent=message["header"]))
            echoed.append(json.loads(reply[3])["date"])
        import tornado.ioloop, dateutil.parser, zmq.eventloop.zmqstream
        real = [hasattr(tornado.ioloop.IOLoop, "run_sync"), callable(dateutil.parser.parse),
                hasattr(zmq.eventloop.zmqstream.ZMQStream, "on_recv")]
        print(json.dumps({"before": before, "echoed": echoed, "real": real}))
    """)
    dates = ["2026-12-01T20:53:40.123456Z", "2026-12-01T20:53:40.123Z",
             "2026-12-01T20:53:40Z", "2026-12-01T20:53:40.5+01:00", "2026-12-01T20:53:40-0230",
             "2026-12-01T20:53:40.123456", "not a date"]
    run = subprocess.run([sys.executable, "-c", script, json.dumps(dates)], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["before"] == [] and result["real"] == [True, True, True]

    # What jupyter_client with the real dateutil makes of the same dates (this process).
    from jupyter_client.jsonutil import extract_dates, json_default

    with warnings.catch_warnings():  # a naive date is read as local time, with a warning
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = [json.loads(json.dumps(extract_dates(date), default=json_default))
                    for date in dates]
    assert result["echoed"] == expected


def test_the_first_debug_request_loads_the_debugger_and_is_answered(
        probed: tuple[KernelConnection, Path]) -> None:
    connection, out = probed
    assert "wrapperkernel.kernel.debugger" not in kernel_modules(connection, out)
    reply = connection.request("debug_request", {"type": "request", "seq": 1,
                                                 "command": "debugInfo"}, channel="control")
    assert reply.content["success"] is True, reply.content
    assert reply.content["body"]["isStarted"] is False
    assert "wrapperkernel.kernel.debugger" in kernel_modules(connection, out)
    # A cell runs as before: the debugger that now exists holds no cells.
    assert connection.run("print('after')").stdout == "after\n"


PLUGIN = """
SEEN = []


class Recorder:
    def new_schema_validator(self, schema, schema_type, schema_type_path, schema_kind,
                             config, plugin_settings):
        SEEN.append(f"{schema_type_path.module}.{schema_type_path.name}")
        return None, None, None


plugin = Recorder()
"""


def test_the_users_pydantic_models_get_their_plugins_and_wrapperkernels_do_not(
        kernel_env: Path, tmp_path: Path) -> None:
    """An installed pydantic plugin (an entry point in the ``pydantic`` group) sees every
    model the user's program builds in the worker, and none of wrapperkernel's own, which
    are built before the worker takes requests (``wrapperkernel/pydantic_plugins.py``)."""
    (tmp_path / "seen_models.py").write_text(PLUGIN)
    dist = tmp_path / "seen_models-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: seen-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pydantic]\nseen = seen_models:plugin\n")
    with running_kernel(env={"PYTHONPATH": str(tmp_path)}) as connection:
        before = connection.run("import sys\n"
                                "print(sorted(m for m in sys.modules if m in "
                                "('importlib.metadata', 'pydantic.plugin._loader')))").stdout
        assert before == "[]\n"
        code = textwrap.dedent("""
            from pydantic import BaseModel, TypeAdapter

            class Point(BaseModel):
                x: int

            print(Point(x="3").x, TypeAdapter(list[int]).validate_python(["4"]))
            import seen_models
            print(seen_models.SEEN)
        """)
        result = connection.run(code)
        assert result.stdout.splitlines()[0] == "3 [4]"
        seen = eval(result.stdout.splitlines()[1])  # noqa: S307 - a list of str printed above
        assert "__main__.Point" in seen
        assert [name for name in seen if name.startswith("wrapperkernel")] == []
        # A comm and a widget after that build nothing of wrapperkernel's under the plugin.
        code = textwrap.dedent("""
            from wrapperkernel import widgets
            s = widgets.Slider(0, 10, value=3)
            print(s.value, [n for n in seen_models.SEEN if n.startswith("wrapperkernel")])
        """)
        assert connection.run(code).stdout == "3 []\n"


def test_the_kernel_answers_its_first_kernel_info_before_it_imports_pydantic() -> None:
    """``app.serve`` binds the sockets and answers the first kernel_info before loading
    the rest of the kernel; importing pydantic alone takes about 100 ms here, so nothing
    on the way there (the command line, ``app``'s own imports) may import it. Checked in
    a fresh interpreter, with ``app.run`` replaced by a probe."""
    script = textwrap.dedent("""
        import json, sys
        import wrapperkernel.kernel.app as app
        seen = {}
        def probe(connection_file):
            seen["at run"] = sorted(m for m in sys.modules if m.split(".")[0] == "pydantic")
            return 0
        app.run = probe
        from wrapperkernel import cli
        try:
            cli.main(["run", "-f", "kernel-x.json"])
        except SystemExit as done:
            seen["exit"] = done.code
        print(json.dumps(seen))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"at run": [], "exit": 0}
