"""Resend: the shared contract, the Svix signature and its freshness window, and the
documented shapes (nested `data`, `to` as a list, bounce types and subtypes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson
import pytest

from mailstream.connectors import resend
from mailstream.connectors.base import Sample, SampleKind
from mailstream.errors import ParseError, SignatureError
from mailstream.events import BounceClass, EventType
from mailstream.settings import ProviderAuth
from tests.connectors.provider_contract import NOW, ProviderContract, assert_canonical

# A secret as Resend issues them: whsec_ + base64 of the key bytes.
KEY = b"resend-test-signing-key-32-bytes"
WHSEC = "whsec_" + base64.b64encode(KEY).decode()


class TestResend(ProviderContract):
    provider = resend.PROVIDER
    event_type_key = "type"
    timestamp_keys = ("created_at",)
    message_id_key = "email_id"  # inside `data`: the contract tests that set it are adapted
    known_keys = (
        "type",
        "created_at",
        "data",
        "email_id",
        "from",
        "to",
        "subject",
        "tags",
        "name",
        "value",
        "bounce",
        "message",
        "subType",
        "diagnosticCode",
        "click",
        "link",
        "userAgent",
        "ipAddress",
        "timestamp",
        "failed",
        "reason",
        "suppressed",
    )

    def valid_item(self) -> dict[str, Any]:
        return {
            "type": "email.delivered",
            "created_at": "2026-03-02T10:15:00.000Z",
            "data": {
                "created_at": "2026-03-02T10:14:58.120000+00:00",
                "email_id": "4ef9a417-02e9-4d39-ad75-9611e0fcc33c",
                "from": "Team <news@example.com>",
                "to": ["lead@prospect.com"],
                "subject": "March update",
                "tags": {"campaign": "spring"},
            },
        }

    def with_data(self, **fields: Any) -> dict[str, Any]:
        item = self.valid_item()
        item["data"] = dict(item["data"], **fields)
        return item

    def parse_one(self, event_type: str = "email.delivered", **fields: Any) -> dict[str, Any]:
        item = dict(self.with_data(**fields), type=event_type)
        (event,) = resend.PROVIDER.parse(orjson.dumps(item))
        return event

    # --- The contract's message-id tests, with the id where Resend puts it (data.email_id) ---

    def test_batch_parses_every_item_in_order(self) -> None:
        items = [self.with_data(email_id=f"<m{i}@x>") for i in range(50)]
        events = self.provider.parse(self.body(items))
        assert [event["message_id"] for event in events] == [f"m{i}@x" for i in range(50)]

    def test_message_key_is_the_clean_message_id(self) -> None:
        item = self.with_data(email_id=" <key-1@example.com> ")
        assert self.provider.message_key(self.body(item)) == b"key-1@example.com"
        assert self.provider.message_key(self.body([item, self.valid_item()])) == (
            b"key-1@example.com"
        )

    @pytest.mark.parametrize("data", [None, "text", [], {"email_id": 5}, {}])
    def test_message_key_of_odd_data_is_none(self, data: Any) -> None:
        assert self.provider.message_key(orjson.dumps({"type": "x", "data": data})) is None

    # --- Svix signatures ------------------------------------------------------------------

    def signed(self, timestamp: float, secret: str = WHSEC) -> tuple[bytes, dict[str, str]]:
        body = self.body()
        return body, resend.sign(body, self.config(secret), timestamp)

    def test_signature_is_the_documented_svix_scheme(self) -> None:
        body, headers = self.signed(NOW)
        signed = f"{headers['svix-id']}.{headers['svix-timestamp']}.".encode() + body
        digest = hmac.new(KEY, signed, hashlib.sha256).digest()
        assert headers["svix-signature"] == "v1," + base64.b64encode(digest).decode()
        assert headers["svix-timestamp"] == str(int(NOW))

    def test_svix_reference_vector(self) -> None:
        # The published Svix / Standard Webhooks example, signature verbatim.
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        body = b'{"test": 2432232314}'
        headers = {
            "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "svix-timestamp": "1614265330",
            "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        }
        resend.verify(body, headers, self.config(secret), 1614265330.0)
        with pytest.raises(SignatureError, match="does not match"):
            resend.verify(body + b" ", headers, self.config(secret), 1614265330.0)

    def test_any_of_several_signature_entries_may_match(self) -> None:
        body, headers = self.signed(NOW)
        good = headers["svix-signature"]
        headers["svix-signature"] = f"v1,bm90LWl0 v2,ignored {good}"
        resend.verify(body, headers, self.config(WHSEC), NOW)

    @pytest.mark.parametrize("value", ["", "garbage", "v2,abc", "v1,", "sha256=abc"])
    def test_signature_without_v1_entries_is_refused(self, value: str) -> None:
        body, headers = self.signed(NOW)
        headers["svix-signature"] = value
        with pytest.raises(SignatureError, match="v1,<base64>"):
            resend.verify(body, headers, self.config(WHSEC), NOW)

    def test_wrong_v1_entry_is_refused(self) -> None:
        body, headers = self.signed(NOW)
        headers["svix-signature"] = "v1," + base64.b64encode(b"x" * 32).decode()
        with pytest.raises(SignatureError, match="does not match"):
            resend.verify(body, headers, self.config(WHSEC), NOW)

    @pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
    def test_timestamp_inside_the_window_passes(self, offset: int) -> None:
        body, headers = self.signed(NOW + offset)
        resend.verify(body, headers, self.config(WHSEC), NOW)

    @pytest.mark.parametrize("offset", [-301, -86400, 301, 86400])
    def test_stale_or_future_timestamp_is_refused(self, offset: int) -> None:
        body, headers = self.signed(NOW + offset)
        with pytest.raises(SignatureError, match="window"):
            resend.verify(body, headers, self.config(WHSEC), NOW)

    def test_window_is_configurable(self) -> None:
        body, headers = self.signed(NOW - 3600)
        resend.verify(body, headers, self.config(WHSEC, max_age_seconds=7200), NOW)

    @pytest.mark.parametrize("header", ["svix-id", "svix-timestamp"])
    def test_id_and_timestamp_are_part_of_the_signature(self, header: str) -> None:
        body, headers = self.signed(NOW)
        headers[header] = headers[header][:-1] + ("1" if headers[header][-1] != "1" else "2")
        with pytest.raises(SignatureError, match="does not match"):
            resend.verify(body, headers, self.config(WHSEC), NOW)

    @pytest.mark.parametrize("timestamp", [None, "", "soon", "1.5", "-10", "9" * 13])
    def test_missing_or_malformed_timestamp_is_refused(self, timestamp: str | None) -> None:
        body, headers = self.signed(NOW)
        del headers["svix-timestamp"]
        if timestamp is not None:
            headers["svix-timestamp"] = timestamp
        with pytest.raises(SignatureError, match="svix-timestamp"):
            resend.verify(body, headers, self.config(WHSEC), NOW)

    @pytest.mark.parametrize("message_id", [None, "", "m" * 2000])
    def test_missing_or_oversized_id_is_refused(self, message_id: str | None) -> None:
        body, headers = self.signed(NOW)
        del headers["svix-id"]
        if message_id is not None:
            headers["svix-id"] = message_id
        with pytest.raises(SignatureError, match="svix-id"):
            resend.verify(body, headers, self.config(WHSEC), NOW)

    def test_secret_is_base64_decoded_after_the_prefix(self) -> None:
        body, headers = self.signed(NOW)
        # the same key bytes written without the prefix still verify
        resend.verify(body, headers, self.config(base64.b64encode(KEY).decode()), NOW)
        # a signature keyed with the secret's text instead of its decoded bytes does not
        signed = f"{headers['svix-id']}.{headers['svix-timestamp']}.".encode() + body
        digest = hmac.new(WHSEC.encode(), signed, hashlib.sha256).digest()
        headers["svix-signature"] = "v1," + base64.b64encode(digest).decode()
        with pytest.raises(SignatureError, match="does not match"):
            resend.verify(body, headers, self.config(WHSEC), NOW)

    def test_custom_signature_header(self) -> None:
        config = self.config(WHSEC, signature_header="webhook-signature")
        body = self.body()
        headers = resend.sign(body, config, NOW)
        assert "webhook-signature" in headers
        resend.verify(body, headers, config, NOW)

    def test_only_hmac_mode_is_supported(self) -> None:
        body, headers = self.signed(NOW)
        with pytest.raises(SignatureError, match="hmac"):
            resend.verify(body, headers, self.config(WHSEC, mode="api_key"), NOW)

    def test_unsigned_config_needs_no_headers(self) -> None:
        resend.verify(self.body(), {}, ProviderAuth(allow_unsigned=True), NOW)

    # --- Shapes ---------------------------------------------------------------------------

    def test_to_list_fans_out_one_event_per_address(self) -> None:
        item = self.with_data(to=["a@x.com", "B <B@x.com>", "a@x.com"])
        events = resend.PROVIDER.parse(orjson.dumps(item))
        assert [e["recipient"] for e in events] == ["a@x.com", "b@x.com"]
        ids = [e["event_id"] for e in events]
        assert ids[0].endswith("/a@x.com") and ids[1].endswith("/b@x.com")
        assert ids[0].split("/")[0] == ids[1].split("/")[0]
        assert_canonical(events)

    @pytest.mark.parametrize("event_type", ["email.opened", "email.clicked"])
    def test_engagement_of_a_message_to_several_addresses_has_no_recipient(
        self, event_type: str
    ) -> None:
        assert self.parse_one(event_type, to=["a@x.com", "b@x.com"])["recipient"] is None

    def test_single_address_keeps_the_derived_event_id(self) -> None:
        event = self.parse_one(to="Lead <LEAD@prospect.com>")
        assert event["recipient"] == "lead@prospect.com"
        assert "/" not in event["event_id"]

    def test_event_id_is_stable_across_redeliveries(self) -> None:
        assert self.parse_one()["event_id"] == self.parse_one()["event_id"]
        assert self.parse_one()["event_id"] != self.parse_one(subject="other")["event_id"]

    def test_tags_as_an_object_or_as_name_value_pairs(self) -> None:
        pairs = [{"name": "campaign", "value": "spring"}, {"name": "n", "value": 3}, {"x": 1}]
        assert self.parse_one(tags=pairs)["tags"] == {"campaign": "spring", "n": "3"}
        assert self.parse_one(tags={"campaign": "spring"})["tags"] == {"campaign": "spring"}
        with pytest.raises(ParseError, match="tags"):
            self.parse_one(tags=["campaign"])

    def test_click_details(self) -> None:
        click = {"ipAddress": "203.0.113.9", "link": "https://x.example", "userAgent": "UA"}
        event = self.parse_one("email.clicked", click=click)
        assert (event["url"], event["ip"], event["user_agent"]) == (
            "https://x.example",
            "203.0.113.9",
            "UA",
        )

    @pytest.mark.parametrize(
        ("event_type", "expected"),
        [
            ("email.sent", EventType.QUEUED),
            ("email.scheduled", EventType.QUEUED),
            ("email.delivered", EventType.DELIVERED),
            ("email.delivery_delayed", EventType.DEFERRED),
            ("email.bounced", EventType.BOUNCED),
            ("email.failed", EventType.REJECTED),
            ("email.suppressed", EventType.REJECTED),
            ("email.opened", EventType.OPENED),
            ("email.clicked", EventType.CLICKED),
            ("email.complained", EventType.COMPLAINED),
            ("email.received", EventType.UNKNOWN),
            ("contact.created", EventType.UNKNOWN),
            ("", EventType.UNKNOWN),
        ],
    )
    def test_event_types(self, event_type: str, expected: EventType) -> None:
        assert self.parse_one(event_type)["event_type"] == expected

    @pytest.mark.parametrize(
        ("bounce", "expected"),
        [
            ({"type": "Permanent", "subType": "General"}, (EventType.BOUNCED, BounceClass.HARD)),
            ({"type": "Permanent", "subType": "NoEmail"}, (EventType.BOUNCED, BounceClass.HARD)),
            ({"type": "Transient", "subType": "General"}, (EventType.BOUNCED, BounceClass.SOFT)),
            ({"type": "Temporary"}, (EventType.BOUNCED, BounceClass.SOFT)),
            (
                {"type": "Transient", "subType": "MailboxFull"},
                (EventType.BOUNCED, BounceClass.SOFT),
            ),
            (
                {"type": "Transient", "subType": "ContentRejected"},
                (EventType.BOUNCED, BounceClass.BLOCK),
            ),
            (
                {"type": "Transient", "subType": "AttachmentRejected"},
                (EventType.BOUNCED, BounceClass.BLOCK),
            ),
            ({"type": "Undetermined"}, (EventType.BOUNCED, BounceClass.UNDETERMINED)),
            (
                {"type": "Permanent", "subType": "Suppressed"},
                (EventType.REJECTED, BounceClass.HARD),
            ),
            (
                {"type": "Something", "diagnosticCode": ["smtp; 550 5.1.1 user unknown"]},
                (EventType.BOUNCED, BounceClass.HARD),
            ),
            ({}, (EventType.BOUNCED, BounceClass.UNDETERMINED)),
        ],
    )
    def test_bounce_classification(
        self, bounce: dict[str, Any], expected: tuple[EventType, BounceClass]
    ) -> None:
        event = self.parse_one("email.bounced", bounce=bounce)
        assert (event["event_type"], event["bounce_class"]) == expected

    def test_diagnostic_code_gives_the_status(self) -> None:
        bounce = {"type": "Permanent", "diagnosticCode": ["smtp; 550 5.1.1 no such user"]}
        event = self.parse_one("email.bounced", bounce=bounce)
        assert (event["smtp_status"], event["diagnostic"], event["provider_category"]) == (
            "5.1.1",
            "smtp; 550 5.1.1 no such user",
            "Permanent",
        )

    def test_bounce_details_are_read_only_on_bounces(self) -> None:
        event = self.parse_one(bounce={"type": "Permanent", "message": "x"})
        assert (event["bounce_class"], event["provider_category"], event["diagnostic"]) == (
            None,
            None,
            None,
        )

    def test_deferral_is_soft(self) -> None:
        assert self.parse_one("email.delivery_delayed")["bounce_class"] == BounceClass.SOFT

    # --- Samples --------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("delivered", (EventType.DELIVERED, None)),
            ("hard", (EventType.BOUNCED, BounceClass.HARD)),
            ("soft", (EventType.BOUNCED, BounceClass.SOFT)),
            ("deferred", (EventType.DEFERRED, BounceClass.SOFT)),
            ("open", (EventType.OPENED, None)),
            ("click", (EventType.CLICKED, None)),
            ("complaint", (EventType.COMPLAINED, None)),
        ],
    )
    def test_samples_parse_back(
        self, kind: SampleKind, expected: tuple[EventType, BounceClass | None]
    ) -> None:
        at = 1_772_446_500_000
        payload = resend.sample(
            Sample(kind, "Lead@Prospect.com", "m-1", at, "evt-1", "https://x.example/o")
        )
        assert payload is not None
        (event,) = resend.PROVIDER.parse(orjson.dumps(payload))
        assert (event["event_type"], event["bounce_class"]) == expected
        assert (event["recipient"], event["message_id"], event["occurred_at"]) == (
            "lead@prospect.com",
            "m-1",
            at,
        )
        if kind == "click":
            assert event["url"] == "https://x.example/o"
        assert_canonical([event])

    @pytest.mark.parametrize("kind", ["reply", "open_machine"])
    def test_kinds_resend_does_not_report_have_no_sample(self, kind: SampleKind) -> None:
        assert resend.sample(Sample(kind, "a@x.com", "m", 0, "e", "")) is None
