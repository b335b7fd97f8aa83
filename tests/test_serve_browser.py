"""The page at / in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven through Selenium, against a server on 127.0.0.1 started by the test."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

import charrnn  # noqa: E402
from charrnn.serve.app import create_app  # noqa: E402
from charrnn.serve.server import running  # noqa: E402
from charrnn.tokenizers import SPECIALS, UNK  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="Chromium is not installed (apt-get install chromium chromium-driver)",
)

WAIT = 30  # seconds: a bound on each wait, not a timing


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_streams_a_sample_appends_a_next_token_and_draws_the_heatmap(browser, trained_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    model = charrnn.load(trained_run)
    with running(create_app(model)) as url:
        browser.get(url)
        wait.until(lambda b: model.name in b.find_element(By.ID, "model").text)
        box = browser.find_element(By.ID, "text")
        box.send_keys("The cat")
        rules = Select(browser.find_element(By.ID, "stop-rule"))
        assert [o.text for o in rules.options] == ["eos", "halt", "length", "none"]
        rules.select_by_value("none")
        max_tokens = browser.find_element(By.ID, "max-tokens")
        max_tokens.clear()
        max_tokens.send_keys("40")

        generate = browser.find_element(By.ID, "generate")
        generate.click()
        wait.until(lambda b: generate.text == "Generate" and len(box.get_property("value")) > 7)
        value = box.get_property("value")
        drawn = value.removeprefix("The cat").replace(SPECIALS[UNK], "?")  # <unk>: one token
        assert value.startswith("The cat") and len(drawn) == 40
        assert browser.find_element(By.ID, "status").text == ""

        rules.select_by_value("eos")
        wait.until(settled)
        buttons = browser.find_elements(By.CSS_SELECTOR, "#next .next-token")
        assert len(buttons) == 8
        before = box.get_property("value")
        buttons[0].click()
        wait.until(lambda b: len(box.get_property("value")) == len(before) + 1)
        wait.until(settled)

        cells = browser.execute_script(HEATMAP)
        assert "".join(text for text, _ in cells) == box.get_property("value").replace("\n", "")
        assert all(title.endswith(" bits") for _, title in cells)
        assert "bits/char" in browser.find_element(By.ID, "heatmap").text


def settled(browser) -> bool:
    return browser.execute_script("return document.body.dataset.settled") == "yes"


# The heatmap's token cells (the end markers left out): their text and their title.
HEATMAP = """return [...document.querySelectorAll('#heatmap .cell:not(.eos)')]
    .map(c => [c.textContent, c.title]);"""
