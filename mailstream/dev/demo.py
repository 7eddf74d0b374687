"""`mailstream demo`: the whole product in a minute, on a local broker.

Starts a broker, creates the topics, starts the worker and the ingest service, posts signed
webhooks that show every rule at work (and one delivery and open of every other provider,
each signed its own way), waits until the published
state equals what the offline twin computes from the same webhooks, prints the recipient
states and suppressions, and stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from mailstream.codec import registry_client, service_codec
from mailstream.connectors import inboxroad, mailbot, maileroo
from mailstream.connectors.base import HUMAN_AGENT, PROXY_AGENT, Sample, SampleKind
from mailstream.connectors.registry import PROVIDERS
from mailstream.recipient import RecipientState
from mailstream.settings import IngestSettings, KafkaSettings, SchemaRegistrySettings, Settings
from mailstream.streams.operations.processes import service, settings_env
from mailstream.streams.reader import Records, latest_by_key, read_until
from mailstream.text import log_tail, render_table
from mailstream.topics import TopicNames

T0 = 1_763_900_000_000
MINUTE = 60_000


def reader_address(provider: str) -> str:
    return f"{provider}-reader@example.com"


RULES_SHOWN = {
    "alice@example.com": "mailbot: 1st open +5, 3rd open +10, click +15, reply +30",
    "bob@example.com": "Inboxroad bad-mailbox bounce: HARD, suppressed at once",
    "carol@example.com": "Maileroo 452 4.2.2 mailbox full x5 (one batch): SOFT, the 5th suppresses",
    "dave@example.com": "Inboxroad complaint (f): suppressed",
    "erin@example.com": "click on an unsubscribe link: suppressed, scores nothing",
    "frank@example.com": "open 2 s after delivery is a machine's; the later one counts",
    "grace@example.com": "only a deferral: a state, no bounce counted",
    **{
        reader_address(name): f"{name} webhooks, signed its way: delivered, a human open +5"
        for name in PROVIDERS
    },
}
DELIVERABILITY_COLUMNS = (
    "provider",
    "domain",
    "window",
    "delivered",
    "human_opens",
    "complaints",
    "hard_bounces",
    "complaint_rate",
    "status",
)
STATE_COLUMNS = (
    "recipient",
    "status",
    "suppression_reason",
    "score",
    "delivered",
    "opens",
    "machine_opens",
    "clicks",
    "replies",
    "soft_bounces",
    "hard_bounces",
    "complaints",
    "rule shown",
)


def story() -> list[dict[str, Any]]:
    """Webhooks that exercise every rule, as envelopes (the format `simulate` reads)."""

    def at(minutes: float) -> int:
        return T0 + int(minutes * MINUTE)

    alice = [
        mailbot.sample_payload("message.delivered", "alice@example.com", "a1@demo", at(0), "a-1"),
        *(
            mailbot.sample_payload(
                "message.opened", None, "a1@demo", at(10 + n), f"a-o{n}", user_agent=HUMAN_AGENT
            )
            for n in range(3)
        ),
        mailbot.sample_payload(
            "message.clicked",
            None,
            "a1@demo",
            at(20),
            "a-c",
            url="https://example.com/pricing",
            user_agent=HUMAN_AGENT,
        ),
        mailbot.sample_payload("message.replied", "alice@example.com", "a1@demo", at(30), "a-r"),
    ]
    carol = [
        maileroo.sample_payload(
            "failed",
            "carol@example.com",
            f"c{n}@demo",
            at(n * 60),
            f"c-{n}",
            reason="452-4.2.2 The recipient's inbox is out of storage space.",
        )
        for n in range(5)
    ]
    frank = [
        maileroo.sample_payload("delivered", "frank@example.com", "f1@demo", at(0), "f-1"),
        maileroo.sample_payload(
            "opened",
            None,
            "f1@demo",
            at(0) + 2_000,
            "f-2",
            user_agent=PROXY_AGENT,
            ip="66.249.84.1",
        ),
        maileroo.sample_payload(
            "opened", None, "f1@demo", at(45), "f-3", user_agent=HUMAN_AGENT, ip="203.0.113.7"
        ),
    ]
    erin = [
        maileroo.sample_payload("delivered", "erin@example.com", "e1@demo", at(0), "e-1"),
        maileroo.sample_payload(
            "clicked",
            None,
            "e1@demo",
            at(5),
            "e-2",
            original_url="https://example.com/unsubscribe?u=erin",
            user_agent=HUMAN_AGENT,
            ip="203.0.113.8",
        ),
    ]
    payloads = [
        *(("mailbot", p) for p in alice),
        ("inboxroad", inboxroad.sample_payload("b", "bob@example.com", "b1@demo", at(1), bounce=0)),
        # One batch body: Maileroo may post several events at once. Five separate webhooks of
        # five messages would sit on different raw partitions, and the order of the bounces
        # (which one is the 5th) would depend on how the worker interleaves partitions.
        ("maileroo", carol),
        ("inboxroad", inboxroad.sample_payload("d", "dave@example.com", "d1@demo", at(2))),
        ("inboxroad", inboxroad.sample_payload("f", "dave@example.com", "d1@demo", at(50))),
        *(("maileroo", p) for p in erin),
        *(("maileroo", p) for p in frank),
        (
            "mailbot",
            mailbot.sample_payload(
                "message.deferred", "grace@example.com", "g1@demo", at(3), "g-1"
            ),
        ),
    ]
    shown = {provider for provider, _ in payloads}
    return [{"provider": provider, "payload": payload} for provider, payload in payloads] + [
        {"provider": name, "payload": payload}
        for name in sorted(set(PROVIDERS) - shown)
        for payload in _delivered_and_opened(name, at(4), at(34))
    ]


def _delivered_and_opened(provider: str, delivered_at: int, opened_at: int) -> list[Any]:
    """A delivery and a human open of one message, in the provider's own shape."""
    address, message_id = reader_address(provider), f"{provider}-1@demo"
    moments: tuple[tuple[SampleKind, int], ...] = (("delivered", delivered_at), ("open", opened_at))
    samples = [
        PROVIDERS[provider].sample(Sample(kind, address, message_id, at, f"{provider}-{kind}", ""))
        for kind, at in moments
    ]
    return [payload for payload in samples if payload is not None]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the pipeline end to end on a local broker and print the results",
        description=__doc__,
    )
    parser.add_argument("--port", type=int, default=0, help="ingest port (default: a free one)")
    parser.add_argument(
        "--registry",
        action="store_true",
        help="also start a local schema registry (mailstream registry) and use the Confluent "
        "wire format with it",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mailstream.dev.broker import LocalBroker, free_port
    from mailstream.dev.schema_registry import LocalRegistry
    from mailstream.policy import default_policy
    from mailstream.streams.simulate import simulate
    from mailstream.topics import create_topics, topic_specs

    with (
        tempfile.TemporaryDirectory(prefix="mailstream-demo-") as workdir,
        contextlib.ExitStack() as stack,
    ):
        root = Path(workdir)
        print("1. starting a local Kafka broker (jars from Maven Central, cached) ...", flush=True)
        broker = LocalBroker(root / "broker")
        stack.callback(broker.stop)
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.start()),
            data_dir=root / "data",
            ingest=IngestSettings(
                providers={name: p.local_auth(root) for name, p in PROVIDERS.items()}
            ),
        )
        print(f"   broker at {settings.kafka.bootstrap_servers}")
        if args.registry:
            print("   starting a local schema registry (built from Maven Central once) ...")
            registry = LocalRegistry(root / "registry")
            stack.callback(registry.stop)
            url = registry.start()
            settings = replace(settings, schema_registry=SchemaRegistrySettings(url=url))
            print(f"   schema registry at {url}")
        print("2. creating topics")
        create_topics(settings, topic_specs(settings, PROVIDERS))
        env = settings_env(settings)
        port = args.port or free_port()
        print("3. starting the worker and the ingest service", flush=True)
        web_port = free_port()
        worker = ["worker", "--web-port", str(web_port)]
        stack.enter_context(service(worker, env, root / "worker.log"))
        stack.enter_context(service(["ingest", "--port", str(port)], env, root / "ingest.log"))
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/readyz", 60)
        envelopes = story()
        print(f"4. posting {len(envelopes)} signed webhooks, a forged one and a malformed one")
        _post_story(base, envelopes, settings.ingest)
        expected = simulate(envelopes, default_policy())
        print("5. waiting for the published state to equal the offline twin (mailstream simulate)")
        try:
            states, suppressions = _wait_for_state(
                settings, {k: s.to_record() for k, s in expected.items()}
            )
        except TimeoutError as error:
            for log in ("worker.log", "ingest.log"):
                print(f"--- {log} (last lines)\n{log_tail(root / log, 30)}")
            raise SystemExit(f"the demo failed: {error}") from None
        rows = [
            state | {"rule shown": RULES_SHOWN.get(state["recipient"], "")}
            for state in states.values()
        ]
        _print_table("Recipient states (email.recipient-state)", STATE_COLUMNS, rows)
        _print_table(
            "Suppressions (email.suppressions)",
            ("recipient", "reason", "event_id", "source"),
            suppressions.values(),
        )
        dead = _dead_letters(settings)
        print(f"Dead letters (email.events.dlq): {len(dead)}")
        for letter in dead:
            print(
                f"  {letter['error_kind']}: {letter['error_message']} "
                f"(from {letter['source_topic']}[{letter['source_partition']}]"
                f"@{letter['source_offset']})"
            )
        if args.registry:
            _print_subjects(settings)
        windows = _deliverability(settings)
        _print_table("Deliverability (email.deliverability)", DELIVERABILITY_COLUMNS, windows)
        print(f"Dashboard: http://127.0.0.1:{web_port}/ (served until the demo stops)")
        if sys.stdin.isatty():
            input("Press Enter to stop the demo. ")
        print()
        print("6. stopping everything the demo started")
    return 0


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer 200 within {timeout}s")
        time.sleep(0.2)


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _post_story(base: str, envelopes: list[dict[str, Any]], ingest: IngestSettings) -> None:
    for envelope in envelopes:
        name = envelope["provider"]
        body, headers = PROVIDERS[name].signed(
            orjson.dumps(envelope["payload"]), ingest.auth(name), time.time()
        )
        status = _post(f"{base}/webhooks/{name}", body, headers)
        if status != 200:
            raise SystemExit(f"ingest answered {status} to a valid {name} webhook")
    forged = _post(
        f"{base}/webhooks/maileroo",
        b'{"event_type":"delivered"}',
        {"X-Maileroo-Signature": "00" * 32},
    )
    print(f"   forged maileroo webhook: HTTP {forged} (refused, nothing stored)")
    malformed = b'{"event_type": "delivered", "event_data": '
    headers = PROVIDERS["maileroo"].sign(malformed, ingest.auth("maileroo"), time.time())
    status = _post(f"{base}/webhooks/maileroo", malformed, headers)
    print(
        f"   signed but malformed maileroo webhook: HTTP {status} "
        "(stored; the normalizer dead-letters it)"
    )


