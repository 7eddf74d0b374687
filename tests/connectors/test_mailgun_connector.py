"""Mailgun: the shared contract (its signature tests rewritten for a signature that travels
inside the body and covers only timestamp + token), the freshness window, the one-time token,
and the documented shapes (`event-data`, failures by severity and reason)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest

from mailstream.connectors import mailgun
from mailstream.connectors.base import Sample, SampleKind
from mailstream.errors import ParseError, SignatureError
from mailstream.events import BounceClass, EventType
from mailstream.settings import ProviderAuth
from tests.connectors.provider_contract import (
    NOW,
    OLD_SECRET,
    SECRET,
    ProviderContract,
    assert_canonical,
)

TOKEN = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"


def signature_of(secret: str, timestamp: str, token: str) -> str:
    """Mailgun's recipe, written out: hex HMAC-SHA256 of timestamp + token."""
    return hmac.new(secret.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


class TestMailgun(ProviderContract):
    provider = mailgun.PROVIDER
    event_type_key = "event"  # inside `event-data`: the contract tests that set it are adapted
    timestamp_keys = ("timestamp",)
    message_id_key = "message-id"
    known_keys = (
        "signature",
        "event-data",
        "event",
        "id",
        "timestamp",
        "recipient",
        "envelope",
        "sender",
        "message",
        "headers",
        "message-id",
        "tags",
        "user-variables",
        "delivery-status",
        "code",
        "bounce-code",
        "message",
        "description",
        "severity",
        "reason",
        "reject",
        "url",
        "ip",
        "client-info",
        "user-agent",
    )

    def valid_item(self) -> dict[str, Any]:
        return {
            "event-data": {
                "event": "delivered",
                "id": "CPgfbmQMTCKtHW6uIWtuVe",
                "timestamp": 1772446500.153125,
                "recipient": "lead@prospect.com",
                "envelope": {"sender": "news@mg.example.com"},
                "message": {"headers": {"message-id": "20260302.1.DF59@mg.example.com"}},
                "tags": ["march"],
                "user-variables": {"campaign": "spring"},
                "delivery-status": {"code": 250, "message": "OK"},
            }
        }

    def with_event(self, **fields: Any) -> dict[str, Any]:
        item = self.valid_item()
        item["event-data"] = dict(item["event-data"], **fields)
        return item

    def with_message_id(self, message_id: str) -> dict[str, Any]:
        return self.with_event(message={"headers": {"message-id": message_id}})

    def parse_one(self, event: str = "delivered", **fields: Any) -> dict[str, Any]:
        (parsed,) = mailgun.PROVIDER.parse(orjson.dumps(self.with_event(event=event, **fields)))
        return parsed

    def signed(self, secret: str = SECRET, now: float = NOW, item: Any = None) -> bytes:
        body = self.body(item)
        signed_body, headers = mailgun.PROVIDER.signed(body, self.config(secret), now)
        assert headers == {}
        return signed_body

    def resigned(self, body: bytes, **signature: Any) -> bytes:
        document = orjson.loads(body)
        document["signature"] = dict(document["signature"], **signature)
        return orjson.dumps(document)

    # --- The contract's signature tests, with the signature inside the body ----------------

    def test_signed_request_passes(self) -> None:
        mailgun.verify(self.signed(), {}, self.config(), NOW)

    def test_header_names_are_case_insensitive(self) -> None:
        # Mailgun sends no signature header; headers of any name are ignored.
        mailgun.verify(self.signed(), {"X-Mailgun-Signature": "0" * 64}, self.config(), NOW)

    def test_forged_signature_is_refused(self) -> None:
        with pytest.raises(SignatureError, match="does not match"):
            mailgun.verify(self.signed("attacker-guess"), {}, self.config(), NOW)

    def test_altered_body_is_refused(self) -> None:
        body = self.signed()
        for changed in ({"token": TOKEN}, {"timestamp": str(int(NOW) - 1)}):
            with pytest.raises(SignatureError, match="does not match"):
                mailgun.verify(self.resigned(body, **changed), {}, self.config(), NOW)

    def test_event_data_is_not_covered_by_the_signature(self) -> None:
        # Mailgun signs timestamp + token only: another event under a captured signature
        # verifies. The freshness window and the ingest's one-time token refuse its replay.
        document = orjson.loads(self.signed())
        document["event-data"]["event"] = "complained"
        mailgun.verify(orjson.dumps(document), {}, self.config(), NOW)
        assert mailgun.PROVIDER.replay_token(orjson.dumps(document)) == (
            document["signature"]["token"].encode()
        )

    def test_rotated_secret_accepts_old_and_new(self) -> None:
        rotating = self.config(SECRET, OLD_SECRET)
        for secret in (SECRET, OLD_SECRET):
            mailgun.verify(self.signed(secret), {}, rotating, NOW)

    def test_missing_credential_is_refused(self) -> None:
        with pytest.raises(SignatureError, match="missing 'signature' object"):
            mailgun.verify(self.body(), {}, self.config(), NOW)

    def test_allow_unsigned_still_checks_a_presented_credential(self) -> None:
        with pytest.raises(SignatureError, match="does not match"):
            mailgun.verify(self.signed("attacker-guess"), {}, self.config(allow_unsigned=True), NOW)

    def test_unsigned_bodies_that_are_not_json_pass_only_when_allowed(self) -> None:
        mailgun.verify(b"not json", {}, ProviderAuth(allow_unsigned=True), NOW)
        with pytest.raises(SignatureError, match="missing"):
            mailgun.verify(b"not json", {}, self.config(), NOW)

    # --- Signature details ----------------------------------------------------------------

    def test_signature_is_hmac_of_timestamp_and_token(self) -> None:
        block = {"timestamp": str(int(NOW)), "token": TOKEN}
        block["signature"] = signature_of(SECRET, block["timestamp"], TOKEN)
        body = orjson.dumps({"signature": block, **self.valid_item()})
        mailgun.verify(body, {}, self.config(), NOW)
        assert mailgun.PROVIDER.replay_token(body) == TOKEN.encode()

    @pytest.mark.parametrize("token", [12345, "", None])
    def test_a_token_that_is_no_text_is_refused_so_every_verified_body_has_one(
        self, token: object
    ) -> None:
        """The ingest refuses a used token only if it can read one: a numeric or empty token
        that verified would slip past that check."""
        block = {"timestamp": str(int(NOW)), "token": token}
        block["signature"] = signature_of(SECRET, str(int(NOW)), str(token or ""))
        body = orjson.dumps({"signature": block, **self.valid_item()})
        with pytest.raises(SignatureError, match="token"):
            mailgun.verify(body, {}, self.config(), NOW)
        assert mailgun.PROVIDER.replay_token(body) is None

    def test_a_numeric_timestamp_is_accepted(self) -> None:
        body = self.signed()
        timestamp = orjson.loads(body)["signature"]["timestamp"]
        mailgun.verify(self.resigned(body, timestamp=int(timestamp)), {}, self.config(), NOW)

    def test_parent_signature_of_a_subaccount_event(self) -> None:
        body = self.signed("subaccount-key")
        block = orjson.loads(body)["signature"]
        parent = signature_of(SECRET, block["timestamp"], block["token"])
        mailgun.verify(self.resigned(body, **{"parent-signature": parent}), {}, self.config(), NOW)
        with pytest.raises(SignatureError, match="does not match"):
            mailgun.verify(body, {}, self.config(), NOW)

    @pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
    def test_timestamp_inside_the_window_passes(self, offset: int) -> None:
        mailgun.verify(self.signed(now=NOW + offset), {}, self.config(), NOW)

    @pytest.mark.parametrize("offset", [-301, -86400, 301, 86400])
    def test_stale_or_future_timestamp_is_refused(self, offset: int) -> None:
        with pytest.raises(SignatureError, match=r"signature\.timestamp .* window"):
            mailgun.verify(self.signed(now=NOW + offset), {}, self.config(), NOW)

    def test_window_is_configurable(self) -> None:
        body = self.signed(now=NOW - 3600)
        mailgun.verify(body, {}, self.config(max_age_seconds=7200), NOW)

    @pytest.mark.parametrize("timestamp", ["soon", "1.5", "-10", "9" * 13, ""])
    def test_malformed_timestamp_is_refused(self, timestamp: str) -> None:
        body = self.resigned(self.signed(), timestamp=timestamp)
        with pytest.raises(SignatureError, match=r"signature\.timestamp must be unix seconds"):
            mailgun.verify(body, {}, self.config(), NOW)

    @pytest.mark.parametrize("missing", ["timestamp", "token"])
    def test_incomplete_signature_object_is_refused(self, missing: str) -> None:
        document = orjson.loads(self.signed())
        del document["signature"][missing]
        with pytest.raises(SignatureError, match="needs timestamp, a token"):
            mailgun.verify(orjson.dumps(document), {}, self.config(), NOW)

    @pytest.mark.parametrize(
        ("signature", "message"),
        [
            ("text", "'signature' is a string, expected an object"),
            ({"timestamp": "1", "token": "t", "signature": ["x"]}, "is an array"),
            ({"timestamp": True, "token": "t", "signature": "x"}, "is a boolean"),
        ],
    )
    def test_wrong_typed_signature_is_refused(self, signature: Any, message: str) -> None:
        body = orjson.dumps({"signature": signature, **self.valid_item()})
        with pytest.raises(SignatureError, match=message):
            mailgun.verify(body, {}, self.config(), NOW)

    @pytest.mark.parametrize("field", ["token", "signature"])
    def test_oversized_credentials_are_refused(self, field: str) -> None:
        body = self.resigned(self.signed(), **{field: "a" * 5000})
        with pytest.raises(SignatureError, match="longer than 1024 characters"):
            mailgun.verify(body, {}, self.config(), NOW)

    def test_only_hmac_mode_is_supported(self) -> None:
        with pytest.raises(SignatureError, match="hmac"):
            mailgun.verify(self.signed(), {}, self.config(mode="api_key"), NOW)

    def test_signing_replaces_an_old_signature_and_is_deterministic(self) -> None:
        body = self.signed(now=NOW - 10_000)
        again = mailgun.sign_body(body, self.config(), NOW)
        mailgun.verify(again, {}, self.config(), NOW)
        assert again == self.signed()
        other = self.signed(item=self.with_event(event="opened"))
        assert (
            orjson.loads(other)["signature"]["token"] != orjson.loads(again)["signature"]["token"]
        )

    def test_a_batch_cannot_be_signed(self) -> None:
        with pytest.raises(ValueError, match="one JSON object"):
            mailgun.sign_body(self.body([self.valid_item()] * 2), self.config(), NOW)

    def test_replay_token_never_raises(self) -> None:
        for body in (b"", b"[]", b"{", b'{"signature": 5}', b'{"signature": {"token": 5}}'):
            assert mailgun.PROVIDER.replay_token(body) is None

    # --- The contract's parsing tests, with the fields inside `event-data` -----------------

    def test_batch_parses_every_item_in_order(self) -> None:
        items = [self.with_message_id(f"<m{i}@x>") for i in range(50)]
        events = self.provider.parse(self.body(items))
        assert [event["message_id"] for event in events] == [f"m{i}@x" for i in range(50)]

    def test_missing_timestamp_is_a_missing_field(self) -> None:
        item = self.valid_item()
        del item["event-data"]["timestamp"]
        with pytest.raises(ParseError) as error:
            self.provider.parse(self.body(item))
        assert error.value.kind == "missing_field"

    def test_missing_event_data_is_a_missing_field(self) -> None:
        with pytest.raises(ParseError) as error:
            self.provider.parse(b'{"signature": {}}')
        assert error.value.kind == "missing_field"

    def test_batch_error_names_the_item(self) -> None:
        bad = self.valid_item()
        del bad["event-data"]["timestamp"]
        with pytest.raises(ParseError, match="batch item 1"):
            self.provider.parse(self.body([self.valid_item(), bad]))

    def test_null_optional_fields_give_null_values(self) -> None:
        data = {key: None for key in self.valid_item()["event-data"]}
        item = {"event-data": dict(data, event="delivered", timestamp=1772446500)}
        events = self.provider.parse(self.body(item))
        assert [event["recipient"] for event in events] == [None]
        assert events[0]["message_id"] is None
        assert_canonical(events)

    def test_unknown_event_type_is_unknown_not_an_error(self) -> None:
        assert self.parse_one("something.new")["event_type"] == EventType.UNKNOWN

    def test_wrong_typed_nested_values_raise_only_parse_errors(self) -> None:
        for key in self.valid_item()["event-data"]:
            for value in (12345, 1.5, True, "text", [], ["x"], {}, {"email": 5}):
                try:
                    events = self.provider.parse(self.body(self.with_event(**{key: value})))
                except ParseError as error:
                    assert error.kind in {"wrong_type", "invalid_value", "missing_field"}
                else:
                    assert_canonical(events)

    def test_wrong_typed_timestamp_is_refused(self) -> None:
        for value in (True, [], {}, "yesterday", -5, 10**15, 1e300, "99999999999999"):
            with pytest.raises(ParseError) as error:
                self.provider.parse(self.body(self.with_event(timestamp=value)))
            assert error.value.kind in {"wrong_type", "invalid_value"}

    def test_message_key_is_the_clean_message_id(self) -> None:
        item = self.with_message_id(" <key-1@example.com> ")
        assert self.provider.message_key(self.body(item)) == b"key-1@example.com"
        assert self.provider.message_key(self.body([item, self.valid_item()])) == (
            b"key-1@example.com"
        )

    def test_any_timestamp_value_nested(self) -> None:
        for value in (0, 1.5, "1772446500", "2026-03-02T10:15:00Z", -1, "x"):
            try:
                events = self.provider.parse(self.body(self.with_event(timestamp=value)))
            except ParseError as error:
                assert error.kind in {"wrong_type", "invalid_value"}
            else:
                assert_canonical(events)

    # --- Shapes ---------------------------------------------------------------------------

    def test_fields_of_the_event(self) -> None:
        event = self.parse_one()
        assert (event["event_id"], event["recipient"], event["sender"]) == (
            "CPgfbmQMTCKtHW6uIWtuVe",
            "lead@prospect.com",
            "news@mg.example.com",
        )
        assert (event["message_id"], event["occurred_at"]) == (
            "20260302.1.DF59@mg.example.com",
            1772446500153,
        )

    def test_event_id_without_an_id_ignores_the_signature(self) -> None:
        item = self.valid_item()
        del item["event-data"]["id"]
        first, again = (
            self.provider.parse(self.signed(item=item, now=at)) for at in (NOW, NOW + 60)
        )
        assert first[0]["event_id"] == again[0]["event_id"]
        assert len(first[0]["event_id"]) == 64

    def test_tags_and_user_variables(self) -> None:
        event = self.parse_one(tags=["a", "campaign"], **{"user-variables": {"campaign": 7}})
        assert event["tags"] == {"a": "", "campaign": "7"}
        with pytest.raises(ParseError, match="tags"):
            self.parse_one(tags=[1])
        with pytest.raises(ParseError, match="tags"):
            self.parse_one(tags="march")

    def test_click_details(self) -> None:
        event = self.parse_one(
            "clicked",
            url="https://x.example",
            ip="203.0.113.9",
            **{"client-info": {"user-agent": "UA"}},
        )
        assert (event["url"], event["ip"], event["user_agent"]) == (
            "https://x.example",
            "203.0.113.9",
            "UA",
        )

    @pytest.mark.parametrize(
        ("event_type", "expected"),
        [
            ("accepted", EventType.QUEUED),
            ("rejected", EventType.REJECTED),
            ("delivered", EventType.DELIVERED),
            ("failed", EventType.BOUNCED),
            ("opened", EventType.OPENED),
            ("clicked", EventType.CLICKED),
            ("unsubscribed", EventType.UNSUBSCRIBED),
            ("complained", EventType.COMPLAINED),
            ("stored", EventType.UNKNOWN),
            ("list_member_uploaded", EventType.UNKNOWN),
            ("list_uploaded", EventType.UNKNOWN),
            ("", EventType.UNKNOWN),
        ],
    )
    def test_event_types(self, event_type: str, expected: EventType) -> None:
        assert self.parse_one(event_type)["event_type"] == expected

    @pytest.mark.parametrize(
        ("failure", "expected"),
        [
            (
                {
                    "severity": "permanent",
                    "reason": "bounce",
                    "code": 550,
                    "message": "5.1.1 no such user",
                },
                (EventType.BOUNCED, BounceClass.HARD),
            ),
            (
                {"severity": "permanent", "reason": "bounce", "code": 550, "message": "5.7.1 spam"},
                (EventType.BOUNCED, BounceClass.BLOCK),
            ),
            (
                {"severity": "permanent", "reason": "generic", "code": 550},
                (EventType.BOUNCED, BounceClass.UNDETERMINED),
            ),
            (
                {"severity": "permanent", "reason": "bounce", "message": "5.2.2 mailbox full"},
                (EventType.BOUNCED, BounceClass.SOFT),
            ),
            (
                {"severity": "temporary", "reason": "generic", "code": 550, "message": "5.1.1 x"},
                (EventType.DEFERRED, BounceClass.SOFT),
            ),
            ({"severity": "Temporary"}, (EventType.DEFERRED, BounceClass.SOFT)),
            (
                {"severity": "permanent", "reason": "suppress-bounce"},
                (EventType.REJECTED, BounceClass.HARD),
            ),
            (
                {"severity": "permanent", "reason": "suppress-complaint", "message": "spam"},
                (EventType.REJECTED, BounceClass.UNDETERMINED),
            ),
            (
                {"severity": "permanent", "reason": "suppress-unsubscribe"},
                (EventType.REJECTED, BounceClass.UNDETERMINED),
            ),
            ({"reason": "hardfail"}, (EventType.REJECTED, BounceClass.UNDETERMINED)),
            ({"severity": "permanent", "reason": "old"}, (EventType.BOUNCED, BounceClass.EXPIRED)),
            ({}, (EventType.BOUNCED, BounceClass.UNDETERMINED)),
        ],
    )
    def test_failure_classification(
        self, failure: dict[str, Any], expected: tuple[EventType, BounceClass]
    ) -> None:
        status = {key: failure.pop(key) for key in ("code", "message") if key in failure}
        event = self.parse_one("failed", **failure, **{"delivery-status": status})
        assert (event["event_type"], event["bounce_class"]) == expected

    def test_suppression_keeps_mailguns_note_as_the_diagnostic_only(self) -> None:
        note = "Not delivering to a user who marked your messages as spam"
        status = {"code": 607, "description": note}
        event = self.parse_one(
            "failed",
            severity="permanent",
            reason="suppress-complaint",
            **{"delivery-status": status},
        )
        assert (event["diagnostic"], event["bounce_reason"]) == (note, None)

    def test_bounce_code_gives_the_status(self) -> None:
        status = {"code": 550, "bounce-code": "5.1.1", "message": "no"}
        event = self.parse_one("failed", severity="permanent", **{"delivery-status": status})
        assert (event["smtp_status"], event["bounce_class"], event["provider_category"]) == (
            "5.1.1",
            BounceClass.HARD,
            "permanent",
        )

    def test_failure_details_are_read_only_on_failures(self) -> None:
        event = self.parse_one(severity="permanent", reason="bounce")
        assert (event["bounce_class"], event["provider_category"], event["diagnostic"]) == (
            None,
            None,
            None,
        )

    def test_rejected_reason_is_the_diagnostic(self) -> None:
        event = self.parse_one("rejected", reject={"reason": "Sandbox subdomains are for test"})
        assert (event["event_type"], event["diagnostic"]) == (
            EventType.REJECTED,
            "Sandbox subdomains are for test",
        )

    # --- Samples --------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("delivered", (EventType.DELIVERED, None)),
            ("hard", (EventType.BOUNCED, BounceClass.HARD)),
            ("soft", (EventType.DEFERRED, BounceClass.SOFT)),
            ("deferred", (EventType.DEFERRED, BounceClass.SOFT)),
            ("open", (EventType.OPENED, None)),
            ("open_machine", (EventType.OPENED, None)),
            ("click", (EventType.CLICKED, None)),
            ("complaint", (EventType.COMPLAINED, None)),
        ],
    )
    def test_samples_sign_and_parse_back(
        self, kind: SampleKind, expected: tuple[EventType, BounceClass | None]
    ) -> None:
        at = 1_772_446_500_000
        payload = mailgun.sample(
            Sample(kind, "Lead@Prospect.com", "m-1", at, "evt-1", "https://x.example/o")
        )
        assert payload is not None
        body, headers = mailgun.PROVIDER.signed(orjson.dumps(payload), self.config(), NOW)
        mailgun.verify(body, headers, self.config(), NOW)
        (event,) = mailgun.PROVIDER.parse(body)
        assert (event["event_type"], event["bounce_class"]) == expected
        assert (event["recipient"], event["message_id"], event["occurred_at"]) == (
            "lead@prospect.com",
            "m-1",
            at,
        )
        assert event["event_id"] == "evt-1"
        if kind == "click":
            assert event["url"] == "https://x.example/o"
        assert_canonical([event])

    def test_replies_have_no_sample(self) -> None:
        assert mailgun.sample(Sample("reply", "a@x.com", "m", 0, "e", "")) is None
