"""SendGrid: the shared contract, the ECDSA signature and its freshness window, and the
documented shapes (flat events, filter-suffixed message ids, bounce types, drop reasons,
categories, custom args, machine opens).

SendGrid signs with a key pair, so `config` maps each of the contract's secret names to a key
pair of its own: `secrets` holds the public verification key, `signing_keys` the private key.
A signature made under another name is then one from another key pair, which is what the
contract's forged-signature and rotation tests need; the tests below also check that a
verifier holding only public keys suffices and that `signing_keys` are never used to verify.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstream.connectors import sendgrid
from mailstream.connectors.base import Sample, SampleKind
from mailstream.errors import ParseError, SignatureError
from mailstream.events import BounceClass, EventType
from mailstream.settings import ProviderAuth, Settings
from tests.connectors.provider_contract import (
    NOW,
    OLD_SECRET,
    SECRET,
    ProviderContract,
    assert_canonical,
)

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"

# sendgrid/sendgrid-python test/unit/test_eventwebhook.py: a request SendGrid signed, verbatim
# (the body is the JSON its test builds, with sort_keys, compact separators and a final CRLF).
REFERENCE_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3G"
    "Rqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
REFERENCE_OTHER_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWH"
    "w8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
)
REFERENCE_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M"
    "15TluLtEZtM="
)
REFERENCE_TIMESTAMP = "1600112502"
REFERENCE_BODY = (
    b'[{"email":"hello@world.com","event":"dropped","reason":"Bounced Address",'
    b'"sg_event_id":"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",'
    b'"sg_message_id":"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",'
    b'"smtp-id":"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>","timestamp":1600112492}]'
    b"\r\n"
)


@cache
def signing_key(name: str) -> str:
    """One key pair per name, for the test session."""
    return sendgrid.new_signing_key()


def public_key(name: str) -> str:
    return sendgrid.verification_key(signing_key(name))


def verifier(*names: str, **options: Any) -> ProviderAuth:
    """What the ingest is configured with: the public keys only."""
    return ProviderAuth(secrets=tuple(public_key(name) for name in names), **options)


class TestSendGrid(ProviderContract):
    provider = sendgrid.PROVIDER
    event_type_key = "event"
    timestamp_keys = ("timestamp",)
    message_id_key = "sg_message_id"
    known_keys = (
        "email",
        "timestamp",
        "event",
        "smtp-id",
        "useragent",
        "ip",
        "sg_event_id",
        "sg_message_id",
        "reason",
        "status",
        "response",
        "type",
        "bounce_classification",
        "url",
        "category",
        "asm_group_id",
        "sg_machine_open",
        "sg_user_id",
        "campaign",
    )

    def valid_item(self) -> dict[str, Any]:
        return {
            "email": "lead@prospect.com",
            "timestamp": 1772446500,
            "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
            "event": "delivered",
            "category": ["spring"],
            "sg_event_id": "ZGVsaXZlcmVkLTEwOTk0OTE5LUxSelhs",
            "sg_message_id": (
                "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"
            ),
            "response": "250 2.0.0 OK",
            "sg_user_id": 4242,
            "campaign": "spring",
        }

    def config(self, *secrets: str, **options: Any) -> ProviderAuth:
        names = secrets or (SECRET,)
        return ProviderAuth(
            secrets=tuple(public_key(name) for name in names),
            signing_keys=tuple(signing_key(name) for name in names),
            **options,
        )

    def parse_one(self, **fields: Any) -> dict[str, Any]:
        (event,) = sendgrid.PROVIDER.parse(orjson.dumps(dict(self.valid_item(), **fields)))
        return event

    # --- The contract's symmetric-secret tests, with key pairs ----------------------------

    def test_forged_signature_is_refused(self) -> None:
        body = self.body()
        forged = sendgrid.sign(body, self.config("attacker-key-pair"), NOW)
        with pytest.raises(SignatureError, match="does not match"):
            sendgrid.verify(body, forged, verifier(SECRET), NOW)

    def test_rotated_secret_accepts_old_and_new(self) -> None:
        body = self.body()
        rotating = verifier(SECRET, OLD_SECRET)
        for name in (SECRET, OLD_SECRET):
            sendgrid.verify(body, sendgrid.sign(body, self.config(name), NOW), rotating, NOW)

    def test_auth_repr_hides_secrets(self) -> None:
        config = self.config()
        assert signing_key(SECRET) not in repr(config)
        assert public_key(SECRET) not in repr(config)

    # --- ECDSA signatures -----------------------------------------------------------------

    def signed(self, now: float = NOW) -> tuple[bytes, dict[str, str]]:
        body = self.body()
        return body, sendgrid.sign(body, self.config(), now)

    def test_sendgrid_reference_request_verifies(self) -> None:
        headers = {SIGNATURE: REFERENCE_SIGNATURE, TIMESTAMP: REFERENCE_TIMESTAMP}
        config = ProviderAuth(secrets=(REFERENCE_PUBLIC_KEY,))
        sendgrid.verify(REFERENCE_BODY, headers, config, float(REFERENCE_TIMESTAMP))
        with pytest.raises(SignatureError, match="does not match"):
            sendgrid.verify(REFERENCE_BODY[:-2], headers, config, float(REFERENCE_TIMESTAMP))
        other = ProviderAuth(secrets=(REFERENCE_OTHER_KEY,))
        with pytest.raises(SignatureError, match="does not match"):
            sendgrid.verify(REFERENCE_BODY, headers, other, float(REFERENCE_TIMESTAMP))

    def test_signature_is_ecdsa_p256_sha256_over_timestamp_and_body(self) -> None:
        body, headers = self.signed()
        assert headers[TIMESTAMP] == str(int(NOW))
        key = serialization.load_der_public_key(base64.b64decode(public_key(SECRET)))
        assert isinstance(key, ec.EllipticCurvePublicKey)
        signed = headers[TIMESTAMP].encode() + body
        key.verify(base64.b64decode(headers[SIGNATURE]), signed, ec.ECDSA(hashes.SHA256()))

    def test_a_verifier_needs_only_the_public_keys(self) -> None:
        body, headers = self.signed()
        sendgrid.verify(body, headers, verifier(SECRET), NOW)

    def test_signing_keys_are_never_used_to_verify(self) -> None:
        body, headers = self.signed()
        config = ProviderAuth(
            secrets=(public_key(OLD_SECRET),), signing_keys=(signing_key(SECRET),)
        )
        with pytest.raises(SignatureError, match="does not match"):
            sendgrid.verify(body, headers, config, NOW)

    def test_timestamp_is_part_of_the_signature(self) -> None:
        body, headers = self.signed()
        headers[TIMESTAMP] = str(int(NOW) + 1)
        with pytest.raises(SignatureError, match="does not match"):
            sendgrid.verify(body, headers, verifier(SECRET), NOW)

    @pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
    def test_timestamp_inside_the_window_passes(self, offset: int) -> None:
        body, headers = self.signed(NOW + offset)
        sendgrid.verify(body, headers, verifier(SECRET), NOW)

    @pytest.mark.parametrize("offset", [-301, -86400, 301, 86400])
    def test_stale_or_future_timestamp_is_refused(self, offset: int) -> None:
        body, headers = self.signed(NOW + offset)
        with pytest.raises(SignatureError, match="window"):
            sendgrid.verify(body, headers, verifier(SECRET), NOW)

    def test_window_is_configurable(self) -> None:
        body, headers = self.signed(NOW - 3600)
        sendgrid.verify(body, headers, verifier(SECRET, max_age_seconds=7200), NOW)

    @pytest.mark.parametrize("timestamp", [None, "", "soon", "1.5", "-10", "9" * 13])
    def test_missing_or_malformed_timestamp_is_refused(self, timestamp: str | None) -> None:
        body, headers = self.signed()
        del headers[TIMESTAMP]
        if timestamp is not None:
            headers[TIMESTAMP] = timestamp
        with pytest.raises(SignatureError, match=TIMESTAMP):
            sendgrid.verify(body, headers, verifier(SECRET), NOW)

    @pytest.mark.parametrize("signature", ["not base64!", "abc", "sha256=00"])
    def test_signature_that_is_not_base64_is_refused(self, signature: str) -> None:
        body, headers = self.signed()
        headers[SIGNATURE] = signature
        with pytest.raises(SignatureError, match="base64 DER"):
            sendgrid.verify(body, headers, verifier(SECRET), NOW)

    @pytest.mark.parametrize("der", [b"", b"\x30\x00", b"x" * 70])
    def test_signature_that_is_not_der_ecdsa_does_not_match(self, der: bytes) -> None:
        body, headers = self.signed()
        headers[SIGNATURE] = base64.b64encode(der).decode()
        with pytest.raises(SignatureError, match="does not match"):
            sendgrid.verify(body, headers, verifier(SECRET), NOW)

    @pytest.mark.parametrize(
        "configured",
        [
            "whsec_current",  # an HMAC secret
            signing_key(SECRET),  # the private key instead of the public one
            base64.b64encode(
                ec.generate_private_key(ec.SECP384R1())
                .public_key()
                .public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            ).decode(),  # another curve
        ],
        ids=["hmac-secret", "private-key", "p384-key"],
    )
    def test_a_secret_that_is_no_p256_public_key_refuses_every_request(
        self, configured: str
    ) -> None:
        body, headers = self.signed()
        with pytest.raises(SignatureError, match="not a base64 ECDSA P-256 public key"):
            sendgrid.verify(body, headers, ProviderAuth(secrets=(configured,)), NOW)

    def test_signing_needs_a_signing_key(self) -> None:
        with pytest.raises(ValueError, match="signing_keys"):
            sendgrid.sign(self.body(), verifier(SECRET), NOW)

    def test_verification_key_is_the_public_half(self) -> None:
        private = serialization.load_der_private_key(
            base64.b64decode(signing_key(SECRET)), password=None
        )
        expected = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert base64.b64decode(public_key(SECRET)) == expected
        assert signing_key(SECRET) != signing_key(OLD_SECRET)

    def test_custom_signature_header(self) -> None:
        config = self.config(signature_header="X-Signature")
        body = self.body()
        headers = sendgrid.sign(body, config, NOW)
        assert "X-Signature" in headers
        sendgrid.verify(body, headers, verifier(SECRET, signature_header="X-Signature"), NOW)

    def test_only_the_default_signature_mode_is_supported(self) -> None:
        body, headers = self.signed()
        with pytest.raises(SignatureError, match="hmac"):
            sendgrid.verify(body, headers, verifier(SECRET, mode="basic"), NOW)

    def test_keys_are_read_from_the_environment(self) -> None:
        env = {
            "MAILSTREAM_INGEST_SENDGRID_SECRETS": f"{public_key(SECRET)}, {public_key(OLD_SECRET)}",
            "MAILSTREAM_INGEST_SENDGRID_SIGNING_KEYS": signing_key(SECRET),
        }
        config = Settings.from_env(env).ingest.auth("sendgrid")
        assert config.secrets == (public_key(SECRET), public_key(OLD_SECRET))
        assert config.signing_keys == (signing_key(SECRET),)
        body = self.body()
        sendgrid.verify(body, sendgrid.sign(body, config, NOW), config, NOW)

    # --- Shapes ---------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            ("processed", EventType.QUEUED),
            ("Processed", EventType.QUEUED),  # as the reference's reserved-keys example has it
            ("dropped", EventType.REJECTED),
            ("delivered", EventType.DELIVERED),
            ("deferred", EventType.DEFERRED),
            ("bounce", EventType.BOUNCED),
            ("open", EventType.OPENED),
            ("click", EventType.CLICKED),
            ("spamreport", EventType.COMPLAINED),
            ("unsubscribe", EventType.UNSUBSCRIBED),
            ("group_unsubscribe", EventType.UNSUBSCRIBED),
            ("group_resubscribe", EventType.UNKNOWN),
            ("account_status_change", EventType.UNKNOWN),
            ("", EventType.UNKNOWN),
        ],
    )
    def test_event_types(self, event: str, expected: EventType) -> None:
        assert self.parse_one(event=event)["event_type"] == expected

    @pytest.mark.parametrize(
        ("sg_message_id", "expected"),
        [
            (
                "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
                "LRzXl_NHStOGhQ4kofSm_A",
            ),
            ("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "14c5d75ce93.dfd.64b469"),
            ("142d9f3f351.7618.254f56.filter-147.22649.52A663508.0", "142d9f3f351.7618.254f56"),
            ("5lFl7Fr1Rjme_EyzNNB_5A.stfilter-015.5185.55F883172.0", "5lFl7Fr1Rjme_EyzNNB_5A"),
            ("sendgrid_internal_message_id", "sendgrid_internal_message_id"),
            (" <m-1@x> ", "m-1@x"),
            (".filter0001.0", None),
            ("", None),
            (None, None),
        ],
    )
    def test_message_id_loses_the_filter_suffix(
        self, sg_message_id: str | None, expected: str | None
    ) -> None:
        assert self.parse_one(sg_message_id=sg_message_id)["message_id"] == expected
        item = dict(self.valid_item(), sg_message_id=sg_message_id)
        assert self.provider.message_key(orjson.dumps(item)) == (
            expected.encode() if expected else None
        )

    def test_event_id_is_sg_event_id_or_derived_from_the_payload(self) -> None:
        assert self.parse_one()["event_id"] == "ZGVsaXZlcmVkLTEwOTk0OTE5LUxSelhs"
        derived = self.parse_one(sg_event_id=None)["event_id"]
        assert derived == self.parse_one(sg_event_id=None)["event_id"]
        assert derived != self.parse_one(sg_event_id=None, reason="other")["event_id"]

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"type": "bounce", "reason": "550 5.1.1 user unknown"}, BounceClass.HARD),
            ({"type": "bounce", "reason": "552 5.2.2 mailbox full"}, BounceClass.SOFT),
            ({"type": "bounce", "reason": "550 5.7.1 listed on Spamhaus"}, BounceClass.BLOCK),
            ({"type": "blocked", "reason": "550 5.1.1 user unknown"}, BounceClass.BLOCK),
            ({"type": "Blocked"}, BounceClass.BLOCK),
            ({"bounce_classification": "Invalid Address"}, BounceClass.HARD),
            ({"bounce_classification": "Reputation"}, BounceClass.BLOCK),
            ({"bounce_classification": "Content"}, BounceClass.BLOCK),
            (
                {"bounce_classification": "Mailbox Unavailable", "reason": "452 4.2.2 full"},
                BounceClass.SOFT,
            ),
            ({"bounce_classification": "Technical Failure"}, BounceClass.UNDETERMINED),
            ({"type": "bounce"}, BounceClass.UNDETERMINED),
            ({}, BounceClass.UNDETERMINED),
        ],
    )
    def test_bounce_classification(self, fields: dict[str, Any], expected: BounceClass) -> None:
        event = self.parse_one(event="bounce", response=None, **fields)
        assert (event["event_type"], event["bounce_class"]) == (EventType.BOUNCED, expected)

    def test_bounce_details(self) -> None:
        event = self.parse_one(
            event="bounce",
            response=None,
            reason="550 5.1.1 The email account does not exist",
            status="5.1.1",
            type="bounce",
            bounce_classification="Invalid Address",
        )
        assert (
            event["bounce_reason"],
            event["provider_category"],
            event["smtp_status"],
            event["diagnostic"],
        ) == (
            "userunknown",
            "bounce/Invalid Address",
            "5.1.1",
            "550 5.1.1 The email account does not exist",
        )

    @pytest.mark.parametrize(
        ("reason", "expected"),
        [
            ("Bounced Address", BounceClass.HARD),
            ("Invalid", BounceClass.HARD),
            ("Spam Content", BounceClass.BLOCK),
            ("Invalid SMTPAPI header", BounceClass.BLOCK),
            ("Recipient List over Package Quota", BounceClass.BLOCK),
            ("Unsubscribed Address", BounceClass.UNDETERMINED),
            ("Spam Reporting Address", BounceClass.UNDETERMINED),
            ("550 5.1.1 user unknown", BounceClass.HARD),  # an undocumented reason: its text
            (None, BounceClass.UNDETERMINED),
        ],
    )
    def test_drop_reasons(self, reason: str | None, expected: BounceClass) -> None:
        event = self.parse_one(event="dropped", reason=reason, response=None)
        assert (event["event_type"], event["bounce_class"]) == (EventType.REJECTED, expected)
        assert (event["provider_category"], event["diagnostic"]) == (reason, reason)

    def test_a_documented_drop_reason_names_no_cause(self) -> None:
        event = self.parse_one(event="dropped", reason="Spam Reporting Address", status="5.0.0")
        assert (event["bounce_reason"], event["smtp_status"]) == (None, "5.0.0")

    def test_deferral_is_soft_with_the_reply_as_diagnostic(self) -> None:
        event = self.parse_one(event="deferred", response="421 4.7.0 Try again later")
        assert (event["bounce_class"], event["smtp_status"], event["diagnostic"]) == (
            BounceClass.SOFT,
            "4.7.0",
            "421 4.7.0 Try again later",
        )

    def test_delivery_reply_is_the_diagnostic_without_a_class(self) -> None:
        event = self.parse_one()
        assert (event["bounce_class"], event["smtp_status"], event["diagnostic"]) == (
            None,
            "2.0.0",
            "250 2.0.0 OK",
        )

    def test_categories_custom_args_and_group_are_tags(self) -> None:
        event = self.parse_one(
            category=["spring", "promo"], asm_group_id=77, customer_id=981, nested={"a": [1]}
        )
        assert event["tags"] == {
            "campaign": "spring",
            "customer_id": "981",
            "nested": '{"a":[1]}',
            "spring": "",
            "promo": "",
            "asm_group_id": "77",
        }
        assert self.parse_one(category="cat facts", campaign=None)["tags"] == {
            "campaign": "",  # null, as string_map renders it
            "cat facts": "",
        }

    def test_sendgrids_own_keys_are_not_tags(self) -> None:
        event = self.parse_one(
            tls=1,
            pool={"name": "p", "id": 1},
            sg_content_type="html",
            sg_template_id="d-1",
            url_offset={"index": 0, "type": "html"},
            attempt="1",
        )
        assert event["tags"] == {"campaign": "spring", "spring": ""}

    @pytest.mark.parametrize("category", [5, [1], ["a", None], {"a": "b"}])
    def test_category_must_be_a_string_or_strings(self, category: Any) -> None:
        with pytest.raises(ParseError, match="category"):
            self.parse_one(category=category)

    @pytest.mark.parametrize(("flag", "expected"), [(True, True), (False, False), (None, False)])
    def test_machine_open_flag(self, flag: bool | None, expected: bool) -> None:
        event = self.parse_one(event="open", sg_machine_open=flag)
        assert event["provider_flagged_machine"] is expected

    def test_machine_open_flag_must_be_a_boolean(self) -> None:
        with pytest.raises(ParseError, match="sg_machine_open"):
            self.parse_one(event="open", sg_machine_open="true")

    @pytest.mark.parametrize("event", ["processed", "delivered", "deferred", "bounce", "dropped"])
    def test_the_sending_ip_of_delivery_events_is_not_the_readers(self, event: str) -> None:
        assert self.parse_one(event=event, ip="149.72.1.2")["ip"] is None

    @pytest.mark.parametrize("event", ["open", "click", "group_unsubscribe"])
    def test_engagement_events_keep_the_readers_ip(self, event: str) -> None:
        assert self.parse_one(event=event, ip="203.0.113.9")["ip"] == "203.0.113.9"

    def test_url_is_kept_on_clicks_only(self) -> None:
        assert self.parse_one(event="click", url="https://x.example")["url"] == "https://x.example"
        assert self.parse_one(event="group_unsubscribe", url="https://x.example")["url"] is None

    def test_recipient_and_tenant(self) -> None:
        event = self.parse_one(email="Lead <LEAD@Prospect.com>")
        assert (event["recipient"], event["tenant"], event["sender"]) == (
            "lead@prospect.com",
            "4242",
            None,
        )

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
        payload = sendgrid.sample(
            Sample(kind, "Lead@Prospect.com", "m-1", at, "evt-1", "https://x.example/o")
        )
        assert payload is not None
        (event,) = sendgrid.PROVIDER.parse(orjson.dumps([payload]))
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
        assert sendgrid.sample(Sample("reply", "a@x.com", "m", 0, "e", "")) is None