def _wait_for_state(
    settings: Settings, expected: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    state_codec = service_codec(settings, "recipient_state")
    suppression_codec = service_codec(settings, "suppression")

    def published(records: Records) -> dict[str, dict[str, Any]]:
        return {
            key.decode(): RecipientState.from_record(state_codec.decode(value)).to_record()
            for key, value in latest_by_key(records).items()
            if value is not None
        }

    names = TopicNames(settings.topic_prefix)
    states = published(
        read_until(settings, names.recipient_state, lambda r: published(r) == expected, 90)
    )
    wanted = sum(1 for state in expected.values() if state["status"] == "SUPPRESSED")
    suppressions = {
        key.decode(): suppression_codec.decode(value)
        for key, value in latest_by_key(
            read_until(settings, names.suppressions, lambda r: len(latest_by_key(r)) >= wanted, 30)
        ).items()
        if value is not None
    }
    return states, suppressions


def _print_subjects(settings: Settings) -> None:
    client = registry_client(settings.schema_registry)
    rows = [
        [
            subject,
            str(client.get_latest_version(subject).version),
            client.get_compatibility(subject),
        ]
        for subject in sorted(client.get_subjects())
    ]
    print()
    print(f"Schema registry subjects ({settings.schema_registry.url}):")
    print(render_table(("subject", "latest version", "compatibility"), rows))


def _deliverability(settings: Settings) -> list[dict[str, Any]]:
    """The windows of every provider the story used, once the worker has published them."""
    from mailstream.policy import default_policy

    names = TopicNames(settings.topic_prefix)
    codec = service_codec(settings, "deliverability")
    wanted = len(PROVIDERS) * len(default_policy().deliverability.windows)

    def windows(records: Records) -> list[dict[str, Any]]:
        latest = latest_by_key(records)
        return [codec.decode(value) for value in latest.values() if value is not None]

    records = read_until(settings, names.deliverability, lambda r: len(windows(r)) >= wanted, 60)
    return [
        {**window, **window["counts"], "complaint_rate": _percent(window["complaint_rate"])}
        for window in windows(records)
    ]


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2%}"


def _dead_letters(settings: Settings) -> list[dict[str, Any]]:
    codec = service_codec(settings, "dead_letter")
    records = read_until(
        settings, TopicNames(settings.topic_prefix).dead_letters, lambda r: len(r) >= 1, 30
    )
    return [codec.decode(value) for _, value in records if value is not None]


def _print_table(title: str, columns: tuple[str, ...], rows: Any) -> None:
    ordered = sorted(rows, key=lambda row: [str(row.get(column)) for column in columns])
    print(f"\n{title}")
    print(render_table(columns, [[str(row.get(column)) for column in columns] for row in ordered]))
    print()
