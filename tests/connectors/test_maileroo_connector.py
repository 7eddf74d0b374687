"""Maileroo: the shared contract and its payload quirks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mailstream.connectors import maileroo
from mailstream.connectors.base import hmac_hex
from mailstream.errors import ParseError, SignatureError
from mailstream.events import BounceClass, EventType
from tests.connectors.provider_contract import NOW, SECRET, ProviderContract


class TestMaileroo(ProviderContract):
    provider = maileroo.PROVIDER
    event_type_key = "event_type"
    timestamp_keys = ("event_time", "inserted_at")
    message_id_key = "message_id"
    known_keys = (
        "domain_id",
        "event_data",
        "event_id",
        "event_time",
        "event_type",
        "inserted_at",
        "message_id",
        "tags",
        "to",
        "reason",
        "ip",
        "user_agent",
        "original_url",
    )

    def valid_item(self) -> dict[str, Any]:
        return {
            "domain_id": 123,
            "event_data": {"to": "recipient@example.com"},
            "event_id": "abcd1234efgh5678ijkl9101",
            "event_time": 1710545542,
            "event_type": "delivered",
            "inserted_at": "2024-03-15T23:32:22.397Z",
            "message_id": "<1234567890abcdef@examplemail.com>",
            "message_reference_id": "mref1234567890abcdef",
            "tags": {"tag1": "value1"},
            "user_id": 1001,
        }

    def parse_one(self, **fields: Any) -> dict[str, Any]:
        (event,) = maileroo.PROVIDER.parse(orjson.dumps(dict(self.valid_item(), **fields)))
        return event

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("accepted", EventType.QUEUED),
            ("delivered", EventType.DELIVERED),
            ("deferred", EventType.DEFERRED),
            ("failed", EventType.BOUNCED),
            ("bounced", EventType.BOUNCED),
            ("rejected", EventType.REJECTED),
            ("opened", EventType.OPENED),
            ("clicked", EventType.CLICKED),
            ("complained", EventType.COMPLAINED),
            ("sent_to_mars", EventType.UNKNOWN),
        ],
    )
    def test_event_types(self, kind: str, expected: EventType) -> None:
        assert self.parse_one(event_type=kind)["event_type"] == expected

    @pytest.mark.parametrize(
        ("kind", "reason", "expected"),
        [
            ("deferred", "421 4.7.0 Try again later", (BounceClass.SOFT, None, "4.7.0")),
            ("failed", "550 5.1.1 no such user", (BounceClass.HARD, "userunknown", "5.1.1")),
            (
                "rejected",
                "Recipient is on the suppression list",
                (BounceClass.UNDETERMINED, "suppressed", None),
            ),
            ("delivered", "250 2.0.0 OK", (None, None, "2.0.0")),
        ],
    )
    def test_failures_are_classified(
        self, kind: str, reason: str, expected: tuple[Any, ...]
    ) -> None:
        event = self.parse_one(event_type=kind, event_data={"to": "x@y.com", "reason": reason})
        assert (event["bounce_class"], event["bounce_reason"], event["smtp_status"]) == expected
        assert event["diagnostic"] == reason

    def test_opens_carry_no_recipient(self) -> None:
        event = self.parse_one(event_type="opened", event_data={"ip": "1.2.3.4"})
        assert event["recipient"] is None

    @pytest.mark.parametrize(
        ("tags", "expected"),
        [
            (None, {}),
            ({}, {}),
            (
                {"a": "b", "n": 7, "f": 1.5, "t": True, "z": None, "l": [1, "x"]},
                {"a": "b", "n": "7", "f": "1.5", "t": "true", "z": "", "l": '[1,"x"]'},
            ),
        ],
    )
    def test_tags_become_strings(self, tags: Any, expected: dict[str, str]) -> None:
        assert self.parse_one(tags=tags)["tags"] == expected

    @pytest.mark.parametrize("tags", [["a"], "a", 3])
    def test_tags_must_be_an_object(self, tags: Any) -> None:
        with pytest.raises(ParseError, match="tags"):
            self.parse_one(tags=tags)

    def test_domain_id_as_string_or_number(self) -> None:
        assert self.parse_one(domain_id=774)["tenant"] == "774"
        assert self.parse_one(domain_id="d-9")["tenant"] == "d-9"

    def test_inserted_at_stands_in_for_a_missing_event_time(self) -> None:
        assert self.parse_one(event_time=None)["occurred_at"] == 1710545542397

    def test_signature_may_carry_a_sha256_prefix(self) -> None:
        body = self.body()
        headers = {"X-Maileroo-Signature": "sha256=" + hmac_hex(SECRET, body)}
        maileroo.verify(body, headers, self.config(), NOW)

    def test_custom_signature_header(self) -> None:
        config = self.config(signature_header="X-Webhook-Signature")
        body = self.body()
        headers = maileroo.sign(body, config, NOW)
        assert list(headers) == ["X-Webhook-Signature"]
        maileroo.verify(body, headers, config, NOW)
        default_header = {"X-Maileroo-Signature": headers["X-Webhook-Signature"]}
        with pytest.raises(SignatureError, match="missing X-Webhook-Signature"):
            maileroo.verify(body, default_header, config, NOW)

    def test_only_hmac_mode_is_supported(self) -> None:
        with pytest.raises(SignatureError, match="hmac"):
            maileroo.verify(self.body(), {}, self.config(mode="basic"), NOW)
