"""Inboxroad: the shared contract, its three authentication modes, and its bounce categories."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from mailstream.connectors import inboxroad
from mailstream.connectors.base import deterministic_event_id
from mailstream.errors import SignatureError
from mailstream.events import BounceClass, EventType
from mailstream.settings import ProviderAuth
from tests.connectors.provider_contract import NOW, SECRET, ProviderContract

SEED_BOUNCE_MAPPER = {  # seeds/003 section 4, verbatim
    "message-expired": "EXPIRED",
    "bad-mailbox": "HARD",
    "bad-domain": "HARD",
    "quota-issues": "SOFT",
    "inactive-mailbox": "SOFT",
    "no-answer-from-host": "SOFT",
    "relaying-issues": "SOFT",
    "routing-errors": "SOFT",
}
SENDER_SIDE_CATEGORIES = (
    "policy-related",
    "spam-related",
    "content-related",
    "virus-related",
    "invalid-sender",
    "bad-configuration",
    "bad-connection",
    "protocol-errors",
)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class TestInboxroad(ProviderContract):
    provider = inboxroad.PROVIDER
    event_type_key = "type"
    timestamp_keys = ("timeLogged",)
    message_id_key = "header_Message-Id"
    known_keys = (
        "type",
        "timeLogged",
        "orig",
        "rcpt",
        "dsnAction",
        "dsnStatus",
        "dsnDiag",
        "bounceCat",
        "rcvSmtpUser",
        "header_Message-Id",
        "vmta",
    )

    def valid_item(self) -> dict[str, Any]:
        return {
            "type": "b",
            "timeLogged": "1695222842",
            "orig": "bounces@rp.domain.com",
            "rcpt": "someone@domain.net",
            "dsnAction": "failed",
            "dsnStatus": "5.1.1 (bad destination mailbox address)",
            "dsnDiag": "smtp;550 5.1.1 user unknown",
            "bounceCat": "bad-mailbox",
            "rcvSmtpUser": "user",
            "header_Message-Id": "<abc@rp.domain.com>",
            "vmta": "a000",
        }

    def parse_one(self, **fields: Any) -> dict[str, Any]:
        (event,) = inboxroad.PROVIDER.parse(orjson.dumps(dict(self.valid_item(), **fields)))
        return event

    @pytest.mark.parametrize(("category", "expected"), sorted(SEED_BOUNCE_MAPPER.items()))
    def test_seed_bounce_mapper(self, category: str, expected: str) -> None:
        # A status and text that point elsewhere: the provider's category decides the class.
        event = self.parse_one(bounceCat=category, dsnStatus="5.0.0", dsnDiag="x")
        assert event["bounce_class"] == expected

    @pytest.mark.parametrize("category", SENDER_SIDE_CATEGORIES)
    def test_sender_side_categories_are_block(self, category: str) -> None:
        event = self.parse_one(bounceCat=category, dsnStatus="5.1.1", dsnDiag="x")
        assert event["bounce_class"] is BounceClass.BLOCK

    @pytest.mark.parametrize("category", ["other", None, "", "something-new"])
    def test_other_or_missing_category_is_classified_from_the_dsn(
        self, category: str | None
    ) -> None:
        event = self.parse_one(bounceCat=category, dsnStatus="4.2.2 (mailbox full)")
        assert (event["bounce_class"], event["bounce_reason"]) == (BounceClass.SOFT, "mailboxfull")

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("d", EventType.DELIVERED),
            ("b", EventType.BOUNCED),
            ("rb", EventType.BOUNCED),
            ("f", EventType.COMPLAINED),
            ("t", EventType.UNKNOWN),
            (None, EventType.UNKNOWN),
        ],
    )
    def test_event_types(self, kind: str | None, expected: EventType) -> None:
        event = self.parse_one(type=kind)
        assert event["event_type"] == expected
        assert (event["bounce_class"] is None) == (expected is not EventType.BOUNCED)

    def test_event_id_is_derived_from_the_payload(self) -> None:
        event = self.parse_one()
        assert event["event_id"] == deterministic_event_id("inboxroad", self.valid_item())
        assert self.parse_one(rcpt="other@domain.net")["event_id"] != event["event_id"]

    def test_numeric_time_logged(self) -> None:
        assert self.parse_one(timeLogged=1695222842)["occurred_at"] == 1695222842000

    # --- Authentication modes -------------------------------------------------------------

    def test_api_key_mode(self) -> None:
        config = self.config(mode="api_key")
        body = self.body()
        headers = inboxroad.sign(body, config, NOW)
        assert headers == {"X-Api-Key": SECRET}
        inboxroad.verify(body, headers, config, NOW)
        inboxroad.verify(body, {"x-api-key": SECRET}, config, NOW)
        with pytest.raises(SignatureError, match="not an accepted"):
            inboxroad.verify(body, {"X-Api-Key": "guess"}, config, NOW)
        with pytest.raises(SignatureError, match="missing X-Api-Key"):
            inboxroad.verify(body, {}, config, NOW)

    def test_api_key_header_is_configurable(self) -> None:
        config = self.config(mode="api_key", api_key_header="X-Inboxroad-Key")
        inboxroad.verify(self.body(), {"X-Inboxroad-Key": SECRET}, config, NOW)
        with pytest.raises(SignatureError):
            inboxroad.verify(self.body(), {"X-Api-Key": SECRET}, config, NOW)

    def test_basic_mode(self) -> None:
        config = ProviderAuth(mode="basic", basic_auth=(("hook", "pw-new"), ("hook", "pw-old")))
        body = self.body()
        assert inboxroad.sign(body, config, NOW) == basic("hook", "pw-new")
        inboxroad.verify(body, basic("hook", "pw-new"), config, NOW)
        inboxroad.verify(body, basic("hook", "pw-old"), config, NOW)
        for wrong in (basic("hook", "guess"), basic("other", "pw-new")):
            with pytest.raises(SignatureError, match="unknown user or wrong password"):
                inboxroad.verify(body, wrong, config, NOW)

    @pytest.mark.parametrize(
        "authorization", ["Bearer abc", "Basic", "Basic !!!", "Basic " + "w6k=", "hook:pw"]
    )
    def test_malformed_basic_authorization_is_refused(self, authorization: str) -> None:
        config = ProviderAuth(mode="basic", basic_auth=(("hook", "pw"),))
        with pytest.raises(SignatureError):
            inboxroad.verify(self.body(), {"Authorization": authorization}, config, NOW)

    def test_basic_mode_without_credentials_is_refused(self) -> None:
        with pytest.raises(SignatureError, match="no secret configured"):
            inboxroad.verify(self.body(), basic("a", "b"), ProviderAuth(mode="basic"), NOW)

    def test_custom_signature_header(self) -> None:
        config = self.config(signature_header="X-Sig")
        body = self.body()
        headers = inboxroad.sign(body, config, NOW)
        assert list(headers) == ["X-Sig"]
        inboxroad.verify(body, headers, config, NOW)
