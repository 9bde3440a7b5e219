"""Runs ipykernel's own kernel tests against wrapperkernel (docs/ipykernel-tests.md).

The tests come from the sdist of the ipykernel that the test extras installed (its version
read at run time), downloaded once into the git-ignored ``.cache/ipykernel-sdist/``. They
start jupyter_client's default kernel, ``python3``, so this script installs the kernel
under test as ``python3`` in a private prefix, points ``JUPYTER_PATH`` at it, checks that
this kernelspec really starts that kernel, and runs pytest once per group of test files
in ``selection.toml``: a failure in a ``must-pass`` group fails the run, one in an
``allowed-to-fail`` group is only reported. ``--kernel ipykernel`` runs the same tests
against ipykernel itself, with nothing deselected, to show what fails in the harness.

It never edits the sdist's tests and writes nothing outside the cache and its temporary
folder. Exit status: 0 when every must-pass group passed, 1 when one did not, 2 when the
set-up failed (download, kernelspec, a kernel that is not the one asked for).

    python tests/ipykernel_peer/run.py [--kernel wrapperkernel|ipykernel] [--files F ...]
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SELECTION_FILE = HERE / "selection.toml"
CACHE_DIR = REPO / ".cache" / "ipykernel-sdist"

# The name the sdist's tests start (jupyter_client.manager.start_new_kernel's default).
KERNEL_NAME = "python3"
# kernel_info's ``implementation`` of each kernel this script can test.
IMPLEMENTATIONS = {"wrapperkernel": "wrapperkernel", "ipykernel": "ipython"}
MUST_PASS = "must-pass"
ALLOWED_TO_FAIL = "allowed-to-fail"
GROUPS = (MUST_PASS, ALLOWED_TO_FAIL)
# The sdist's pyproject.toml holds the rest of its pytest settings (warnings as errors,
# asyncio_mode, -ra); these keep its tree clean, silence pytest-asyncio's notice about
# the fixture loop scope, and give a slower machine more than its 30 s per test.
PYTEST_OPTIONS = ("-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function",
                  "--timeout", "60", "--color=no")
TEST_ID = re.compile(r"^tests/(test_\w+\.py)::(\w+)(\[[^\]]+\])?$")
SUMMARY_LINE = re.compile(r"^=+ (.+ in [\d.]+s\b.*?) =+$")
DOWNLOAD_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 120
KERNEL_START_TIMEOUT_S = 60
REPLY_TIMEOUT_S = 30


class SetupError(Exception):
    """The run cannot start: no sdist, no kernelspec, or not the kernel asked for."""


class SelectionError(SetupError):
    """selection.toml says something this script cannot follow."""


class IdentityError(SetupError):
    """The kernelspec ``python3`` started another kernel than the one under test."""


@dataclass(frozen=True)
class Exclusion:
    test_id: str  # as pytest names it from the sdist's root: tests/<file>::<test>[params]
    reason: str

    @property
    def file(self) -> str:
        return self.test_id.split("::")[0].removeprefix("tests/")

    @property
    def function(self) -> str:
        return self.test_id.split("::")[1].split("[")[0]


@dataclass(frozen=True)
class Selection:
    files: dict[str, str]  # test file -> its group
    exclusions: tuple[Exclusion, ...]

    def group_files(self, group: str) -> list[str]:
        return [name for name, in_group in self.files.items() if in_group == group]


@dataclass(frozen=True)
class GroupResult:
    group: str
    files: tuple[str, ...]
    exit_code: int
    summary: str  # pytest's last line, e.g. "3 failed, 30 passed, 2 deselected in 20.01s"

    @property
    def counts(self) -> bool:
        """Whether this group's failure fails the run."""
        return self.group == MUST_PASS


def load_selection(path: Path = SELECTION_FILE) -> Selection:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SelectionError(f"{path}: {error}") from error
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise SelectionError(f"{path}: a [files] table naming test files and their groups")
    for name, group in files.items():
        if group not in GROUPS:
            raise SelectionError(f"{path}: {name} = {group!r}; a group is one of {GROUPS}")
    exclusions = []
    for entry in data.get("excluded", []):
        if not isinstance(entry, dict):
            raise SelectionError(f"{path}: {entry!r} in excluded is not a table ([[excluded]])")
        test_id, reason = entry.get("test"), entry.get("reason")
        if not isinstance(test_id, str) or not TEST_ID.match(test_id):
            raise SelectionError(
                f"{path}: excluded test {test_id!r} is not of the form tests/<file>::<test>")
        if not isinstance(reason, str) or not reason.strip():
            raise SelectionError(f"{path}: excluded test {test_id} has no reason")
        exclusion = Exclusion(test_id, " ".join(reason.split()))
        if exclusion.file not in files:
            raise SelectionError(f"{path}: excluded test {test_id} is in no file of [files]")
        if any(known.test_id == test_id for known in exclusions):
            raise SelectionError(f"{path}: excluded test {test_id} is listed twice")
        exclusions.append(exclusion)
    return Selection(files=dict(files), exclusions=tuple(exclusions))


