"""Tenants (sending teams) on one bus: suppression scopes, each tenant's view under its own
policy, manual suppression per tenant, and `simulate` honouring all of it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from mailstream.commands import CommandAction, OperatorCommand, apply_command
from mailstream.connectors.base import Sample, SampleKind
from mailstream.connectors.registry import get_provider
from mailstream.events import new_event
from mailstream.policy import Policy, PolicyError, Scope, load_policy
from mailstream.recipient import (
    RecipientState,
    RecipientStatus,
    SuppressionReason,
    apply,
    scoped_suppressions,
    suppression_record,
)
from mailstream.streams.simulate import simulate
from mailstream.timeline import Timeline, add_event, event_entry, fold

T0 = 1_700_000_000_000
HOUR = 3_600_000
ANN = "ann@example.com"
HUMAN_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.1.0"
_ids = itertools.count()


def event(event_type: str, tenant: str | None, at: int = T0, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "event_id": f"e{next(_ids)}",
        "provider": "mailbot",
        "event_type": event_type,
        "occurred_at": at,
        "recipient": ANN,
        "tenant": tenant,
    }
    if event_type in ("OPENED", "CLICKED"):
        values["user_agent"] = HUMAN_UA
    if event_type == "CLICKED":
        values["url"] = "https://example.com/offer"
    return dict(new_event(**(values | fields)))


def soft(tenant: str | None, at: int) -> dict[str, Any]:
    return event("BOUNCED", tenant, at, bounce_class="SOFT")


def mailbot_of_inbox(kind: SampleKind, address: str, inbox: str, hour: int, url: str = "") -> Any:
    """A mailbot webhook envelope of one inbox (mailbot's tenant); one message per address and
    inbox."""
    sample = Sample(kind, address, f"{address}-{inbox}", T0 + hour * HOUR, f"{address}-{hour}", url)
    payload = get_provider("mailbot").sample(sample)
    assert payload is not None
    payload["inbox_id"] = inbox
    return {"provider": "mailbot", "payload": payload}


def run(events: list[dict[str, Any]], policy: Policy) -> RecipientState:
    state = None
    for each in events:
        state = apply(state, each, policy)
    assert state is not None
    return state


def policy_file(tmp_path: Path, text: str) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path)


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return policy_file(
        tmp_path,
        """
tenants:
  news:
    soft_bounce_limit: 2
    score: {click: 4}
  ops:
    machine_user_agents: [thunderbird]
""",
    )


def test_an_unsubscribe_from_one_tenant_leaves_the_other_free_and_a_hard_bounce_stops_both(
    policy: Policy,
) -> None:
    state = run([event("DELIVERED", "news"), event("UNSUBSCRIBED", "news", T0 + 1)], policy)
    assert state.suppressed_for("news")
    assert not state.suppressed_for("ops")
    assert state.suppressed_for(None), "a reader that knows no tenants must not mail"
    record = state.to_record()
    assert (record["status"], record["suppression_reason"]) == ("SUPPRESSED", "UNSUBSCRIBE")
    assert (record["scope"], record["tenant"]) == ("TENANT", "news")
    assert [view["tenant"] for view in record["tenants"]] == ["news"]
    assert set(scoped_suppressions(state)) == {"news"}

    bounced = apply(state, event("BOUNCED", "ops", T0 + 2, bounce_class="HARD"), policy)
    assert bounced.suppressed_for("ops") and bounced.suppressed_for("news")
    assert bounced.suppression_reason is SuppressionReason.HARD_BOUNCE
    shown = suppression_record(bounced)
    assert shown is not None
    assert (shown["reason"], shown["scope"], shown["tenant"]) == ("HARD_BOUNCE", "GLOBAL", None)
    assert set(scoped_suppressions(bounced)) == {None, "news"}
    assert not bounced.tenants["ops"].suppressed, "the global suppression is not repeated"


def test_a_complaint_is_scoped_to_its_tenant_and_a_scope_can_be_made_global(
    tmp_path: Path,
) -> None:
    complaint = [event("COMPLAINED", "news")]
    default = load_policy(None)
    assert default.scope_of("COMPLAINT") is Scope.TENANT
    assert not run(complaint, default).suppressed
    strict = policy_file(tmp_path, "suppression_scopes: {COMPLAINT: global}\n")
    assert strict.scope_of("UNSUBSCRIBE") is Scope.TENANT, "merged key by key"
    assert run(complaint, strict).suppression_reason is SuppressionReason.COMPLAINT


def test_a_tenant_with_its_own_soft_bounce_limit_stops_before_everyone_else(
    policy: Policy,
) -> None:
    one = run([soft("ops", T0)], policy)
    assert not one.suppressed_for("news")
    for first, second in (("ops", "ops"), ("news", "ops"), ("ops", "news")):
        two = run([soft(first, T0), soft(second, T0 + HOUR)], policy)
        assert two.suppressed_for("news"), f"the address's run of 2 ({first}, {second})"
        assert not two.suppressed_for("ops") and not two.suppressed
        view = two.tenants["news"]
        assert view.suppression_reason is SuppressionReason.SOFT_BOUNCE_LIMIT
    five = run([soft("ops", T0 + n * HOUR) for n in range(5)], policy)
    assert five.suppression_reason is SuppressionReason.SOFT_BOUNCE_LIMIT, "the top level's 5"


def test_a_cause_found_by_a_tenants_own_rules_holds_where_its_scope_says(
    tmp_path: Path,
) -> None:
    policy = policy_file(
        tmp_path,
        """
tenants:
  nl:
    unsubscribe_url_patterns: [/leave]
    suppression_scopes: {UNSUBSCRIBE: global}
  quiet:
    unsubscribe_url_patterns: [/leave]
""",
    )
    leave = {"url": "https://example.com/leave?u=1"}
    everyone = run([event("CLICKED", "nl", **leave)], policy)
    assert everyone.suppression_reason is SuppressionReason.UNSUBSCRIBE, "nl says: global"
    alone = run([event("CLICKED", "quiet", **leave)], policy)
    assert alone.suppressed_for("quiet") and not alone.suppressed_for("nl")
    assert not alone.suppressed
    assert run([event("CLICKED", "other", **leave)], policy).clicks == 1, "an offer elsewhere"


def test_a_recipient_holds_a_bounded_number_of_tenant_views(tmp_path: Path) -> None:
    policy = policy_file(tmp_path, "max_tenants_per_recipient: 3\n")
    state = run([event("OPENED", f"t{n}", T0 + n) for n in range(10)], policy)
    assert set(state.tenants) == {"t0", "t1", "t2", "default"}
    assert state.tenants["default"].opens == 7, "the further tenants' events count for default"
    assert state.opens == 10


def test_a_delivery_by_anyone_ends_the_soft_bounce_run_of_the_address(policy: Policy) -> None:
    state = run([soft("news", T0), event("DELIVERED", "ops", T0 + 1), soft("news", T0 + 2)], policy)
    assert not state.suppressed_for("news"), "the address works: its run restarted"
    assert state.tenants["news"].soft_bounces == 2, "news's own soft bounces, for the record"


def test_scores_and_counters_are_kept_per_tenant_under_its_own_weights(policy: Policy) -> None:
    state = run([event("CLICKED", "news"), event("CLICKED", "billing", T0 + 1)], policy)
    assert state.score == 30, "the top level: two clicks at 15"
    assert state.tenants["news"].score == 4
    assert state.tenants["billing"].score == 15, "a tenant without a section: the top level"
    assert (state.clicks, state.tenants["news"].clicks) == (2, 1)


def test_events_without_a_tenant_belong_to_the_default_tenant(tmp_path: Path) -> None:
    state = run([event("OPENED", None)], load_policy(None))
    assert set(state.tenants) == {"default"}
    named = policy_file(tmp_path, "default_tenant: main\n")
    assert set(run([event("OPENED", None)], named).tenants) == {"main"}


def test_a_tenant_machine_verdict_survives_an_out_of_order_insert(policy: Policy) -> None:
    """ops lists Thunderbird as a machine; an out-of-order arrival folds the log again from
    its entries, which must carry ops's own verdict."""
    opened = event("OPENED", "ops", T0 + 2 * HOUR)
    earlier = event("DELIVERED", "ops", T0)
    timeline: Timeline | None = None
    for each in (opened, earlier):  # the delivery comes second: an insert, then a fold
        timeline = add_event(timeline, each, policy)
    assert timeline is not None
    state = timeline.state
    assert (state.opens, state.machine_opens) == (1, 0), "a person, by the top level"
    assert (state.tenants["ops"].opens, state.tenants["ops"].machine_opens) == (0, 1)
    expected = fold(ANN, [event_entry(each, policy) for each in (opened, earlier)], policy)
    assert state == expected


def test_a_manual_suppression_for_one_tenant_and_its_lift(policy: Policy) -> None:
    def command(action: CommandAction, at: int, tenant: str | None) -> OperatorCommand:
        return OperatorCommand(
            action,
            ANN,
            "ops@host",
            at,
            reason=SuppressionReason.MANUAL if action is CommandAction.SUPPRESS else None,
            command_id=f"c{next(_ids)}",
            tenant=tenant,
        )

    state = apply_command(None, command(CommandAction.SUPPRESS, T0, "news"), policy)
    assert state.suppressed_for("news") and not state.suppressed_for("ops")
    assert state.tenants["news"].status is RecipientStatus.SUPPRESSED
    assert scoped_suppressions(state)["news"]["source"] == "operator"
    unchanged = apply_command(state, command(CommandAction.LIFT, T0 + 1, None), policy)
    assert unchanged.suppressed_for("news"), "a lift without a tenant lifts the global one"
    lifted = apply_command(state, command(CommandAction.LIFT, T0 + 1, "news"), policy)
    assert not lifted.suppressed_for(None)
    assert scoped_suppressions(lifted) == {}
    everyone = apply_command(lifted, command(CommandAction.SUPPRESS, T0 + 2, None), policy)
    assert everyone.suppressed_for("ops") and everyone.suppressed


def test_a_published_record_reads_back_with_its_tenants(policy: Policy) -> None:
    state = run([event("OPENED", "news"), event("UNSUBSCRIBED", "ops", T0 + 1)], policy)
    published = RecipientState.from_record(state.to_record())
    assert published.suppressed is False, "the top level shows ops's suppression, not a global"
    assert published.tenants["ops"].suppression_reason is SuppressionReason.UNSUBSCRIBE
    assert published.tenants["news"].opens == 1
    assert RecipientState.from_record(state.to_table_record()) == RecipientState.from_record(
        {**state.to_table_record()}
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenants: {news: {colour: red}}\n", "unknown key 'colour'"),
        ("tenants: {news: {dedupe_window: 3}}\n", "cannot differ per tenant"),
        ("tenants: [news]\n", "tenants: expected a mapping"),
        ("suppression_scopes: {COMPLAINT: everywhere}\n", "expected global or tenant"),
        ("suppression_scopes: {MANUAL: global}\n", "unknown reason"),
        ("tenants: {news: {soft_bounce_limit: 0}}\n", "tenants.news: soft_bounce_limit"),
    ],
)
def test_a_bad_tenant_section_or_scope_names_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        policy_file(tmp_path, text)


