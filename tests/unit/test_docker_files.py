"""The Docker set-up holds what a platform team relies on (read from the files: this machine has
no Docker engine): a non-root user that owns the data directory, pinned dependencies, one image
built once, healthchecked dependencies, required secrets, volumes for the state."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "mailstream-kafka:local"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_the_image_runs_as_a_user_who_owns_the_data_directory() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    [data_dir] = re.findall(r"^ENV MAILSTREAM_DATA_DIR=(\S+)$", dockerfile, re.M)
    [user] = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user not in ("root", "0", "nobody")
    assert re.search(rf"useradd [^\n]*\b{user}\b", dockerfile)
    assert f"mkdir -p {data_dir}" in dockerfile
    assert f"chown {user} {data_dir}" in dockerfile


def test_every_runtime_dependency_is_pinned_in_the_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--constraint constraints.txt" in dockerfile
    assert re.search(r"^COPY [^\n]*constraints\.txt", dockerfile, re.M)
    pins = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0]
        assert re.sub(r"[-_.]+", "-", name).lower() in pins, f"{name} is not pinned"


def test_one_image_is_built_once_and_run_by_every_project_service() -> None:
    services = compose()["services"]
    ours = {name: s for name, s in services.items() if s.get("image") == IMAGE}
    assert set(ours) == {"topics", "worker", "ingest"}
    assert [name for name, s in services.items() if "build" in s] == ["topics"]
    assert all(s.get("pull_policy") == "never" for s in ours.values())
    assert services["worker"]["restart"] == services["ingest"]["restart"] == "on-failure"


def test_services_wait_for_healthy_dependencies() -> None:
    services = compose()["services"]
    assert "healthcheck" in services["kafka"] and "healthcheck" in services["schema-registry"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition["condition"] != "service_started", (name, dependency)
            if "healthcheck" in services[dependency]:
                assert condition["condition"] == "service_healthy", (name, dependency)


def test_secrets_are_required_and_state_is_kept_on_volumes() -> None:
    loaded = compose()
    ingest = loaded["services"]["ingest"]["environment"]
    secrets = {key: value for key, value in ingest.items() if key.endswith("_SECRETS")}
    assert secrets, "the ingest takes its webhook secrets from the environment"
    assert all(re.fullmatch(r"\$\{\w+:\?[^}]+\}", value) for value in secrets.values()), secrets
    assert set(loaded["volumes"]) == {"kafka-data", "worker-data"}
    assert "worker-data:/var/lib/mailstream" in loaded["services"]["worker"]["volumes"]
    kafka = loaded["services"]["kafka"]
    assert f"kafka-data:{kafka['environment']['KAFKA_LOG_DIRS']}" in kafka["volumes"]
