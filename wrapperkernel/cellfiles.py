"""Where a cell's code lives as a file, so that a debugger's breakpoints can name it.

JupyterLab's debugger never asks the kernel for a cell's file: it computes the name
itself from what ``debugInfo`` announces (``hashMethod`` "Murmur2", ``hashSeed``,
``tmpFilePrefix``, ``tmpFileSuffix``), and sets breakpoints on that path. The worker
compiles every cell under the same name (``worker/shell.py``), the kernel writes the
file on ``dumpCell`` (``kernel/debugger.py``). Both import this module, so the two can
never disagree on a name.

The directory belongs to the kernel process, not to a worker: cell files and the
breakpoints on them stay valid when a worker is replaced.

This module only computes names; it never touches the disk.
"""

from __future__ import annotations

import functools
import os
import sys

# The seed JupyterLab's debugger hashes with is the one the kernel announces; this is
# the value ipykernel announces, so a frontend that assumed it still finds the files.
HASH_SEED = 0xC70F6907
SUFFIX = ".py"
# Passed from the kernel to each worker it starts.
DIRECTORY_ENV = "WRAPPERKERNEL_CELL_DIR"

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes, seed: int) -> int:
    """MurmurHash2, 32-bit (Austin Appleby's public-domain algorithm), little-endian
    4-byte blocks: the hash JupyterLab's debugger computes over a cell's UTF-8 code."""
    length = len(data)
    h = (seed ^ length) & _MASK
    whole = length - length % 4
    if sys.byteorder == "little":
        blocks = memoryview(data)[:whole].cast("I")  # no slice and int per block
    else:
        blocks = [int.from_bytes(data[i:i + 4], "little") for i in range(0, whole, 4)]
    for k in blocks:
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[whole:]
    if tail:
        h ^= int.from_bytes(tail, "little")
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def temporary_root() -> str:
    """The folder ``tempfile.gettempdir()`` would choose, found the same way (the first of
    ``$TMPDIR``, ``$TEMP``, ``$TMP``, /tmp, /var/tmp, /usr/tmp and the working directory
    that is a folder this process may write into) without importing ``tempfile``: with
    ``shutil``, ``bz2`` and ``lzma`` that costs the kernel process 0.6 MiB."""
    candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    candidates += ["/tmp", "/var/tmp", "/usr/tmp"]
    for candidate in candidates:
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return os.path.abspath(candidate)
    return os.getcwd()


def directory_for(kernel_pid: int) -> str:
    """The cell directory of the kernel process ``kernel_pid``."""
    return os.path.join(temporary_root(), f"wrapperkernel_{kernel_pid}")


@functools.lru_cache(maxsize=256)
def file_name(code: str, directory: str) -> str:
    """The file a cell with this exact code is compiled as (and dumped to); cells are
    often run again unchanged, and the hash is Python arithmetic per 4 bytes."""
    return os.path.join(directory, f"{murmur2(code.encode('utf-8'), HASH_SEED)}{SUFFIX}")
