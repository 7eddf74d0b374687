"""Webhook ingest at saturation on loopback, with every acknowledged request verified on Kafka.

Starts a Kafka cluster (`provision_cluster`: KAFKA_BOOTSTRAP_SERVERS, Docker, or the local jar
broker), creates the raw topics under a fresh prefix, runs `mailstream ingest` as its own
process and drives it from this process with N concurrent keep-alive connections posting
signed mailbot, Maileroo and Inboxroad webhooks (the golden bodies of tests/payloads/) until
the request count or the duration is reached. Then it reads the raw topics back and checks
that every request answered 200 is there (by the request id header), and prints a markdown
table. Two clients: `aiohttp` (ClientSession) and `raw` (pre-rendered HTTP/1.1 requests on
asyncio streams, so the load generator spends less of the shared CPU than the server).

Run: .venv/bin/python bench/ingest_bench.py [--client raw|aiohttp] [--connections 256]
     [--requests 50000] [--duration 20]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiohttp
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from mailstream.connectors.registry import PROVIDERS
from mailstream.dev.broker import free_port
from mailstream.dev.provision import Cluster, provision_cluster
from mailstream.settings import (
    IngestSettings,
    KafkaSettings,
    Settings,
)
from mailstream.streams.operations.processes import service, settings_env
from mailstream.streams.reader import throwaway_consumer
from mailstream.topics import TopicNames, create_topics, topic_specs

PAYLOADS = Path(__file__).resolve().parent.parent / "tests" / "payloads"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Signed = tuple[str, bytes, dict[str, str]]  # path, body, headers


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    acknowledged: list[bytes] = field(default_factory=list)
    other_statuses: int = 0


@dataclass
class Budget:
    """Requests left to send and the moment to stop, shared by every connection."""

    remaining: int
    deadline: float

    def take(self) -> bool:
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.remaining -= 1
        return True


def signed_requests(settings: Settings) -> list[Signed]:
    """Every golden body of every provider, signed now (mailbot's window is 5 minutes), but
    those with a one-time token (Mailgun's): the benchmark posts each body again and again."""
    requests = []
    for name, provider in PROVIDERS.items():
        config = settings.ingest.auth(name)
        for path in sorted((PAYLOADS / name).glob("*.json")):
            if path.name.endswith(".expected.json"):
                continue
            body, signature = provider.signed(path.read_bytes(), config, time.time())
            if provider.replay_token(body) is not None:
                continue
            headers = {"Content-Type": "application/json", **signature}
            requests.append((f"/webhooks/{name}", body, headers))
    return requests


def record(tally: Tally, status: int, request_id: str | None, started: float) -> None:
    tally.latencies.append(time.perf_counter() - started)
    if status == 200 and request_id is not None:
        tally.acknowledged.append(request_id.encode())
    else:
        tally.other_statuses += 1


async def aiohttp_worker(base: str, requests: list[Signed], budget: Budget, tally: Tally) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        for path, body, headers in itertools.cycle(requests):
            if not budget.take():
                return
            started = time.perf_counter()
            async with session.post(path, data=body, headers=headers) as response:
                await response.read()
                record(tally, response.status, response.headers.get("X-Request-Id"), started)


async def raw_worker(base: str, requests: list[Signed], budget: Budget, tally: Tally) -> None:
    host, port = base.removeprefix("http://").split(":")
    rendered = [render_request(path, body, headers) for path, body, headers in requests]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for request in itertools.cycle(rendered):
            if not budget.take():
                return
            started = time.perf_counter()
            writer.write(request)
            status, request_id = await read_response(reader)
            record(tally, status, request_id, started)
    finally:
        writer.close()
        await writer.wait_closed()


def render_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: ingest", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, str | None]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in head[1:] if line)
    }
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("x-request-id")


Worker = Callable[[str, list[Signed], Budget, Tally], Awaitable[None]]
WORKERS: dict[str, Worker] = {"aiohttp": aiohttp_worker, "raw": raw_worker}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def stored_request_ids(settings: Settings, expected: int, timeout: float = 60) -> list[bytes]:
    """The request id header of every record on the raw topics."""
    consumer = throwaway_consumer(settings, "bench", log_level=0)
    try:
        names = TopicNames(settings.topic_prefix)
        partitions = []
        total = 0
        for provider in PROVIDERS:
            topic = names.raw(provider)
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                end = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                total += end
                partitions.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        assert total >= expected, f"{total} records on the raw topics, {expected} acknowledged"
        consumer.assign(partitions)
        ids: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(ids) < total and time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=1):
                assert message.error() is None, message.error()
                headers = cast(list[tuple[str, bytes]], message.headers() or [])
                ids.append(dict(headers)["mailstream.request_id"])
        return ids
    finally:
        consumer.close()


