"""The contract every provider connector keeps. Each provider's test class inherits
`ProviderContract`, fills in the class attributes, and adds its own golden cases and quirks.
The contract includes property tests: no input makes a parser raise anything but ParseError,
and whatever a parser returns is a canonical event the Avro schema accepts.

Golden cases are `tests/payloads/<provider>/<case>.json` (a webhook body, seed samples
verbatim) next to `<case>.expected.json` (the canonical events, every field).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstream.codec import AvroCodec, codec_for
from mailstream.connectors.base import MAX_BODY_BYTES, Provider
from mailstream.errors import ParseError, SignatureError
from mailstream.events import EMAIL_EVENT_FIELDS, EventType
from mailstream.settings import IngestSettings, ProviderAuth

PAYLOADS = Path(__file__).parent.parent / "payloads"
NOW = 1_772_446_500.0
SECRET = "whsec_current"
OLD_SECRET = "whsec_previous"
WRONG_VALUES: tuple[Any, ...] = (12345, 1.5, True, "text", [], ["x"], {}, {"email": 5})

EVENT_CODEC: AvroCodec = codec_for("email_event")

TIMESTAMP_VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.datetimes().map(lambda moment: moment.isoformat()),
    st.text(alphabet="0123456789.:-+TZ ", max_size=30),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    TIMESTAMP_VALUES,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# differing_executors: the property tests are inherited by every provider's test class.
PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)


def golden_cases(provider: str) -> list[Path]:
    return sorted(
        path
        for path in (PAYLOADS / provider).glob("*.json")
        if not path.name.endswith(".expected.json")
    )


def assert_canonical(events: list[dict[str, Any]]) -> None:
    """Every event has exactly the schema's fields in order and survives the Avro codec."""
    for event in events:
        assert tuple(event) == EMAIL_EVENT_FIELDS
        assert isinstance(event["occurred_at"], int)
        assert EVENT_CODEC.decode(EVENT_CODEC.encode(event)) == event


