"""``python -m benchmarks.screenshots``: every tab of the real app, as a person sees it.

Starts ``python -m app`` with the shipped models (``assets/models``) and the benchmark
results, waits until UMAP is warm, then drives headless Debian Chromium through a search
(a shipped example photo, all three models), a clustering of the shipped examples with the
attack on the set, an attack on a gallery image and the robustness report, and saves one
full-page PNG per tab to ``docs/screenshots/``. Needs ``chromium`` and ``playwright``
(``EAT_BROWSER=1 bash scripts/setup.sh``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from . import command_parser
from .loadcheck import REPO, start_server, wait_until_warm

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def capture(url: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    examples = sorted((REPO / "assets" / "examples").glob("*.*"))
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_selector("#search-upload")

        def shot(name: str) -> None:
            # lazy images load only once seen: bring each into view, wait until all decoded
            for img in page.locator("img:visible").all():
                img.scroll_into_view_if_needed()
            page.wait_for_function(
                "[...document.querySelectorAll('img')].filter(i => i.offsetParent)"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            page.evaluate("window.scrollTo(0, 0)")
            path = out / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)

        photo = next(p for p in examples if "photo" in p.name)
        page.set_input_files("#search-upload input[type=file]", str(photo))
        page.wait_for_selector("#search-results-eat img")
        page.wait_for_selector("#search-results-vanilla img")
        shot("1-search")

        page.get_by_role("tab", name="Cluster").click()
        page.set_input_files("#cluster-upload input[type=file]", [str(p) for p in examples])
        page.wait_for_selector("#cluster-upload table")
        page.locator("#cluster-attack").click()
        page.locator("#cluster-attack-on input").check()
        page.click("#cluster-button")
        page.wait_for_selector("#cluster-attack-map img")
        shot("2-cluster")

        page.get_by_role("tab", name="Attack lab").click()
        page.locator("#lab-gallery .thumbnail-item").nth(2).click()
        page.click("#lab-button")
        page.wait_for_selector("#lab-eat-adv-hits img")
        page.wait_for_selector("#lab-map img")
        shot("3-attack-lab")

        page.get_by_role("tab", name="Robustness report").click()
        page.wait_for_selector("#report-plots img")
        for img in page.locator("#report-plots img").all():  # lazy images load when seen
            img.scroll_into_view_if_needed()
        page.wait_for_function(
            "[...document.querySelectorAll('#report-plots img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        shot("4-report")
        browser.close()
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("screenshots", __doc__)
    parser.add_argument("--models", default=str(REPO / "assets" / "models"), help="models folder")
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"), help="PNG folder")
    parser.add_argument("--gallery-size", type=int, default=None, help="gallery subset")
    parser.add_argument("--cache-dir", default=None, help="app cache dir (default: the app's)")
    parser.add_argument("--start-timeout", type=float, default=600, help="wait to serve (s)")
    parser.add_argument("--warm-timeout", type=float, default=600, help="wait for UMAP (s)")
    args = parser.parse_args(argv)
    log = Path(tempfile.mkdtemp(prefix="eat-screenshots-")) / "server.log"
    proc, url, _ = start_server(args, log)
    try:
        wait_until_warm(url, args.warm_timeout)
        for path in capture(url, Path(args.out)):
            print(path)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