async def drive(base: str, args: argparse.Namespace, requests: list[Signed]) -> tuple[Tally, float]:
    tally = Tally()
    budget = Budget(args.requests, time.perf_counter() + args.duration)
    worker = WORKERS[args.client]
    started = time.perf_counter()
    await asyncio.gather(*(worker(base, requests, budget, tally) for _ in range(args.connections)))
    return tally, time.perf_counter() - started


async def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("mailstream ingest did not become ready")
            await asyncio.sleep(0.2)


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=1000)[int(fraction * 1000) - 1]


def run(args: argparse.Namespace, cluster: Cluster, work: Path) -> dict[str, str]:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        partitions=args.partitions,
        # The benchmark posts the same bodies again and again: measure writes, not duplicates.
        ingest=IngestSettings(
            providers={name: p.local_auth(work) for name, p in PROVIDERS.items()},
            dedupe_window_seconds=0,
        ),
    )
    raw = {TopicNames(settings.topic_prefix).raw(p) for p in PROVIDERS}
    create_topics(settings, [s for s in topic_specs(settings, PROVIDERS) if s.name in raw])
    env = settings_env(settings)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with service(["ingest", "--port", str(port)], env, work / "ingest.log") as process:
        asyncio.run(wait_ready(base))
        broker_pid = cluster.local.pid() if cluster.local else None
        pids = {"server": process.pid, **({"broker": broker_pid} if broker_pid else {})}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        client_before = time.process_time()
        tally, elapsed = asyncio.run(drive(base, args, signed_requests(settings)))
        cpu = {name: (cpu_seconds(pids[name]) - used) / elapsed for name, used in before.items()}
        cpu["client"] = (time.process_time() - client_before) / elapsed
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(30)
    stored = stored_request_ids(settings, len(tally.acknowledged))
    missing = set(tally.acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged requests are not on the raw topics"
    assert exit_code == 0, f"mailstream ingest exited {exit_code}"
    sent = len(tally.latencies)
    return {
        "client": args.client,
        "connections": str(args.connections),
        "requests": str(sent),
        "200": str(len(tally.acknowledged)),
        "other": str(tally.other_statuses),
        "seconds": f"{elapsed:.1f}",
        "requests/s": f"{sent / elapsed:,.0f}",
        "p50 ms": f"{percentile(tally.latencies, 0.50) * 1000:.1f}",
        "p99 ms": f"{percentile(tally.latencies, 0.99) * 1000:.1f}",
        "CPU server / client / broker": " / ".join(
            f"{cpu[name]:.0%}" if name in cpu else "-" for name in ("server", "client", "broker")
        ),
        "verified on Kafka": f"{len(tally.acknowledged) - len(missing)}/{len(tally.acknowledged)}",
        "records": str(len(stored)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=sorted(WORKERS), default="raw")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds, at most")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="ingest-bench-") as work,
        provision_cluster(os.environ, Path(work) / "kafka") as cluster,
    ):
        row = run(args, cluster, Path(work))
    print(
        f"mailstream ingest on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Kafka: {cluster.kind}\n"
    )
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    print("| " + " | ".join(row.values()) + " |")


if __name__ == "__main__":
    main()
