"""The worker's /metrics on a real broker: Prometheus text that parses, behind the token; the
counts follow what was published, and the consumer lag goes to zero once caught up."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailstream.codec import codec_for
from mailstream.connectors.samples import campaign_rounds
from mailstream.settings import Settings
from mailstream.streams.reader import read_to_end
from mailstream.topics import TopicNames
from tests.integration.harness import send_envelopes
from tests.integration.test_operations import TOKEN, operated, wait_for_web  # noqa: F401
from tests.integration.test_replay import expected_states, wait_for_states

pytestmark = pytest.mark.kafka

EVENT = codec_for("email_event")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str, token: str | None = TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{base}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(
        value for (sample, got), value in samples.items() if sample == name and wanted <= set(got)
    )


def test_worker_metrics_count_what_was_published_and_the_lag_reaches_zero(
    operated: tuple[Settings, str],  # noqa: F811
) -> None:
    settings, base = operated
    names = TopicNames(settings.topic_prefix)
    wait_for_web(base)
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(base, token=None)
    assert refused.value.code == 401
    [envelopes] = campaign_rounds(30, rounds=1, seed=5)
    poison = {"provider": "maileroo", "payload": b"{not json"}
    send_envelopes(settings, [*envelopes, poison])
    expected = expected_states(envelopes)
    wait_for_states(settings, names, expected)

    deadline = time.monotonic() + 60
    while True:
        samples = scrape(base)
        lags = {
            labels: value
            for (name, labels), value in samples.items()
            if name == "mailstream_worker_consumer_lag"
        }
        if lags and not any(lags.values()):
            break
        assert time.monotonic() < deadline, f"lag never reached zero: {lags}"
        time.sleep(0.5)

    events = read_to_end(settings, names.events)
    published_types: dict[str, int] = {}
    for record in events:
        event_type = EVENT.decode(record.value or b"")["event_type"]
        published_types[event_type] = published_types.get(event_type, 0) + 1
    for event_type, count in published_types.items():
        assert total(samples, "mailstream_worker_events_total", event_type=event_type) == count
    states = read_to_end(settings, names.recipient_state)
    assert total(samples, "mailstream_worker_states_total") == len(states)
    assert total(samples, "mailstream_worker_dead_letters_total", kind="invalid_json") == 1
    assert total(samples, "mailstream_worker_records_total", topic=names.events) == len(events)
    raw = sum(
        len(read_to_end(settings, names.raw(p))) for p in ("mailbot", "maileroo", "inboxroad")
    )
    buckets = read_to_end(settings, names.deliverability_buckets)
    assert total(samples, "mailstream_worker_records_total") == raw + len(events) + len(buckets)
    assert total(samples, "mailstream_worker_receive_to_publish_seconds_count") == len(states)
    bucket_keys = {record.key for record in buckets}  # the deliverability buckets share it
    assert total(samples, "mailstream_worker_table_entries", table="recipients") == len(
        expected
    ) + len(bucket_keys)
    assert total(samples, "mailstream_worker_rebalances_total") >= 1
    assert total(samples, "process_resident_memory_bytes") > 0
    assert len(published_types) > 3, published_types  # the campaign mixes event types
