"""The web app in a real browser: Debian's chromium driven by Playwright (Playwright cannot download
its own browser here, so `executable_path` points at the system one; `.ci/run` installs it).

What a newcomer does and meets: a first visit without phantom messages; upload, compress, download
the code, decode it (file, pasted text, share link); a page reload in the middle of a fit (the fit
runs on the server: the page re-attaches, shows live progress and the fit completes its budget); an
error that stays readable; Stop early on a fit that is still waiting for the model; the phone
layout. Screenshots go to a temporary folder (`scripts/screenshot_app.py` makes the ones in docs/)."""

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


PHONE = {"width": 390, "height": 844}


def _shot_dir(tmp_path: Path) -> Path:
    """Where a test's screenshots go: LORA_CODEC_SHOTS if set (to look at them), else a temporary folder."""
    d = Path(os.environ.get("LORA_CODEC_SHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


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


def _new_page(browser, app_url, viewport=None):  # noqa: F811
    ctx = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}, accept_downloads=True)
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
    pg.js_errors = errors
    return ctx, pg


@pytest.fixture()
def page(browser, app_url):  # noqa: F811
    ctx, pg = _new_page(browser, app_url)
    yield pg
    ctx.close()
    assert not pg.js_errors, f"JavaScript errors on the page: {pg.js_errors[:3]}"


@pytest.fixture()
def second_page(browser, app_url):  # noqa: F811
    """Another visitor (its own browser storage)."""
    ctx, pg = _new_page(browser, app_url)
    yield pg
    ctx.close()


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def _text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def _wait_text(page, elem_id: str, text: str, timeout: int = TIMEOUT_MS) -> None:
    page.wait_for_function(f"(() => {{ const e = document.querySelector('#{elem_id}'); "
                           f"return e && e.innerText.includes({text!r}); }})()", timeout=timeout)


def _enabled(page, elem_id: str) -> bool:
    return page.locator(f"#{elem_id}").is_enabled()


def _wait_enabled(page, elem_id: str, enabled: bool = True, timeout: int = 30_000) -> None:
    page.wait_for_function(f"(() => {{ const e = document.querySelector('#{elem_id}'); "
                           f"return e && e.disabled === {str(not enabled).lower()}; }})()", timeout=timeout)


def _start_compress(page, app_url, steps: int, caption: str = "a grey rabbit leaves its burrow") -> None:
    page.goto(app_url)
    page.wait_for_selector("#compress-btn")
    page.locator("#clip-in input[type=file]").set_input_files(str(EXAMPLE))
    _wait_text(page, "clip-check", "will be coded")
    page.locator("#caption textarea").fill(caption)
    _set_number(page, "fit-steps", steps)
    _wait_text(page, "estimate", f"{steps} steps")
    page.click("#compress-btn")


def _fit_step(page) -> int:
    status = _text(page, "status")
    return int(status.split("step ")[1].split(" ")[0]) if "Fitting step" in status else -1


def test_a_first_visit_has_no_phantom_state(page, app_url, tmp_path):  # noqa: F811
    """A first visit (a reload of it, and a reload after a first compress that failed before making a
    fit) says nothing about a previous fit; the buttons that cannot act are disabled and say why."""
    bad = tmp_path / "notes.txt"
    bad.write_text("not a video")
    for visit in range(3):
        if visit == 2:  # a first compress that fails at once
            page.locator("#clip-in input[type=file]").set_input_files(str(bad))
            page.click("#compress-btn")
            _wait_text(page, "status", "Could not compress")
            _wait_enabled(page, "compress-btn")
            page.wait_for_timeout(1000)  # the browser settles its job id (none was made)
        page.goto(app_url)
        page.wait_for_selector("#compress-btn")
        _wait_text(page, "estimate", "Estimated")
        body = page.locator("body").inner_text().lower()
        for phantom in ("expired", "restored", "no longer on this server", "saved at step", "error"):
            assert phantom not in body, phantom
        assert _text(page, "status").strip() == ""
        assert not _enabled(page, "stop-btn") and not _enabled(page, "more-btn")
        assert "needs a fit" in _text(page, "actions-hint")
        assert page.locator("#open-decode").is_disabled()


