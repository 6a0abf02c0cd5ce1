"""The try-it page at /, end to end in a real browser: Debian's chromium driven by Playwright, against
the real server on loopback. Screenshots go to test-artifacts/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import ARTIFACTS, MATERIAL_TOTALS, ROOT

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); `make test` installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Debian's browser, never one Playwright would download.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server_url):
    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone-sized screen
    page = context.new_page()
    page.goto(server_url + "/")
    page.wait_for_selector("#model option[value='mnist_cnn_b']", state="attached")
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page-{name}.png"), full_page=True)


def expect_top_label(page, label: str) -> None:
    """Retries until the page shows ``label`` first (earlier answers, e.g. mid-stroke, come and go)."""
    from playwright.sync_api import expect

    expect(page.locator("#predictions li:first-child .label")).to_have_text(label, timeout=20_000)


def test_before_any_image_the_heatmap_panel_says_what_to_do(page):
    assert page.is_visible("#heat-empty") and "Draw a digit or choose an image" in page.inner_text("#heat-empty")
    assert not page.is_visible("#overlay")  # no empty <img> boxes, no alt texts printed over each other
    assert not page.is_visible("#judgement")
    # The external accuracy sits next to the model picker, one line per test-only set.
    page.wait_for_selector("#external dt")
    assert page.locator("#external dt").count() == 3
    assert "printed digits in fonts it never saw" in page.inner_text("#external")
    screenshot(page, "empty")


def test_a_photo_shows_its_heatmap_over_the_visible_photo_and_the_judgement(page):
    page.select_option("#model", "resnet_small")
    page.set_input_files("#file", str(EXAMPLES / "printed_4_photo.jpg"))
    expect_top_label(page, "4")
    page.wait_for_function("document.getElementById('overlay-heat').naturalWidth > 0")
    assert page.is_visible("#overlay") and not page.is_visible("#heat-empty")
    assert page.eval_on_selector("#overlay-heat", "el => getComputedStyle(el).opacity") == "0.5"
    base, heat = page.locator("#overlay-base").bounding_box(), page.locator("#overlay-heat").bounding_box()
    assert base == heat and base["height"] > 100  # the map covers exactly the photo, at half opacity
    judgement = page.inner_text("#judgement")
    assert judgement.startswith(("looks like 4", "not sure: looks like 4"))
    screenshot(page, "photo")


def test_drawing_a_stroke_gives_a_prediction(page):
    pad = page.locator("#pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.85, steps=12)
    page.mouse.up()
    expect_top_label(page, "1")  # a vertical stroke is a one
    page.wait_for_function("document.getElementById('overlay-heat').naturalWidth > 0")
    screenshot(page, "drawn")


def test_uploading_a_test_image_shows_label_overlay_and_summary(page):
    page.set_input_files("#file", str(EXAMPLES / "digit_7.png"))
    expect_top_label(page, "7")
    page.wait_for_function("document.getElementById('overlay-heat').naturalWidth > 0")
    assert "class 7" in page.inner_text("#heat-caption")
    page.fill("#opacity", "0.8")
    assert page.eval_on_selector("#overlay-heat", "el => el.style.opacity") == "0.8"
    page.select_option("#heat-class", "3")  # the heatmap for another class than the winner
    page.wait_for_function("document.getElementById('heat-caption').textContent.includes('class 3')")
    page.click("#show-summary")
    page.wait_for_selector("#total-params")
    assert page.inner_text("#total-params") == f"{MATERIAL_TOTALS['mnist_cnn_b']:,}"
    assert "(28 − 3 + 2·0) / 1 + 1 = 26" in page.inner_text("#summary-table tbody")
    screenshot(page, "uploaded")


def test_cam_net_on_a_placed_digit(page):
    page.select_option("#model", "cam_net")
    page.set_input_files("#file", str(EXAMPLES / "placed_3.png"))
    expect_top_label(page, "3")
    page.wait_for_function("document.getElementById('heat-caption').textContent.startsWith('CAM for class 3')")
    screenshot(page, "cam-net")


def test_a_non_image_shows_a_clear_error(page, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image")
    page.set_input_files("#file", str(text))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.inner_text("#error")
    screenshot(page, "error")


def test_an_int8_version_can_be_picked(page):
    """Every version is pickable, and says what it is; the answer comes from the version picked."""
    page.wait_for_selector("#version option[value='2']", state="attached")
    assert "int8" in page.inner_text("#version option[value='2']")
    assert "float32" in page.inner_text("#version option[value='1']")
    page.select_option("#version", "2")
    assert "Version 2 (int8)" in page.inner_text("#model-info")
    page.set_input_files("#file", str(EXAMPLES / "digit_7.png"))
    expect_top_label(page, "7")
    page.wait_for_function("document.getElementById('timing').textContent.startsWith('mnist_cnn_b v2 ')")
    page.click("#show-summary")
    page.wait_for_selector("#total-params")
    assert page.inner_text("#summary-caption").startswith("mnist_cnn_b v2")
    screenshot(page, "int8-version")
