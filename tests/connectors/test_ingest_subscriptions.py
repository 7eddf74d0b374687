"""Subscription handshakes and blocking verification at the ingest (Amazon SNS's, for SES): a
stored request that asks to confirm a subscription is confirmed in a thread when the provider
allows it, logged with its URL either way, and never confirmed when refused; a provider whose
verification may block is verified off the event loop. Kafka writes go to a fake."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import replace

import pytest

from mailstream.connectors.base import SubscriptionRequest, WebhookProvider
from mailstream.connectors.registry import PROVIDERS
from mailstream.settings import ProviderAuth
from tests.connectors.test_ingest_hostile_input import (
    BODY,
    FakeWrites,
    no_outage_detection,  # noqa: F401 - an autouse fixture, active once imported
    serve,
    signed,
)

URL = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t"
MAIN = threading.main_thread()


class Handshake:
    """A maileroo that asks for a subscription on every body, recording where things ran."""

    def __init__(self, confirm: bool = True, fails: bool = False) -> None:
        self.confirmed_in: list[threading.Thread] = []
        self.verified_in: list[threading.Thread] = []
        self.confirm, self.fails = confirm, fails

    def provider(self, verify_blocks: bool = False) -> Mapping[str, WebhookProvider]:
        maileroo = PROVIDERS["maileroo"]
        assert isinstance(maileroo, WebhookProvider)

        def verify(
            body: bytes, headers: Mapping[str, str], config: ProviderAuth, now: float
        ) -> None:
            self.verified_in.append(threading.current_thread())
            maileroo.verify(body, headers, config, now)

        return {
            "maileroo": replace(
                maileroo,
                verify_request=verify,
                subscription_request_of=self.request,
                verify_blocks=verify_blocks,
            )
        }

    def request(self, body: bytes, config: ProviderAuth) -> SubscriptionRequest:
        return SubscriptionRequest(URL, self.visit if self.confirm else None)

    def visit(self) -> None:
        self.confirmed_in.append(threading.current_thread())
        if self.fails:
            raise OSError("SNS answered 403")


async def post(handshake: Handshake, monkeypatch: pytest.MonkeyPatch, **options: bool) -> int:
    client, service = await serve(handshake.provider(**options))
    monkeypatch.setattr(service.producer, "produce", FakeWrites().produce)
    try:
        response = await client.post(
            "/webhooks/maileroo", data=BODY, headers=signed("maileroo", BODY)
        )
        forged = await client.post(
            "/webhooks/maileroo", data=BODY, headers={"X-Maileroo-Signature": "00" * 32}
        )
        assert forged.status == 401
        return response.status
    finally:
        await client.close()


async def test_a_stored_confirmation_is_confirmed_once_in_a_thread(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    handshake = Handshake()
    with caplog.at_level(logging.INFO, "mailstream.ingest"):
        assert await post(handshake, monkeypatch) == 200
    [thread] = handshake.confirmed_in
    assert thread is not MAIN
    assert f"confirmed the maileroo subscription at {URL}" in caplog.text


async def test_a_confirmation_the_settings_do_not_allow_is_logged_with_its_url(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    handshake = Handshake(confirm=False)
    with caplog.at_level(logging.WARNING, "mailstream.ingest"):
        assert await post(handshake, monkeypatch) == 200
    assert handshake.confirmed_in == []
    assert f"not confirmed (the settings do not allow it): visit {URL}" in caplog.text


async def test_a_failed_confirmation_is_logged_and_the_webhook_still_stored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    handshake = Handshake(fails=True)
    with caplog.at_level(logging.ERROR, "mailstream.ingest"):
        assert await post(handshake, monkeypatch) == 200
    assert len(handshake.confirmed_in) == 1
    assert "SNS answered 403" in caplog.text


async def test_a_verification_that_may_block_runs_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_loop, off_loop = Handshake(), Handshake()
    assert await post(on_loop, monkeypatch) == 200
    assert await post(off_loop, monkeypatch, verify_blocks=True) == 200
    assert on_loop.verified_in == [MAIN, MAIN]
    assert len(off_loop.verified_in) == 2
    assert MAIN not in off_loop.verified_in
