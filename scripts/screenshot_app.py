"""Screenshots of the web app serving a given backbone after one default compress, in Debian's chromium.

    LORA_CODEC_MODEL=small python scripts/screenshot_app.py [--out docs/screenshots/compress_small.png]

Starts the app in this process on 127.0.0.1, uploads `examples/bigbuckbunny_2s.mp4` with a caption,
presses Compress with the page's default settings, waits for the result, and saves a full-page
screenshot (the reconstruction and the equal-bytes x265 comparison included). Prints how long the
compress took. Needs playwright (requirements-dev.txt) and `apt-get install chromium`.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "screenshots", "compress_small.png"))
    ap.add_argument("--port", type=int, default=7871)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import app
    from playwright.sync_api import sync_playwright

    app.serve(args.port)
    assert app.COSTS.ready.wait(300), "the start-up calibration did not finish"
    url = f"http://127.0.0.1:{args.port}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(600_000)
        page.goto(url)
        page.wait_for_selector("#compress-btn")
        page.locator("#clip-in input[type=file]").set_input_files(os.path.join(ROOT, "examples", "bigbuckbunny_2s.mp4"))
        page.wait_for_selector("#clip-preview video")
        page.locator("#caption textarea").fill(CAPTION)
        page.wait_for_function("document.querySelector('#estimate').innerText.includes('Estimated')")
        t0 = time.time()
        page.click("#compress-btn")
        page.wait_for_function("document.querySelector('#status').innerText.includes('Done.')")
        took = time.time() - t0
        page.wait_for_selector("#recon video")
        page.wait_for_selector("#metrics table")
        time.sleep(2)  # let the video elements paint their first frame
        page.screenshot(path=args.out, full_page=True)
        print(f"{app.BACKBONE.name}: compress with the page's defaults took {took:.1f} s; status: "
              f"{page.locator('#status').inner_text()[:300]!r}; wrote {args.out}")
        browser.close()
    app.demo.close()


if __name__ == "__main__":
    main()
