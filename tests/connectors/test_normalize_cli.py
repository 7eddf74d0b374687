"""`mailstream normalize`, in-process through `mailstream.cli.main` and once as a subprocess."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from mailstream import cli
from tests.connectors.provider_contract import PAYLOADS

SEED_DELIVERED = PAYLOADS / "inboxroad" / "seed_delivered.json"
EXPECTED_LINE = {
    "event_id": "289deb608546ecf4fbbc29f89382694e14c2d1bd13c92de0cdf854a53d3675ae",
    "provider": "inboxroad",
    "event_type": "DELIVERED",
    "recipient": "example@domain.net",
    "sender": "adress@rp.domain.com",
    "message_id": "80894b937274b975f9e3ab05f0a009636d2016d9@rp.domain.com",
    "occurred_at": "2023-09-20T15:14:02.000Z",
    "received_at": None,
    "bounce_class": None,
    "bounce_reason": None,
    "provider_category": "other",
    "smtp_status": "2.0.0",
    "diagnostic": "smtp;250 2.0.0 OK",
    "url": None,
    "user_agent": None,
    "ip": None,
    "tags": {},
    "tenant": "user",
    "provider_flagged_machine": False,
    "delivered_at": None,
}


def test_normalize_is_a_registered_command() -> None:
    assert "mailstream.connectors.cli" in cli.COMMANDS


def test_prints_one_json_line_per_event(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["normalize", "--provider", "inboxroad", str(SEED_DELIVERED)]) == 0
    out, err = capsys.readouterr()
    assert [orjson.loads(line) for line in out.splitlines()] == [EXPECTED_LINE]
    assert list(orjson.loads(out)) == list(EXPECTED_LINE)  # schema field order
    assert err == ""


def test_batch_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = (PAYLOADS / "maileroo" / "batch.json").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    assert cli.main(["normalize", "--provider", "maileroo", "-"]) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event_type"] for line in lines] == ["DELIVERED", "OPENED", "CLICKED"]
    assert lines[1]["recipient"] is None


@pytest.mark.parametrize(
    ("provider", "body", "reason"),
    [
        ("maileroo", b"{not json", "invalid_json: body is not JSON"),
        ("maileroo", b"\xff\xfe", "not_utf8: body is not UTF-8"),
        ("maileroo", b'{"event_type": "opened"}', "missing_field: "),
        ("nosuchprovider", b"{}", "unknown_provider: no provider 'nosuchprovider'"),
    ],
)
def test_bad_input_exits_2_with_the_reason(
    provider: str, body: bytes, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "body.json"
    path.write_bytes(body)
    assert cli.main(["normalize", "--provider", provider, str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert reason in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["normalize", "--provider", "mailbot", str(tmp_path / "nope.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_as_a_subprocess() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "mailstream", "normalize", "--provider", "inboxroad", "-"],
        input=SEED_DELIVERED.read_bytes(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (ok.returncode, ok.stderr) == (0, b"")
    assert orjson.loads(ok.stdout) == EXPECTED_LINE
    bad = subprocess.run(
        [sys.executable, "-m", "mailstream", "normalize", "--provider", "inboxroad", "-"],
        input=b"[1, 2]",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert b"wrong_type: batch item 0 is a number" in bad.stderr
