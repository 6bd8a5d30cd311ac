"""The README's screenshot of the web page: ``fastdiffsr serve`` on a thread, headless Chromium
(Debian's ``chromium``) through Playwright, a training photo's third-size 128x96 crop upscaled with
rdsr-x4, the slider at 40 %, zoomed to 100 %.

    .venv/bin/python docs/screenshot.py ../shared/data/train/BSD200/100075.png docs/serve.png
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from fastdiffsr.serve import running
from fastdiffsr.serve.app import Limits, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        crop = Path(tmp) / "photo.png"
        with Image.open(args.photo) as img:
            img.convert("RGB").resize((img.width // 3, img.height // 3), Image.BICUBIC).crop(
                (0, 0, 128, 96)).save(crop)
        app = create_app(["bicubic", "rdsr-x4", "edgesdsr-x4"], Limits(), Path(tmp) / "jobs")
        with running(app) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"))
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(url)
            page.wait_for_selector("#model option[value='rdsr-x4']", state="attached")
            page.select_option("#model", "rdsr-x4")
            page.set_input_files("#file", str(crop))
            page.click("#go")
            page.wait_for_selector("#result", state="visible", timeout=60_000)
            page.fill("#slider", "40")
            page.dispatch_event("#slider", "input")
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()


if __name__ == "__main__":
    main()
