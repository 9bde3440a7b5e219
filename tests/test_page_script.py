"""The install HTML: a single script element, the installer call and a config that parses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap

import pytest

from wrapperkernel.address import page_script
from wrapperkernel.address.page_script import install_config, render_install_html

KERNEL_ID = "0f1e2d3c-aaaa-bbbb-cccc-000000000001"
# The installer call is the script's last line.
CALL = re.compile(r"\nglobalThis\.wrapperkernel_comm_install\(([^\n]*)\);\n</script>\Z")


def _config(html: str) -> dict:
    match = CALL.search(html)
    assert match is not None, html[-300:]
    return json.loads(match.group(1))


def test_one_script_element_with_client_and_installer_call() -> None:
    html = render_install_html(install_config(KERNEL_ID))
    assert html.startswith('<script type="text/javascript">\n')
    assert html.endswith("</script>")
    assert html.lower().count("<script") == 1
    assert html.lower().count("</script") == 1
    assert "globalThis.wrapperkernel_comm_install = install;" in html
    assert _config(html) == {"kernel_id": KERNEL_ID, "transport": "auto", "install_id": None,
                             "debug": False, "heartbeat_timeout_ms": 500,
                             "ack_every_msgs": 16, "ack_delay_ms": 8}


def test_config_carries_debug_and_timeout() -> None:
    config = _config(render_install_html(install_config("k", debug=True, heartbeat_timeout_s=1.25)))
    assert config == {"kernel_id": "k", "transport": "auto", "install_id": None, "debug": True,
                      "heartbeat_timeout_ms": 1250, "ack_every_msgs": 16, "ack_delay_ms": 8}


def test_script_end_tag_in_config_cannot_break_out() -> None:
    hostile = "</script><script>alert(1)</script><!-- & \u2028"
    html = render_install_html(install_config(hostile))
    assert html.lower().count("</script") == 1
    assert "<!--" not in html
    assert "\u2028" not in html
    assert _config(html)["kernel_id"] == hostile


def test_js_source_is_read_once() -> None:
    page_script._js_source.cache_clear()
    render_install_html(install_config("a"))
    render_install_html(install_config("b"))
    assert page_script._js_source.cache_info().misses == 1


NODE_RUNNER = textwrap.dedent(
    """
    const vm = require("node:vm");
    const html = require("node:fs").readFileSync(0, "utf8");
    const code = html.slice(html.indexOf(">") + 1, html.lastIndexOf("</script>"));
    const sockets = [];
    class FakeWebSocket {
      constructor(url) { this.url = url; this.readyState = 0; this.sent = []; sockets.push(this); }
      send(text) { this.sent.push(JSON.parse(text)); }
      close() { this.readyState = 3; }
    }
    const pageConfig = JSON.stringify({baseUrl: "/user/x/", wsUrl: "", token: ""});
    const sandbox = {
      WebSocket: FakeWebSocket,
      URL,
      console,
      crypto: require("node:crypto").webcrypto,
      location: {href: "https://hub.example.org/user/x/lab"},
      document: {getElementById: (id) => id === "jupyter-config-data" ? {textContent: pageConfig} : null},
      setTimeout, clearTimeout,
    };
    vm.runInNewContext(code, sandbox);
    const channel = sandbox.wrapperkernel_comm;
    sockets[0].readyState = 1;
    sockets[0].onopen({});
    console.log(JSON.stringify({url: channel.url, state: channel.state, sent: sockets[0].sent}));
    """
)


def test_rendered_script_installs_the_client_in_node() -> None:
    if shutil.which("node") is None:
        # In CI nothing is skipped silently: a missing Node is a broken machine.
        if os.environ.get("CI") == "true":
            pytest.fail("node is not installed; CI needs it for the page client's tests")
        pytest.skip("node is not installed")
    result = subprocess.run(
        ["node", "-e", NODE_RUNNER],
        input=render_install_html(install_config(KERNEL_ID)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "connecting"
    assert report["url"].startswith(
        f"wss://hub.example.org/user/x/api/kernels/{KERNEL_ID}/channels?session_id="
    )
    [comm_open] = report["sent"]
    assert comm_open["header"]["msg_type"] == "comm_open"
    assert comm_open["content"]["target_name"] == "wrapperkernel_comm"
    assert comm_open["content"]["data"] == {"kernel_id": KERNEL_ID}
