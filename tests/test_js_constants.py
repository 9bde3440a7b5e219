"""The page client and the kernel agree on the protocol's constants.

``js/wrapperkernel_comm.js`` spells the wire's fixed strings (the Jupyter protocol
version of its headers, the comm target, the protocol's own addresses) as ``const``
declarations at the top of the file; the kernel has them in Python. Nothing at run time
compares the two, so a value changed on one side only would break the channel in the
browser while every Python test passed (the headers said "5.4" for a kernel speaking
"5.5"). This test reads the JS source and compares each one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wrapperkernel.address import defaults, events
from wrapperkernel.kernel import info

JS_CLIENT = Path(__file__).resolve().parents[1] / "js" / "wrapperkernel_comm.js"

# JS constant -> the Python value it must equal (both sides use the same names).
SHARED = {
    "PROTOCOL_VERSION": info.PROTOCOL_VERSION,
    "PRIVATE_PREFIX": defaults.PRIVATE_PREFIX,
    "TARGET_NAME": events.COMM_TARGET_NAME,
    "OPEN_ACK_ADDRESS": events.OPEN_ACK_ADDRESS,
    "ACK_ADDRESS": events.ACK_ADDRESS,
    "PING_ADDRESS": events.PING_ADDRESS,
    "PONG_ADDRESS": events.PONG_ADDRESS,
}


def js_string_constant(source: str, name: str) -> str:
    """The value of ``const NAME = "...";``, which must be declared exactly once."""
    found = re.findall(rf'^\s*const {name} = "([^"\\]*)";', source, re.MULTILINE)
    assert len(found) == 1, f"{JS_CLIENT.name} declares const {name} {len(found)} times"
    return found[0]


@pytest.mark.parametrize("name", sorted(SHARED))
def test_js_client_constant_equals_the_kernels(name: str) -> None:
    source = JS_CLIENT.read_text(encoding="utf-8")
    assert js_string_constant(source, name) == SHARED[name]