class ProviderContract:
    provider: ClassVar[Provider]
    event_type_key: ClassVar[str]
    timestamp_keys: ClassVar[tuple[str, ...]]
    message_id_key: ClassVar[str]
    known_keys: ClassVar[tuple[str, ...]]  # every key the parser reads, so fuzzing reaches past

    def valid_item(self) -> dict[str, Any]:
        """One complete, valid webhook event of a known type."""
        raise NotImplementedError

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "golden_case" in metafunc.fixturenames:
            cases = golden_cases(self.provider.name)
            metafunc.parametrize("golden_case", cases, ids=[case.stem for case in cases])

    def body(self, document: Any = None) -> bytes:
        return orjson.dumps(self.valid_item() if document is None else document)

    def config(self, *secrets: str, **options: Any) -> ProviderAuth:
        return ProviderAuth(secrets=secrets or (SECRET,), **options)

    # --- Golden payloads ------------------------------------------------------------------

    def test_golden_payload(self, golden_case: Path) -> None:
        expected_path = golden_case.with_name(f"{golden_case.stem}.expected.json")
        events = self.provider.parse(golden_case.read_bytes())
        assert events == orjson.loads(expected_path.read_bytes())
        assert_canonical(events)

    def test_has_golden_cases(self) -> None:
        assert golden_cases(self.provider.name)

    # --- Signatures -----------------------------------------------------------------------

    def test_signed_request_passes(self) -> None:
        body = self.body()
        headers = self.provider.sign(body, self.config(), NOW)
        self.provider.verify(body, headers, self.config(), NOW)

    def test_local_credentials_sign_and_verify_through_the_environment(
        self, tmp_path: Path
    ) -> None:
        """What the demo, the benchmarks and the integration tests configure: the local
        credentials survive the MAILSTREAM_INGEST_* round trip, and a request signed with them
        is accepted, and refused under the next call's fresh credentials."""
        auth = self.provider.local_auth(tmp_path)
        ingest = IngestSettings(providers={self.provider.name: auth})
        assert IngestSettings.from_env(ingest.to_env()) == ingest
        body, headers = self.provider.signed(self.body(), auth, NOW)
        self.provider.verify(body, headers, auth, NOW)
        with pytest.raises(SignatureError):
            self.provider.verify(body, headers, self.provider.local_auth(tmp_path), NOW)

    def test_header_names_are_case_insensitive(self) -> None:
        body = self.body()
        headers = self.provider.sign(body, self.config(), NOW)
        for transform in (str.lower, str.upper):
            renamed = {transform(name): value for name, value in headers.items()}
            self.provider.verify(body, renamed, self.config(), NOW)

    def test_forged_signature_is_refused(self) -> None:
        body = self.body()
        forged = self.provider.sign(body, self.config("attacker-guess"), NOW)
        with pytest.raises(SignatureError):
            self.provider.verify(body, forged, self.config(), NOW)

    def test_altered_body_is_refused(self) -> None:
        headers = self.provider.sign(self.body(), self.config(), NOW)
        with pytest.raises(SignatureError):
            self.provider.verify(self.body() + b" ", headers, self.config(), NOW)

    def test_rotated_secret_accepts_old_and_new(self) -> None:
        body = self.body()
        rotating = self.config(SECRET, OLD_SECRET)
        for secret in (SECRET, OLD_SECRET):
            headers = self.provider.sign(body, self.config(secret), NOW)
            self.provider.verify(body, headers, rotating, NOW)

    def test_missing_credential_is_refused(self) -> None:
        with pytest.raises(SignatureError, match="missing"):
            self.provider.verify(self.body(), {}, self.config(), NOW)

    def test_no_secret_configured_is_refused(self) -> None:
        body = self.body()
        headers = self.provider.sign(body, self.config(), NOW)
        with pytest.raises(SignatureError, match="no secret configured"):
            self.provider.verify(body, headers, ProviderAuth(), NOW)

    def test_allow_unsigned_accepts_a_request_without_credentials(self) -> None:
        self.provider.verify(self.body(), {}, ProviderAuth(allow_unsigned=True), NOW)
        self.provider.verify(self.body(), {}, self.config(allow_unsigned=True), NOW)

    def test_allow_unsigned_still_checks_a_presented_credential(self) -> None:
        body = self.body()
        forged = self.provider.sign(body, self.config("attacker-guess"), NOW)
        with pytest.raises(SignatureError):
            self.provider.verify(body, forged, self.config(allow_unsigned=True), NOW)

    def test_auth_repr_hides_secrets(self) -> None:
        assert SECRET not in repr(self.config())

    # --- Parsing --------------------------------------------------------------------------

    def test_valid_item_gives_canonical_events(self) -> None:
        events = self.provider.parse(self.body())
        assert events
        assert all(event["provider"] == self.provider.name for event in events)
        assert all(event["event_type"] is not EventType.UNKNOWN for event in events)
        assert_canonical(events)

    def test_received_at_is_passed_through(self) -> None:
        events = self.provider.parse(self.body(), 1_772_446_501_234)
        assert {event["received_at"] for event in events} == {1_772_446_501_234}

    def test_parsing_is_deterministic(self) -> None:
        assert self.provider.parse(self.body()) == self.provider.parse(self.body())

    def test_batch_parses_every_item_in_order(self) -> None:
        items = [dict(self.valid_item(), **{self.message_id_key: f"<m{i}@x>"}) for i in range(50)]
        events = self.provider.parse(self.body(items))
        assert [event["message_id"] for event in events] == [f"m{i}@x" for i in range(50)]

    def test_empty_batch_gives_no_events(self) -> None:
        assert self.provider.parse(b"[]") == []

    def test_large_batch_under_the_limit_parses(self) -> None:
        body = self.body([self.valid_item()] * 5000)
        assert len(body) < MAX_BODY_BYTES
        assert len(self.provider.parse(body)) == 5000

    def test_body_over_the_limit_is_refused_before_decoding(self) -> None:
        with pytest.raises(ParseError) as error:
            self.provider.parse(b"[" + b" " * MAX_BODY_BYTES + b"]")
        assert error.value.kind == "too_large"

    @pytest.mark.parametrize(
        ("body", "kind"),
        [
            (b"", "invalid_json"),
            (b"not json", "invalid_json"),
            (b'{"unterminated": ', "invalid_json"),
            (b"\xff\xfe{}", "not_utf8"),
            ('{"a": "caf\u00e9"}'.encode("latin-1"), "not_utf8"),
            (b"42", "wrong_type"),
            (b'"a string"', "wrong_type"),
            (b"null", "wrong_type"),
            (b"[{}, 3]", "wrong_type"),
        ],
    )
    def test_unparseable_body_raises_a_typed_error(self, body: bytes, kind: str) -> None:
        with pytest.raises(ParseError) as error:
            self.provider.parse(body)
        assert error.value.kind == kind
        assert error.value.message

    def test_missing_timestamp_is_a_missing_field(self) -> None:
        item = {k: v for k, v in self.valid_item().items() if k not in self.timestamp_keys}
        with pytest.raises(ParseError) as error:
            self.provider.parse(self.body(item))
        assert error.value.kind == "missing_field"

    def test_batch_error_names_the_item(self) -> None:
        bad = {k: v for k, v in self.valid_item().items() if k not in self.timestamp_keys}
        with pytest.raises(ParseError, match="batch item 1"):
            self.provider.parse(self.body([self.valid_item(), bad]))

    def test_null_optional_fields_give_null_values(self) -> None:
        required = {self.event_type_key, *self.timestamp_keys}
        item = {k: (v if k in required else None) for k, v in self.valid_item().items()}
        events = self.provider.parse(self.body(item))
        assert [event["recipient"] for event in events] == [None]
        assert events[0]["message_id"] is None
        assert_canonical(events)

    def test_unknown_event_type_is_unknown_not_an_error(self) -> None:
        item = dict(self.valid_item(), **{self.event_type_key: "something.new"})
        events = self.provider.parse(self.body(item))
        assert {event["event_type"] for event in events} == {EventType.UNKNOWN}
        assert_canonical(events)

    def test_wrong_typed_values_raise_only_parse_errors(self) -> None:
        for key in self.valid_item():
            for value in WRONG_VALUES:
                item = dict(self.valid_item(), **{key: value})
                try:
                    events = self.provider.parse(self.body(item))
                except ParseError as error:
                    assert error.kind in {"wrong_type", "invalid_value", "missing_field"}
                else:
                    assert_canonical(events)

    def test_wrong_typed_timestamp_is_refused(self) -> None:
        for value in (True, [], {}, "yesterday", -5, 10**15, 1e300, "99999999999999"):
            item = dict(self.valid_item(), **{self.timestamp_keys[0]: value})
            with pytest.raises(ParseError) as error:
                self.provider.parse(self.body(item))
            assert error.value.kind in {"wrong_type", "invalid_value"}

    # --- Message key ----------------------------------------------------------------------

    def test_message_key_is_the_clean_message_id(self) -> None:
        item = dict(self.valid_item(), **{self.message_id_key: " <key-1@example.com> "})
        assert self.provider.message_key(self.body(item)) == b"key-1@example.com"
        assert self.provider.message_key(self.body([item, self.valid_item()])) == (
            b"key-1@example.com"
        )

    @pytest.mark.parametrize(
        "body", [b"", b"\xff", b"[]", b"[1]", b"null", b'{"x": 1}', b"{", b'{"message_id": 5}']
    )
    def test_message_key_never_raises(self, body: bytes) -> None:
        assert self.provider.message_key(body) is None

    def test_message_key_is_cheap(self) -> None:
        body = self.body()
        started = time.perf_counter()
        for _ in range(1000):
            self.provider.message_key(body)
        assert time.perf_counter() - started < 0.5  # about 5 µs each; generous for CI

    # --- Fuzzing --------------------------------------------------------------------------

    def keyed_objects(self) -> st.SearchStrategy[dict[str, Any]]:
        keys = st.sampled_from(self.known_keys)
        values = st.recursive(
            SCALARS,
            lambda children: (
                st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=5)
            ),
            max_leaves=15,
        )
        return st.dictionaries(keys, values, max_size=10)

    def parse_or_typed_error(self, body: bytes) -> None:
        try:
            events = self.provider.parse(body)
        except ParseError as error:
            assert error.kind and error.message
        else:
            assert_canonical(events)

    @PROPERTY_SETTINGS
    @given(body=st.binary(max_size=300))
    def test_arbitrary_bytes(self, body: bytes) -> None:
        self.parse_or_typed_error(body)
        assert isinstance(self.provider.message_key(body), bytes | None)

    @PROPERTY_SETTINGS
    @given(document=JSON_VALUES)
    def test_arbitrary_json(self, document: Any) -> None:
        self.parse_or_typed_error(orjson.dumps(document))

    @PROPERTY_SETTINGS
    @given(data=st.data())
    def test_right_keys_with_any_values(self, data: st.DataObject) -> None:
        item = data.draw(self.keyed_objects())
        self.parse_or_typed_error(orjson.dumps(item))
        self.parse_or_typed_error(orjson.dumps([item, item]))
        self.provider.message_key(orjson.dumps(item))

    @PROPERTY_SETTINGS
    @given(data=st.data())
    def test_valid_item_with_some_values_replaced(self, data: st.DataObject) -> None:
        overrides = data.draw(self.keyed_objects())
        self.parse_or_typed_error(orjson.dumps(self.valid_item() | overrides))

    @PROPERTY_SETTINGS
    @given(value=TIMESTAMP_VALUES)
    def test_any_timestamp_value(self, value: Any) -> None:
        self.parse_or_typed_error(orjson.dumps(self.valid_item() | {self.timestamp_keys[0]: value}))
