"""The deployment files agree with the code: compose services, ports and commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from mailstream.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_declares_the_services_and_ports() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "schema-registry", "topics", "worker", "ingest"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:3.9")
    assert "9092:9092" in services["kafka"]["ports"]
    assert "8081:8081" in services["schema-registry"]["ports"]
    assert "8080:8080" in services["ingest"]["ports"]
    for name in ("topics", "worker", "ingest"):
        assert services[name]["build"] == "."
        assert services[name]["environment"]["MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"


def test_compose_commands_are_real_mailstream_subcommands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    parser = build_parser()
    for name in ("topics", "worker", "ingest"):
        command = compose["services"][name]["command"]
        parser.parse_args(command)  # exits (SystemExit) on an unknown command or option


def test_help_lists_the_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailstream.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("kafka", "topics"):
        assert command in result.stdout
