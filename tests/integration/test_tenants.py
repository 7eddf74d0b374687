"""Two tenants on one bus, on the real broker: one tenant's unsubscribe leaves the other free to
mail, a hard bounce stops both, a tenant's own soft-bounce limit stops it alone, a manual
suppression for one tenant and its lift; the published states equal `mailstream simulate`'s
under the same policy, and the scoped topic, `SuppressionList` and the queries agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from mailstream.dev.broker import free_port
from mailstream.policy import load_policy
from mailstream.settings import Settings
from mailstream.streams.reader import latest_by_key, read_to_end
from mailstream.streams.simulate import simulate
from mailstream.streams.suppression_list import SuppressionList
from mailstream.topics import TopicNames
from tests.integration.harness import running_worker, send_envelopes
from tests.integration.test_operations import TOKEN, get, suppress
from tests.integration.test_replay import SUPPRESSION, wait_for_states
from tests.unit.test_tenants import mailbot_of_inbox

pytestmark = pytest.mark.kafka

POLICY = "tenants:\n  news:\n    soft_bounce_limit: 2\n"


ENVELOPES = [
    mailbot_of_inbox("delivered", "shared@example.com", "news", 0),
    mailbot_of_inbox(
        "click", "shared@example.com", "news", 1, "https://news.example.com/unsubscribe"
    ),
    mailbot_of_inbox("delivered", "shared@example.com", "ops", 2),
    mailbot_of_inbox("open", "shared@example.com", "ops", 3),
    mailbot_of_inbox("delivered", "gone@example.com", "news", 0),
    mailbot_of_inbox("hard", "gone@example.com", "ops", 1),
    mailbot_of_inbox("soft", "full@example.com", "ops", 0),
    mailbot_of_inbox("soft", "full@example.com", "news", 1),
]


def scoped(settings: Settings, names: TopicNames) -> dict[tuple[str, str | None], str]:
    latest = latest_by_key(
        (r.key, r.value) for r in read_to_end(settings, names.scoped_suppressions)
    )
    return {
        tuple(orjson.loads(key)): SUPPRESSION.decode(value)["reason"]
        for key, value in latest.items()
        if value is not None
    }


def test_two_tenants_share_a_bus_with_their_own_scopes_and_limits(
    settings: Settings, names: TopicNames, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    settings = dataclasses.replace(settings, policy_file=policy_file, web_token=TOKEN)
    monkeypatch.setenv("MAILSTREAM_POLICY_FILE", str(policy_file))
    expected = {
        recipient: state.to_record()
        for recipient, state in simulate(ENVELOPES, load_policy(policy_file)).items()
    }
    port = free_port()
    with running_worker(settings, tmp_path / "worker.log", web_port=port):
        send_envelopes(settings, ENVELOPES)
        wait_for_states(settings, names, expected)
        assert scoped(settings, names) == {
            ("shared@example.com", "news"): "UNSUBSCRIBE",
            ("gone@example.com", None): "HARD_BOUNCE",
            ("full@example.com", "news"): "SOFT_BOUNCE_LIMIT",
        }
        shared = expected["shared@example.com"]
        assert (shared["status"], shared["scope"], shared["tenant"]) == (
            "SUPPRESSED",
            "TENANT",
            "news",
        )
        with SuppressionList(settings) as suppressions:
            suppressions.wait_until_caught_up(timeout=30)
            assert suppressions.is_suppressed("shared@example.com", tenant="news")
            assert not suppressions.is_suppressed("shared@example.com", tenant="ops")
            assert suppressions.is_suppressed("gone@example.com", tenant="news")
            assert suppressions.is_suppressed("gone@example.com", tenant="ops")
            assert suppressions.is_suppressed("full@example.com", tenant="news")
            assert not suppressions.is_suppressed("full@example.com", tenant="ops")

        base = f"http://127.0.0.1:{port}/recipients/shared@example.com/"
        status, as_ops = get(f"{base}?tenant=ops")
        assert (status, as_ops["status"], as_ops["opens"]) == (200, "ACTIVE", 1)
        status, as_news = get(f"{base}?tenant=news")
        assert (as_news["status"], as_news["scope"], as_news["opens"]) == (
            "SUPPRESSED",
            "TENANT",
            0,
        )

        added = suppress(settings, "add", "manual@example.com", "--tenant", "ops")
        assert added.returncode == 0, added.stderr
        assert "is suppressed for tenant ops" in added.stdout
        assert scoped(settings, names)[("manual@example.com", "ops")] == "MANUAL"
        globally = suppress(settings, "remove", "manual@example.com")
        assert globally.returncode == 0, globally.stderr
        assert "not suppressed globally; suppressed for tenant(s) ops" in globally.stdout
        lifted = suppress(settings, "remove", "manual@example.com", "--tenant", "ops")
        assert lifted.returncode == 0, lifted.stderr
        assert ("manual@example.com", "ops") not in scoped(settings, names)
