"""A real single-node Apache Kafka broker (KRaft, broker+controller) from Maven Central jars.

No Docker needed: Maven resolves `kafka_2.13` into a cache once, `kafka.tools.StorageTool`
formats the log directory and `kafka.Kafka` runs the node bound to 127.0.0.1 on free ports.
A broker directory holds everything of one broker: `server.properties`, `data/`, `logs/`,
the pid and the bootstrap address, so a broker can be stopped and started again on the same
port with its data (tests of broker restarts need that).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mailstream.errors import ErrorKind, MailstreamError
from mailstream.text import log_tail

KAFKA_VERSION = "3.9.1"
DEFAULT_HEAP = "-Xms256m -Xmx768m"
READINESS_GROUP = "mailstream-broker-readiness"


class BrokerError(MailstreamError, RuntimeError):
    """The local broker could not be provisioned, started or stopped."""

    default_kind = ErrorKind.BROKER_FAILED


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mailstream"
    return Path(os.environ.get("MAILSTREAM_CACHE_DIR", default))


def ensure_jars() -> Path:
    """Resolve the broker jars with Maven once; later calls return the cached directory."""
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    if (libs / ".complete").exists():
        return libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise BrokerError("the local broker needs Java 17+ and Maven (mvn) on PATH")
    staging = libs.with_name(f"libs.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    with resources.as_file(resources.files(__package__) / "pom.xml") as pom:
        result = subprocess.run(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise BrokerError(f"mvn could not resolve the Kafka jars:\n{result.stdout}{result.stderr}")
    (staging / ".complete").touch()
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalBroker:
    """One broker directory; `start()` is idempotent while the process lives."""

    directory: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self._read_ports()[0]}"

    @property
    def log_file(self) -> Path:
        return self.directory / "logs" / "server.log"

    def pid(self) -> int | None:
        try:
            pid = int((self.directory / "broker.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def start(self, timeout: float = 90.0) -> str:
        if self.pid() is not None:
            self.wait_ready(timeout)
            return self.bootstrap_servers
        libs = ensure_jars()
        classpath = f"{libs}/*"
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(exist_ok=True)
        if not (self.directory / "ports").exists():
            (self.directory / "ports").write_text(f"{free_port()} {free_port()}")
        properties = self._write_config()
        if not (self.directory / "data" / "meta.properties").exists():
            self._format(classpath, properties)
        with open(self.directory / "logs" / "console.log", "ab") as console:
            process = subprocess.Popen(
                [
                    "java",
                    *DEFAULT_HEAP.split(),
                    "-XX:+UseG1GC",
                    f"-Dlog4j.configuration=file:{self.directory / 'log4j.properties'}",
                    f"-Dkafka.logs.dir={self.directory / 'logs'}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(properties),
                ],
                stdout=console,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._process = process
        (self.directory / "broker.pid").write_text(str(process.pid))
        self.wait_ready(timeout)
        return self.bootstrap_servers

    def wait_ready(self, timeout: float) -> None:
        """Poll until the broker answers a metadata request and its group coordinator a group
        description: on a new broker the coordinator first creates and loads the offsets
        topic, and consumers joining meanwhile were seen to stall (a worker marked the
        coordinator dead and processed nothing for minutes)."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        while True:
            if self.pid() is None:
                raise BrokerError(f"the broker exited during start-up:\n{self.log_tail()}")
            try:
                if admin.list_topics(timeout=2).brokers:
                    probe = admin.describe_consumer_groups([READINESS_GROUP])[READINESS_GROUP]
                    probe.result(timeout=5)
                    return
            except (KafkaException, TimeoutError):
                pass  # not answering yet
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the broker did not answer within {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is not None:
            terminate_group(pid, timeout, self._wait_exit)
        (self.directory / "broker.pid").unlink(missing_ok=True)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        pid = self.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
            self._wait_exit(pid, 10)
        (self.directory / "broker.pid").unlink(missing_ok=True)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            self._process = None
            return True
        return wait_for_exit(pid, timeout)

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        logs = (self.directory / "logs" / "console.log", self.log_file)
        return "\n".join(log_tail(path, lines) for path in logs if path.exists())

    def _read_ports(self) -> tuple[int, int]:
        try:
            broker, controller = (self.directory / "ports").read_text().split()
        except FileNotFoundError:
            raise BrokerError(f"no broker has been started in {self.directory}") from None
        return int(broker), int(controller)

    def _write_config(self) -> Path:
        port, controller_port = self._read_ports()
        properties = self.directory / "server.properties"
        properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.directory / 'data'}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "min.insync.replicas=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.cleaner.backoff.ms=1000",
                    "",
                ]
            )
        )
        (self.directory / "log4j.properties").write_text(
            "\n".join(
                [
                    "log4j.rootLogger=INFO, file",
                    "log4j.appender.file=org.apache.log4j.RollingFileAppender",
                    f"log4j.appender.file.File={self.log_file}",
                    "log4j.appender.file.MaxFileSize=20MB",
                    "log4j.appender.file.MaxBackupIndex=2",
                    "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
                    "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
                    "",
                ]
            )
        )
        return properties

    def _format(self, classpath: str, properties: Path) -> None:
        result = subprocess.run(
            [
                "java",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={_cluster_id()}",
                "--config",
                str(properties),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, IndexError):
        return True
    return state != "Z"


def terminate_group(
    pid: int, timeout: float, wait_exit: Callable[[int, float], bool] | None = None
) -> None:
    """SIGTERM to the process group of `pid`, SIGKILL if it has not exited within `timeout`
    seconds; `wait_exit` (default `wait_for_exit`) waits for the exit."""
    wait = wait_exit or wait_for_exit
    os.killpg(pid, signal.SIGTERM)
    if not wait(pid, timeout):
        os.killpg(pid, signal.SIGKILL)
        wait(pid, 10)


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return True
        except ChildProcessError:
            pass
        if not process_alive(pid):
            return True
        time.sleep(0.1)
    return False
