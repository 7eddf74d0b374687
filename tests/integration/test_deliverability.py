"""Deliverability on the real broker: a campaign whose complaint rate crosses 0.30% for one
sending domain raises exactly one CRITICAL alert for it and none for the others, its window goes
CRITICAL and back to OK once the spike has left it (event time moving on with later mail), and
`mailstream replay` rebuilds the same windows. Headless Chromium reads the worker's dashboard
during the spike (screenshot: var/dashboard.png)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from mailstream.codec import codec_for
from mailstream.connectors.base import Sample, SampleKind
from mailstream.connectors.registry import get_provider
from mailstream.dev.broker import free_port
from mailstream.settings import Settings
from mailstream.streams.reader import latest_by_key, read_to_end, read_until
from mailstream.topics import TopicNames
from tests.integration.harness import running_worker, send_envelopes
from tests.integration.test_dashboard_browser import ROOT, save_full_page, submit, wait_for
from tests.integration.test_operations import TOKEN
from tests.integration.test_replay import replay

pytestmark = pytest.mark.kafka

T0 = 1_700_000_000_000
MINUTE = 60_000
HOUR = 60 * MINUTE


def deliverability_policy(windows: str, minimum_volume: int) -> str:
    """A policy file's deliverability section: the default thresholds, these windows."""
    return f"""deliverability:
  windows: {windows}
  bucket_minutes: 5
  minimum_volume: {minimum_volume}
  recovery_ratio: 0.8
  thresholds:
    complaint_rate: {{warn: 0.001, critical: 0.003}}
    hard_bounce_rate: {{warn: 0.02, critical: 0.05}}
    block_rate: {{warn: 0.02, critical: 0.05}}
"""


POLICY = deliverability_policy("[1h, 1d]", minimum_volume=200)
RECORD = codec_for("deliverability")
ALERT = codec_for("deliverability_alert")
SPIKY = "spiky.example"
CALM = "calm.example"


def inboxroad(kind: SampleKind, domain: str, number: int, at: int) -> dict[str, Any]:
    """An Inboxroad webhook of one message of `domain` (Inboxroad names the sender: orig)."""
    address = f"r{number}@{domain}.to.example"
    payload = get_provider("inboxroad").sample(
        Sample(kind, address, f"{domain}-{number}@mail", at, f"{domain}-{kind}-{number}", "")
    )
    assert payload is not None
    payload["orig"] = f"news@{domain}"
    return {"provider": "inboxroad", "payload": payload}


def campaign(domain: str, start: int, delivered: int, complaints: int, first: int = 0) -> list:
    """Deliveries spread over 50 minutes (a plot of several points), then the complaints."""
    step = 50 * MINUTE // delivered
    mail = [inboxroad("delivered", domain, first + n, start + n * step) for n in range(delivered)]
    return mail + [
        inboxroad("complaint", domain, first + n, start + 50 * MINUTE + n)
        for n in range(complaints)
    ]


def windows(settings: Settings, names: TopicNames) -> dict[tuple[str, str], dict[str, Any]]:
    """(domain, window) -> the window's latest record."""
    latest = latest_by_key((r.key, r.value) for r in read_to_end(settings, names.deliverability))
    return {
        (orjson.loads(key)[1], orjson.loads(key)[3]): RECORD.decode(value)
        for key, value in latest.items()
        if value is not None
    }


def wait_for_window(settings: Settings, names: TopicNames, domain: str, **expected: Any) -> None:
    """Until the domain's 1-hour window record shows `expected` (status, counts.<name>)."""

    def shows(records: list) -> bool:
        latest = latest_by_key(records)
        for key, value in latest.items():
            if value is None or orjson.loads(key)[1::2] != [domain, "1h"]:
                continue
            record = RECORD.decode(value)
            seen = {"status": record["status"], **record["counts"]}
            return all(seen[name] == want for name, want in expected.items())
        return False

    read_until(settings, names.deliverability, shows, timeout=120)


def alerts(settings: Settings, names: TopicNames) -> list[dict[str, Any]]:
    return [ALERT.decode(r.value) for r in read_to_end(settings, names.alerts) if r.value]