def test_compress_download_decode_share_in_a_browser(page, browser, app_url, tmp_path):  # noqa: F811
    shots = _shot_dir(tmp_path)
    page.goto(app_url)
    page.wait_for_selector("#compress-btn")
    banner = page.locator("#backbone-banner").inner_text()
    assert "no visual knowledge" in banner and "Wan2.1-T2V-1.3B" in banner

    # upload the example clip (as a user would: through the file input); the page says what is coded
    page.locator("#clip-in input[type=file]").set_input_files(str(EXAMPLE))
    page.wait_for_selector("#clip-preview video")
    _wait_text(page, "clip-check", "The first 1.06 s will be coded")
    page.locator("#caption textarea").fill("A big grey cartoon rabbit crawls out of his burrow and stretches")
    _wait_text(page, "caption-count", "bytes stored in the code")
    _set_number(page, "fit-steps", 20)
    _wait_text(page, "estimate", "20 steps")

    page.click("#compress-btn")
    _wait_text(page, "status", "Done.")
    status = _text(page, "status")
    total = int(status.split("Done.")[1].split("bytes")[0].strip())
    _wait_enabled(page, "more-btn")
    assert not _enabled(page, "stop-btn")
    assert "Keep improving keeps this fit's settings" in _text(page, "kept")

    # download the code through its link
    with page.expect_download() as dl:
        page.locator("#code-file a").first.click()
    code_path = tmp_path / "downloaded.vov"
    dl.value.save_as(code_path)
    data = code_path.read_bytes()
    assert data[:3] == b"VOV" and len(data) == total
    page.wait_for_selector("#recon video")
    page.wait_for_selector("#metrics table")
    page.screenshot(path=str(shots / "compress.png"), full_page=True)

    # the share link: the page's address carrying the code
    link = page.locator("#share-link input, #share-link textarea").first.input_value()
    code_text = page.locator("#code-text textarea").input_value()
    assert link == app_url.rstrip("/") + "/?code=" + code_text

    # decode the downloaded file in the Decode tab: the status says what was used, one download
    page.get_by_role("tab", name="Decode").click()
    page.locator("#decode-file input[type=file]").set_input_files(str(code_path))
    _wait_text(page, "code-info", f"{total} bytes")
    assert page.locator("#decode-refine input").first.is_disabled()  # no track in this code: nothing to choose
    page.click("#decode-btn")
    _wait_text(page, "decode-status", "Decoded")
    assert "no refinement track" in _text(page, "decode-status")
    assert page.locator("#decoded video").get_attribute("src"), "the decoded video has no source"
    page.screenshot(path=str(shots / "decode.png"), full_page=True)

    # a broken code: a one-line message in the status area (it stays), no traceback
    page.locator("#decode-file button[aria-label='Clear']").first.click()
    page.locator("#decode-text textarea").fill("vov1:not-a-code!!")
    _wait_text(page, "code-info", "Not a valid code")
    page.click("#decode-btn")
    _wait_text(page, "decode-status", "Could not decode")
    assert "corrupt text code" in _text(page, "decode-status") and "Traceback" not in _text(page, "decode-status")

    # the Decode tab's code survives a reload
    page.locator("#decode-text textarea").fill(code_text)
    _wait_text(page, "code-info", f"{total} bytes")
    page.wait_for_function(f"localStorage.getItem('lora_codec_decode_code') === {code_text!r}", timeout=10_000)
    page.reload()
    page.wait_for_selector("#compress-btn")
    page.get_by_role("tab", name="Decode").click()
    page.wait_for_function(f"(() => {{ const t = document.querySelector('#decode-text textarea'); "
                           f"return t && t.value === {code_text!r}; }})()", timeout=30_000)

    # the share link opens the Decode tab with the code, and decodes on one click (another visitor)
    ctx, other = _new_page(browser, app_url)
    try:
        other.goto(link)
        _wait_text(other, "decode-status", "shared code")
        assert other.locator("#decode-text textarea").input_value() == code_text
        other.click("#decode-btn")
        _wait_text(other, "decode-status", "Decoded")
    finally:
        ctx.close()


def test_a_reload_mid_fit_reattaches_and_completes_the_budget(page, app_url):  # noqa: F811
    """Reload in the middle of a fit: the fit goes on on the server, the page shows its live progress
    again and it completes the original budget (not the step it had reached, not a restart)."""
    budget = 300
    _start_compress(page, app_url, budget)
    page.wait_for_function("(() => { const t = document.querySelector('#status').innerText; const m = "
                           "t.match(/Fitting step (\\d+)/); return m && +m[1] >= 40; })()", timeout=TIMEOUT_MS)
    assert _enabled(page, "stop-btn") and not _enabled(page, "more-btn") and not _enabled(page, "compress-btn")
    before = _fit_step(page)
    page.reload()
    page.wait_for_selector("#compress-btn")
    _wait_text(page, "status", "Fitting step", timeout=60_000)
    first = _fit_step(page)
    assert first >= before, (before, first)  # the same fit, not a restart
    page.wait_for_function(f"(() => {{ const m = document.querySelector('#status').innerText.match("
                           f"/Fitting step (\\d+)/); return m && +m[1] > {first}; }})()", timeout=60_000)
    assert f"of {budget}" in _text(page, "status")  # live progress towards the original budget
    assert _enabled(page, "stop-btn")
    _wait_text(page, "status", "Done.")
    assert f"after {budget} fit steps" in _text(page, "status")
    assert page.locator("#code-text textarea").input_value().startswith("vov1:")

    # Keep improving continues the same fit by n steps, also after another reload
    page.reload()
    _wait_text(page, "status", "Restored")
    _wait_enabled(page, "more-btn")
    _set_number(page, "more-steps", 3)
    page.click("#more-btn")
    _wait_text(page, "status", f"after {budget + 3} fit steps")


