"""The page's clip input in a real browser takes every file `encode` reads: no type filter on the
file input (a raw .h264/.hevc stream, an .m2ts or a file without extension has no video MIME type,
so a video-only input refused them), the server probes the content. No compress here (CPU time):
the estimate panel shows the probed geometry and rate, the Preview player gets a playable video."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT
from .test_app import app_module, app_url  # noqa: F401  (the same in-process server)
from .test_browser import DOCS_SHOTS, browser, page  # noqa: F401  (Debian's chromium, local-only page)

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

INPUTS = ROOT / "tests" / "data" / "inputs"


def _upload(page, app_url, path: Path) -> None:  # noqa: F811
    page.goto(app_url)
    page.wait_for_selector("#compress-btn")
    box = page.locator("#clip-in input[type=file]")
    assert box.get_attribute("accept") in (None, ""), "the clip input filters file types"
    box.set_input_files(str(path))


def _estimate_shows(page, text: str) -> None:
    page.wait_for_function(f"document.querySelector('#estimate').innerText.includes({text!r})")


@pytest.mark.parametrize("name, source", [
    ("raw_8fps.h264", "source 320x180, 8 fps"),
    ("camcorder.m2ts", "source 320x180, 25 fps, 2.00 s"),
    ("raw_12fps.hevc:noext", "source 320x180, 12 fps"),
])
def test_any_video_file_through_the_page(page, app_url, tmp_path, name, source):  # noqa: F811
    path = INPUTS / name.split(":")[0]
    if name.endswith(":noext"):  # the content decides, not the name
        path = Path(shutil.copy(path, tmp_path / "clip"))
    _upload(page, app_url, path)
    _estimate_shows(page, source)
    page.wait_for_function("(() => { const v = document.querySelector('#clip-preview video');"
                           " return v && v.src && v.readyState >= 1 && v.videoWidth === 320; })()")
    assert "Video not playable" not in page.locator("body").inner_text()
    if name == "raw_8fps.h264":
        want = os.environ.get("LORA_CODEC_UPDATE_SCREENSHOTS", "") not in ("", "0")
        shots = DOCS_SHOTS if want else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "raw_stream_upload.png"), full_page=True)
        assert (shots / "raw_stream_upload.png").stat().st_size > 10_000


def test_a_text_file_gets_a_clear_message(page, app_url, tmp_path):  # noqa: F811
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a video")
    _upload(page, app_url, bad)
    toast = page.locator(".toast-body, [data-testid='toast-body']").first
    toast.wait_for()
    text = toast.inner_text()
    assert "not a readable video file" in text and "Traceback" not in text
    assert page.locator("#clip-preview video").count() == 0


def test_the_example_still_loads(page, app_url):  # noqa: F811
    page.goto(app_url)
    page.wait_for_selector("#compress-btn")
    page.locator("#examples").get_by_text("bigbuckbunny_2s.mp4").first.click()
    _estimate_shows(page, "source 320x180, 16 fps")
    page.wait_for_selector("#clip-preview video")
