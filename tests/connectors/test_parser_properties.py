"""Property tests: no input makes a parser raise anything but ParseError, and whatever a
parser returns is a canonical event the Avro schema accepts."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstream.connectors.registry import PROVIDERS
from mailstream.errors import ParseError
from tests.connectors.provider_contract import assert_canonical

# Every key each parser reads, so generated objects reach past the first lookup.
KNOWN_KEYS: dict[str, list[str]] = {
    "mailbot": [
        "event_id", "event_type", "type", "event", "created_at", "timestamp", "message_id", "id",
        "recipient", "to", "from", "sender", "inbox_id", "labels", "url", "ip", "user_agent",
        "data", "message", "bounce", "bounce_type", "smtp_status", "status", "diagnostic",
        "diagnostic_code", "reason", "bounce_reason", "in_reply_to", "reply_to_message_id",
        "email",
    ],
    "inboxroad": [
        "type", "timeLogged", "orig", "rcpt", "dsnAction", "dsnStatus", "dsnDiag", "bounceCat",
        "rcvSmtpUser", "header_Message-Id", "vmta",
    ],
    "maileroo": [
        "domain_id", "event_data", "event_id", "event_time", "event_type", "inserted_at",
        "message_id", "tags", "to", "reason", "ip", "user_agent", "original_url",
    ],
}
VALID_ITEMS: dict[str, dict[str, Any]] = {
    "mailbot": {"event_type": "message.bounced", "created_at": "2026-03-02T10:15:00Z"},
    "inboxroad": {"type": "b", "timeLogged": "1695222842"},
    "maileroo": {"event_type": "failed", "event_time": 1710545542},
}
TIMESTAMP_KEYS = {"mailbot": "created_at", "inboxroad": "timeLogged", "maileroo": "event_time"}
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
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def keyed_objects(provider: str) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(KNOWN_KEYS[provider])
    values = st.recursive(
        SCALARS,
        lambda children: st.lists(children, max_size=3)
        | st.dictionaries(keys, children, max_size=5),
        max_leaves=15,
    )
    return st.dictionaries(keys, values, max_size=10)


def parse_or_typed_error(provider: str, body: bytes) -> None:
    try:
        events = PROVIDERS[provider].parse(body)
    except ParseError as error:
        assert error.kind and error.message
    else:
        assert_canonical(events)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@PROPERTY_SETTINGS
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes(provider: str, body: bytes) -> None:
    parse_or_typed_error(provider, body)
    assert isinstance(PROVIDERS[provider].message_key(body), bytes | None)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@PROPERTY_SETTINGS
@given(document=JSON_VALUES)
def test_arbitrary_json(provider: str, document: Any) -> None:
    parse_or_typed_error(provider, orjson.dumps(document))


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_right_keys_with_any_values(provider: str, data: st.DataObject) -> None:
    item = data.draw(keyed_objects(provider))
    parse_or_typed_error(provider, orjson.dumps(item))
    parse_or_typed_error(provider, orjson.dumps([item, item]))
    PROVIDERS[provider].message_key(orjson.dumps(item))


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_valid_item_with_some_values_replaced(provider: str, data: st.DataObject) -> None:
    overrides = data.draw(keyed_objects(provider))
    parse_or_typed_error(provider, orjson.dumps(VALID_ITEMS[provider] | overrides))


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@PROPERTY_SETTINGS
@given(value=TIMESTAMP_VALUES)
def test_any_timestamp_value(provider: str, value: Any) -> None:
    item = VALID_ITEMS[provider] | {TIMESTAMP_KEYS[provider]: value}
    parse_or_typed_error(provider, orjson.dumps(item))
