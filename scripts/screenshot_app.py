"""Screenshots of the web app's two tabs, on a desktop (1280x900) and a phone (390x844), after one
compress with the page's default settings, in Debian's chromium.

    LORA_CODEC_MODEL=small python scripts/screenshot_app.py [--out-dir docs/screenshots]

Starts the app in this process on 127.0.0.1, uploads `examples/bigbuckbunny_2s.mp4` with a caption,
presses Compress with the page's defaults, waits for the result, opens the code in the Decode tab and
decodes it, and saves full-page screenshots: compress.png, decode.png (desktop) and compress_phone.png,
decode_phone.png (phone). Prints how long the compress took. Needs playwright (requirements-dev.txt)
and `apt-get install chromium`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
CAPTION = "A big grey cartoon rabbit crawls out of his burrow under a tree on a grassy hill and stretches"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def _wait_text(page, elem_id: str, text: str) -> None:
    page.wait_for_function(f"(() => {{ const e = document.querySelector('#{elem_id}'); "
                           f"return e && e.innerText.includes({text!r}); }})()")


def _settle(page) -> None:
    """Let video elements paint a frame and the layout settle before a screenshot."""
    page.wait_for_timeout(1500)
    page.evaluate("() => document.querySelectorAll('video').forEach(v => { try { v.currentTime = 0.5; } "
                  "catch (e) {} })")
    page.wait_for_timeout(1500)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "screenshots"))
    ap.add_argument("--port", type=int, default=7871)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import app
    from playwright.sync_api import sync_playwright

    os.makedirs(args.out_dir, exist_ok=True)
    out = {name: os.path.join(args.out_dir, f"{name}.png")
           for name in ("compress", "decode", "compress_phone", "decode_phone")}
    app.serve(args.port)
    assert app.COSTS.ready.wait(300), "the start-up calibration did not finish"
    url = f"http://127.0.0.1:{args.port}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS, headless=True)
        page = browser.new_page(viewport=DESKTOP)
        page.set_default_timeout(900_000)
        page.goto(url)
        page.wait_for_selector("#compress-btn")
        page.locator("#clip-in input[type=file]").set_input_files(os.path.join(ROOT, "examples", "bigbuckbunny_2s.mp4"))
        page.wait_for_selector("#clip-preview video")
        page.locator("#caption textarea").fill(CAPTION)
        _wait_text(page, "estimate", "Estimated")
        _wait_text(page, "clip-check", "will be coded")
        t0 = time.time()
        page.click("#compress-btn")
        _wait_text(page, "status", "Done.")
        took = time.time() - t0
        page.wait_for_selector("#recon video")
        page.wait_for_selector("#metrics table")
        page.wait_for_function("!document.querySelector('#more-btn').disabled")
        _settle(page)
        page.screenshot(path=out["compress"], full_page=True)
        status = page.locator("#status").inner_text()

        page.set_viewport_size(PHONE)
        _settle(page)
        page.screenshot(path=out["compress_phone"], full_page=True)

        page.set_viewport_size(DESKTOP)
        page.click("#open-decode")
        _wait_text(page, "code-info", "bytes")
        page.click("#decode-btn")
        _wait_text(page, "decode-status", "Decoded")
        page.wait_for_selector("#decoded video")
        _settle(page)
        page.screenshot(path=out["decode"], full_page=True)
        page.set_viewport_size(PHONE)
        _settle(page)
        page.screenshot(path=out["decode_phone"], full_page=True)
        browser.close()
    print(f"{app.BACKBONE.name}: compress with the page's defaults took {took:.1f} s; status: {status[:300]!r}; "
          f"wrote {', '.join(out.values())}")
    app.demo.close()


if __name__ == "__main__":
    main()
