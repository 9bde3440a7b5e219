"""10,000 values through a real Jupyter Server: all arrive, in order, none dropped.

Jupyter Server drops IOPub messages above 1000 msg/s per websocket and prints "IOPub
message rate exceeded" into the notebook. Only a real server shows whether the kernel's
batching and pacing keep under that limit, so this runs in the browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect

from .conftest import shut_down_sessions
from .jupyterlab import LabServer, create_notebook, run_cell
from .test_comms_browser import open_fresh_lab

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

VALUES = 10_000

FLOOD_CELL = f"""\
from wrapperkernel import comms
from IPython.display import HTML, display
comms.start()
ready = comms.listen("/flood/ready")
display(HTML('''<span id="wk-flood">waiting</span>
<script>
(async () => {{
  const comm = globalThis.wrapperkernel_comm;
  await comm.ready;
  let count = 0, inOrder = true;
  comm.subscribe("/flood", (address, value) => {{
    if (value !== count) inOrder = false;
    count += 1;
    document.getElementById("wk-flood").textContent =
      count + (inOrder ? " in order" : " OUT OF ORDER");
  }});
  comm.send("/flood/ready", true);
}})();
</script>'''))
ready.get(timeout=20)
ready.close()
for i in range({VALUES}):
    comms.send("/flood", i)
comms.sync()
print("sent all")
"""


@pytest.fixture
def flood_page(page: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest,
               request: pytest.FixtureRequest) -> Iterator[Page]:
    if kernel_under_test.name != "wrapperkernel":
        pytest.skip("the address channel is wrapperkernel's")
    open_fresh_lab(page, lab_server, request.node.name)
    yield page
    shut_down_sessions(lab_server)


def test_ten_thousand_values_reach_the_page_in_order(
    flood_page: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest
) -> None:
    page = flood_page
    create_notebook(page, kernel_under_test.display_name)

    result = run_cell(page, FLOOD_CELL, timeout_s=60)

    assert "sent all" in result.text, result.text
    expect(result.cell.locator("#wk-flood")).to_have_text(f"{VALUES} in order", timeout=30_000)
    notebook_text = page.locator(".jp-Notebook").inner_text()
    assert "rate exceeded" not in notebook_text
    assert "rate exceeded" not in lab_server.log_tail()