def test_simulate_honours_scopes_and_tenant_overrides(tmp_path: Path, policy: Policy) -> None:
    """The offline twin on real mailbot payloads of two inboxes (mailbot's tenant)."""
    envelopes = [
        mailbot_of_inbox("delivered", "bo@example.com", "news", 0),
        mailbot_of_inbox("click", "bo@example.com", "news", 1, "https://example.com/unsubscribe"),
        mailbot_of_inbox("soft", "cy@example.com", "ops", 2),
        mailbot_of_inbox("soft", "cy@example.com", "news", 3),
    ]
    states = simulate(envelopes, policy)
    assert states["bo@example.com"].suppressed_for("news")
    assert not states["bo@example.com"].suppressed_for("ops")
    assert states["cy@example.com"].suppressed_for("news"), "news's limit of 2"
    assert not states["cy@example.com"].suppressed_for("ops")
    assert not simulate(envelopes, load_policy(None))["cy@example.com"].suppressed_for(None)


def test_a_tenant_id_longer_than_the_limit_makes_the_webhook_invalid() -> None:
    import orjson

    from mailstream.connectors.registry import get_provider, parse
    from mailstream.connectors.samples import Sample
    from mailstream.errors import ErrorKind, ParseError
    from mailstream.events import MAX_TENANT_CHARS

    payload = get_provider("mailbot").sample(Sample("delivered", ANN, "m1", T0, "e1", ""))
    assert payload is not None
    payload["inbox_id"] = "x" * MAX_TENANT_CHARS
    assert parse("mailbot", orjson.dumps(payload))[0]["tenant"] == "x" * MAX_TENANT_CHARS
    payload["inbox_id"] = "x" * (MAX_TENANT_CHARS + 1)
    with pytest.raises(ParseError) as raised:
        parse("mailbot", orjson.dumps(payload))
    assert raised.value.kind is ErrorKind.INVALID_VALUE
