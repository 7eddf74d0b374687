"""A real schema registry for tests and the demo: Apicurio Registry with in-memory storage,
serving the Confluent-compatible API at `<url>/apis/ccompat/v7`.

Built once from Maven Central (`schema-registry/pom.xml`, about a minute and ~200 MB of jars in
~/.m2, the application cached like the broker's jars), it starts in 6-12 s and takes about
200 MiB. A registry directory holds its port, pid and log; everything it stores is lost when it
stops (tests and the demo register what they need).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mailstream.dev.broker import cache_dir, free_port, process_alive, terminate_group
from mailstream.errors import ErrorKind, MailstreamError
from mailstream.text import log_tail

APICURIO_VERSION = "2.4.2.Final"
CONFLUENT_API = "/apis/ccompat/v7"
DEFAULT_HEAP = "-Xms64m -Xmx384m"


class RegistryError(MailstreamError, RuntimeError):
    """The local schema registry could not be built, started or stopped."""

    default_kind = ErrorKind.REGISTRY_FAILED


def ensure_application() -> Path:
    """Build the registry with Maven once; later calls return the cached runner jar."""
    home = cache_dir() / f"apicurio-registry-{APICURIO_VERSION}"
    runner = home / "local-schema-registry-1-runner.jar"
    if (home / ".complete").exists():
        return runner
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RegistryError("the local schema registry needs Java 17+ and Maven (mvn) on PATH")
    with tempfile.TemporaryDirectory(prefix="registry-build-") as build:
        project = Path(build) / "registry"
        with resources.as_file(resources.files(__package__) / "schema-registry") as sources:
            shutil.copytree(sources, project)
        result = subprocess.run(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(project / "pom.xml"),
                "package",
                "-DskipTests",
                "-Dquarkus.class-loading.removed-artifacts=io.apicurio:apicurio-registry-app",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RegistryError(
                f"mvn could not build the schema registry:\n{result.stdout[-4000:]}"
                f"{result.stderr[-2000:]}"
            )
        staging = home.with_name(f"{home.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(project / "target" / runner.name, staging / runner.name)
        shutil.copytree(project / "target" / "lib", staging / "lib")
    (staging / ".complete").touch()
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    return runner


@dataclass
class LocalRegistry:
    """One registry directory; `start()` is idempotent while the process lives."""

    directory: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """The base URL a Confluent client takes (`MAILSTREAM_SCHEMA_REGISTRY_URL`)."""
        try:
            port = int((self.directory / "port").read_text())
        except FileNotFoundError:
            raise RegistryError(f"no registry has been started in {self.directory}") from None
        return f"http://127.0.0.1:{port}{CONFLUENT_API}"

    @property
    def log_file(self) -> Path:
        return self.directory / "registry.log"

    def pid(self) -> int | None:
        try:
            pid = int((self.directory / "registry.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def start(self, timeout: float = 120.0) -> str:
        if self.pid() is not None:
            self.wait_ready(timeout)
            return self.url
        runner = ensure_application()
        self.directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        (self.directory / "port").write_text(str(port))
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [
                    "java",
                    *DEFAULT_HEAP.split(),
                    f"-Dquarkus.http.port={port}",
                    "-Dquarkus.http.host=127.0.0.1",
                    "-Dquarkus.log.console.color=false",
                    "-jar",
                    str(runner),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.directory,
            )
        self._process = process
        (self.directory / "registry.pid").write_text(str(process.pid))
        self.wait_ready(timeout)
        return self.url

    def wait_ready(self, timeout: float) -> None:
        """Poll the Confluent API (`GET /subjects`) until it answers a JSON list."""
        deadline = time.monotonic() + timeout
        while True:
            if self.pid() is None:
                raise RegistryError(f"the registry exited during start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as answer:
                    if isinstance(json.loads(answer.read()), list):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass  # not answering yet
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"the registry did not answer within {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.3)

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is not None:
            terminate_group(pid, timeout)
        if self._process is not None:
            self._process.wait(10)
            self._process = None
        (self.directory / "registry.pid").unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_file, lines) if self.log_file.exists() else ""
