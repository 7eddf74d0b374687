"""Erasure without a broker: the keyed hash, the Erasure record, and the processors over dict
tables (an ERASE forgets the recipient; every later record of it produces nothing), the set
that costs no HMAC while empty, and the settings it needs."""

from __future__ import annotations

import hashlib
import hmac

import pytest

import mailstream.streams.erasures as erasures_module
from mailstream.cli import main
from mailstream.commands import CommandAction
from mailstream.connectors import maileroo
from mailstream.deliverability import is_bucket_key
from mailstream.erasure import (
    ErasureKeyMismatch,
    ErasureKeyMissing,
    address_hash,
    erasure_record,
    key_id,
    required_key,
)
from mailstream.errors import ErrorKind
from mailstream.events import BounceClass, EventType
from mailstream.recipient import SuppressionReason
from mailstream.settings import Settings, SettingsError
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.metrics import WorkerMetrics
from mailstream.streams.recipients import StateKeeper, recipient_records
from mailstream.streams.records import Output, SourceRecord
from mailstream.topics import TopicNames, topic_specs
from tests.unit.test_processors import (
    ERASURE,
    EVENT,
    NAMES,
    T0,
    Table,
    audit_headers,
    canonical,
    command,
    feed,
    keeper,
    normalizer,
    on_commands_topic,
    only_dead_letter,
    published_events,
    raw,
)

KEY = "erasure-test-key"
ANN = "ann@example.com"


def erase(processor: StateKeeper, recipients: Table, command_id: str = "erase-1") -> list[Output]:
    order = command(CommandAction.ERASE, command_id=command_id, note="ticket 42")
    return processor.process(on_commands_topic(order), recipients)


# --- The hash and the record ----------------------------------------------------------------


def test_the_hash_is_the_keyed_hmac_sha256_of_the_canonical_address() -> None:
    expected = hmac.new(KEY.encode(), b"alice@x.org", hashlib.sha256).hexdigest()
    assert address_hash("alice@x.org", KEY) == expected
    assert address_hash(" Alice@X.org ", KEY) == expected
    assert address_hash("alice@x.org", "another-key") != expected
    assert expected == expected.lower() and len(expected) == 64


def test_the_erasure_record_names_who_and_when_but_never_the_address() -> None:
    order = command(CommandAction.ERASE, command_id="erase-1", note="ticket 42")
    record = erasure_record(order, KEY)
    assert record == {
        "address_hash": address_hash(ANN, KEY),
        "key_id": key_id(KEY),
        "erased_at": order.requested_at,
        "command_id": "erase-1",
        "actor": "ops@host",
        "note": "ticket 42",
    }
    assert ANN.encode() not in ERASURE.encode(record)
    assert KEY.encode() not in ERASURE.encode(record)
    assert key_id(KEY) != key_id(KEY + "x") and len(key_id(KEY)) == 16


def test_erasures_hashed_with_another_key_are_refused_once_read() -> None:
    ours = ErasedAddresses(KEY)
    ours._codec = ERASURE  # what follow() gives it; the follower calls _store
    theirs = erasure_record(command(CommandAction.ERASE, command_id="e9"), "another key")
    ours._store(theirs["address_hash"].encode(), ERASURE.encode(theirs))
    with pytest.raises(ErasureKeyMismatch, match=key_id("another key")):
        ours.check_key()
    mine = erasure_record(command(CommandAction.ERASE, command_id="e1"), KEY)
    fine = ErasedAddresses(KEY)
    fine._codec = ERASURE
    fine._store(mine["address_hash"].encode(), ERASURE.encode(mine))
    fine.check_key()
    assert fine.is_erased(ANN)


def test_an_erasure_without_a_key_is_a_configuration_error() -> None:
    for missing in (None, ""):
        with pytest.raises(ErasureKeyMissing) as error:
            required_key(missing)
        assert error.value.kind is ErrorKind.INVALID_SETTING
        assert "MAILSTREAM_ERASURE_KEY" in error.value.message
    assert required_key(KEY) == KEY


# --- StateKeeper --------------------------------------------------------------------------


