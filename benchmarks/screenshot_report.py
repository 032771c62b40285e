"""Screenshot each section of a report.html in headless Chromium (for the README).

    .venv/bin/python benchmarks/screenshot_report.py runs/NAME/report.html --out docs/report

Uses Debian's /usr/bin/chromium through Playwright; writes one small PNG per section
(palette-quantised to keep the repository light).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

SECTIONS = ["summary", "curves", "confusion", "per-class", "galleries", "gradcam", "calibration", "settings"]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("report", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/report"))
    ap.add_argument("--width", type=int, default=1100)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.goto(args.report.resolve().as_uri())
        for section in SECTIONS:
            if section == "galleries":
                page.eval_on_selector("#galleries details", "d => d.open = true")  # one class opened
            path = args.out / f"{section}.png"
            page.locator(f"#{section}").screenshot(path=str(path))
            Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)
            print(f"{path} ({path.stat().st_size / 1024:.0f} KB)")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
