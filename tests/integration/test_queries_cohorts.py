"""`/cohorts/` without a broker: its query string (defaults, bounds, refusals) and its pages.
The same routes on a live worker: tests/integration/test_operations.py."""

from __future__ import annotations

import pytest

from mailstream.recipient import RecipientState
from mailstream.streams.queries import (
    DEFAULT_COHORT_LIMIT,
    MAX_COHORT_LIMIT,
    CohortQuery,
    QueryError,
    cohort_page,
)

NOW = 1_800_000_000_000
DAY = 86_400_000


def states(count: int) -> list[RecipientState]:
    """`count` cohort members, scores count..1 (member-000 highest)."""
    return [
        RecipientState(
            f"member-{index:03d}@example.com", score=count - index, last_open_at=NOW - DAY
        )
        for index in range(count)
    ]


def test_the_query_string_has_defaults() -> None:
    assert CohortQuery.from_params({}) == CohortQuery(
        min_score=20, opened_within_ms=7 * DAY, limit=DEFAULT_COHORT_LIMIT, offset=0
    )
    assert (DEFAULT_COHORT_LIMIT, MAX_COHORT_LIMIT) == (100, 1000)
    assert CohortQuery.from_params(
        {"min_score": "5", "opened_within": "2d", "limit": "1000", "offset": "30"}
    ) == CohortQuery(min_score=5, opened_within_ms=2 * DAY, limit=1000, offset=30)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "1001"}, "limit: expected an integer from 1 to 1000, got 1001"),
        ({"limit": "0"}, "limit: expected an integer from 1 to 1000, got 0"),
        ({"limit": "-5"}, "limit: expected an integer from 1 to 1000, got -5"),
        ({"limit": "1e3"}, "limit: expected an integer, got '1e3'"),
        ({"offset": "-1"}, "offset: expected an integer from 0, got -1"),
        ({"offset": "x" * 1000}, "offset: expected an integer, got '" + "x" * 40 + "'"),
        ({"min_score": "high"}, "min_score: expected an integer, got 'high'"),
        ({"opened_within": "soon"}, "opened_within: duration 'soon': expected a number"),
    ],
)
def test_a_bad_parameter_is_refused_by_name(params: dict[str, str], message: str) -> None:
    with pytest.raises(QueryError) as refused:
        CohortQuery.from_params(params)
    assert refused.value.message.startswith(message)
    assert refused.value.kind == "invalid_query"


def test_a_large_cohort_is_answered_a_page_at_a_time() -> None:
    members = states(250)
    first = cohort_page(members, CohortQuery.from_params({"min_score": "0"}), NOW)
    assert (first["count"], first["offset"], first["limit"], first["next_offset"]) == (
        250,
        0,
        100,
        100,
    )
    assert len(first["recipients"]) == 100
    assert first["recipients"][0]["recipient"] == "member-000@example.com"

    seen = []
    offset: int | None = 0
    while offset is not None:
        query = CohortQuery(min_score=0, opened_within_ms=7 * DAY, limit=100, offset=offset)
        page = cohort_page(members, query, NOW)
        seen += [member["recipient"] for member in page["recipients"]]
        offset = page["next_offset"]
    assert seen == [state.recipient for state in members]  # each once, highest score first

    everything = cohort_page(members, CohortQuery(0, 7 * DAY, MAX_COHORT_LIMIT, 0), NOW)
    assert len(everything["recipients"]) == 250 and everything["next_offset"] is None
    beyond = cohort_page(members, CohortQuery(0, 7 * DAY, 10, 10_000), NOW)
    assert (beyond["recipients"], beyond["next_offset"]) == ([], None)


def test_the_cohort_filter_applies_before_the_page() -> None:
    members = states(30)  # scores 30..1
    page = cohort_page(
        members, CohortQuery(min_score=21, opened_within_ms=DAY, limit=5, offset=5), NOW
    )
    assert page["count"] == 10 and page["next_offset"] is None
    assert [member["score"] for member in page["recipients"]] == [25, 24, 23, 22, 21]
    stale = cohort_page(members, CohortQuery(0, DAY - 1, 5, 0), NOW)  # opened before the window
    assert stale["count"] == 0
