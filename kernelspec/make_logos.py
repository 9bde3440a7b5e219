"""Render logo-svg.svg into the kernelspec PNGs (a maintainer tool, not used at runtime).

The SVG is the single source; Chromium rasterises it so the PNGs match it exactly.
Run from the repository: python kernelspec/make_logos.py
"""

from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
SIZES_PX = (32, 64)


def main() -> None:
    svg = (HERE / "logo-svg.svg").read_text()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for size in SIZES_PX:
                page = browser.new_page(viewport={"width": size, "height": size})
                sized = svg.replace('width="64" height="64"', f'width="{size}" height="{size}"', 1)
                page.set_content(
                    "<html><body style='margin:0;background:transparent'>"
                    + sized
                    + "</body></html>"
                )
                page.locator("svg").screenshot(
                    path=str(HERE / f"logo-{size}x{size}.png"), omit_background=True
                )
                page.close()
        finally:
            browser.close()


if __name__ == "__main__":
    main()
