"""mailbot: the shared contract, the signature's freshness window, and shape quirks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mailstream.connectors import mailbot
from mailstream.errors import SignatureError
from mailstream.events import BounceClass, EventType
from mailstream.settings import ProviderAuth
from tests.connectors.provider_contract import NOW, ProviderContract, assert_canonical


class TestMailbot(ProviderContract):
    provider = mailbot.PROVIDER
    event_type_key = "event_type"
    timestamp_keys = ("created_at", "timestamp")
    message_id_key = "message_id"
    known_keys = (
        "event_id",
        "event_type",
        "type",
        "event",
        "created_at",
        "timestamp",
        "message_id",
        "id",
        "recipient",
        "to",
        "from",
        "sender",
        "inbox_id",
        "labels",
        "url",
        "ip",
        "user_agent",
        "data",
        "message",
        "bounce",
        "bounce_type",
        "smtp_status",
        "status",
        "diagnostic",
        "diagnostic_code",
        "reason",
        "bounce_reason",
        "in_reply_to",
        "reply_to_message_id",
        "email",
    )

    def valid_item(self) -> dict[str, Any]:
        return {
            "event_id": "evt_1",
            "event_type": "message.delivered",
            "created_at": "2026-03-02T10:15:00Z",
            "message_id": "<msg_1@getmail.bot>",
            "recipient": "lead@prospect.com",
            "inbox_id": "inb_1",
            "labels": ["campaign:spring"],
        }

    def signed(self, timestamp: float) -> tuple[bytes, dict[str, str]]:
        body = self.body()
        return body, mailbot.sign(body, self.config(), timestamp)

    @pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
    def test_timestamp_inside_the_window_passes(self, offset: int) -> None:
        body, headers = self.signed(NOW + offset)
        mailbot.verify(body, headers, self.config(), NOW)

    @pytest.mark.parametrize("offset", [-301, -86400, 301, 86400])
    def test_stale_or_future_timestamp_is_refused(self, offset: int) -> None:
        body, headers = self.signed(NOW + offset)
        with pytest.raises(SignatureError, match="window"):
            mailbot.verify(body, headers, self.config(), NOW)

    def test_window_is_configurable(self) -> None:
        body, headers = self.signed(NOW - 3600)
        mailbot.verify(body, headers, self.config(max_age_seconds=7200), NOW)

    def test_timestamp_is_part_of_the_signature(self) -> None:
        body, headers = self.signed(NOW)
        headers[mailbot.TIMESTAMP_HEADER] = str(int(NOW) + 1)
        with pytest.raises(SignatureError, match="does not match"):
            mailbot.verify(body, headers, self.config(), NOW)

    @pytest.mark.parametrize("timestamp", [None, "", "soon", "1.5", "-10", "１２"])  # noqa: RUF001
    def test_missing_or_malformed_timestamp_is_refused(self, timestamp: str | None) -> None:
        body, headers = self.signed(NOW)
        del headers[mailbot.TIMESTAMP_HEADER]
        if timestamp is not None:
            headers[mailbot.TIMESTAMP_HEADER] = timestamp
        with pytest.raises(SignatureError, match=mailbot.TIMESTAMP_HEADER):
            mailbot.verify(body, headers, self.config(), NOW)

    def test_signature_without_prefix_is_refused(self) -> None:
        body, headers = self.signed(NOW)
        signature = headers[mailbot.SIGNATURE_HEADER]
        headers[mailbot.SIGNATURE_HEADER] = signature.removeprefix("sha256=")
        with pytest.raises(SignatureError, match="sha256="):
            mailbot.verify(body, headers, self.config(), NOW)

    def test_custom_signature_header(self) -> None:
        config = self.config(signature_header="X-Sig")
        body = self.body()
        headers = mailbot.sign(body, config, NOW)
        assert "X-Sig" in headers
        mailbot.verify(body, headers, config, NOW)

    def test_only_hmac_mode_is_supported(self) -> None:
        body, headers = self.signed(NOW)
        with pytest.raises(SignatureError, match="hmac"):
            mailbot.verify(body, headers, self.config(mode="api_key"), NOW)

    # --- Shapes ---------------------------------------------------------------------------

    def parse_one(self, **fields: Any) -> dict[str, Any]:
        (event,) = mailbot.PROVIDER.parse(orjson.dumps(dict(self.valid_item(), **fields)))
        return event

    def test_flat_and_nested_shapes_parse_the_same(self) -> None:
        flat = self.valid_item()
        nested = {
            "event_id": "evt_1",
            "type": "message.delivered",
            "created_at": "2026-03-02T10:15:00Z",
            "data": {
                "message": {
                    "id": "<msg_1@getmail.bot>",
                    "to": ["lead@prospect.com"],
                    "inbox_id": "inb_1",
                    "labels": ["campaign:spring"],
                }
            },
        }
        assert mailbot.PROVIDER.parse(orjson.dumps(nested)) == mailbot.PROVIDER.parse(
            orjson.dumps(flat)
        )

    def test_text_message_field_is_not_a_message_object(self) -> None:
        assert self.parse_one(message="Mailbox full")["message_id"] == "msg_1@getmail.bot"

    def test_to_list_fans_out_one_event_per_address(self) -> None:
        item = dict(self.valid_item(), recipient=None, to=["a@x.com", {"email": "B@x.com"}])
        events = mailbot.PROVIDER.parse(orjson.dumps(item))
        assert [e["recipient"] for e in events] == ["a@x.com", "b@x.com"]
        assert [e["event_id"] for e in events] == ["evt_1/a@x.com", "evt_1/b@x.com"]
        assert_canonical(events)

    def test_single_address_to_keeps_the_event_id(self) -> None:
        event = self.parse_one(recipient=None, to="Lead <LEAD@prospect.com>")
        assert (event["recipient"], event["event_id"]) == ("lead@prospect.com", "evt_1")

    def test_absent_recipient_is_null(self) -> None:
        assert self.parse_one(recipient=None)["recipient"] is None

    @pytest.mark.parametrize(
        ("timestamp", "expected"),
        [
            (1772446500, 1772446500000),
            (1772446500.25, 1772446500250),
            ("1772446500", 1772446500000),
            ("2026-03-02T10:15:00Z", 1772446500000),
            ("2026-03-02T10:15:00.123456+00:00", 1772446500123),
            ("2026-03-02T11:15:00+01:00", 1772446500000),
            ("2026-03-02 10:15:00", 1772446500000),
        ],
    )
    def test_timestamp_forms(self, timestamp: Any, expected: int) -> None:
        item = {k: v for k, v in self.valid_item().items() if k != "created_at"}
        (event,) = mailbot.PROVIDER.parse(orjson.dumps(dict(item, timestamp=timestamp)))
        assert event["occurred_at"] == expected

    def test_labels_become_tags(self) -> None:
        event = self.parse_one(labels=["outbound", "campaign:march-followup", "x:a:b"])
        assert event["tags"] == {"outbound": "", "campaign": "march-followup", "x": "a:b"}

    @pytest.mark.parametrize(
        ("bounce", "expected"),
        [
            ({"bounce_type": "hard"}, (BounceClass.HARD, None)),
            (
                {"bounce_type": "Permanent", "diagnostic": "550 5.1.1 no such user"},
                (BounceClass.HARD, "userunknown"),
            ),
            (
                {"bounce": {"type": "soft", "diagnostic": "452 4.2.2 Mailbox full"}},
                (BounceClass.SOFT, "mailboxfull"),
            ),
            (
                {"smtp_status": "5.7.1", "diagnostic": "blocked using Spamhaus"},
                (BounceClass.BLOCK, "blocked"),
            ),
            (
                {"bounce": {"status": "4.4.7", "reason": "delivery time expired"}},
                (BounceClass.EXPIRED, "expired"),
            ),
            ({}, (BounceClass.UNDETERMINED, None)),
        ],
    )
    def test_bounce_classification(
        self, bounce: dict[str, Any], expected: tuple[BounceClass, str | None]
    ) -> None:
        event = self.parse_one(event_type="message.bounced", **bounce)
        assert (event["event_type"], event["bounce_class"], event["bounce_reason"]) == (
            EventType.BOUNCED,
            *expected,
        )

    def test_bounce_class_only_on_bounces(self) -> None:
        event = self.parse_one(bounce_type="hard", diagnostic="550 5.1.1 x")
        assert (event["bounce_class"], event["provider_category"]) == (None, "hard")

    def test_inbound_reply_links_to_the_outbound_message(self) -> None:
        item = {
            "event_id": "evt_r",
            "event_type": "message.received",
            "created_at": "2026-03-02T11:00:00Z",
            "from": "lead@prospect.com",
            "to": "agent@getmail.bot",
            "reply_to_message_id": "<msg_1@getmail.bot>",
        }
        (event,) = mailbot.PROVIDER.parse(orjson.dumps(item))
        assert (event["event_type"], event["message_id"], event["recipient"]) == (
            EventType.REPLIED,
            "msg_1@getmail.bot",
            "lead@prospect.com",
        )
        assert mailbot.PROVIDER.message_key(orjson.dumps(item)) == b"msg_1@getmail.bot"

    def test_unsigned_config_needs_no_headers(self) -> None:
        mailbot.verify(self.body(), {}, ProviderAuth(allow_unsigned=True), NOW)