def test_a_complaint_spike_goes_critical_once_and_back_to_ok_and_a_replay_agrees(
    settings: Settings,
    names: TopicNames,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    browser: WebDriver,
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    settings = dataclasses.replace(
        settings, policy_file=policy_file, deliverability_interval_seconds=0.5, web_token=TOKEN
    )
    port = free_port()
    monkeypatch.setenv("MAILSTREAM_POLICY_FILE", str(policy_file))
    monkeypatch.setenv("MAILSTREAM_DELIVERABILITY_INTERVAL_SECONDS", "0.5")
    with running_worker(settings, tmp_path / "worker.log", web_port=port):
        # 2 complaints in 500 deliveries (0.40%) for one domain, 1 in 1000 (0.10%) for the other
        send_envelopes(settings, campaign(SPIKY, T0, 500, 2) + campaign(CALM, T0, 1000, 1))
        wait_for_window(settings, names, SPIKY, status="CRITICAL", delivered=500, complaints=2)
        wait_for_window(settings, names, CALM, status="WARN", delivered=1000, complaints=1)
        look_at_the_dashboard(browser, f"http://127.0.0.1:{port}")

        later = T0 + 2 * HOUR  # the spike leaves the 1-hour window
        send_envelopes(settings, campaign(CALM, later, 300, 0, first=1000))
        wait_for_window(settings, names, SPIKY, status="OK", delivered=0, complaints=0)
        wait_for_window(settings, names, CALM, status="OK", delivered=300)
    live = windows(settings, names)

    hourly = [a for a in alerts(settings, names) if a["window"] == "1h"]
    spiky = [(a["previous_status"], a["status"]) for a in hourly if a["domain"] == SPIKY]
    assert [change for change in spiky if change[1] == "CRITICAL"] in (
        [("OK", "CRITICAL")],
        [("WARN", "CRITICAL")],
    )
    assert spiky[-1][1] == "OK"
    calm = [a["status"] for a in hourly if a["domain"] == CALM]
    assert "CRITICAL" not in calm
    assert live[(SPIKY, "1d")]["status"] == "CRITICAL"  # the day still holds the spike
    spiky_window = live[(SPIKY, "1h")]
    assert spiky_window["window_end"] - spiky_window["window_start"] == HOUR
    assert later + 45 * MINUTE < spiky_window["window_end"] <= later + HOUR  # event time

    replay(capsys, tmp_path)
    with running_worker(settings, tmp_path / "after-replay.log"):
        wait_for_window(settings, names, CALM, status="OK", delivered=300)
        wait_for_window(settings, names, SPIKY, status="OK", delivered=0)
    assert windows(settings, names) == live


def look_at_the_dashboard(browser: WebDriver, url: str) -> None:
    """What a person sees: the spiking domain CRITICAL with its plotted complaint rate, the
    other at WARN, and a recipient of the spike looked up."""
    browser.delete_all_cookies()
    browser.get(f"{url}/login")
    token = browser.find_element(By.ID, "token")
    token.send_keys(TOKEN)
    submit(browser, token)
    wait_for(browser, "#deliverability")
    spiky = f"user|{SPIKY}|inboxroad"  # Inboxroad's rcvSmtpUser of the samples
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-key="{spiky}|1h"]')
    assert row.find_element(By.CSS_SELECTOR, ".badge").text == "CRITICAL"
    calm = browser.find_element(By.CSS_SELECTOR, f'tr[data-key="user|{CALM}|inboxroad|1h"]')
    assert calm.find_element(By.CSS_SELECTOR, ".badge").text == "WARN"
    plot = browser.find_element(By.CSS_SELECTOR, f'svg[data-plot="{spiky}"]')
    complaints = plot.find_element(By.CSS_SELECTOR, 'polyline[data-series="complaint_rate"]')
    assert complaints.is_displayed() and complaints.size["width"] > 0
    address = browser.find_element(By.ID, "recipient-address")
    address.send_keys(f"r1@{SPIKY}.to.example")
    submit(browser, address)
    wait_for(browser, "#recipient")
    answer = browser.find_element(By.ID, "recipient").text
    assert "SUPPRESSED" in answer and "COMPLAINED" in answer
    save_full_page(browser, ROOT / "var" / "dashboard.png")
