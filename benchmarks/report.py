"""Benchmark: the interactive explanation report (`bagnet explain`'s report.html) — its bytes per image and how fast
a report of many images opens in Chromium.

1. Explain ``--images`` Imagenette validation images (default 100) with the embedded default model at its own
   resolution (top-3 classes, stride 1: the default), save the report, and count its bytes per image; beside it the
   bytes the earlier static report embedded for the same images (its base64 PNGs: every overlay, the patch figure and
   the input, i.e. the PNG files in ``images/`` × 4/3). Then the same at the ImageNet models' scale (short side
   ``--large`` px, default 256) on the first ``--large-images`` images.
2. Open the 100-image report in headless Chromium (Playwright, /usr/bin/chromium) ``--opens`` times: milliseconds from
   navigation to the load event, then from scrolling to the first image to its map drawn (the page draws each map
   when it comes into view); medians. Then the time to redraw one map on a class switch.

Usage:  .venv/bin/python benchmarks/report.py [--images 100] [--large 256] [--large-images 10] [--opens 5]
        [--json benchmarks/results/report.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from runinfo import run_info  # benchmarks/runinfo.py (this folder is on sys.path when the script runs)


def explain_report(files: list[str], out: Path, size=None) -> dict:
    """Explain ``files`` into ``out`` (unless a finished report is there: ``--work`` keeps them) and count bytes."""
    import bagnet
    from bagnet.explanation import ExplainConfig

    if not (out / "report.html").is_file():
        bagnet.explain(files, "default", ExplainConfig(size=size), progress=True).save(out)
    saved = json.loads((out / "explanations.json").read_text())
    images = len(saved["images"])
    page = (out / "report.html").stat().st_size
    pngs = sum(p.stat().st_size for p in (out / "images").rglob("*.png"))
    return {"images": images, "model": saved["model"],
            "short_side_px": statistics.median(min(e["size"]) for e in saved["images"]),
            "report_bytes": page, "bytes_per_image": page / images,
            "static_report_bytes_per_image": pngs * 4 / 3 / images}


def open_times(page: Path, opens: int) -> dict:
    from playwright.sync_api import sync_playwright

    loads, drawn, switch = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        for _ in range(opens):
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            tab.goto(page.as_uri())
            tab.wait_for_load_state("load")
            loads.append(tab.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
            # the first image's section lies below the index of all images: go there, time its map's drawing
            start = tab.evaluate("() => { document.getElementById('img0').scrollIntoView(); "
                                 "return performance.now(); }")
            tab.wait_for_selector("#img0[data-drawn='0']", state="attached")
            drawn.append(tab.evaluate("performance.now()") - start)
            t = tab.evaluate("() => { const t = performance.now(); window.bagnetViewers[0].select(1); "
                             "return performance.now() - t; }")
            switch.append(t)
            tab.close()
        browser.close()
    return {"opens": opens, "load_ms_median": statistics.median(loads), "first_map_ms_median": statistics.median(drawn),
            "load_ms": loads, "first_map_ms": drawn, "class_switch_ms_median": statistics.median(switch)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--large", type=int, default=256)
    parser.add_argument("--large-images", type=int, default=10)
    parser.add_argument("--opens", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep the reports in this folder (default: a temporary "
                                                                  "one)")
    args = parser.parse_args()
    import bagnet

    data = bagnet.data.imagenette("val")
    files = [str(data.samples[i][0]) for i in range(0, len(data), max(1, len(data) // args.images))][:args.images]
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        own = explain_report(files, work / "own")
        large = explain_report(files[:args.large_images], work / "large", size=args.large)
        opened = open_times(work / "own" / "report.html", args.opens)
    result = {"benchmark": "report", "own_resolution": own, "large": large, "open": opened,
              "budget_bytes_per_image": 1_000_000, "budget_open_ms": 2000, "run": run_info()}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
