"""``wrapperkernel install`` / ``uninstall``: the kernelspec a user gets, and that Jupyter
finds it (and no longer does after uninstall)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from wrapperkernel.address.page_script import js_path
from wrapperkernel.cli import RESOURCE_FILES, build_parser, kernelspec_run, kernelspec_source

COMMAND_TIMEOUT_S = 120
LOGOS = [name for name in RESOURCE_FILES if name.startswith("logo-")]


def run(*args: str, prefix: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JUPYTER_PATH": str(prefix / "share" / "jupyter")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=COMMAND_TIMEOUT_S, check=False)


def kernelspecs(prefix: Path) -> dict[str, dict]:
    listed = run("-m", "jupyter", "kernelspec", "list", "--json", prefix=prefix)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)["kernelspecs"]


def test_install_writes_a_kernelspec_jupyter_finds(tmp_path: Path) -> None:
    installed = run("-m", "wrapperkernel", "install", "--prefix", str(tmp_path),
                    "--name", "wk-test", "--display-name", "WK Test Display", prefix=tmp_path)

    assert installed.returncode == 0, installed.stderr
    folder = tmp_path / "share" / "jupyter" / "kernels" / "wk-test"
    assert str(folder) in installed.stdout
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    assert spec["argv"][1:] == ["-m", "wrapperkernel", "run", "-f", "{connection_file}"]
    assert spec["display_name"] == "WK Test Display"
    assert spec["language"] == "python"
    assert len(LOGOS) == 3
    for logo in LOGOS:
        assert (folder / logo).read_bytes() == (kernelspec_source() / logo).read_bytes()
    # The page client, served as a kernelspec resource for widgets in a reloaded page.
    assert (folder / "wrapperkernel_comm.js").read_text() == js_path().read_text()

    found = kernelspecs(tmp_path)
    assert "wk-test" in found
    assert Path(found["wk-test"]["resource_dir"]).resolve() == folder.resolve()
    assert found["wk-test"]["spec"]["display_name"] == "WK Test Display"
    listed = run("-m", "jupyter", "kernelspec", "list", prefix=tmp_path)
    assert "wk-test" in listed.stdout


def test_uninstall_removes_it(tmp_path: Path) -> None:
    run("-m", "wrapperkernel", "install", "--prefix", str(tmp_path), "--name", "wk-gone",
        prefix=tmp_path)
    assert "wk-gone" in kernelspecs(tmp_path)

    removed = run("-m", "wrapperkernel", "uninstall", "--prefix", str(tmp_path),
                  "--name", "wk-gone", prefix=tmp_path)

    assert removed.returncode == 0, removed.stderr
    assert not (tmp_path / "share" / "jupyter" / "kernels" / "wk-gone").exists()
    assert "wk-gone" not in kernelspecs(tmp_path)


def test_uninstall_of_a_missing_kernelspec_says_so(tmp_path: Path) -> None:
    removed = run("-m", "wrapperkernel", "uninstall", "--prefix", str(tmp_path),
                  "--name", "never-installed", prefix=tmp_path)

    assert removed.returncode != 0
    assert "never-installed" in removed.stderr


def test_default_install_uses_the_default_name_and_display_name(tmp_path: Path) -> None:
    installed = run("-m", "wrapperkernel", "install", "--prefix", str(tmp_path), prefix=tmp_path)

    assert installed.returncode == 0, installed.stderr
    found = kernelspecs(tmp_path)
    assert found["wrapperkernel"]["spec"]["display_name"] == "Python (wrapperkernel)"
    assert found["wrapperkernel"]["spec"]["interrupt_mode"] == "signal"


def test_the_kernelspecs_command_line_is_read_as_argparse_reads_it() -> None:
    for argv in (["run", "-f", "/tmp/kernel-1.json"], ["run", "--connection-file", "k.json"]):
        assert kernelspec_run(argv) == build_parser().parse_args(argv).connection_file
    # Anything else is argparse's to read (and to refuse with its usage message).
    for argv in (["run", "-f"], ["run", "-f", "a.json", "extra"], ["run", "-f", "--help"],
                 ["install", "-f", "x"], ["run", "--connection-file=k.json"], []):
        assert kernelspec_run(argv) is None


def test_run_without_a_connection_file_is_refused_with_the_usage(tmp_path: Path) -> None:
    refused = run("-m", "wrapperkernel", "run", "-f", prefix=tmp_path)
    assert refused.returncode == 2
    assert "usage: wrapperkernel run" in refused.stderr
