"""SparkPost: the shared contract (in api_key mode, with the items in their msys wrappers), its
two authentication modes, the bounce-classification table and the open pixels."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given

from mailstream.connectors import sparkpost
from mailstream.connectors.base import Sample, SampleKind
from mailstream.errors import ParseError, SignatureError
from mailstream.events import BounceClass, EventType
from mailstream.settings import ProviderAuth
from tests.connectors.provider_contract import (
    NOW,
    PROPERTY_SETTINGS,
    SECRET,
    TIMESTAMP_VALUES,
    WRONG_VALUES,
    ProviderContract,
    assert_canonical,
)

TOKEN_HEADER = "X-MessageSystems-Webhook-Token"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def wrapped(event: dict[str, Any], wrapper: str = "message_event") -> dict[str, Any]:
    return {"msys": {wrapper: event}}


class TestSparkPost(ProviderContract):
    provider = sparkpost.PROVIDER
    event_type_key = "type"  # inside msys.<wrapper>: the contract tests that use it are adapted
    timestamp_keys = ("timestamp",)
    message_id_key = "message_id"
    known_keys = (
        "msys",
        "message_event",
        "track_event",
        "gen_event",
        "unsubscribe_event",
        "relay_event",
        "type",
        "timestamp",
        "event_id",
        "message_id",
        "rcpt_to",
        "raw_rcpt_to",
        "friendly_from",
        "msg_from",
        "bounce_class",
        "raw_reason",
        "reason",
        "fbtype",
        "target_link_url",
        "user_agent",
        "ip_address",
        "initial_pixel",
        "user_agent_parsed",
        "is_prefetched",
        "rcpt_meta",
        "rcpt_tags",
        "campaign_id",
        "transmission_id",
        "subaccount_id",
    )

    def event(self) -> dict[str, Any]:
        return {
            "type": "delivery",
            "event_id": "92356927693813856",
            "message_id": "000443ee14578172be22",
            "rcpt_to": "recipient@example.com",
            "raw_rcpt_to": "Recipient@example.com",
            "friendly_from": "sender@example.com",
            "ip_address": "18.236.253.72",
            "rcpt_meta": {"customKey": "customValue"},
            "rcpt_tags": ["male", "US"],
            "campaign_id": "Example Campaign Name",
            "transmission_id": "65832150921904138",
            "subaccount_id": "101",
            "timestamp": "1460989507",
        }

    def valid_item(self) -> dict[str, Any]:
        return wrapped(self.event())

    def config(self, *secrets: str, **options: Any) -> ProviderAuth:
        """The contract's secrets are the webhook's tokens (mode api_key)."""
        return ProviderAuth(mode="api_key", secrets=secrets or (SECRET,), **options)

    def parse_one(self, wrapper: str = "message_event", **fields: Any) -> dict[str, Any]:
        (event,) = sparkpost.PROVIDER.parse(orjson.dumps(wrapped(self.event() | fields, wrapper)))
        assert_canonical([event])
        return event

    # --- The contract's item tests, with the fields where SparkPost puts them -------------

    def test_batch_parses_every_item_in_order(self) -> None:
        items = [wrapped(self.event() | {"message_id": f"<m{i}@x>"}) for i in range(50)]
        events = self.provider.parse(self.body(items))
        assert [event["message_id"] for event in events] == [f"m{i}@x" for i in range(50)]

    def test_missing_timestamp_is_a_missing_field(self) -> None:
        item = wrapped({k: v for k, v in self.event().items() if k != "timestamp"})
        with pytest.raises(ParseError) as error:
            self.provider.parse(self.body(item))
        assert error.value.kind == "missing_field"

    def test_batch_error_names_the_item(self) -> None:
        bad = wrapped({k: v for k, v in self.event().items() if k != "timestamp"})
        with pytest.raises(ParseError, match="batch item 1"):
            self.provider.parse(self.body([self.valid_item(), bad]))

    def test_null_optional_fields_give_null_values(self) -> None:
        required = {"type", "timestamp"}
        event = {k: (v if k in required else None) for k, v in self.event().items()}
        events = self.provider.parse(self.body(wrapped(event)))
        assert [event["recipient"] for event in events] == [None]
        assert events[0]["message_id"] is None
        assert_canonical(events)

    def test_unknown_event_type_is_unknown_not_an_error(self) -> None:
        event = self.parse_one(type="something.new")
        assert event["event_type"] == EventType.UNKNOWN

    def test_wrong_typed_values_raise_only_parse_errors(self) -> None:
        for key in self.event():
            for value in WRONG_VALUES:
                try:
                    events = self.provider.parse(self.body(wrapped(self.event() | {key: value})))
                except ParseError as error:
                    assert error.kind in {"wrong_type", "invalid_value", "missing_field"}
                else:
                    assert_canonical(events)

    def test_wrong_typed_timestamp_is_refused(self) -> None:
        for value in (True, [], {}, "yesterday", -5, 10**15, 1e300, "99999999999999"):
            with pytest.raises(ParseError) as error:
                self.parse_one(timestamp=value)
            assert error.value.kind in {"wrong_type", "invalid_value"}

    def test_message_key_is_the_clean_message_id(self) -> None:
        item = wrapped(self.event() | {"message_id": " <key-1@example.com> "})
        assert self.provider.message_key(self.body(item)) == b"key-1@example.com"
        assert self.provider.message_key(self.body([item, self.valid_item()])) == (
            b"key-1@example.com"
        )

    @pytest.mark.parametrize(
        "item", [{"msys": None}, {"msys": {}}, {"msys": {"message_event": 5}}, {"msys": []}]
    )
    def test_message_key_of_odd_items_is_none(self, item: Any) -> None:
        assert self.provider.message_key(orjson.dumps([item])) is None

    @PROPERTY_SETTINGS
    @given(value=TIMESTAMP_VALUES)
    def test_any_timestamp_value(self, value: Any) -> None:
        self.parse_or_typed_error(orjson.dumps(wrapped(self.event() | {"timestamp": value})))

    # --- Authentication -------------------------------------------------------------------

    def test_no_secret_configured_is_refused(self) -> None:
        body = self.body()
        headers = self.provider.sign(body, self.config(), NOW)
        for unconfigured in (ProviderAuth(mode="api_key"), ProviderAuth(mode="basic")):
            with pytest.raises(SignatureError, match="no secret configured"):
                self.provider.verify(body, headers, unconfigured, NOW)

    def test_allow_unsigned_accepts_a_request_without_credentials(self) -> None:
        for mode in ("api_key", "basic"):
            self.provider.verify(self.body(), {}, ProviderAuth(mode=mode, allow_unsigned=True), NOW)
        self.provider.verify(self.body(), {}, self.config(allow_unsigned=True), NOW)

    def test_altered_body_is_refused(self) -> None:
        """Overridden: neither a token nor basic auth covers the body, so SparkPost's webhooks
        have no integrity check beyond TLS; an altered body with the right token passes."""
        headers = self.provider.sign(self.body(), self.config(), NOW)
        self.provider.verify(self.body() + b" ", headers, self.config(), NOW)

    def test_token_is_sent_in_the_webhook_token_header(self) -> None:
        assert sparkpost.sign(self.body(), self.config(), NOW) == {TOKEN_HEADER: SECRET}
        with pytest.raises(SignatureError, match="not an accepted token"):
            sparkpost.verify(self.body(), {TOKEN_HEADER: "guess"}, self.config(), NOW)

    def test_custom_header_carries_the_token(self) -> None:
        config = self.config(api_key_header="x-api-key")
        assert sparkpost.sign(self.body(), config, NOW) == {"x-api-key": SECRET}
        sparkpost.verify(self.body(), {"X-Api-Key": SECRET}, config, NOW)
        with pytest.raises(SignatureError, match="missing x-api-key"):
            sparkpost.verify(self.body(), {TOKEN_HEADER: SECRET}, config, NOW)

    def test_basic_mode(self) -> None:
        config = ProviderAuth(mode="basic", basic_auth=(("hook", "pw-new"), ("hook", "pw-old")))
        body = self.body()
        assert sparkpost.sign(body, config, NOW) == basic("hook", "pw-new")
        sparkpost.verify(body, basic("hook", "pw-new"), config, NOW)
        sparkpost.verify(body, basic("hook", "pw-old"), config, NOW)
        with pytest.raises(SignatureError, match="wrong password"):
            sparkpost.verify(body, basic("hook", "guess"), config, NOW)
        with pytest.raises(SignatureError, match="missing Authorization"):
            sparkpost.verify(body, {TOKEN_HEADER: "pw-new"}, config, NOW)

    @pytest.mark.parametrize("authorization", ["Bearer abc", "Basic", "Basic !!!"])
    def test_malformed_basic_authorization_is_refused(self, authorization: str) -> None:
        config = ProviderAuth(mode="basic", basic_auth=(("hook", "pw"),))
        with pytest.raises(SignatureError, match="Authorization"):
            sparkpost.verify(self.body(), {"Authorization": authorization}, config, NOW)

    def test_hmac_mode_is_refused_since_sparkpost_signs_nothing(self) -> None:
        for config in (ProviderAuth(secrets=(SECRET,)), ProviderAuth(allow_unsigned=True)):
            with pytest.raises(SignatureError, match="signs nothing"):
                sparkpost.verify(self.body(), {TOKEN_HEADER: SECRET}, config, NOW)
        with pytest.raises(ValueError, match="signs nothing"):
            sparkpost.sign(self.body(), ProviderAuth(secrets=(SECRET,)), NOW)

    # --- Wrappers -------------------------------------------------------------------------

    def test_validation_ping_gives_no_events(self) -> None:
        assert sparkpost.PROVIDER.parse(b'[{"msys": {}}]') == []
        events = sparkpost.PROVIDER.parse(self.body([{"msys": {}}, self.valid_item()]))
        assert [event["event_type"] for event in events] == [EventType.DELIVERED]

    @pytest.mark.parametrize(
        ("item", "kind"),
        [
            ({}, "missing_field"),
            ({"msys": None}, "missing_field"),
            ({"msys": []}, "wrong_type"),
            ({"msys": {"message_event": None}}, "wrong_type"),
            ({"msys": {"track_event": "open"}}, "wrong_type"),
        ],
    )
    def test_malformed_wrapper_is_a_typed_error(self, item: dict[str, Any], kind: str) -> None:
        with pytest.raises(ParseError) as error:
            sparkpost.PROVIDER.parse(orjson.dumps(item))
        assert error.value.kind == kind

    @pytest.mark.parametrize(
        ("wrapper", "event_type", "expected"),
        [
            ("message_event", "injection", EventType.QUEUED),
            ("message_event", "delivery", EventType.DELIVERED),
            ("message_event", "delay", EventType.DEFERRED),
            ("message_event", "bounce", EventType.BOUNCED),
            ("message_event", "out_of_band", EventType.BOUNCED),
            ("message_event", "policy_rejection", EventType.REJECTED),
            ("message_event", "spam_complaint", EventType.COMPLAINED),
            ("message_event", "sms_status", EventType.UNKNOWN),
            ("gen_event", "generation_failure", EventType.REJECTED),
            ("gen_event", "generation_rejection", EventType.REJECTED),
            ("track_event", "initial_open", EventType.OPENED),
            ("track_event", "open", EventType.OPENED),
            ("track_event", "amp_initial_open", EventType.OPENED),
            ("track_event", "amp_open", EventType.OPENED),
            ("track_event", "click", EventType.CLICKED),
            ("track_event", "amp_click", EventType.CLICKED),
            ("unsubscribe_event", "list_unsubscribe", EventType.UNSUBSCRIBED),
            ("unsubscribe_event", "link_unsubscribe", EventType.UNSUBSCRIBED),
            ("relay_event", "relay_injection", EventType.UNKNOWN),
            ("relay_event", "relay_permfail", EventType.UNKNOWN),
            ("ab_test_event", "ab_test_completed", EventType.UNKNOWN),
        ],
    )
    def test_event_types(self, wrapper: str, event_type: str, expected: EventType) -> None:
        assert self.parse_one(wrapper, type=event_type)["event_type"] == expected

    def test_ip_address_is_the_openers_only_in_engagement_events(self) -> None:
        assert self.parse_one(type="delivery")["ip"] is None
        assert self.parse_one("track_event", type="click")["ip"] == "18.236.253.72"

    def test_fields(self) -> None:
        event = self.parse_one(subaccount_id=7, raw_rcpt_to="Lead@X.com", rcpt_to=None)
        assert (event["recipient"], event["sender"], event["tenant"]) == (
            "lead@x.com",
            "sender@example.com",
            "7",
        )
        assert event["tags"] == {
            "customKey": "customValue",
            "male": "",
            "US": "",
            "campaign_id": "Example Campaign Name",
            "transmission_id": "65832150921904138",
        }
        assert event["event_id"] == "92356927693813856"
        assert event["occurred_at"] == 1_460_989_507_000
        assert self.parse_one(timestamp="2016-04-18T14:25:07.000+00:00")["occurred_at"] == (
            1_460_989_507_000
        )

    def test_envelope_sender_when_there_is_no_from(self) -> None:
        event = self.parse_one(friendly_from=None, msg_from="msprvs1=x@sparkpostmail.com")
        assert event["sender"] == "msprvs1=x@sparkpostmail.com"

    @pytest.mark.parametrize("tags", ["male", [1], {"a": "b"}])
    def test_rcpt_tags_must_be_strings(self, tags: Any) -> None:
        with pytest.raises(ParseError, match="rcpt_tags"):
            self.parse_one(rcpt_tags=tags)

    def test_event_id_without_one_is_derived_from_the_event(self) -> None:
        first = self.parse_one(event_id=None)["event_id"]
        assert first == self.parse_one(event_id=None)["event_id"]
        assert first != self.parse_one(event_id=None, rcpt_to="other@x.com")["event_id"]

    # --- Bounce classification ------------------------------------------------------------

    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            ("1", (EventType.BOUNCED, BounceClass.UNDETERMINED)),
            ("10", (EventType.BOUNCED, BounceClass.HARD)),
            (10, (EventType.BOUNCED, BounceClass.HARD)),
            ("20", (EventType.BOUNCED, BounceClass.SOFT)),
            ("21", (EventType.BOUNCED, BounceClass.SOFT)),
            ("22", (EventType.BOUNCED, BounceClass.SOFT)),
            ("23", (EventType.BOUNCED, BounceClass.SOFT)),
            ("24", (EventType.BOUNCED, BounceClass.EXPIRED)),
            ("25", (EventType.REJECTED, BounceClass.UNDETERMINED)),
            ("30", (EventType.BOUNCED, BounceClass.HARD)),
            ("40", (EventType.BOUNCED, BounceClass.SOFT)),
            ("50", (EventType.BOUNCED, BounceClass.BLOCK)),
            ("51", (EventType.BOUNCED, BounceClass.BLOCK)),
            ("52", (EventType.BOUNCED, BounceClass.BLOCK)),
            ("53", (EventType.BOUNCED, BounceClass.BLOCK)),
            ("54", (EventType.BOUNCED, BounceClass.BLOCK)),
            ("60", (EventType.UNKNOWN, None)),
            ("70", (EventType.BOUNCED, BounceClass.SOFT)),
            ("80", (EventType.UNKNOWN, None)),
            ("90", (EventType.UNSUBSCRIBED, None)),
            ("100", (EventType.BOUNCED, BounceClass.SOFT)),
            (None, (EventType.BOUNCED, BounceClass.UNDETERMINED)),
        ],
    )
    def test_bounce_classes(
        self, code: str | int | None, expected: tuple[EventType, BounceClass | None]
    ) -> None:
        event = self.parse_one(type="bounce", bounce_class=code, raw_reason="550 no")
        assert (event["event_type"], event["bounce_class"]) == expected
        assert event["provider_category"] == (None if code is None else str(code))

    def test_mailbox_full_stays_soft_and_the_class_wins_over_the_text(self) -> None:
        full = self.parse_one(type="bounce", bounce_class="22", raw_reason="552 5.2.2 full")
        assert (full["bounce_class"], full["bounce_reason"], full["smtp_status"]) == (
            BounceClass.SOFT,
            "mailboxfull",
            "5.2.2",
        )
        block = self.parse_one(type="bounce", bounce_class="50", raw_reason="550 5.1.1 unknown")
        assert block["bounce_class"] == BounceClass.BLOCK

    def test_unlisted_class_is_classified_from_the_reason(self) -> None:
        event = self.parse_one(type="bounce", bounce_class="26", raw_reason="550 5.1.1 no user")
        assert (event["event_type"], event["bounce_class"]) == (
            EventType.BOUNCED,
            BounceClass.HARD,
        )

    def test_raw_reason_is_the_diagnostic_reason_the_fallback(self) -> None:
        both = self.parse_one(type="bounce", raw_reason="550 <a@x.com> gone", reason="550 ...")
        assert both["diagnostic"] == "550 <a@x.com> gone"
        assert self.parse_one(type="bounce", reason="550 ...")["diagnostic"] == "550 ..."

    @pytest.mark.parametrize(
        ("code", "expected"),
        [("24", BounceClass.SOFT), ("50", BounceClass.BLOCK), ("22", BounceClass.SOFT)],
    )
    def test_delay_keeps_its_type_and_takes_the_class(
        self, code: str, expected: BounceClass
    ) -> None:
        event = self.parse_one(type="delay", bounce_class=code, raw_reason="421 4.4.2 timeout")
        assert (event["event_type"], event["bounce_class"]) == (EventType.DEFERRED, expected)

    @pytest.mark.parametrize("code", ["10", "50", None])
    @pytest.mark.parametrize("event_type", ["policy_rejection", "generation_rejection"])
    def test_rejections_are_undetermined(self, event_type: str, code: str | None) -> None:
        event = self.parse_one(type=event_type, bounce_class=code, raw_reason="554 5.7.1 policy")
        assert (event["event_type"], event["bounce_class"]) == (
            EventType.REJECTED,
            BounceClass.UNDETERMINED,
        )

    def test_bounce_class_is_read_only_on_failures(self) -> None:
        event = self.parse_one(type="delivery", bounce_class="10")
        assert (event["event_type"], event["bounce_class"]) == (EventType.DELIVERED, None)

    def test_complaint_category_is_the_feedback_type(self) -> None:
        event = self.parse_one(type="spam_complaint", fbtype="abuse")
        assert (event["event_type"], event["provider_category"]) == (
            EventType.COMPLAINED,
            "abuse",
        )

    # --- Opens ----------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("event_type", "initial_pixel", "expected"),
        [
            ("initial_open", True, EventType.OPENED),
            ("initial_open", None, EventType.OPENED),
            ("open", True, EventType.UNKNOWN),
            ("open", False, EventType.OPENED),
            ("open", None, EventType.OPENED),
            ("amp_open", True, EventType.UNKNOWN),
            ("amp_open", False, EventType.OPENED),
            ("click", True, EventType.CLICKED),
        ],
    )
    def test_bottom_pixel_counts_only_without_the_top_one(
        self, event_type: str, initial_pixel: bool | None, expected: EventType
    ) -> None:
        event = self.parse_one("track_event", type=event_type, initial_pixel=initial_pixel)
        assert event["event_type"] == expected

    @pytest.mark.parametrize(
        ("event_type", "parsed", "expected"),
        [
            ("initial_open", {"is_prefetched": True, "is_proxy": True}, True),
            ("click", {"is_prefetched": True}, True),
            ("initial_open", {"is_prefetched": False, "is_proxy": True}, False),
            ("initial_open", {}, False),
            ("initial_open", None, False),
            ("delivery", {"is_prefetched": True}, False),
        ],
    )
    def test_prefetch_is_flagged_as_a_machine(
        self, event_type: str, parsed: dict[str, Any] | None, expected: bool
    ) -> None:
        event = self.parse_one("track_event", type=event_type, user_agent_parsed=parsed)
        assert event["provider_flagged_machine"] is expected

    @pytest.mark.parametrize("value", ["true", 1, []])
    def test_flags_must_be_booleans(self, value: Any) -> None:
        with pytest.raises(ParseError, match="expected a boolean"):
            self.parse_one("track_event", type="open", user_agent_parsed={"is_prefetched": value})
        with pytest.raises(ParseError, match="expected a boolean"):
            self.parse_one("track_event", type="open", initial_pixel=value)

    # --- Samples --------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("delivered", (EventType.DELIVERED, None, False)),
            ("hard", (EventType.BOUNCED, BounceClass.HARD, False)),
            ("soft", (EventType.BOUNCED, BounceClass.SOFT, False)),
            ("deferred", (EventType.DEFERRED, BounceClass.SOFT, False)),
            ("open", (EventType.OPENED, None, False)),
            ("open_machine", (EventType.OPENED, None, True)),
            ("click", (EventType.CLICKED, None, False)),
            ("complaint", (EventType.COMPLAINED, None, False)),
        ],
    )
    def test_samples_parse_back(
        self, kind: SampleKind, expected: tuple[EventType, BounceClass | None, bool]
    ) -> None:
        at = 1_772_446_500_000
        payload = sparkpost.sample(
            Sample(kind, "Lead@Prospect.com", "m-1", at, "evt-1", "https://x.example/o")
        )
        assert payload is not None
        (event,) = sparkpost.PROVIDER.parse(orjson.dumps([payload]))
        assert (
            event["event_type"],
            event["bounce_class"],
            event["provider_flagged_machine"],
        ) == expected
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
        assert sparkpost.sample(Sample("reply", "a@x.com", "m", 0, "e", "")) is None
