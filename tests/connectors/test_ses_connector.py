"""Amazon SES over SNS: the shared contract, the SNS signature (in the body, with RSA key
pairs: the contract's symmetric-secret tests are restated with generated certificates), the
certificate sources and the topic check, subscription confirmations, and the SES records."""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from mailstream.connectors import ses
from mailstream.connectors.base import Sample, SampleKind, SubscriptionRequest
from mailstream.errors import ParseError, SignatureError
from mailstream.events import BounceClass, EventType, format_timestamp_ms
from mailstream.settings import ProviderAuth
from tests.connectors.provider_contract import (
    NOW,
    OLD_SECRET,
    PROPERTY_SETTINGS,
    SCALARS,
    SECRET,
    TIMESTAMP_VALUES,
    ProviderContract,
    assert_canonical,
)

TOPIC = ses.SAMPLE_TOPIC_ARN
OTHER_ACCOUNT_TOPIC = "arn:aws:sns:us-east-1:999999999999:ses-events"
CERTIFICATE_URL = (
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd2301.pem"
)
_CERTIFICATES = tempfile.TemporaryDirectory(prefix="ses-test-certificates-")


# --- Key pairs: a name (the contract's secret names) is one RSA key and its certificate ------


@functools.cache
def private_key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(name: str) -> str:
    return (
        private_key(name)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def certificate(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    valid_from: float = NOW - 30 * 86400,
    valid_until: float = NOW + 365 * 86400,
) -> bytes:
    """A self-signed certificate of `key`, as PEM (SNS's are issued by a public CA)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.fromtimestamp(valid_from, UTC))
        .not_valid_after(datetime.fromtimestamp(valid_until, UTC))
        .sign(key, hashes.SHA256())
    )
    return built.public_bytes(serialization.Encoding.PEM)


@functools.cache
def certificate_file(name: str) -> str:
    path = Path(_CERTIFICATES.name) / f"{name}.pem"
    path.write_bytes(certificate(private_key(name)))
    return str(path)


def record(event_type: str = "Delivery", **fields: Any) -> dict[str, Any]:
    """An SES event-publishing record (the inner Message)."""
    return {
        "eventType": event_type,
        "mail": {
            "timestamp": "2026-03-02T10:14:58.120Z",
            "source": "Team <news@example.com>",
            "sendingAccountId": "123456789012",
            "messageId": "0100018e0b1a2b3c-4d5e6f70-000000",
            "destination": ["lead@prospect.com"],
            "tags": {"campaign": ["spring"]},
        },
        "delivery": {
            "timestamp": "2026-03-02T10:15:00.000Z",
            "recipients": ["lead@prospect.com"],
            "smtpResponse": "250 2.0.0 OK",
        },
    } | fields


def envelope(message: Any, **fields: Any) -> dict[str, Any]:
    """An SNS Notification of `message` (a record, or the Message string itself)."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Message": message if isinstance(message, str) else orjson.dumps(message).decode(),
        "Timestamp": format_timestamp_ms(int(NOW * 1000)),
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    } | fields


def confirmation(sns_type: str = "SubscriptionConfirmation", **fields: Any) -> dict[str, Any]:
    return {
        "Type": sns_type,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c80",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": (
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
            f"&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e241d09c80"
        ),
        "Timestamp": format_timestamp_ms(int(NOW * 1000)),
    } | fields


def parse_record(**fields: Any) -> list[dict[str, Any]]:
    events = ses.PROVIDER.parse(orjson.dumps(envelope(record(**fields))))
    assert_canonical(events)
    return events


def parse_one(event_type: str = "Delivery", **fields: Any) -> dict[str, Any]:
    (event,) = parse_record(event_type=event_type, **fields)
    return event