def test_an_erase_deletes_the_entry_and_tombstones_every_published_key() -> None:
    recipients: Table = {}
    processor = keeper(ErasedAddresses(KEY))
    feed(processor, recipients, canonical(EventType.BOUNCED, bounce_class=BounceClass.HARD))
    assert ANN.encode() in recipients

    state, suppression, *scoped, erasure = erase(processor, recipients)

    assert [(output.topic, output.key, output.value) for output in scoped] == [
        (NAMES.scoped_suppressions, b'["ann@example.com",null]', None),
        (NAMES.scoped_suppressions, b'["ann@example.com","default"]', None),
    ]

    assert list(recipient_records(recipients)) == []
    assert (state.topic, state.key, state.value) == (NAMES.recipient_state, ANN.encode(), None)
    assert (suppression.topic, suppression.key, suppression.value) == (
        NAMES.suppressions,
        ANN.encode(),
        None,
    )
    hashed = address_hash(ANN, KEY)
    assert (erasure.topic, erasure.key) == (NAMES.erasures, hashed.encode())
    assert erasure.value is not None and ANN.encode() not in erasure.value
    assert ERASURE.decode(erasure.value)["address_hash"] == hashed
    for output in (state, suppression, *scoped, erasure):
        assert dict(output.headers) == audit_headers(command_id="erase-1")


def test_records_of_an_erased_recipient_produce_nothing_and_are_counted() -> None:
    recipients: Table = {}
    processor = keeper(ErasedAddresses(KEY))
    erase(processor, recipients)
    suppress = command(CommandAction.SUPPRESS, command_id="c2", reason=SuppressionReason.MANUAL)
    # misplaced: without the erasure it would be a dead letter holding the address
    opened = EVENT.encode(canonical(EventType.OPENED, event_id="e3"))
    misplaced = SourceRecord(NAMES.events, 0, 1, T0, b"someone-else", opened)
    assert feed(processor, recipients, canonical(EventType.DELIVERED, event_id="e2")) == []
    assert processor.process(misplaced, recipients) == []
    assert processor.process(on_commands_topic(suppress, 2), recipients) == []
    assert list(recipient_records(recipients)) == []
    assert processor.erased_dropped == {NAMES.events: 2, NAMES.commands: 1}

    metrics = WorkerMetrics(NAMES)
    metrics.watch(lambda: {}, {}, lambda: processor.erased_dropped, dict)
    assert (
        metrics.registry.get_sample_value(
            "mailstream_worker_dropped_records_total",
            {"topic": NAMES.events, "reason": "erased"},
        )
        == 2.0
    )


def test_repeating_an_erase_keeps_the_first_audit_and_other_recipients_are_untouched() -> None:
    recipients: Table = {}
    processor = keeper(ErasedAddresses(KEY))
    feed(processor, recipients, canonical(EventType.DELIVERED, "bob@example.com", "b1"))
    first = erase(processor, recipients)
    again = erase(processor, recipients)
    assert first[-1].topic == NAMES.erasures
    assert [(o.topic, o.key, o.value) for o in again] == [
        (o.topic, o.key, o.value) for o in first[:-1]
    ], "the tombstones again; the Erasure record (who, when) is not overwritten"
    assert [key for key in recipients if not is_bucket_key(key)] == [b"bob@example.com"]
    assert feed(processor, recipients, canonical(EventType.OPENED, "bob@example.com", "b2"))


def test_an_erase_without_an_erasure_key_is_dead_lettered_with_the_reason() -> None:
    recipients: Table = {}
    processor = keeper()
    feed(processor, recipients, canonical(EventType.DELIVERED))
    dead = only_dead_letter(erase(processor, recipients))
    assert dead["error_kind"] == ErrorKind.COMMAND_REFUSED
    assert "MAILSTREAM_ERASURE_KEY is not set" in dead["error_message"]
    assert ANN.encode() in recipients


# --- Normalizer -----------------------------------------------------------------------------


