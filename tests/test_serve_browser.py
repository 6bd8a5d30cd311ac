"""End to end: ``fastdiffsr serve`` on a real port, its page in headless Chromium (Debian's
``chromium``, which ``.ci/run`` installs; Playwright drives it): upload, wait for the result,
check its size, move the before/after slider, zoom."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from fastdiffsr.serve import running
    from fastdiffsr.serve.app import Limits, create_app

    app = create_app(["bicubic", "rdsr-x4"], Limits(), tmp_path_factory.mktemp("jobs"))
    with running(app) as url:
        yield url


@pytest.fixture(scope="module")
def page():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser.new_page(viewport={"width": 1100, "height": 900})
        browser.close()


def photo(path: Path, width: int, height: int) -> Path:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([128 + 100 * np.sin(xx / 7), 128 + 100 * np.cos(yy / 5),
                    (xx * 3 + yy * 2) % 256], axis=2)
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


def upscale_on_page(page, server: str, model: str, src: Path) -> None:
    """Open the page, pick ``model`` and ``src``, upscale and wait for the result."""
    page.goto(server)
    page.wait_for_selector(f"#model option[value='{model}']", state="attached")
    page.select_option("#model", model)
    page.set_input_files("#file", str(src))
    page.click("#go")
    page.wait_for_selector("#result", state="visible", timeout=60_000)


@pytest.mark.parametrize("model", ["bicubic-x4", "rdsr-x4"])
def test_upload_upscale_compare_and_download_in_a_browser(server, page, tmp_path, model):
    upscale_on_page(page, server, model, photo(tmp_path / "photo.png", 48, 36))
    assert "x4" in page.text_content("#model-info")
    assert page.is_hidden("#steps-field")  # neither model samples in steps
    assert page.is_hidden("#error")
    assert "tile 1 of 1" in page.text_content("#progress-text")
    size = page.eval_on_selector("#after", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [192, 144]
    assert page.text_content("#size") == "192 x 144 px"

    page.select_option("#zoom", "2")  # full resolution, twice: 384 px wide, pixels shown
    box = page.locator("#stage").bounding_box()
    assert round(box["width"]) == 384 and round(box["height"]) == 288
    page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + box["height"] / 2)
    assert abs(float(page.input_value("#slider")) - 25) < 2
    clip = page.eval_on_selector("#before", "img => img.style.clipPath")
    assert clip.startswith("inset(0px 7") or clip.startswith("inset(0 7")
    page.fill("#slider", "80")
    page.dispatch_event("#slider", "input")
    assert page.eval_on_selector("#divider", "d => d.style.left") == "80%"

    href = page.get_attribute("#download", "href")
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == f"photo_{model}.png" and href.endswith("/result")
    assert Image.open(saved).size == (192, 144)
    page.screenshot(path=str(tmp_path / "page.png"))


def test_a_bad_file_shows_a_readable_error(server, page, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    page.goto(server)
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(bad))
    page.click("#go")
    page.wait_for_selector("#error", state="visible", timeout=30_000)
    assert "broken.png" in page.text_content("#error")


def test_a_compressed_jpeg_shows_the_note_until_the_next_upscale(server, page, tmp_path):
    jpeg = tmp_path / "phone.jpg"
    Image.open(photo(tmp_path / "p.png", 48, 36)).save(jpeg, quality=60)
    upscale_on_page(page, server, "rdsr-x4", jpeg)
    assert page.is_visible("#note")
    assert "quality 60" in page.text_content("#note")
    assert "rdsr-x4-real" in page.text_content("#note")
    page.select_option("#model", "bicubic-x4")  # interpolation: nothing to say
    page.click("#go")
    page.wait_for_selector("#go:not([disabled])", timeout=60_000)  # that job is over
    assert page.is_hidden("#note") and page.is_hidden("#error")
