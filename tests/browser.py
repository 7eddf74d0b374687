"""The `browser` fixture: one headless Chromium (Debian's, driven by its chromedriver) for the
test session. It fails, never skips, when Chromium cannot be provisioned."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.webdriver import WebDriver

from mailstream.dev.browser import BrowserError, ensure_chromium

WINDOW_SIZE = "1400,2000"


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    try:
        chromium = ensure_chromium()
    except BrowserError as error:
        pytest.fail(str(error), pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium.binary)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW_SIZE}")
    service = webdriver.ChromeService(executable_path=str(chromium.driver))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