def test_the_normalizer_drops_events_of_an_erased_recipient_and_keeps_no_message_entry() -> None:
    erased = ErasedAddresses(KEY)
    processor = normalizer(erased=erased)
    messages: Table = {}
    delivered = maileroo.sample_payload("delivered", ANN, "m1@x", T0, "e1")
    processor.process(raw("maileroo", delivered, 0), messages)
    assert messages[b"maileroo:m1@x"]["recipient"] == ANN

    erased.add(address_hash(ANN, KEY))
    opened = maileroo.sample_payload("opened", None, "m1@x", T0 + 60_000, "e2")
    assert processor.process(raw("maileroo", opened, 1), messages) == []
    assert messages == {}  # the stored entry naming the erased address is gone
    other = maileroo.sample_payload("delivered", ANN, "m2@x", T0, "e3")
    assert processor.process(raw("maileroo", other, 2), messages) == []
    assert messages == {}
    assert processor.erased_dropped == {NAMES.raw("maileroo"): 2}

    bob = maileroo.sample_payload("delivered", "bob@example.com", "m3@x", T0, "e4")
    assert [
        e["recipient"]
        for e in published_events(processor.process(raw("maileroo", bob, 3), messages))
    ] == ["bob@example.com"]


# --- The set --------------------------------------------------------------------------------


def test_an_empty_set_costs_no_hmac(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_hash(address: str, key: str) -> str:
        raise AssertionError("hashed an address while nobody is erased")

    monkeypatch.setattr(erasures_module, "address_hash", no_hash)
    empty = ErasedAddresses(KEY)
    assert not empty.is_erased(ANN)
    processor = keeper(empty)
    assert feed(processor, {}, canonical(EventType.DELIVERED))
    assert published_events(
        normalizer(erased=empty).process(
            raw("maileroo", maileroo.sample_payload("delivered", ANN, "m1@x", T0, "e1")), {}
        )
    )


def test_a_set_without_a_key_stays_empty() -> None:
    erased = ErasedAddresses(None)
    erased.add(address_hash(ANN, KEY))
    assert not erased.is_erased(ANN), "nothing to compare the hashes with"
    erased.check_key()


# --- Settings -------------------------------------------------------------------------------


def test_the_raw_topics_retention_is_a_setting_forever_by_default() -> None:
    names = TopicNames()

    def raw_retention(settings: Settings) -> str:
        (spec,) = [
            s for s in topic_specs(settings, ["maileroo"]) if s.name == names.raw("maileroo")
        ]
        return spec.configs["retention.ms"]

    assert raw_retention(Settings()) == "-1"
    configured = Settings.from_env({"MAILSTREAM_RAW_RETENTION_MS": "604800000"})
    assert raw_retention(configured) == "604800000"
    with pytest.raises(SettingsError, match="MAILSTREAM_RAW_RETENTION_MS"):
        Settings.from_env({"MAILSTREAM_RAW_RETENTION_MS": "0"})


# --- mailstream erase -----------------------------------------------------------------------


def test_erase_without_a_key_exits_2_with_one_line_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MAILSTREAM_ERASURE_KEY", raising=False)
    monkeypatch.setenv("MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    assert main(["erase", ANN, "--yes"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "mailstream erase: MAILSTREAM_ERASURE_KEY is not set: erasure needs the deployment's "
        "secret key to hash erased addresses"
    ]


def test_erase_refuses_a_note_holding_the_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILSTREAM_ERASURE_KEY", KEY)
    monkeypatch.setenv("MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    assert main(["erase", ANN, "--yes", "--note", "asked by Ann@Example.com"]) == 2
    assert "must not hold the address" in capsys.readouterr().err


def test_erase_asks_for_confirmation_and_sends_nothing_when_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILSTREAM_ERASURE_KEY", KEY)
    monkeypatch.setenv("MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    assert main(["erase", ANN]) == 2  # pytest's stdin is no terminal
    assert "not a terminal: pass --yes to confirm" in capsys.readouterr().err

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda question: "n")
    assert main(["erase", ANN]) == 1
    assert "erase aborted: nothing sent" in capsys.readouterr().out


def test_an_erase_whose_note_holds_the_address_is_refused() -> None:
    recipients: Table = {}
    processor = keeper(ErasedAddresses(KEY))
    order = command(CommandAction.ERASE, command_id="e7", note=f"asked by {ANN.upper()}")
    dead = only_dead_letter(processor.process(on_commands_topic(order), recipients))
    assert dead["error_kind"] == ErrorKind.INVALID_COMMAND
    assert not processor._erased.is_erased(ANN)
