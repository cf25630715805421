"""The web app in a real browser: Debian's chromium driven by Playwright (Playwright cannot download
its own browser here, so `executable_path` points at the system one; `.ci/run` installs it).

Uploads the example clip, compresses it with a tiny fit budget, downloads the code, decodes the
downloaded file in the Decode tab, and saves screenshots of both tabs to docs/screenshots/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .conftest import EXAMPLE, ROOT
from .test_app import app_module, app_url  # noqa: F401  (the same in-process server)

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

CHROMIUM = os.environ.get("LORA_CODEC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
DOCS_SHOTS = ROOT / "docs" / "screenshots"


def _shot_dir(tmp_path: Path) -> Path:
    """docs/screenshots when asked (LORA_CODEC_UPDATE_SCREENSHOTS=1) or when they are missing, else a
    temporary folder, so that a test run does not rewrite the committed pictures."""
    want = os.environ.get("LORA_CODEC_UPDATE_SCREENSHOTS", "") not in ("", "0")
    missing = not all((DOCS_SHOTS / n).exists() for n in ("compress.png", "decode.png"))
    return DOCS_SHOTS if (want or missing) else tmp_path
TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"chromium not found at {CHROMIUM} (.ci/run installs Debian's chromium)")
        pytest.skip(f"chromium not found at {CHROMIUM}; apt-get install chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser, app_url):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    base = app_url.rstrip("/")
    outside: list[str] = []

    def only_the_app(route):  # nothing leaves this machine
        url = route.request.url
        if url.startswith(base) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    pg.route("**/*", only_the_app)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors[:3]}"


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def test_compress_download_decode_in_a_browser(page, app_url, tmp_path):  # noqa: F811
    page.goto(app_url)
    page.wait_for_selector("#compress-btn")
    banner = page.locator("#backbone-banner").inner_text()
    assert "no visual knowledge" in banner and "Wan2.1-T2V-1.3B" in banner

    # upload the example clip (as a user would: through the file input), caption, tiny budget
    page.locator("#clip-in input[type=file]").set_input_files(str(EXAMPLE))
    page.wait_for_selector("#clip-preview video")
    page.locator("#caption textarea").fill("A big grey cartoon rabbit crawls out of his burrow and stretches")
    _set_number(page, "fit-steps", 20)
    page.wait_for_function("document.querySelector('#estimate').innerText.includes('20 steps')")
    assert "Estimated time" in page.locator("#estimate").inner_text()

    page.click("#compress-btn")
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done.')", timeout=TIMEOUT_MS)
    status = page.locator("#status").inner_text()
    total = int(status.split("Done.")[1].split("bytes")[0].strip())

    # download the code through its link
    with page.expect_download() as dl:
        page.locator("#code-file a").first.click()
    code_path = tmp_path / "downloaded.vov"
    dl.value.save_as(code_path)
    data = code_path.read_bytes()
    assert data[:3] == b"VOV" and len(data) == total
    page.wait_for_selector("#recon video")
    page.wait_for_selector("#metrics table")
    shots = _shot_dir(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "compress.png"), full_page=True)

    # decode the downloaded file in the Decode tab
    page.get_by_role("tab", name="Decode").click()
    page.locator("#decode-file input[type=file]").set_input_files(str(code_path))
    page.wait_for_function(
        f"document.querySelector('#code-info') && document.querySelector('#code-info').innerText.includes('{total} bytes')")
    page.click("#decode-btn")
    page.wait_for_function("document.querySelector('#decode-status').innerText.includes('Decoded')",
                           timeout=TIMEOUT_MS)
    src = page.locator("#decoded video").get_attribute("src")
    assert src, "the decoded video has no source"
    page.screenshot(path=str(shots / "decode.png"), full_page=True)

    # a broken code: a one-line message on the page, no traceback
    page.locator("#decode-file button[aria-label='Clear']").first.click()
    page.locator("#decode-text textarea").fill("vov1:not-a-code!!")
    page.wait_for_function("document.querySelector('#code-info').innerText.includes('Not a valid code')")
    page.click("#decode-btn")
    toast = page.locator(".toast-body, [data-testid='toast-body']").first
    toast.wait_for()
    text = toast.inner_text()
    assert "corrupt text code" in text and "Traceback" not in text
    assert (shots / "compress.png").stat().st_size > 10_000 and (shots / "decode.png").stat().st_size > 10_000


def test_a_page_reload_keeps_the_fit(page, app_url):  # noqa: F811
    """Compress, reload the page: the last result is shown again, and Keep improving continues the
    same fit (k + n steps) - the job id lives in the browser (gr.BrowserState)."""
    page.goto(app_url)
    page.wait_for_selector("#compress-btn")
    page.locator("#clip-in input[type=file]").set_input_files(str(EXAMPLE))
    page.wait_for_selector("#clip-preview video")
    _set_number(page, "fit-steps", 10)
    page.wait_for_function("document.querySelector('#estimate').innerText.includes('10 steps')")
    page.click("#compress-btn")
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done.')", timeout=TIMEOUT_MS)
    assert "after 10 fit steps" in page.locator("#status").inner_text()

    page.reload()
    page.wait_for_function("document.querySelector('#status') && "
                           "document.querySelector('#status').innerText.includes('Restored')")
    assert "after 10 fit steps" in page.locator("#status").inner_text()
    assert page.locator("#code-text textarea").input_value().startswith("vov1:")
    _set_number(page, "more-steps", 3)
    page.click("#more-btn")
    page.wait_for_function("document.querySelector('#status').innerText.includes('after 13 fit steps')",
                           timeout=TIMEOUT_MS)