def test_an_error_stays_readable_and_old_results_go(page, app_url, tmp_path):  # noqa: F811
    """A failed compress: the reason (in the user's words: the file's name, no server path) stays in
    the status area, with no stale progress; the previous run's results are cleared."""
    _start_compress(page, app_url, 10)
    _wait_text(page, "status", "Done.")
    assert page.locator("#code-text textarea").input_value().startswith("vov1:")
    bad = tmp_path / "holiday_notes.mp4"
    bad.write_text("this is not a video")
    page.locator("#clip-in button[aria-label='Clear']").first.click()
    page.locator("#clip-in input[type=file]").set_input_files(str(bad))
    _wait_text(page, "clip-check", "cannot be coded here")
    page.click("#compress-btn")
    _wait_text(page, "status", "Could not compress")
    _wait_enabled(page, "compress-btn")  # the failed compress and what follows it on the page have ended
    page.screenshot(path=str(_shot_dir(tmp_path) / "error.png"), full_page=False)
    status = _text(page, "status")
    assert "Could not compress" in status and "holiday_notes.mp4" in status and "not a readable video file" in status
    assert "/tmp" not in status and "Errno" not in status and "Fitting" not in status and "Reading" not in status
    assert page.locator("#code-text textarea").input_value() == ""
    assert page.locator("#recon video").count() == 0 and page.locator("#code-file a").count() == 0
    overlay = ("() => [...document.querySelectorAll('#status .progress-text, #status .error, #status .eta-bar')]"
               ".filter(e => e.checkVisibility({opacityProperty: true, visibilityProperty: true}))"
               ".map(e => e.innerText)")
    try:  # no "Error" badge or stale progress over the status (one that fades out may take a moment)
        page.wait_for_function(f"({overlay})().length === 0", timeout=30_000)
    except sync_api.TimeoutError:
        pytest.fail(f"still over the status: {page.evaluate(overlay)}")
    assert page.locator("#bytes-table tbody tr").count() <= 1 and "header" not in _text(page, "bytes-table")
    assert _enabled(page, "more-btn") and not _enabled(page, "stop-btn")  # Keep improving continues the previous fit


def test_stop_early_cancels_a_fit_that_is_still_waiting(page, second_page, app_url):  # noqa: F811
    """Two visitors, one model: the second one's compress waits; Stop early cancels it (it never
    starts), and the first one's fit is not disturbed."""
    _start_compress(page, app_url, 1000)
    _wait_text(page, "status", "Fitting step")
    _start_compress(second_page, app_url, 20)
    _wait_text(second_page, "status", "Waiting for the model")
    assert "1 fit ahead" in _text(second_page, "status")
    assert _enabled(second_page, "stop-btn")
    second_page.click("#stop-btn")
    _wait_text(second_page, "status", "Cancelled")
    second_page.wait_for_timeout(2000)
    assert "Cancelled" in _text(second_page, "status") and "Fitting" not in _text(second_page, "status")
    _wait_enabled(second_page, "stop-btn", False)
    page.click("#stop-btn")
    _wait_text(page, "status", "Stopped early")
    second_page.wait_for_timeout(1000)
    assert "Fitting" not in _text(second_page, "status")


def test_the_phone_layout(browser, app_url, tmp_path):  # noqa: F811
    """390x844: every table keeps readable columns (it scrolls sideways instead of one character per
    line) and no button or label clips its text. The screenshot is kept to be looked at."""
    ctx, page = _new_page(browser, app_url, PHONE)
    try:
        _start_compress(page, app_url, 10)
        _wait_text(page, "status", "Done.")
        page.wait_for_selector("#bytes-table table")
        page.locator("#bytes-table").scroll_into_view_if_needed()
        _wait_text(page, "bytes-table", "payload", timeout=10_000)
        # a word or number in a table cell is never broken over lines (one character per line, as before)
        broken = page.eval_on_selector_all("#bytes-table td, #bytes-table th, #metrics td, #metrics th", """els => els
            .flatMap(e => [...e.querySelectorAll('span, div')].filter(x => x.children.length === 0))
            .filter(x => x.innerText.trim() && !/\\s/.test(x.innerText.trim()))
            .filter(x => { const r = document.createRange(); r.selectNodeContents(x);
                           const lines = new Set([...r.getClientRects()].map(q => Math.round(q.top)));
                           return lines.size > 1; })
            .map(x => x.innerText.trim())""")
        assert not broken, broken

        clipped = page.evaluate("""() => [...document.querySelectorAll('button, label span, .label-wrap span')]
            .filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflow !== 'visible')
            .map(e => e.innerText.slice(0, 40))""")
        assert not clipped, clipped
        shots = _shot_dir(tmp_path)
        page.screenshot(path=str(shots / "compress_phone.png"), full_page=True)
        assert (shots / "compress_phone.png").stat().st_size > 10_000
    finally:
        ctx.close()
