"""Shared fixtures of the kernel-level tests (the browser tests have their own).

``kernel_env`` installs the kernelspec of this checkout into a temporary prefix and points
Jupyter and IPython at temporary folders, so no test reads or writes the user's setup.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_helpers import KernelConnection, running_kernel

INSTALL_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("kernel-env")
    prefix = root / "prefix"
    subprocess.run(
        [sys.executable, "-m", "wrapperkernel", "install", "--prefix", str(prefix)],
        check=True, capture_output=True, timeout=INSTALL_TIMEOUT_S,
    )
    env = pytest.MonkeyPatch()
    env.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    env.setenv("IPYTHONDIR", str(root / "ipython"))
    env.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
    yield prefix
    env.undo()


@pytest.fixture(scope="module")
def kernel(kernel_env: Path) -> Iterator[KernelConnection]:
    """One kernel per test module: the tests of a module share it, and it must survive them."""
    with running_kernel() as connection:
        yield connection
