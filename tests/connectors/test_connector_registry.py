"""The registry and the `parse(provider, body, received_at)` Python API."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from mailstream.connectors import registry
from mailstream.connectors.base import Provider
from mailstream.errors import ParseError
from tests.connectors.provider_contract import PAYLOADS, ProviderContract, golden_cases


def test_every_provider_is_registered_under_its_name() -> None:
    assert {"inboxroad", "mailbot", "maileroo"} <= set(registry.PROVIDERS)
    for name, provider in registry.PROVIDERS.items():
        assert provider.name == name
        assert isinstance(provider, Provider)


def test_every_provider_has_a_contract_test_class_and_golden_payloads() -> None:
    tested = set()
    for path in Path(__file__).parent.glob("test_*_connector.py"):
        module = importlib.import_module(f"tests.connectors.{path.stem}")
        tested |= {
            value.provider.name
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, ProviderContract)
            and value is not ProviderContract
        }
    assert tested == set(registry.PROVIDERS)
    for name in registry.PROVIDERS:
        assert golden_cases(name), f"no golden payloads in tests/payloads/{name}"


def test_get_provider_of_an_unknown_name_is_a_typed_error() -> None:
    with pytest.raises(ParseError) as error:
        registry.get_provider("sendgird")
    assert error.value.kind == "unknown_provider"
    assert ", ".join(sorted(registry.PROVIDERS)) in error.value.message


def test_parse_dispatches_to_the_provider() -> None:
    body = (PAYLOADS / "maileroo" / "seed_clicked.json").read_bytes()
    (event,) = registry.parse("maileroo", body, 5)
    assert (event["provider"], event["event_type"], event["received_at"]) == (
        "maileroo",
        "CLICKED",
        5,
    )


def test_parse_with_an_unknown_provider_raises_before_reading_the_body() -> None:
    with pytest.raises(ParseError, match="no provider"):
        registry.parse("nope", b"\xff")


def test_providers_mapping_is_read_only() -> None:
    with pytest.raises(TypeError):
        registry.PROVIDERS["x"] = registry.PROVIDERS["mailbot"]  # type: ignore[index]
