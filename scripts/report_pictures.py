"""The README's pictures of the interactive report: `bagnet explain --samples` (the embedded default model, its own
resolution, top 3), opened in headless Chromium (Playwright, /usr/bin/chromium) at two window sizes, a patch of the
first photo pinned with a click and the second class chosen; written to docs/results/report-wide.png and
docs/results/report-narrow.png.

Usage:  python scripts/report_pictures.py [--out docs/results]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"wide": (1200, 760), "narrow": (420, 900)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from bagnet.cli import main as bagnet

    with tempfile.TemporaryDirectory() as tmp:
        assert bagnet(["explain", "--samples", "--out", tmp, "--no-progress"]) == 0
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            for name, (width, height) in SIZES.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto((Path(tmp) / "report.html").as_uri())
                section = page.locator("#img1")  # chelsea, the cat
                stage = section.locator(".stage")
                stage.scroll_into_view_if_needed()
                page.wait_for_selector("#img1[data-drawn='0']")
                box = stage.bounding_box()
                page.mouse.click(box["x"] + 0.36 * box["width"], box["y"] + 0.42 * box["height"])  # an eye
                section.locator("h2").scroll_into_view_if_needed()
                path = args.out / f"report-{name}.png"
                page.screenshot(path=str(path))
                print(f"wrote {path} ({width}×{height} window)")
                page.close()
            browser.close()


if __name__ == "__main__":
    main()
