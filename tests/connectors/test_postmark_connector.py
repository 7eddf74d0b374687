"""Postmark: the shared contract (in basic-auth mode, Postmark's only scheme) and its quirks."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from mailstream.connectors import postmark
from mailstream.connectors.base import Sample, SampleKind
from mailstream.errors import ParseError, SignatureError
from mailstream.events import BounceClass, EventType
from mailstream.settings import ProviderAuth
from tests.connectors.provider_contract import NOW, SECRET, ProviderContract, assert_canonical

USER = "postmark"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class TestPostmark(ProviderContract):
    provider = postmark.PROVIDER
    event_type_key = "RecordType"
    timestamp_keys = ("DeliveredAt", "BouncedAt", "ReceivedAt", "ChangedAt")
    message_id_key = "MessageID"
    known_keys = (
        "RecordType",
        "Type",
        "TypeCode",
        "SuppressSending",
        "SuppressionReason",
        "Details",
        "Description",
        "Recipient",
        "Email",
        "From",
        "MessageID",
        "DeliveredAt",
        "BouncedAt",
        "ReceivedAt",
        "ChangedAt",
        "OriginalLink",
        "UserAgent",
        "Client",
        "Name",
        "Geo",
        "IP",
        "Metadata",
        "Tag",
        "MessageStream",
        "ServerID",
        "ServerId",
    )

    def valid_item(self) -> dict[str, Any]:
        return {
            "RecordType": "Delivery",
            "MessageStream": "outbound",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Recipient": "john@example.com",
            "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
            "Details": "smtp;250 2.0.0 OK",
            "Tag": "welcome-email",
            "ServerID": 23,
            "Metadata": {"a_key": "a_value"},
        }

    def config(self, *secrets: str, **options: Any) -> ProviderAuth:
        """Postmark authenticates by basic auth only: the contract's secrets are passwords."""
        passwords = secrets or (SECRET,)
        return ProviderAuth(
            mode="basic", basic_auth=tuple((USER, password) for password in passwords), **options
        )

    def parse_one(self, **fields: Any) -> dict[str, Any]:
        (event,) = postmark.PROVIDER.parse(orjson.dumps(dict(self.valid_item(), **fields)))
        assert_canonical([event])
        return event

    def bounce(self, **fields: Any) -> dict[str, Any]:
        item = {
            "RecordType": "Bounce",
            "MessageID": "m1@example.com",
            "Email": "x@example.com",
            "BouncedAt": "2024-03-15T23:33:20Z",
        }
        (event,) = postmark.PROVIDER.parse(orjson.dumps(item | fields))
        assert_canonical([event])
        return event

    # --- Authentication: the contract's tests that assume a default (hmac) config -----------

    def test_no_secret_configured_is_refused(self) -> None:
        body = self.body()
        headers = self.provider.sign(body, self.config(), NOW)
        with pytest.raises(SignatureError, match="no secret configured"):
            self.provider.verify(body, headers, ProviderAuth(mode="basic"), NOW)

    def test_allow_unsigned_accepts_a_request_without_credentials(self) -> None:
        unsigned = ProviderAuth(mode="basic", allow_unsigned=True)
        self.provider.verify(self.body(), {}, unsigned, NOW)
        self.provider.verify(self.body(), {}, self.config(allow_unsigned=True), NOW)

    def test_altered_body_is_refused(self) -> None:
        """Overridden: basic auth covers no part of the body, so Postmark's webhooks have no
        integrity check beyond TLS; an altered body with the right credentials passes."""
        headers = self.provider.sign(self.body(), self.config(), NOW)
        self.provider.verify(self.body() + b" ", headers, self.config(), NOW)

    def test_only_basic_mode_is_supported(self) -> None:
        for mode in ("hmac", "api_key"):
            with pytest.raises(SignatureError, match="basic"):
                postmark.verify(self.body(), {}, ProviderAuth(mode=mode, secrets=(SECRET,)), NOW)
        with pytest.raises(SignatureError, match="basic"):
            postmark.verify(self.body(), {}, ProviderAuth(allow_unsigned=True), NOW)

    def test_basic_credentials(self) -> None:
        config = ProviderAuth(mode="basic", basic_auth=(("hook", "pw-new"), ("hook", "pw-old")))
        body = self.body()
        assert postmark.sign(body, config, NOW) == basic("hook", "pw-new")
        postmark.verify(body, basic("hook", "pw-new"), config, NOW)
        postmark.verify(body, basic("hook", "pw-old"), config, NOW)
        for wrong in (basic("hook", "guess"), basic("other", "pw-new")):
            with pytest.raises(SignatureError, match="wrong password"):
                postmark.verify(body, wrong, config, NOW)

    @pytest.mark.parametrize(
        "authorization", ["Bearer abc", "Basic", "Basic !!!", "Basic " + "\u00e9", "basic%%"]
    )
    def test_malformed_authorization_is_refused(self, authorization: str) -> None:
        with pytest.raises(SignatureError, match="Authorization"):
            postmark.verify(self.body(), {"Authorization": authorization}, self.config(), NOW)

    def test_signing_without_credentials_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="basic_auth"):
            postmark.sign(self.body(), ProviderAuth(mode="basic"), NOW)

    # --- Record types ---------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("record_type", "expected"),
        [
            ("Delivery", EventType.DELIVERED),
            ("Bounce", EventType.BOUNCED),
            ("SpamComplaint", EventType.COMPLAINED),
            ("Open", EventType.OPENED),
            ("Click", EventType.CLICKED),
            ("SubscriptionChange", EventType.UNKNOWN),  # without SuppressSending
            ("Inbound", EventType.UNKNOWN),
            (None, EventType.UNKNOWN),
        ],
    )
    def test_record_types(self, record_type: str | None, expected: EventType) -> None:
        assert self.parse_one(RecordType=record_type)["event_type"] == expected

    @pytest.mark.parametrize(
        ("suppress", "expected"),
        [(True, EventType.UNSUBSCRIBED), (False, EventType.UNKNOWN), (None, EventType.UNKNOWN)],
    )
    def test_subscription_change(self, suppress: bool | None, expected: EventType) -> None:
        event = self.parse_one(
            RecordType="SubscriptionChange",
            DeliveredAt=None,
            ChangedAt="2020-02-01T10:53:34.416071Z",
            SuppressSending=suppress,
            SuppressionReason="ManualSuppression" if suppress else None,
        )
        assert event["event_type"] == expected
        assert event["occurred_at"] == 1580554414416
        assert event["bounce_class"] is None

    @pytest.mark.parametrize("value", ["true", 1, [], {}])
    def test_suppress_sending_must_be_a_boolean(self, value: Any) -> None:
        with pytest.raises(ParseError, match="SuppressSending") as error:
            self.parse_one(RecordType="SubscriptionChange", SuppressSending=value)
        assert error.value.kind == "wrong_type"

    # --- Bounce types ---------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("name", "code", "event_type", "bounce_class"),
        [
            ("HardBounce", 1, EventType.BOUNCED, BounceClass.HARD),
            ("Transient", 2, EventType.DEFERRED, BounceClass.SOFT),
            ("Unsubscribe", 16, EventType.UNSUBSCRIBED, None),
            ("Subscribe", 32, EventType.UNKNOWN, None),
            ("AutoResponder", 64, EventType.UNKNOWN, None),
            ("AddressChange", 128, EventType.BOUNCED, BounceClass.HARD),
            ("DnsError", 256, EventType.BOUNCED, BounceClass.SOFT),
            ("SpamNotification", 512, EventType.BOUNCED, BounceClass.BLOCK),
            ("OpenRelayTest", 1024, EventType.UNKNOWN, None),
            ("Unknown", 2048, EventType.BOUNCED, BounceClass.UNDETERMINED),
            ("SoftBounce", 4096, EventType.BOUNCED, BounceClass.SOFT),
            ("VirusNotification", 8192, EventType.BOUNCED, BounceClass.BLOCK),
            ("ChallengeVerification", 16384, EventType.BOUNCED, BounceClass.SOFT),
            ("BadEmailAddress", 100000, EventType.BOUNCED, BounceClass.HARD),
            ("SpamComplaint", 100001, EventType.COMPLAINED, None),
            ("ManuallyDeactivated", 100002, EventType.REJECTED, BounceClass.UNDETERMINED),
            ("Unconfirmed", 100003, EventType.REJECTED, BounceClass.UNDETERMINED),
            ("Blocked", 100006, EventType.BOUNCED, BounceClass.BLOCK),
            ("SMTPApiError", 100007, EventType.REJECTED, BounceClass.UNDETERMINED),
            ("InboundError", 100008, EventType.UNKNOWN, None),
            ("DMARCPolicy", 100009, EventType.BOUNCED, BounceClass.BLOCK),
            ("TemplateRenderingFailed", 100010, EventType.REJECTED, BounceClass.UNDETERMINED),
        ],
    )
    def test_bounce_types(
        self, name: str, code: int, event_type: EventType, bounce_class: BounceClass | None
    ) -> None:
        assert postmark.BOUNCE_TYPES[name][0] == code
        for fields in ({"Type": name, "TypeCode": code}, {"Type": name}, {"TypeCode": code}):
            event = self.bounce(**fields)
            assert (event["event_type"], event["bounce_class"]) == (event_type, bounce_class)
            assert event["provider_category"] == name

    def test_every_documented_bounce_type_is_tested(self) -> None:
        assert len(postmark.BOUNCE_TYPES) == 22

    def test_type_is_read_before_type_code(self) -> None:
        # The documentation's spam-complaint sample: Type SpamComplaint with TypeCode 512.
        event = self.bounce(Type="SpamComplaint", TypeCode=512)
        assert event["event_type"] == EventType.COMPLAINED

    def test_spam_complaint_record_is_a_complaint_whatever_its_type_code(self) -> None:
        event = self.bounce(RecordType="SpamComplaint", Type="SpamNotification", TypeCode=512)
        assert (event["event_type"], event["bounce_class"]) == (EventType.COMPLAINED, None)

    def test_unlisted_bounce_type_is_classified_from_details(self) -> None:
        event = self.bounce(Type="Brand New", TypeCode=7, Details="smtp;550 5.1.1 User unknown")
        assert event["event_type"] == EventType.BOUNCED
        assert (event["bounce_class"], event["bounce_reason"]) == (BounceClass.HARD, "userunknown")
        assert event["provider_category"] == "Brand New"

    def test_the_type_class_wins_and_details_give_the_reason(self) -> None:
        event = self.bounce(Type="SoftBounce", Details="smtp;452 4.2.2 Mailbox full")
        assert (event["bounce_class"], event["bounce_reason"], event["smtp_status"]) == (
            BounceClass.SOFT,
            "mailboxfull",
            "4.2.2",
        )

    def test_description_is_the_diagnostic_only_without_details(self) -> None:
        event = self.bounce(Type="Unknown", Description="Unable to classify.")
        assert event["diagnostic"] == "Unable to classify."
        assert (event["bounce_class"], event["bounce_reason"]) == (BounceClass.UNDETERMINED, None)
        assert self.bounce(Description="generic", Details="specific")["diagnostic"] == "specific"

    @pytest.mark.parametrize("code", ["1", 1.5, True, [], {}])
    def test_type_code_must_be_a_number(self, code: Any) -> None:
        with pytest.raises(ParseError, match="TypeCode") as error:
            self.bounce(TypeCode=code)
        assert error.value.kind == "wrong_type"

    # --- Fields ---------------------------------------------------------------------------

    def test_each_record_type_reads_its_own_timestamp_first(self) -> None:
        moments = {"DeliveredAt": "2020-01-01T00:00:00Z", "BouncedAt": "2021-01-01T00:00:00Z"}
        assert self.parse_one(**moments)["occurred_at"] == 1577836800000
        assert self.bounce(**moments)["occurred_at"] == 1609459200000

    def test_offsets_and_seven_fraction_digits(self) -> None:
        event = self.parse_one(DeliveredAt="2014-08-01T13:28:10.2735393-04:00")
        assert event["occurred_at"] == 1406914090273

    def test_recipient_is_email_in_bounces(self) -> None:
        assert self.bounce(Email=" John@Example.COM ")["recipient"] == "john@example.com"
        assert self.bounce(Email=None, Recipient="r@example.com")["recipient"] == "r@example.com"

    def test_reader_fields(self) -> None:
        event = self.parse_one(
            RecordType="Click",
            DeliveredAt=None,
            ReceivedAt="2017-10-25T15:21:11.9065619Z",
            OriginalLink="https://example.com/a",
            UserAgent="UA/1",
            Geo={"Country": "Serbia", "IP": "8.8.8.8"},
        )
        assert (event["url"], event["user_agent"], event["ip"]) == (
            "https://example.com/a",
            "UA/1",
            "8.8.8.8",
        )
        assert self.parse_one(Geo={})["ip"] is None

    def test_client_name_stands_in_for_a_missing_user_agent(self) -> None:
        event = self.parse_one(RecordType="Open", UserAgent=None, Client={"Name": "Chrome 35"})
        assert event["user_agent"] == "Chrome 35"

    def test_tags_are_metadata_with_tag_and_stream(self) -> None:
        event = self.parse_one(Metadata={"n": 7, "tag": "mine"}, Tag="t", MessageStream="s")
        assert event["tags"] == {"n": "7", "tag": "t", "message_stream": "s"}
        assert self.parse_one(Metadata=None, Tag=None, MessageStream=None)["tags"] == {}

    @pytest.mark.parametrize("metadata", [["a"], "a", 3])
    def test_metadata_must_be_an_object(self, metadata: Any) -> None:
        with pytest.raises(ParseError, match="Metadata"):
            self.parse_one(Metadata=metadata)

    def test_server_id_is_the_tenant(self) -> None:
        assert self.parse_one(ServerID=23)["tenant"] == "23"
        assert self.parse_one(ServerID=None, ServerId=23)["tenant"] == "23"

    # --- Samples --------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("kind", "event_type", "bounce_class"),
        [
            ("delivered", EventType.DELIVERED, None),
            ("hard", EventType.BOUNCED, BounceClass.HARD),
            ("soft", EventType.BOUNCED, BounceClass.SOFT),
            ("deferred", EventType.DEFERRED, BounceClass.SOFT),
            ("open", EventType.OPENED, None),
            ("open_machine", EventType.OPENED, None),
            ("click", EventType.CLICKED, None),
            ("complaint", EventType.COMPLAINED, None),
        ],
    )
    def test_samples_parse_back(
        self, kind: SampleKind, event_type: EventType, bounce_class: BounceClass | None
    ) -> None:
        sample = Sample(
            kind, "a@example.com", "m-1@example.com", 1_710_545_600_000, "e1", "https://x/"
        )
        payload = postmark.sample(sample)
        assert payload is not None
        (event,) = postmark.PROVIDER.parse(orjson.dumps(payload))
        assert_canonical([event])
        assert (event["event_type"], event["bounce_class"]) == (event_type, bounce_class)
        assert (event["recipient"], event["message_id"], event["occurred_at"]) == (
            "a@example.com",
            "m-1@example.com",
            1_710_545_600_000,
        )
        if kind == "click":
            assert event["url"] == "https://x/"

    def test_replies_have_no_sample(self) -> None:
        sample = Sample("reply", "a@example.com", "m-1@example.com", 0, "e1", "https://x/")
        assert postmark.sample(sample) is None
