"""The deployment files agree with the code: compose services, ports and commands."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import yaml

from mailstream import __version__
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
    assert services["topics"]["build"] == "."  # the one image; tests/unit/test_docker_files.py
    for name in ("topics", "worker", "ingest"):
        assert services[name]["environment"]["MAILSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"


def test_compose_commands_are_real_mailstream_subcommands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    parser = build_parser()
    for name in ("topics", "worker", "ingest"):
        command = compose["services"][name]["command"]
        parser.parse_args(command)  # exits (SystemExit) on an unknown command or option


def test_help_lists_the_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailstream", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    commands = (
        "kafka",
        "topics",
        "worker",
        "ingest",
        "normalize",
        "simulate",
        "replay",
        "dlq",
        "suppress",
        "demo",
    )
    for command in commands:
        assert f"    {command}" in result.stdout, command
    readme = (ROOT / "README.md").read_text()
    for command in commands:
        assert f"`{command}`" in readme, f"README does not list `{command}`"


def test_readme_quick_start_has_exactly_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start")[1].split("```bash")[1].split("```")[0]
    commands = [line.split("#")[0].strip() for line in quick_start.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_wheel_installs_one_import_package_and_builds_without_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("mailstream_kafka-")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"mailstream"}
    history = {path.name for path in (ROOT / "schemas" / "history").iterdir() if path.is_dir()}
    assert {f"mailstream/schemas/history/{name}/v1.avsc" for name in history} <= set(names)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    assert {f"mailstream.schemas.history.{name}" for name in history} <= set(packages)


def test_python_dash_m_mailstream_prints_the_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailstream", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"mailstream {__version__}"