def missing_tests(sdist: Path, exclusions: Iterable[Exclusion]) -> list[str]:
    """The excluded ids that name no test function of the sdist: a test renamed or removed
    by a newer ipykernel, whose ``--deselect`` pytest would ignore without a word."""
    missing = []
    for exclusion in exclusions:
        path = sdist / "tests" / exclusion.file
        defined = set()
        if path.is_file():
            tree = ast.parse(path.read_text(), filename=str(path))
            defined = {node.name for node in tree.body
                       if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
        if exclusion.function not in defined:
            missing.append(exclusion.test_id)
    return missing


def installed_ipykernel_version() -> str:
    return importlib.metadata.version("ipykernel")


def sdist_dir(version: str, cache: Path = CACHE_DIR) -> Path:
    """The unpacked sdist of ipykernel ``version``: from the cache, else downloaded into it."""
    unpacked = cache / f"ipykernel-{version}"
    if (unpacked / "tests").is_dir():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"ipykernel-{version}.tar.gz"
    if not archive.is_file():
        download_sdist(version, archive)
    # Unpacked beside the cache and renamed into it, so an interrupted run never leaves a
    # half-unpacked tree that the next one would take for the sdist.
    with tempfile.TemporaryDirectory(dir=cache) as tmp, tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, filter="data")
        else:  # a Python without extraction filters; the archive is PyPI's, checked by pip
            tar.extractall(tmp)
        top = Path(tmp) / unpacked.name
        if not (top / "tests").is_dir():
            raise SetupError(f"{archive} holds no {unpacked.name}/tests folder")
        os.replace(top, unpacked)
    return unpacked


def download_sdist(version: str, archive: Path) -> None:
    # --no-build-isolation: pip builds the sdist's metadata with the hatchling of this
    # venv (a test extra) instead of fetching a build environment of its own.
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--no-build-isolation", "--disable-pip-version-check",
                   f"ipykernel=={version}", "-d", tmp]
        print("$", " ".join(command), flush=True)
        done = subprocess.run(command, stdin=subprocess.DEVNULL, timeout=DOWNLOAD_TIMEOUT_S,
                              check=False)
        downloaded = Path(tmp) / archive.name
        if done.returncode != 0 or not downloaded.is_file():
            raise SetupError(f"pip download of the ipykernel {version} sdist failed "
                             f"(exit {done.returncode}); its output is above")
        os.replace(downloaded, archive)


def install_kernelspec(kernel: str, prefix: Path) -> Path:
    """Install ``kernel``'s kernelspec as ``python3`` under ``prefix``; return its folder."""
    command = [sys.executable, "-m", kernel, "install", "--prefix", str(prefix),
               "--name", KERNEL_NAME]
    # From the repo's root, `-m wrapperkernel` is this checkout's package.
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=INSTALL_TIMEOUT_S, check=False)
    folder = prefix / "share" / "jupyter" / "kernels" / KERNEL_NAME
    if done.returncode != 0 or not (folder / "kernel.json").is_file():
        raise SetupError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    if kernel == "wrapperkernel":
        # The kernel runs from the sdist's folder, where `-m wrapperkernel` would find the
        # venv's install, which may be another checkout's (an editable install elsewhere).
        spec_file = folder / "kernel.json"
        spec = json.loads(spec_file.read_text())
        spec.setdefault("env", {})["PYTHONPATH"] = str(REPO)
        spec_file.write_text(json.dumps(spec, indent=2) + "\n")
    return folder


def peer_env(root: Path, prefix: Path) -> dict[str, str]:
    """The environment of the identity check and of pytest: the private kernelspec first,
    and IPython's and Jupyter's runtime files in ``root``, not in the user's folders."""
    return {**os.environ,
            "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
            "IPYTHONDIR": str(root / "ipython"),
            "JUPYTER_RUNTIME_DIR": str(root / "runtime")}