class TestSes(ProviderContract):
    provider = ses.PROVIDER
    # These name keys of the SES record inside the Message string: the contract tests that
    # use them on the envelope's top level are restated below on the record.
    event_type_key = "eventType"
    timestamp_keys = ("timestamp",)
    message_id_key = "messageId"
    known_keys = (
        "Type",
        "MessageId",
        "TopicArn",
        "Subject",
        "Message",
        "Timestamp",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
        "SubscribeURL",
        "Token",
    )
    record_keys = (
        "eventType",
        "notificationType",
        "mail",
        "timestamp",
        "source",
        "messageId",
        "destination",
        "sendingAccountId",
        "tags",
        "bounce",
        "bounceType",
        "bounceSubType",
        "bouncedRecipients",
        "emailAddress",
        "status",
        "diagnosticCode",
        "complaint",
        "complainedRecipients",
        "complaintFeedbackType",
        "complaintSubType",
        "delivery",
        "recipients",
        "smtpResponse",
        "deliveryDelay",
        "delayType",
        "delayedRecipients",
        "reject",
        "reason",
        "failure",
        "errorMessage",
        "open",
        "click",
        "link",
        "ipAddress",
        "userAgent",
        "subscription",
        "newTopicPreferences",
        "oldTopicPreferences",
        "unsubscribeAll",
        "topicSubscriptionStatus",
        "topicName",
        "subscriptionStatus",
    )

    def valid_item(self) -> dict[str, Any]:
        return envelope(record())

    def config(self, *secrets: str, **options: Any) -> ProviderAuth:
        """Trusts the certificates of the named keys, signs with the first one's key."""
        names = secrets or (SECRET,)
        settings: dict[str, Any] = {
            "sns_certificate_files": tuple(certificate_file(name) for name in names),
            "sns_topic_arns": (TOPIC,),
            "signing_keys": (key_pem(names[0]),),
        }
        return ProviderAuth(**(settings | options))

    def signed(self, document: Any = None, key: str = SECRET, now: float = NOW) -> bytes:
        return ses.sign_body(self.body(document), self.config(key), now)

    # --- The contract's signature tests, with the signature in the body (a key pair) ------

    def test_signed_request_passes(self) -> None:
        body = self.signed()
        headers = ses.sign(body, self.config(), NOW)
        ses.verify(body, headers, self.config(), NOW)

    def test_header_names_are_case_insensitive(self) -> None:
        """Overridden: SNS's headers carry no credential (the signature is in the body), so
        no header, of any name, makes a difference either way."""
        body, bogus = self.signed(), {"X-Amz-Sns-Signature": "forged", "x-amz-sns-topic-arn": "x"}
        ses.verify(body, bogus, self.config(), NOW)
        with pytest.raises(SignatureError, match="does not match"):
            ses.verify(
                self.signed(key="attacker-guess"),
                ses.sign(body, self.config(), NOW),
                self.config(),
                NOW,
            )

    def test_forged_signature_is_refused(self) -> None:
        forged = self.signed(key="attacker-guess")
        with pytest.raises(SignatureError, match="does not match"):
            ses.verify(forged, {}, self.config(), NOW)

    def test_altered_body_is_refused(self) -> None:
        message = orjson.loads(self.signed())
        message["Message"] = message["Message"].replace("lead@prospect.com", "other@x.com")
        with pytest.raises(SignatureError, match="does not match"):
            ses.verify(orjson.dumps(message), {}, self.config(), NOW)

    def test_rotated_secret_accepts_old_and_new(self) -> None:
        rotating = self.config(SECRET, OLD_SECRET)
        for key in (SECRET, OLD_SECRET):
            ses.verify(self.signed(key=key), {}, rotating, NOW)

    def test_missing_credential_is_refused(self) -> None:
        with pytest.raises(SignatureError, match="missing Signature"):
            ses.verify(self.body(), {}, self.config(), NOW)

    def test_no_secret_configured_is_refused(self) -> None:
        with pytest.raises(SignatureError, match="no secret configured"):
            ses.verify(self.signed(), {}, ProviderAuth(), NOW)

    def test_allow_unsigned_still_checks_a_presented_credential(self) -> None:
        forged = self.signed(key="attacker-guess")
        with pytest.raises(SignatureError, match="does not match"):
            ses.verify(forged, {}, self.config(allow_unsigned=True), NOW)

    def test_auth_repr_hides_secrets(self) -> None:
        assert "PRIVATE KEY" not in repr(self.config())

    # --- The contract's record tests, on the record inside the Message --------------------

    def with_mail(self, **fields: Any) -> dict[str, Any]:
        item = record()
        return envelope(item | {"mail": item["mail"] | fields})

    def test_batch_parses_every_item_in_order(self) -> None:
        items = [self.with_mail(messageId=f"<m{i}@x>") for i in range(50)]
        events = self.provider.parse(self.body(items))
        assert [event["message_id"] for event in events] == [f"m{i}@x" for i in range(50)]

    def test_message_key_is_the_clean_message_id(self) -> None:
        item = self.with_mail(messageId=" <key-1@example.com> ")
        assert self.provider.message_key(self.body(item)) == b"key-1@example.com"
        assert self.provider.message_key(self.body([item, self.valid_item()])) == (
            b"key-1@example.com"
        )

    def without_timestamps(self) -> dict[str, Any]:
        item = record()
        del item["mail"]["timestamp"], item["delivery"]["timestamp"]
        return envelope(item)

    def test_missing_timestamp_is_a_missing_field(self) -> None:
        with pytest.raises(ParseError) as error:
            self.provider.parse(self.body(self.without_timestamps()))
        assert error.value.kind == "missing_field"

    def test_batch_error_names_the_item(self) -> None:
        with pytest.raises(ParseError, match="batch item 1"):
            self.provider.parse(self.body([self.valid_item(), self.without_timestamps()]))

    def test_null_optional_fields_give_null_values(self) -> None:
        item = dict.fromkeys(record(), None) | {
            "eventType": "Delivery",
            "delivery": {"timestamp": "2026-03-02T10:15:00.000Z"},
        }
        sns_fields = dict.fromkeys(("MessageId", "TopicArn", "Timestamp", "UnsubscribeURL"))
        events = self.provider.parse(self.body(envelope(item, **sns_fields)))
        assert [event["recipient"] for event in events] == [None]
        assert events[0]["message_id"] is None
        assert_canonical(events)

    def test_unknown_event_type_is_unknown_not_an_error(self) -> None:
        events = parse_record(event_type="something.new")
        assert {event["event_type"] for event in events} == {EventType.UNKNOWN}

    def with_delivery_timestamp(self, value: Any) -> dict[str, Any]:
        item = record()
        return envelope(item | {"delivery": item["delivery"] | {"timestamp": value}})

    def test_wrong_typed_timestamp_is_refused(self) -> None:
        for value in (True, [], {}, "yesterday", -5, 10**15, 1e300, "99999999999999"):
            with pytest.raises(ParseError) as error:
                self.provider.parse(self.body(self.with_delivery_timestamp(value)))
            assert error.value.kind in {"wrong_type", "invalid_value"}

    @PROPERTY_SETTINGS
    @given(value=TIMESTAMP_VALUES)
    def test_any_timestamp_value(self, value: Any) -> None:
        self.parse_or_typed_error(orjson.dumps(self.with_delivery_timestamp(value)))

    def test_wrong_typed_record_values_raise_only_parse_errors(self) -> None:
        nested = [(None, key) for key in record()] + [("mail", key) for key in record()["mail"]]
        nested += [("delivery", key) for key in record()["delivery"]]
        for parent, key in nested:
            for value in (12345, 1.5, True, "text", [], ["x"], {}, {"email": 5}):
                item = record()
                (item[parent] if parent else item)[key] = value
                try:
                    events = self.provider.parse(self.body(envelope(item)))
                except ParseError as error:
                    assert error.kind in {"wrong_type", "invalid_value", "missing_field"}
                else:
                    assert_canonical(events)

    @PROPERTY_SETTINGS
    @given(data=st.data())
    def test_records_with_right_keys_and_any_values(self, data: st.DataObject) -> None:
        keys = st.sampled_from(self.record_keys)
        values = st.recursive(
            SCALARS,
            lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children),
            max_leaves=15,
        )
        item = data.draw(st.dictionaries(keys, values, max_size=8))
        self.parse_or_typed_error(orjson.dumps(envelope(item)))
        self.parse_or_typed_error(orjson.dumps(envelope(record() | item)))

    # --- SNS signatures -------------------------------------------------------------------

    def test_string_to_sign_of_the_documented_notification(self) -> None:
        # The example of sns-verify-signature-of-message.html, string to sign verbatim.
        message = {
            "Type": "Notification",
            "MessageId": "4d4dc071-ddbf-465d-bba8-08f81c89da64",
            "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P",
            "Subject": "My subject",
            "Message": "My Test Message",
            "Timestamp": "2012-06-05T04:37:04.321Z",
            "SignatureVersion": "1",
        }
        assert ses.string_to_sign(message) == (
            b"Message\nMy Test Message\nMessageId\n4d4dc071-ddbf-465d-bba8-08f81c89da64\n"
            b"Subject\nMy subject\nTimestamp\n2012-06-05T04:37:04.321Z\n"
            b"TopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
            b"Type\nNotification\n"
        )
        del message["Subject"]
        assert b"Subject" not in ses.string_to_sign(message)

    @pytest.mark.parametrize("sns_type", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
    def test_string_to_sign_of_confirmations(self, sns_type: str) -> None:
        keys = ses.string_to_sign(confirmation(sns_type)).decode().split("\n")[0::2]
        assert keys == [
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
            "",
        ]

    @pytest.mark.parametrize("missing", ["Message", "MessageId", "Timestamp", "TopicArn"])
    def test_a_missing_signed_field_is_refused(self, missing: str) -> None:
        message = orjson.loads(self.signed())
        del message[missing]
        with pytest.raises(SignatureError, match=missing):
            ses.verify(orjson.dumps(message), {}, self.config(), NOW)

    def test_subject_is_signed(self) -> None:
        body = self.signed(envelope(record(), Subject="Amazon SES Email Event Notification"))
        ses.verify(body, {}, self.config(), NOW)
        message = orjson.loads(body) | {"Subject": "Other"}
        with pytest.raises(SignatureError, match="does not match"):
            ses.verify(orjson.dumps(message), {}, self.config(), NOW)

    def test_signature_version_1_is_sha1_with_rsa(self) -> None:
        message = orjson.loads(self.signed()) | {"SignatureVersion": "1"}
        signature = private_key(SECRET).sign(
            ses.string_to_sign(message),
            padding.PKCS1v15(),
            hashes.SHA1(),  # noqa: S303 - SNS's version 1
        )
        message["Signature"] = base64.b64encode(signature).decode()
        ses.verify(orjson.dumps(message), {}, self.config(), NOW)
        with pytest.raises(SignatureError, match="does not match"):
            ses.verify(orjson.dumps(message | {"SignatureVersion": "2"}), {}, self.config(), NOW)

    @pytest.mark.parametrize("version", ["3", "", None, 2])
    def test_unknown_signature_version_is_refused(self, version: Any) -> None:
        message = orjson.loads(self.signed()) | {"SignatureVersion": version}
        with pytest.raises(SignatureError, match="SignatureVersion"):
            ses.verify(orjson.dumps(message), {}, self.config(), NOW)

    @pytest.mark.parametrize("signature", ["not base64!", "QUJD" * 300, 42])
    def test_malformed_signature_is_refused(self, signature: Any) -> None:
        message = orjson.loads(self.signed()) | {"Signature": signature}
        with pytest.raises(SignatureError, match="Signature"):
            ses.verify(orjson.dumps(message), {}, self.config(), NOW)

    def test_another_accounts_topic_is_refused_even_when_signed(self) -> None:
        body = self.signed(envelope(record(), TopicArn=OTHER_ACCOUNT_TOPIC))
        with pytest.raises(SignatureError, match="not accepted"):
            ses.verify(body, {}, self.config(), NOW)
        ses.verify(body, {}, self.config(sns_topic_arns=(TOPIC, OTHER_ACCOUNT_TOPIC)), NOW)

    def test_no_topic_configured_is_refused(self) -> None:
        with pytest.raises(SignatureError, match="sns_topic_arns"):
            ses.verify(self.signed(), {}, self.config(sns_topic_arns=()), NOW)

    @pytest.mark.parametrize("offset", [-3600 - 300, -3000, 0, 300])
    def test_a_retry_within_snss_hour_or_the_clock_skew_passes(self, offset: int) -> None:
        """SNS retries an HTTP/S delivery for up to an hour with the signed Timestamp of the
        first attempt: a bounce retried after a 50-minute ingest outage must not be lost."""
        ses.verify(self.signed(now=NOW + offset), {}, self.config(), NOW)

    @pytest.mark.parametrize("offset", [-3600 - 301, -86400, 301])
    def test_older_than_the_retries_or_from_the_future_is_refused(self, offset: int) -> None:
        with pytest.raises(SignatureError, match="window"):
            ses.verify(self.signed(now=NOW + offset), {}, self.config(), NOW)

    def test_the_clock_skew_is_configurable(self) -> None:
        body = self.signed(now=NOW - 3600 - 1000)
        ses.verify(body, {}, self.config(max_age_seconds=1200), NOW)
        with pytest.raises(SignatureError, match="window"):
            ses.verify(body, {}, self.config(), NOW)

    def test_another_mode_is_refused(self) -> None:
        with pytest.raises(SignatureError, match="mode"):
            ses.verify(self.signed(), {}, self.config(mode="basic"), NOW)

    def test_a_not_spam_feedback_report_is_no_complaint(self) -> None:
        report = record(
            "Complaint",
            complaint={
                "complainedRecipients": [{"emailAddress": "lead@prospect.com"}],
                "complaintFeedbackType": "not-spam",
                "timestamp": "2026-03-02T10:15:00.000Z",
            },
        )
        [event] = ses.PROVIDER.parse(orjson.dumps(envelope(report)))
        assert (event["event_type"], event["provider_category"]) == ("UNKNOWN", "not-spam")

    def test_reformatted_json_still_verifies(self) -> None:
        # SNS signs field values, not bytes: whitespace and key order do not matter.
        message = orjson.loads(self.signed())
        reordered = dict(reversed(message.items()))
        ses.verify(
            orjson.dumps(reordered, option=orjson.OPT_INDENT_2) + b" ", {}, self.config(), NOW
        )

    def test_expired_certificate_is_refused(self, tmp_path: Path) -> None:
        expired = tmp_path / "expired.pem"
        expired.write_bytes(certificate(private_key(SECRET), NOW - 86400 * 400, NOW - 86400))
        config = self.config(sns_certificate_files=(str(expired),))
        with pytest.raises(SignatureError, match="valid only from"):
            ses.verify(self.signed(), {}, config, NOW)

    def test_a_certificate_without_an_rsa_key_matches_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "ec.pem"
        path.write_bytes(certificate(ec.generate_private_key(ec.SECP256R1())))
        config = self.config(sns_certificate_files=(str(path),))
        with pytest.raises(SignatureError, match="does not match"):
            ses.verify(self.signed(), {}, config, NOW)

    def test_an_unreadable_certificate_file_is_named(self, tmp_path: Path) -> None:
        config = self.config(sns_certificate_files=(str(tmp_path / "absent.pem"),))
        with pytest.raises(SignatureError, match=r"absent\.pem"):
            ses.verify(self.signed(), {}, config, NOW)

    @pytest.mark.parametrize("body", [b"[]", b"[{}]", b"not json", b'"text"', b"\xff"])
    def test_a_body_that_is_not_one_sns_message_is_refused(self, body: bytes) -> None:
        with pytest.raises(SignatureError, match="not an SNS message"):
            ses.verify(body, {}, self.config(), NOW)

    def test_signed_confirmations_verify_and_give_no_events(self) -> None:
        for sns_type in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            body = self.signed(confirmation(sns_type))
            ses.verify(body, {}, self.config(), NOW)
            assert ses.PROVIDER.parse(body) == []

    def test_sign_gives_the_sns_headers_of_a_signed_body(self) -> None:
        body = self.signed()
        assert ses.sign(body, self.config(), NOW) == {
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "x-amz-sns-topic-arn": TOPIC,
        }
        with pytest.raises(ValueError, match="sign_body"):
            ses.sign(self.body(), self.config(), NOW)

    def test_sign_body_needs_an_rsa_private_key(self) -> None:
        with pytest.raises(ValueError, match="signing_keys"):
            ses.sign_body(self.body(), ProviderAuth(), NOW)
        ec_pem = (
            ec.generate_private_key(ec.SECP256R1())
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )
        with pytest.raises(ValueError, match="RSA"):
            ses.sign_body(self.body(), ProviderAuth(signing_keys=(ec_pem,)), NOW)

    def test_sign_body_names_a_certificate_url_in_the_topics_region(self) -> None:
        body = self.signed(envelope(record(), TopicArn="arn:aws:sns:eu-west-1:1:t"))
        url = orjson.loads(body)["SigningCertURL"]
        assert url.startswith("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-")
        assert ses.is_sns_url(url) and url.endswith(".pem")

    # --- Fetched certificates -------------------------------------------------------------

    def fetching(self, **options: Any) -> ProviderAuth:
        return self.config(sns_certificate_files=(), sns_fetch_certificates=True, **options)

    def test_the_certificate_is_fetched_from_its_url(self) -> None:
        body = self.signed()
        fetched: list[str] = []

        def fetch(url: str) -> bytes:
            fetched.append(url)
            return certificate(private_key(SECRET))

        ses.verify_message(body, self.fetching(), NOW, fetch)
        assert fetched == [orjson.loads(body)["SigningCertURL"]]

    def test_trusted_certificates_are_tried_before_fetching(self) -> None:
        def fetch(url: str) -> bytes:
            raise AssertionError("fetched although a trusted certificate matched")

        config = self.config(sns_fetch_certificates=True)
        ses.verify_message(self.signed(), config, NOW, fetch)

    def test_certificate_fetches_in_progress_are_bounded(self) -> None:
        """Each fetch holds a thread for up to its timeout: beyond MAX_CONCURRENT_FETCHES at
        once a request is refused (SNS retries it) instead of queueing on the thread pool."""
        release, started = threading.Event(), threading.Semaphore(0)

        def slow_fetch(url: str) -> bytes:
            started.release()
            release.wait(10)
            return certificate(private_key(SECRET))

        body, config = self.signed(), self.fetching()
        with concurrent.futures.ThreadPoolExecutor(ses.MAX_CONCURRENT_FETCHES) as pool:
            pending = [
                pool.submit(ses.verify_message, body, config, NOW, slow_fetch)
                for _ in range(ses.MAX_CONCURRENT_FETCHES)
            ]
            for _ in pending:
                assert started.acquire(timeout=10)
            with pytest.raises(SignatureError, match="too many SNS certificate fetches"):
                ses.verify_message(body, config, NOW, slow_fetch)
            release.set()
            for verified in pending:
                verified.result(timeout=10)
        ses.verify_message(body, config, NOW, slow_fetch)

    def test_a_fetched_certificate_of_another_key_does_not_match(self) -> None:
        def fetch(url: str) -> bytes:
            return certificate(private_key("attacker-guess"))

        with pytest.raises(SignatureError, match="does not match"):
            ses.verify_message(self.signed(), self.fetching(), NOW, fetch)

    @pytest.mark.parametrize(
        "url",
        [
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.txt",
            "https://sns.us-east-1.amazonaws.com/?redirect=https://evil.example/x.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem?x=1",
            "https://s3.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.s3.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.s3-accelerate.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.execute-api.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-east-1.amazonaws.com/attacker/cert.pem",
            "https://SNS.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-east-1.amazonaws.com\\@evil.example/x.pem",
            "https://[::1/x.pem",
            "",
            None,
        ],
    )
    def test_a_certificate_url_off_sns_is_never_fetched(self, url: str | None) -> None:
        def fetch(url: str) -> bytes:
            raise AssertionError(f"fetched {url}")

        message = orjson.loads(self.signed()) | {"SigningCertURL": url}
        with pytest.raises(SignatureError, match="SigningCertURL"):
            ses.verify_message(orjson.dumps(message), self.fetching(), NOW, fetch)

    @pytest.mark.parametrize("failure", [OSError("timed out"), ValueError("too large")])
    def test_a_failed_fetch_is_refused(self, failure: Exception) -> None:
        def fetch(url: str) -> bytes:
            raise failure

        with pytest.raises(SignatureError, match="SigningCertURL gave no certificate"):
            ses.verify_message(self.signed(), self.fetching(), NOW, fetch)

    def test_a_fetched_non_certificate_is_refused(self) -> None:
        with pytest.raises(SignatureError, match="SigningCertURL gave no certificate"):
            ses.verify_message(self.signed(), self.fetching(), NOW, lambda url: b"<html>")

    def test_the_default_fetch_refuses_urls_off_sns_without_a_request(self) -> None:
        with pytest.raises(ValueError, match="not an https://sns"):
            ses.fetch_https("https://example.com/x.pem")

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            (CERTIFICATE_URL, True),
            ("https://sns.eu-central-1.amazonaws.com/?Action=ConfirmSubscription", True),
            ("https://sns.us-east-1.amazonaws.com.cn/x.pem", False),
            ("ftp://sns.us-east-1.amazonaws.com/x.pem", False),
            ("https://sns..amazonaws.com/x.pem", False),
        ],
    )
    def test_sns_urls(self, url: str, expected: bool) -> None:
        assert ses.is_sns_url(url) is expected

    # --- Subscription confirmations -------------------------------------------------------

    def test_the_subscribe_url_of_an_accepted_topic(self) -> None:
        body = orjson.dumps(confirmation())
        assert (
            ses.subscription_confirmation_url(body, self.config())
            == (confirmation()["SubscribeURL"])
        )

    @pytest.mark.parametrize(
        "document",
        [
            confirmation(TopicArn=OTHER_ACCOUNT_TOPIC),
            confirmation("UnsubscribeConfirmation"),
            confirmation(SubscribeURL="https://evil.example/?Action=ConfirmSubscription"),
            confirmation(SubscribeURL=None),
            envelope(record()),
            [confirmation()],
        ],
    )
    def test_no_subscribe_url_for_anything_else(self, document: Any) -> None:
        assert ses.subscription_confirmation_url(orjson.dumps(document), self.config()) is None
        assert ses.subscription_confirmation_url(b"\xff not json", self.config()) is None

    def test_a_signed_confirmation_is_confirmed_only_when_configured(self) -> None:
        body = self.signed(confirmation())
        url = confirmation()["SubscribeURL"]
        logged_only = ses.PROVIDER.subscription_request(body, self.config())
        assert logged_only == SubscriptionRequest(url, None)
        allowed = self.config(sns_confirm_subscriptions=True)
        request = ses.PROVIDER.subscription_request(body, allowed)
        assert request is not None and request.url == url and request.confirm is not None
        unsigned = orjson.dumps(confirmation())
        assert ses.PROVIDER.subscription_request(unsigned, allowed) == SubscriptionRequest(
            url, None
        )
        assert ses.PROVIDER.subscription_request(self.signed(), allowed) is None
        # Without a certificate source, allow_unsigned lets anything through verify: a body
        # that merely carries a Signature key is no signed request.
        unchecked = ProviderAuth(
            allow_unsigned=True, sns_topic_arns=(TOPIC,), sns_confirm_subscriptions=True
        )
        forged = orjson.dumps(confirmation(Signature="Zm9yZ2Vk"))
        ses.verify(forged, {}, unchecked, NOW)
        assert ses.PROVIDER.subscription_request(forged, unchecked) == SubscriptionRequest(
            url, None
        )

    def test_confirm_subscription_visits_the_url(self) -> None:
        visited: list[str] = []
        url = confirmation()["SubscribeURL"]
        ses.confirm_subscription(url, lambda url: visited.append(url) or b"<ok/>")
        assert visited == [url]
        with pytest.raises(ValueError, match="not an https://sns"):
            ses.confirm_subscription("https://evil.example/confirm", lambda url: b"")

    # --- SNS envelope shapes --------------------------------------------------------------

    @pytest.mark.parametrize(
        ("document", "kind"),
        [
            ({"Message": "{}"}, "missing_field"),
            ({"Type": "Notification"}, "missing_field"),
            ({"Type": "Notification", "Message": "not json"}, "invalid_value"),
            ({"Type": "Notification", "Message": "[1, 2]"}, "wrong_type"),
            ({"Type": "Notification", "Message": {"eventType": "Send"}}, "wrong_type"),
            ({"Type": "Notification", "Message": "[" * 5000 + "]" * 5000}, "invalid_value"),
            ({"Type": "Something", "Message": "{}"}, "invalid_value"),
            ({"Type": 5}, "wrong_type"),
        ],
    )
    def test_malformed_envelopes_are_typed_errors(self, document: Any, kind: str) -> None:
        with pytest.raises(ParseError) as error:
            ses.PROVIDER.parse(orjson.dumps(document))
        assert error.value.kind == kind

    def test_set_up_notices_give_no_events(self) -> None:
        assert ses.PROVIDER.parse(orjson.dumps(envelope(ses.SETUP_MESSAGE))) == []
        succeeded = {"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "ok"}
        assert ses.PROVIDER.parse(orjson.dumps(envelope(succeeded))) == []

    def test_the_sns_timestamp_is_not_the_events_time(self) -> None:
        (event,) = ses.PROVIDER.parse(orjson.dumps(envelope(record(), Timestamp="2030-01-01")))
        assert event["occurred_at"] == 1_772_446_500_000  # delivery.timestamp

    def test_without_its_own_timestamp_an_event_has_the_mails(self) -> None:
        assert parse_one("Send", send={})["occurred_at"] == 1_772_446_498_120

    @pytest.mark.parametrize("body", [orjson.dumps(confirmation()), b'{"Type": 5}', b"{}"])
    def test_message_key_of_other_bodies_is_none(self, body: bytes) -> None:
        assert self.provider.message_key(body) is None

    # --- SES records ----------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("event_type", "expected"),
        [
            ("Send", EventType.QUEUED),
            ("Delivery", EventType.DELIVERED),
            ("DeliveryDelay", EventType.DEFERRED),
            ("Bounce", EventType.BOUNCED),
            ("Reject", EventType.REJECTED),
            ("Rendering Failure", EventType.REJECTED),
            ("Complaint", EventType.COMPLAINED),
            ("Open", EventType.OPENED),
            ("Click", EventType.CLICKED),
            ("Subscription", EventType.UNKNOWN),  # opting out of nothing
            ("Received", EventType.UNKNOWN),
            ("", EventType.UNKNOWN),
        ],
    )
    def test_event_types(self, event_type: str, expected: EventType) -> None:
        events = parse_record(event_type=event_type, delivery=None)
        assert {event["event_type"] for event in events} == {expected}

    def test_feedback_notifications_name_the_type_notification_type(self) -> None:
        item = record()
        item["notificationType"] = item.pop("eventType")
        (event,) = ses.PROVIDER.parse(orjson.dumps(envelope(item)))
        assert event["event_type"] == EventType.DELIVERED

    @pytest.mark.parametrize(
        ("kind", "subtype", "expected"),
        [
            ("Permanent", "General", (EventType.BOUNCED, BounceClass.HARD)),
            ("Permanent", "NoEmail", (EventType.BOUNCED, BounceClass.HARD)),
            ("Permanent", "Suppressed", (EventType.REJECTED, BounceClass.HARD)),
            ("Permanent", "OnAccountSuppressionList", (EventType.REJECTED, BounceClass.SOFT)),
            ("Transient", "General", (EventType.BOUNCED, BounceClass.SOFT)),
            ("Transient", "MailboxFull", (EventType.BOUNCED, BounceClass.SOFT)),
            ("Transient", "MessageTooLarge", (EventType.BOUNCED, BounceClass.SOFT)),
            ("Transient", "ContentRejected", (EventType.BOUNCED, BounceClass.BLOCK)),
            ("Transient", "AttachmentRejected", (EventType.BOUNCED, BounceClass.BLOCK)),
            ("Undetermined", "Undetermined", (EventType.BOUNCED, BounceClass.SOFT)),
            ("Something", "New", (EventType.BOUNCED, BounceClass.SOFT)),
        ],
    )
    def test_bounce_classification(
        self, kind: str, subtype: str, expected: tuple[EventType, BounceClass]
    ) -> None:
        # The diagnostic is a 4xx mailbox-full reply: where SES gives no class of its own
        # (OnAccountSuppressionList, Undetermined, unknown types) the classifier's SOFT shows.
        recipient = {
            "emailAddress": "lead@prospect.com",
            "status": "4.2.2",
            "diagnosticCode": "smtp; 452 4.2.2 Mailbox full",
        }
        bounce = {"bounceType": kind, "bounceSubType": subtype, "bouncedRecipients": [recipient]}
        event = parse_one("Bounce", bounce=bounce | {"timestamp": "2026-03-02T10:15:00Z"})
        assert (event["event_type"], event["bounce_class"]) == expected
        assert event["provider_category"] == f"{kind}/{subtype}"

    @pytest.mark.parametrize(
        ("delay_type", "expected"),
        [
            ("InternalFailure", BounceClass.SOFT),
            ("General", BounceClass.SOFT),
            ("MailboxFull", BounceClass.SOFT),
            ("SpamDetected", BounceClass.BLOCK),
            ("RecipientServerError", BounceClass.SOFT),
            ("IPFailure", BounceClass.BLOCK),
            ("TransientCommunicationFailure", BounceClass.SOFT),
            ("BYOIPHostNameLookupUnavailable", BounceClass.SOFT),
            ("Undetermined", BounceClass.UNDETERMINED),
            ("SendingDeferral", BounceClass.SOFT),
        ],
    )
    def test_delay_types(self, delay_type: str, expected: BounceClass) -> None:
        delay = {
            "delayType": delay_type,
            "delayedRecipients": [{"emailAddress": "lead@prospect.com"}],
            "timestamp": "2026-03-02T10:15:00Z",
        }
        event = parse_one("DeliveryDelay", deliveryDelay=delay)
        assert (event["event_type"], event["bounce_class"]) == (EventType.DEFERRED, expected)

    def test_one_event_per_bounced_recipient_with_its_own_diagnostic(self) -> None:
        bounce = {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "timestamp": "2026-03-02T10:15:00Z",
            "bouncedRecipients": [
                {"emailAddress": "A@x.com", "status": "5.1.1", "diagnosticCode": "550 5.1.1 no"},
                {"emailAddress": "b@x.com", "status": "5.2.2", "diagnosticCode": "552 5.2.2 full"},
                {"emailAddress": "a@x.com"},
            ],
        }
        events = parse_record(event_type="Bounce", bounce=bounce)
        assert [(e["recipient"], e["smtp_status"], e["bounce_reason"]) for e in events] == [
            ("a@x.com", "5.1.1", "userunknown"),
            ("b@x.com", "5.2.2", "mailboxfull"),
        ]
        first, second = (event["event_id"] for event in events)
        assert first.endswith("/a@x.com") and second.endswith("/b@x.com")
        assert first.split("/")[0] == second.split("/")[0]

    def test_a_bounce_is_never_spread_over_mail_destination(self) -> None:
        bounce = {"bounceType": "Permanent", "timestamp": "2026-03-02T10:15:00Z"}
        (event,) = parse_record(event_type="Bounce", bounce=bounce)
        assert event["recipient"] is None

    def test_complaint_of_several_recipients(self) -> None:
        complaint = {
            "complainedRecipients": [{"emailAddress": "a@x.com"}, {"emailAddress": "b@x.com"}],
            "complaintFeedbackType": "abuse",
            "timestamp": "2026-03-02T10:15:00Z",
        }
        events = parse_record(event_type="Complaint", complaint=complaint)
        assert [(e["recipient"], e["provider_category"]) for e in events] == [
            ("a@x.com", "abuse"),
            ("b@x.com", "abuse"),
        ]

    @pytest.mark.parametrize("event_type", ["Open", "Click"])
    def test_engagement_of_a_message_to_several_addresses_has_no_recipient(
        self, event_type: str
    ) -> None:
        mail = record()["mail"] | {"destination": ["a@x.com", "b@x.com"]}
        details = {"timestamp": "2026-03-02T10:16:00Z", "link": "https://x.example"}
        key = event_type.lower()
        (event,) = parse_record(event_type=event_type, mail=mail, **{key: details})
        assert event["recipient"] is None

    def test_send_fans_out_over_mail_destination(self) -> None:
        mail = record()["mail"] | {"destination": ["a@x.com", "Team B <B@x.com>"]}
        events = parse_record(event_type="Send", mail=mail, send={})
        assert [event["recipient"] for event in events] == ["a@x.com", "b@x.com"]

    def test_click_details(self) -> None:
        click = {
            "ipAddress": "203.0.113.9",
            "link": "https://x.example/offer",
            "userAgent": "UA",
            "timestamp": "2026-03-02T10:16:00Z",
        }
        event = parse_one("Click", click=click)
        assert (event["url"], event["ip"], event["user_agent"], event["occurred_at"]) == (
            "https://x.example/offer",
            "203.0.113.9",
            "UA",
            1_772_446_560_000,
        )

    def test_tags_keep_one_value_as_itself_and_several_as_json(self) -> None:
        tags = {"one": ["a"], "two": ["a", "b"], "none": [], "text": "plain"}
        mail = record()["mail"] | {"tags": tags}
        assert parse_one(mail=mail)["tags"] == {
            "one": "a",
            "two": '["a","b"]',
            "none": "[]",
            "text": "plain",
        }

    def test_sender_tenant_and_message_id(self) -> None:
        event = parse_one()
        assert (event["sender"], event["tenant"], event["message_id"]) == (
            "news@example.com",
            "123456789012",
            "0100018e0b1a2b3c-4d5e6f70-000000",
        )

    @pytest.mark.parametrize(
        ("new", "old", "unsubscribed"),
        [
            ({"unsubscribeAll": True}, {}, True),
            (
                {"topicSubscriptionStatus": [{"topicName": "a", "subscriptionStatus": "OptOut"}]},
                {},
                True,
            ),
            (
                {"topicSubscriptionStatus": [{"topicName": "a", "subscriptionStatus": "OptOut"}]},
                {"topicSubscriptionStatus": [{"topicName": "a", "subscriptionStatus": "OptOut"}]},
                False,
            ),
            (
                {"topicSubscriptionStatus": [{"topicName": "a", "subscriptionStatus": "OptIn"}]},
                {},
                False,
            ),
            ({}, {}, False),
        ],
    )
    def test_subscription_is_an_unsubscription_only_when_it_opts_out(
        self, new: dict[str, Any], old: dict[str, Any], unsubscribed: bool
    ) -> None:
        subscription = {
            "contactList": "Newsletter",
            "timestamp": "2026-03-02T10:15:00Z",
            "newTopicPreferences": new,
            "oldTopicPreferences": old,
        }
        event = parse_one("Subscription", subscription=subscription)
        expected = EventType.UNSUBSCRIBED if unsubscribed else EventType.UNKNOWN
        assert (event["event_type"], event["recipient"]) == (expected, "lead@prospect.com")

    @pytest.mark.parametrize(
        "fields",
        [
            {"delivery": {"timestamp": "2026-03-02T10:15:00Z", "recipients": "a@x.com"}},
            {"delivery": {"timestamp": "2026-03-02T10:15:00Z", "recipients": [5]}},
            {"mail": {"timestamp": "2026-03-02T10:15:00Z", "tags": ["x"]}},
            {
                "event_type": "Subscription",
                "subscription": {
                    "timestamp": "2026-03-02T10:15:00Z",
                    "newTopicPreferences": {"topicSubscriptionStatus": ["x"]},
                },
            },
        ],
    )
    def test_wrong_shapes_are_wrong_type(self, fields: dict[str, Any]) -> None:
        with pytest.raises(ParseError) as error:
            parse_record(**fields)
        assert error.value.kind == "wrong_type"

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
    def test_samples_parse_back_and_verify_once_signed(
        self, kind: SampleKind, expected: tuple[EventType, BounceClass | None]
    ) -> None:
        at = 1_772_446_500_000
        payload = ses.sample(
            Sample(kind, "Lead@Prospect.com", "m-1", at, "evt-1", "https://x.example/o")
        )
        assert payload is not None
        (event,) = ses.PROVIDER.parse(orjson.dumps(payload))
        assert (event["event_type"], event["bounce_class"]) == expected
        assert (event["recipient"], event["message_id"], event["occurred_at"]) == (
            "lead@prospect.com",
            "m-1",
            at,
        )
        if kind == "click":
            assert event["url"] == "https://x.example/o"
        assert_canonical([event])
        ses.verify(ses.sign_body(orjson.dumps(payload), self.config(), NOW), {}, self.config(), NOW)

    @pytest.mark.parametrize("kind", ["reply", "open_machine"])
    def test_kinds_ses_does_not_report_have_no_sample(self, kind: SampleKind) -> None:
        assert ses.sample(Sample(kind, "a@x.com", "m", 0, "e", "")) is None


def test_the_sns_timestamp_window_uses_the_signed_timestamp() -> None:
    # A stale Timestamp cannot be refreshed without re-signing.
    contract = TestSes()
    message = orjson.loads(contract.signed(now=NOW - 3600))
    message["Timestamp"] = format_timestamp_ms(int(NOW * 1000))
    with pytest.raises(SignatureError, match="does not match"):
        ses.verify(orjson.dumps(message), {}, contract.config(), NOW)


def test_certificate_validity_is_checked_at_now() -> None:
    contract = TestSes()
    later = NOW + 400 * 86400
    with pytest.raises(SignatureError, match="valid only from"):
        ses.verify(contract.signed(now=later), {}, contract.config(), later)


def test_no_certificate_source_with_allow_unsigned_passes_anything() -> None:
    ses.verify(b"anything", {}, ProviderAuth(allow_unsigned=True), NOW)
