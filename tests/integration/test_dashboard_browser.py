"""The dashboard in a real browser: headless Chromium signs in at /login with the token and
reads the page the worker's web server serves (its real routes and token gate, on a real
aiohttp server; fabricated data, so no broker). The screenshot is var/dashboard-fabricated.png."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from mailstream.dev.broker import free_port
from tests.dashboards import ANN, HEALTHY, SPIKING, TOKEN, dashboard_app

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "var" / "dashboard-fabricated.png"


@pytest.fixture
def dashboard_url() -> Iterator[str]:
    """The guarded dashboard served on a loopback port by a thread of its own (selenium blocks)."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(dashboard_app().web.web_app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def submit(browser: WebDriver, field: WebElement) -> None:
    """Submit `field`'s form and wait for the next page to replace it (the sign-in page is
    itself a form: what the next page shows must not be looked for on the old one)."""
    field.submit()
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(field))


def wait_for(browser: WebDriver, css: str) -> None:
    WebDriverWait(browser, 10).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def test_a_person_signs_in_sees_the_spike_and_looks_up_a_recipient(
    browser: WebDriver, dashboard_url: str
) -> None:
    browser.delete_all_cookies()
    browser.get(f"{dashboard_url}/")
    # refused without the token: the 401 page is the sign-in form
    token_field = browser.find_element(By.ID, "token")
    token_field.send_keys("not-the-token")
    submit(browser, token_field)
    wait_for(browser, ".notice")
    assert "Wrong token" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    token_field = browser.find_element(By.ID, "token")
    token_field.send_keys(TOKEN)
    submit(browser, token_field)
    wait_for(browser, "#deliverability")
    assert browser.current_url == f"{dashboard_url}/"

    spiking_key = "|".join(SPIKING)
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-key="{spiking_key}|1d"]')
    assert row.find_element(By.CSS_SELECTOR, ".badge.status-CRITICAL").text == "CRITICAL"
    assert row.find_element(By.CSS_SELECTOR, ".domain").text == SPIKING[1]
    healthy = browser.find_element(By.CSS_SELECTOR, f'tr[data-key="{"|".join(HEALTHY)}|1d"]')
    assert healthy.find_element(By.CSS_SELECTOR, ".badge").text == "OK"

    plot = browser.find_element(By.CSS_SELECTOR, f'svg[data-plot="{spiking_key}"]')
    complaints = plot.find_element(By.CSS_SELECTOR, 'polyline[data-series="complaint_rate"]')
    assert complaints.is_displayed()
    assert complaints.size["width"] > 0 and complaints.size["height"] > 0

    address = browser.find_element(By.ID, "recipient-address")
    address.send_keys(ANN)
    submit(browser, address)
    wait_for(browser, "#recipient")
    answer = browser.find_element(By.ID, "recipient")
    assert answer.is_displayed()
    assert "SUPPRESSED" in answer.text and "COMPLAINED" in answer.text

    browser.get(f"{dashboard_url}/?recipient={ANN}")
    wait_for(browser, "#recipient")
    save_full_page(browser, SCREENSHOT)


def save_full_page(browser: WebDriver, path: Path) -> None:
    """The whole page, beyond the window's height (Chromium's DevTools protocol)."""
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