@contextmanager
def environ(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check_identity(kernel: str, env: Mapping[str, str], log: Path) -> str:
    """Start ``python3`` as the sdist's tests will (jupyter_client, ``env``'s JUPYTER_PATH)
    and return its kernel_info ``implementation``; IdentityError if it is not ``kernel``'s.
    The kernel's own output goes to ``log``, shown when it does not start."""
    from jupyter_client.manager import start_new_kernel

    expected = IMPLEMENTATIONS[kernel]
    with environ(env), log.open("w") as output:
        try:
            manager, client = start_new_kernel(kernel_name=KERNEL_NAME, stdout=output,
                                               stderr=subprocess.STDOUT,
                                               startup_timeout=KERNEL_START_TIMEOUT_S)
        except (RuntimeError, OSError) as error:
            raise SetupError(f"the kernelspec {KERNEL_NAME!r} found with JUPYTER_PATH="
                             f"{env['JUPYTER_PATH']} did not start ({error}); its output:\n"
                             f"{log.read_text()}") from error
    try:
        reply = client.kernel_info(reply=True, timeout=REPLY_TIMEOUT_S)
        implementation = reply["content"].get("implementation")
        spec_folder = manager.kernel_spec.resource_dir
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    if implementation != expected:
        raise IdentityError(
            f"the kernelspec {KERNEL_NAME!r} found with JUPYTER_PATH={env['JUPYTER_PATH']} "
            f"(in {spec_folder}) started a kernel whose implementation is {implementation!r}, "
            f"not {expected!r}: the tests would test another kernel than {kernel}")
    return implementation


def summary_line(lines: Iterable[str]) -> str:
    """pytest's closing ``==== 2 failed, 30 passed in 9.1s ====`` line, without the bars."""
    found = ""
    for line in lines:
        matched = SUMMARY_LINE.match(line.strip())
        if matched:
            found = matched.group(1)
    return found


def run_group(group: str, files: Sequence[str], deselect: Sequence[str], sdist: Path,
              env: Mapping[str, str]) -> GroupResult:
    """Run pytest on ``files`` of the sdist, its output passed through as it comes."""
    command = [sys.executable, "-m", "pytest", *(f"tests/{name}" for name in files),
               *PYTEST_OPTIONS]
    for test_id in deselect:
        command += ["--deselect", test_id]
    print(f"\n### {group}: {' '.join(files)}\n$ {' '.join(command)}", flush=True)
    output = []
    # Unbuffered: pytest writes to a pipe here, and its progress should show as it goes.
    env = {**env, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, cwd=sdist, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as pytest:
        assert pytest.stdout is not None
        for line in pytest.stdout:
            sys.stdout.write(line)
            output.append(line)
        exit_code = pytest.wait()
    sys.stdout.flush()
    summary = summary_line(output) or f"no summary line from pytest (exit {exit_code})"
    return GroupResult(group, tuple(files), exit_code, summary)


def exit_status(results: Iterable[GroupResult]) -> int:
    return 1 if any(result.counts and result.exit_code != 0 for result in results) else 0


def report(kernel: str, version: str, results: Sequence[GroupResult]) -> str:
    lines = [f"ipykernel {version}'s tests against {kernel}:"]
    for result in results:
        verdict = ("passed" if result.exit_code == 0
                   else "FAILED" if result.counts else "failed (allowed)")
        lines.append(f"  {result.group} [{' '.join(result.files)}]: {result.summary} -> {verdict}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", choices=sorted(IMPLEMENTATIONS), default="wrapperkernel",
                        help="the kernel to test (default: wrapperkernel)")
    parser.add_argument("--files", nargs="+", metavar="FILE",
                        help="run these test files of the sdist as one must-pass group "
                             "instead of the groups of selection.toml")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        selection = load_selection()
        version = installed_ipykernel_version()
        sdist = sdist_dir(version)
        missing = missing_tests(sdist, selection.exclusions)
        if missing:
            raise SelectionError(f"{SELECTION_FILE.name} excludes tests that ipykernel "
                                 f"{version}'s sdist does not have: {', '.join(missing)}")
        if args.files:
            groups = [(MUST_PASS, args.files)]
        else:
            groups = [(group, selection.group_files(group)) for group in GROUPS]
        for _, files in groups:
            for name in files:
                if not (sdist / "tests" / name).is_file():
                    raise SetupError(f"ipykernel {version}'s sdist has no tests/{name}")
        results = []
        with tempfile.TemporaryDirectory(prefix="ipykernel-peer-") as tmp:
            prefix = Path(tmp) / "prefix"
            install_kernelspec(args.kernel, prefix)
            env = peer_env(Path(tmp), prefix)
            implementation = check_identity(args.kernel, env, Path(tmp) / "kernel.log")
            print(f"The kernelspec {KERNEL_NAME!r} starts {implementation}: "
                  f"running ipykernel {version}'s tests from {sdist}", flush=True)
            for group, files in groups:
                if not files:
                    continue
                # The exclusions are about wrapperkernel's design; ipykernel runs them all.
                deselect = [exclusion.test_id for exclusion in selection.exclusions
                            if args.kernel == "wrapperkernel" and exclusion.file in files]
                results.append(run_group(group, files, deselect, sdist, env))
    except SetupError as error:
        print(f"ipykernel peer tests: cannot run: {error}", file=sys.stderr)
        return 2
    print("\n" + report(args.kernel, version, results), flush=True)
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
