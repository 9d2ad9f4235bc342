"""The app in headless Debian Chromium: search, cluster, attack — as a person would.

Screenshots are saved to ``test-artifacts/app/`` for a human to look at.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from benchmarks.screenshots import CHROMIUM, CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "app"
EXAMPLES = sorted((REPO / "assets" / "examples").glob("*.*"))
TIMEOUT_MS = 90_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium"),
]


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.requested_hosts = set()
        page.on("request", lambda request: page.requested_hosts.add(urlsplit(request.url).hostname))
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server)
        page.wait_for_selector("#search-upload")
        yield page
        browser.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_search_an_uploaded_photo(page):
    page.set_input_files("#search-upload input[type=file]", str(REPO / EXAMPLES[-1]))
    for key in ("eat", "baseline", "vanilla"):  # all three models, side by side
        page.wait_for_selector(f"#search-results-{key} img")
    page.wait_for_selector("#search-seen img")
    assert page.locator("#search-results-eat .gallery-item").count() == 8
    # every thumbnail and both inlined pictures loaded (none broken)
    page.wait_for_function(
        "[...document.querySelectorAll('#search-results img, #search-query img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    info = page.inner_text("#search-info")
    assert "top hit" in info and "Searched with your upload" in info
    _shot(page, "1-search-photo")


def test_the_search_button_is_on_the_first_screen_at_1280x720(page):
    page.set_viewport_size({"width": 1280, "height": 720})
    try:
        page.evaluate("window.scrollTo(0, 0)")
        box = page.locator("#search-button").bounding_box()
        assert box is not None and box["y"] + box["height"] <= 720, box
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})


def test_pick_an_example(page):
    page.locator("#search-examples .thumbnail-item").nth(1).click()  # the trouser
    page.wait_for_function(
        "document.querySelector('#search-info').innerText.includes('the example trouser')"
    )
    assert "top hit *Trouser*" in page.inner_text("#search-info") or "top hit Trouser" in (
        page.inner_text("#search-info")
    )


def test_clearing_an_upload_forgets_the_example_too(page):
    """Example → upload → clear → Search: nothing is searched quietly; the user is told."""
    page.locator("#search-examples .thumbnail-item").nth(1).click()
    page.wait_for_function(
        "document.querySelector('#search-info').innerText.includes('example trouser')"
    )
    page.set_input_files("#search-upload input[type=file]", str(REPO / EXAMPLES[-1]))
    page.wait_for_function(
        "document.querySelector('#search-info').innerText.includes('your upload')"
    )
    # the upload is the query now: the example is no longer highlighted
    page.wait_for_function(
        "document.querySelectorAll('#search-examples .thumbnail-item.selected').length === 0"
    )
    page.wait_for_selector("#search-upload .file-preview")
    clear = page.locator("#search-upload button[aria-label='Clear']")
    clear.wait_for(state="attached")
    page.hover("#search-upload")  # the × shows on hover
    clear.click(force=True)
    page.click("#search-button")
    page.wait_for_function(
        "document.querySelector('#search-info').innerText.includes('Nothing to show')"
    )
    # the toast comes from the queued follow-up, a moment after the unqueued search's answer
    page.get_by_text("No query image").first.wait_for()
    for close in page.locator(".toast-close").all():
        close.click()


def test_odd_file_names_show_as_typed_not_escaped_or_linked(page, tmp_path):
    """Names once showed backslashes (Markdown escapes) and URL-like names became links."""
    import shutil

    name = "www.summer_look-2 (1) [x].png"  # (the browser itself drops a "*")
    odd = tmp_path / name
    shutil.copyfile(REPO / EXAMPLES[1], odd)
    page.set_input_files("#search-upload input[type=file]", str(odd))
    page.wait_for_function(
        "n => document.querySelector('#search-info').innerText.includes(n)", arg=name
    )
    info = page.inner_text("#search-info")
    assert f"your upload {name}" in info and "\\" not in info
    assert page.locator("#search-info a").count() == 0
    clear = page.locator("#search-upload button[aria-label='Clear']")  # for the next test
    page.hover("#search-upload")
    clear.click(force=True)
    page.wait_for_selector("#search-upload input[type=file]", state="attached")


def test_a_text_file_gives_a_readable_error(page, tmp_path):
    bad = tmp_path / "holiday.jpg"
    bad.write_text("not a photo")
    page.set_input_files("#search-upload input[type=file]", str(bad))
    toast = page.get_by_text("holiday.jpg: not an image file")
    toast.wait_for()
    # the last result is cleared, not left under the error as if it were this one's
    page.wait_for_function(
        "document.querySelector('#search-info').innerText.includes('Nothing to show')"
    )
    assert page.locator("#search-results-eat .gallery-item").count() == 0
    _shot(page, "2-search-error")
    for close in page.locator(".toast-close").all():
        close.click()


def test_cluster_an_uploaded_set(page, tmp_path):
    page.get_by_role("tab", name="Cluster").click()
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files(
        "#cluster-upload input[type=file]", [str(p) for p in EXAMPLES] + [str(bad)]
    )
    page.wait_for_selector("#cluster-upload .file-preview, #cluster-upload table")
    page.click("#cluster-button")
    page.wait_for_selector("#cluster-gallery-1 img")
    page.wait_for_selector("#cluster-map img")
    info = page.inner_text("#cluster-info")
    assert "9 images" in info and "notes.png" in info
    assert page.locator("[id^=cluster-gallery-] .gallery-item").count() == 9
    _shot(page, "3-cluster")


def test_attack_a_gallery_image(page):
    page.get_by_role("tab", name="Attack lab").click()
    before = page.input_value("#lab-item input")
    page.locator("#lab-gallery .thumbnail-item").nth(2).click()  # a pullover
    page.wait_for_function(
        "before => document.querySelector('#lab-item input').value !== before", arg=before
    )
    item = page.input_value("#lab-item input")
    page.click("#lab-button")
    for key in ("vanilla", "baseline", "eat"):
        page.wait_for_selector(f"#lab-{key}-adv img")
        page.wait_for_selector(f"#lab-{key}-adv-hits img")
    page.wait_for_selector("#lab-map img")
    numbers = page.inner_text("#lab-numbers")
    assert f"gallery item {item}" in numbers and "Pullover" in numbers
    assert "vanilla" in numbers and "\nEAT\t" in numbers and "true-class rank" in numbers
    assert "\nbaseline\t" in numbers
    _shot(page, "4-attack-lab")


def test_a_failed_upload_in_the_lab_is_not_replaced_by_a_gallery_item(page, tmp_path):
    """Pick a gallery item, then upload a bad file: Attack names the bad file, it does not
    quietly attack the item picked before while the box shows the bad upload."""
    for close in page.locator(".toast-close").all():
        close.click()
    before = page.input_value("#lab-item input")
    page.locator("#lab-gallery .thumbnail-item").nth(1).click()  # not the item picked before
    page.wait_for_function(
        "before => document.querySelector('#lab-item input').value !== before", arg=before
    )
    assert page.input_value("#lab-item input") != "-1"
    bad = tmp_path / "snapshot.png"
    bad.write_text("not an image")
    page.set_input_files("#lab-upload input[type=file]", str(bad))
    # the failed preview forgets the picked item (the toast may come and go meanwhile)
    page.wait_for_function("document.querySelector('#lab-item input').value === '-1'")
    for close in page.locator(".toast-close").all():
        close.click()
    page.click("#lab-button")
    page.wait_for_function(
        "document.querySelector('#lab-numbers').innerText.includes('the last attack failed')"
    )
    assert "snapshot.png: not an image file" in page.inner_text("body")
    for close in page.locator(".toast-close").all():
        close.click()


def test_report_tab(page):
    """The tab opens with the served models (their folder's README: the test models have
    none, so it names them); the full report is folded away until opened."""
    page.get_by_role("tab", name="Robustness report").click()
    page.wait_for_selector("#report-served")
    served = page.inner_text("#report-served")
    assert "The models served here" in served and "EAT ensemble" in served
    assert not page.get_by_text("No benchmark results yet").is_visible()
    page.get_by_text("The full report").click()
    page.get_by_text("No benchmark results yet").wait_for()
    _shot(page, "5-report")


def test_report_plots_show_whole_one_per_row(page, empty_results):
    """A wide plot and a tall one, each shown whole at its own aspect: not cut at the
    bottom by the gallery's box, nor squeezed into a square cell (a probe finding)."""
    from PIL import Image, ImageDraw

    written = []
    for name, size in (("a_wide_plot", (1400, 700)), ("b_tall_plot", (700, 1000))):
        image = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(image)
        draw.rectangle([0, size[1] - 40, size[0] - 1, size[1] - 1], fill="black")  # an x-axis
        path = empty_results / f"{name}.png"
        image.save(path)
        written.append(path)
    try:
        page.get_by_role("tab", name="Robustness report").click()
        page.locator("#report-button").click()
        page.wait_for_function(
            "document.querySelectorAll('#report-plots img').length === 2 && "
            "[...document.querySelectorAll('#report-plots img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        shown = page.evaluate(
            """() => {
                const box = document.querySelector('#report-plots').getBoundingClientRect();
                return [...document.querySelectorAll('#report-plots img')].map(i => {
                    const r = i.getBoundingClientRect();
                    return {top: r.top, bottom: r.bottom, width: r.width, height: r.height,
                            ratio: i.naturalWidth / i.naturalHeight,
                            boxTop: box.top, boxBottom: box.bottom};
                });
            }"""
        )
        for img in shown:
            assert img["boxTop"] <= img["top"] and img["bottom"] <= img["boxBottom"] + 1, img
            assert img["width"] / img["height"] == pytest.approx(img["ratio"], rel=0.03), img
        assert shown[0]["bottom"] <= shown[1]["top"] + 1, shown  # one per row
        _shot(page, "6-report-plots")
    finally:
        for path in written:
            path.unlink()


def test_nothing_is_fetched_from_outside(page):
    """No fonts, analytics or scripts from the internet: every request stays local."""
    assert page.requested_hosts == {"127.0.0.1"}, page.requested_hosts


def test_artifacts_written():
    shots = sorted(p.name for p in ARTIFACTS.glob("*.png"))
    assert len(shots) >= 5, shots
