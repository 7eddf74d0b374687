"""One error vocabulary and one of each shared helper: kinds, addresses, times, body HMACs."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from mailstream.addresses import canonical_address
from mailstream.commands import CommandError, normalize_address
from mailstream.connectors import inboxroad, maileroo
from mailstream.connectors.base import clean_address, hmac_hex
from mailstream.errors import DEAD_LETTER_KINDS, ErrorKind, MailstreamError, TimeFormatError
from mailstream.settings import ProviderAuth
from mailstream.streams.operations.dead_letters import KNOWN_KINDS
from mailstream.times import parse_duration_ms, parse_instant_ms

ROOT = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = ("mailstream", "connectors", "streams")


def project_exception_classes() -> list[tuple[str, str, ast.ClassDef]]:
    """(file, class name, node) of every class defined in the project whose name ends in Error."""
    found = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                    found.append((str(path.relative_to(ROOT)), node.name, node))
    return found


def test_every_error_class_derives_from_the_one_base() -> None:
    outside = []
    for path, name, node in project_exception_classes():
        bases = {base.id for base in node.bases if isinstance(base, ast.Name)}
        if name != "MailstreamError" and not bases & {
            "MailstreamError",
            "ParseError",
            "DecodeError",
            "CommandError",
        }:
            outside.append(f"{path}: {name}({', '.join(sorted(bases))})")
    assert not outside, "error classes outside the vocabulary:\n" + "\n".join(outside)
    assert len(project_exception_classes()) >= 13


def test_every_error_class_declares_its_own_kind() -> None:
    import mailstream.errors

    subclasses: list[type[MailstreamError]] = []
    pending = [MailstreamError]
    while pending:
        for child in pending.pop().__subclasses__():
            subclasses.append(child)
            pending.append(child)
    assert {cls.__name__ for cls in subclasses} >= {"ParseError", "SignatureError", "SettingsError"}
    for cls in subclasses:
        if cls.__module__ == mailstream.errors.__name__ and cls.__name__ in (
            "ParseError",
            "DecodeError",
        ):
            continue  # the raise site always gives the kind
        assert "default_kind" in vars(cls), f"{cls.__name__} takes its parent's kind"


def test_the_dead_letter_kinds_and_the_dlq_choices_come_from_the_enum() -> None:
    assert {kind.value for kind in DEAD_LETTER_KINDS} == KNOWN_KINDS
    assert set(ErrorKind) >= DEAD_LETTER_KINDS
    assert ErrorKind.INVALID_SIGNATURE not in DEAD_LETTER_KINDS


def test_a_raise_site_can_narrow_the_kind_and_the_message_is_kept() -> None:
    error = CommandError("no", ErrorKind.COMMAND_REFUSED)
    assert (error.kind, error.message, str(error)) == (ErrorKind.COMMAND_REFUSED, "no", "no")
    assert CommandError("bad").kind is ErrorKind.INVALID_COMMAND
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ann@example.com", "ann@example.com"),
        ("  Ann@Example.COM \n", "ann@example.com"),
        ("Ann Example <Ann@Example.com>", "ann@example.com"),
        ("<ann@example.com>", "ann@example.com"),
        ("   ", ""),
    ],
)
def test_addresses_have_one_canonical_form_everywhere(text: str, expected: str) -> None:
    assert canonical_address(text) == expected
    assert clean_address(text) == (expected or None)
    if expected:
        assert normalize_address(text) == expected


def test_an_operator_address_that_is_none_is_refused_with_the_reason() -> None:
    with pytest.raises(CommandError, match="not an email address"):
        normalize_address("ann at example")
    assert clean_address(None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 90_000),
        (" 30m", 1_800_000),
        ("2h", 7_200_000),
        ("7d", 604_800_000),
        ("2w", 1_209_600_000),
    ],
)
def test_durations_have_one_reading(text: str, expected: int) -> None:
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "1.5h", "-1d", "2 weeks", "3y"])
def test_malformed_durations_name_the_accepted_units(text: str) -> None:
    with pytest.raises(TimeFormatError, match=r"s, m, h, d, w") as raised:
        parse_duration_ms(text)
    assert raised.value.kind is ErrorKind.INVALID_TIME


def test_a_duration_ago_is_a_time_only_where_there_is_a_now() -> None:
    now = 1_763_900_000_000
    assert parse_instant_ms("2w", now) == now - 1_209_600_000
    assert parse_instant_ms("1700000000000") == 1_700_000_000_000
    assert parse_instant_ms("2023-11-14T22:13:20.001") == 1_700_000_000_001
    with pytest.raises(TimeFormatError, match="ISO 8601") as raised:
        parse_instant_ms("2w")
    assert "duration ago" not in str(raised.value)


@pytest.mark.parametrize("module", [inboxroad, maileroo])
@pytest.mark.parametrize("prefix", ["", "sha256="])
def test_body_hmacs_are_verified_alike_with_or_without_the_sha256_prefix(
    module: object, prefix: str
) -> None:
    provider = module.PROVIDER
    header = module.SIGNATURE_HEADER
    config = ProviderAuth(secrets=("s3cret",))
    body = b'{"a": 1}'
    provider.verify(body, {header: prefix + hmac_hex("s3cret", body)}, config, 0.0)
    with pytest.raises(MailstreamError, match="does not match") as raised:
        provider.verify(body, {header: prefix + hmac_hex("other", body)}, config, 0.0)
    assert raised.value.kind is ErrorKind.INVALID_SIGNATURE


def test_the_providers_share_one_body_hmac_check() -> None:
    for module in (inboxroad, maileroo):
        assert "verify_hmac_header" in inspect.getsource(module.verify)
        assert "hmac_matches" not in inspect.getsource(module)
