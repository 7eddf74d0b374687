"""Pick the Kafka cluster for a test session or a benchmark, in this order:

1. `KAFKA_BOOTSTRAP_SERVERS` (or `MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS`): an existing cluster;
2. testcontainers' Kafka module, when a Docker engine answers;
3. the local jar broker (`mailstream.dev.broker.LocalBroker`) in a fresh directory.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mailstream.dev.broker import LocalBroker


@dataclass(frozen=True)
class Cluster:
    bootstrap_servers: str
    kind: str  # "external", "testcontainers" or "local"
    local: LocalBroker | None = None


def docker_available(env: Mapping[str, str]) -> bool:
    """Ask the Docker engine for `/_ping`; a missing socket or any error means no engine."""
    host = env.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(host.removeprefix("unix://"))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                reply = sock.recv(64)
                return reply.startswith(b"HTTP/1.") and b" 200 " in reply
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextlib.contextmanager
def provision_cluster(env: Mapping[str, str], directory: Path | None = None) -> Iterator[Cluster]:
    external = env.get("KAFKA_BOOTSTRAP_SERVERS") or env.get("MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield Cluster(external, "external")
    elif docker_available(env):
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield Cluster(container.get_bootstrap_server(), "testcontainers")
    else:
        with contextlib.ExitStack() as stack:
            if directory is None:
                directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kafka-")))
            broker = LocalBroker(directory)
            stack.callback(broker.stop)
            yield Cluster(broker.start(), "local", broker)
