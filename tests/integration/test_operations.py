"""Operating the pipeline on the real broker: manual suppression through the commands topic,
the query API (behind its token, paged), and the inactivity sweep."""

from __future__ import annotations

import dataclasses
import http.client
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from mailstream.codec import codec_for
from mailstream.connectors import inboxroad, maileroo
from mailstream.connectors.base import HUMAN_AGENT
from mailstream.connectors.registry import PROVIDERS
from mailstream.dev.broker import free_port
from mailstream.policy import default_policy
from mailstream.settings import Settings
from mailstream.streams.app import create_app
from mailstream.streams.operations.processes import settings_env
from mailstream.streams.queries import LOGIN_PATH
from mailstream.streams.reader import latest_by_key, read_until
from mailstream.topics import TopicNames, create_topics, topic_specs
from tests.integration.harness import running_worker, send_envelopes

pytestmark = pytest.mark.kafka

DAY = 86_400_000
TOKEN = "s3cret-token"
STATE = codec_for("recipient_state")
SUPPRESSION = codec_for("suppression")


@pytest.fixture
def operated(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    settings = dataclasses.replace(settings, web_token=TOKEN)
    create_topics(settings, topic_specs(settings, PROVIDERS))
    port = free_port()
    with running_worker(settings, tmp_path / "worker.log", web_port=port) as process:
        base = f"http://127.0.0.1:{port}"
        yield settings, base
        assert process.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]


def suppress(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailstream", "suppress", *arguments, "--actor", "ops@test"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def get(url: str, token: str | None = TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def redirect_of(url: str) -> tuple[int, str | None]:
    """The status and Location of `url`, without following a redirect (routing is by the
    path's key)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        connection.request("GET", parts.path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        return response.status, response.getheader("Location")
    finally:
        connection.close()


def wait_for_states(settings: Settings, recipients: set[str]) -> dict[str, dict]:
    names = TopicNames(settings.topic_prefix)

    def states(records: list) -> dict[str, dict]:
        return {
            k.decode(): STATE.decode(v) for k, v in latest_by_key(records).items() if v is not None
        }

    return states(
        read_until(settings, names.recipient_state, lambda r: recipients <= states(r).keys())
    )


def wait_for_web(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status, _ = get(f"{base}/cohorts/")
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise AssertionError("the worker's web server did not answer")


def test_manual_suppression_lift_and_complaint_force(operated: tuple[Settings, str]) -> None:
    settings, _ = operated
    now = int(time.time() * 1000)
    send_envelopes(
        settings,
        [
            {
                "provider": "maileroo",
                "payload": maileroo.sample_payload(
                    "delivered", "ann@example.com", "m1@x", now - DAY, "e1"
                ),
            },
            {
                "provider": "inboxroad",
                "payload": inboxroad.sample_payload("f", "dave@example.com", "m2@x", now - DAY),
            },
        ],
    )
    wait_for_states(settings, {"ann@example.com", "dave@example.com"})

    added = suppress(
        settings, "add", "Ann@Example.com", "--reason", "manual", "--note", "asked by phone"
    )
    assert added.returncode == 0, added.stderr
    assert "confirmed: ann@example.com is suppressed" in added.stdout

    # dave complained through Inboxroad's user "user": a complaint is that tenant's
    globally = suppress(settings, "remove", "dave@example.com")
    assert globally.returncode == 0, globally.stderr
    assert "not suppressed globally; suppressed for tenant(s) user" in globally.stdout

    refused = suppress(settings, "remove", "dave@example.com", "--tenant", "user")
    assert refused.returncode == 1
    assert "force" in refused.stderr

    forced = suppress(settings, "remove", "dave@example.com", "--tenant", "user", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "active for tenant user" in forced.stdout

    names = TopicNames(settings.topic_prefix)
    records = read_until(
        settings,
        names.suppressions,
        lambda r: (
            latest_by_key(r).get(b"dave@example.com", b"x") is None
            and b"ann@example.com" in latest_by_key(r)
        ),
    )
    ann = SUPPRESSION.decode(latest_by_key(records)[b"ann@example.com"])
    assert (ann["reason"], ann["source"], ann["actor"], ann["note"]) == (
        "MANUAL",
        "operator",
        "ops@test",
        "asked by phone",
    )
    states = wait_for_states(settings, {"ann@example.com"})
    assert states["ann@example.com"]["status"] == "SUPPRESSED"


def test_bad_operator_input_is_refused_before_anything_is_sent(settings: Settings) -> None:
    for arguments, message in [
        (("add", "not-an-address"), "not an email address"),
        (("add", "ann@example.com", "--reason", "vacation"), "unknown reason 'vacation'"),
    ]:
        result = suppress(settings, *arguments)
        assert result.returncode == 2
        assert message in result.stderr


def test_queries_answer_state_and_cohorts_with_a_token(operated: tuple[Settings, str]) -> None:
    settings, base = operated
    now = int(time.time() * 1000)
    send_envelopes(
        settings,
        [
            {
                "provider": "maileroo",
                "payload": maileroo.sample_payload(
                    "delivered", "hot@example.com", "h1@x", now - 2 * DAY, "h1"
                ),
            },
            *(
                {
                    "provider": "maileroo",
                    "payload": maileroo.sample_payload(
                        "opened",
                        None,
                        "h1@x",
                        now - DAY + n * 60_000,
                        f"h-o{n}",
                        user_agent=HUMAN_AGENT,
                    ),
                }
                for n in range(3)
            ),
            {
                "provider": "maileroo",
                "payload": maileroo.sample_payload(
                    "clicked",
                    None,
                    "h1@x",
                    now - DAY + 600_000,
                    "h-c",
                    user_agent=HUMAN_AGENT,
                    original_url="https://example.com/x",
                ),
            },
            {
                "provider": "maileroo",
                "payload": maileroo.sample_payload(
                    "delivered", "cold@example.com", "c1@x", now - DAY, "c1"
                ),
            },
        ],
    )
    wait_for_states(settings, {"hot@example.com", "cold@example.com"})
    wait_for_web(base)

    status, body = get(f"{base}/recipients/hot@example.com/")
    assert status == 200
    assert (body["score"], body["opens"], body["clicks"], body["status"]) == (30, 3, 1, "ACTIVE")
    assert body["last_open_at"].endswith("Z")
    assert get(f"{base}/recipients/HOT@Example.COM/") == (200, body)
    assert redirect_of(f"{base}/recipients/HOT@Example.COM/") == (
        307,
        "/recipients/hot@example.com/",
    )
    assert get(f"{base}/recipients/hot@example.com/", token=None) == (
        401,
        {"error": "missing bearer token"},
    )
    assert get(f"{base}/recipients/hot@example.com/", token="wrong")[0] == 401
    assert get(f"{base}/recipients/nobody@example.com/")[0] == 404
    assert get(f"{base}/recipients/not-an-address/")[0] == 400

    status, cohort = get(f"{base}/cohorts/?min_score=20&opened_within=7d")
    assert status == 200
    assert [r["recipient"] for r in cohort["recipients"]] == ["hot@example.com"]
    status, error = get(f"{base}/cohorts/?opened_within=soon")
    assert status == 400 and "duration" in error["error"]


def request(method: str, url: str, token: str | None) -> tuple[int, bytes]:
    """Status and body of any request, without following a redirect."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request(
            method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# Values for the path parameters of the served routes: real ones, so that an unguarded route
# would answer 200 with data (`/table/recipients/` lists the recipients table).
PATH_VALUES = {"email": "ann@example.com", "name": "recipients", "key": "ann@example.com"}


def served_routes(settings: Settings, tmp_path: Path) -> list[tuple[str, str]]:
    """(method, path) of every route of the worker's web server, read from the app that
    `mailstream worker` builds (create_app) with these settings, parameters filled in."""
    app = create_app(dataclasses.replace(settings, data_dir=tmp_path / "routes"), default_policy())
    web = app.web
    web.init_server()  # mounts Faust's own blueprints, as the worker does when it starts
    routes = []
    for route in web.web_app.router.routes():  # type: ignore[attr-defined]
        path = re.sub(
            r"\{(\w+)[^}]*\}", lambda m: PATH_VALUES.get(m[1], "x"), route.resource.canonical
        )
        routes.append(("GET" if route.method == "*" else route.method, path))
    return routes


def test_every_route_of_the_web_server_needs_the_token(
    operated: tuple[Settings, str], tmp_path: Path
) -> None:
    """Faust serves its own views (/router/, /table/, /) on the queries' server; none may
    answer without the token, nor may an unknown path."""
    settings, base = operated
    routes = served_routes(settings, tmp_path)
    served = {path for _, path in routes}
    assert {"/router/", "/router/topics", "/table/", "/table/recipients/", "/"} <= served
    assert {"/cohorts/", "/recipients/ann@example.com/"} <= served
    wait_for_web(base)

    assert LOGIN_PATH in served  # the one route open without a token: the sign-in form
    assert request("POST", f"{base}{LOGIN_PATH}", None)[0] == 401
    guarded = [(method, path) for method, path in routes if path != LOGIN_PATH]
    for method, path in [*guarded, ("GET", "/no-such-route/"), ("POST", "/cohorts/")]:
        for token in (None, "wrong"):
            status, body = request(method, f"{base}{path}", token)
            assert status == 401, (method, path, token, status, body)
            if method != "HEAD":
                assert orjson.loads(body)["error"] in ("missing bearer token", "wrong bearer token")

    # with the token, the documented query routes answer as before
    assert get(f"{base}/cohorts/")[0] == 200
    # the table route answers once the worker has its partitions and has recovered the table
    # (500 from faust's router before the assignment, 503 during recovery)
    deadline = time.monotonic() + 60
    while request("GET", f"{base}/recipients/nobody@example.com/", TOKEN)[0] in (500, 503):
        assert time.monotonic() < deadline, "the worker never got its partitions"
        time.sleep(0.2)
    assert get(f"{base}/recipients/nobody@example.com/") == (
        404,
        {"error": "no state for nobody@example.com"},
    )
    assert request("GET", f"{base}/recipients/Nobody@example.com/", TOKEN)[0] == 307


def test_cohorts_are_paged(operated: tuple[Settings, str]) -> None:
    settings, base = operated
    now = int(time.time() * 1000)

    def human(event_type: str, message: str, minute: int, **data: str) -> dict:
        at = now - DAY + minute * 60_000
        payload = maileroo.sample_payload(
            event_type, None, message, at, f"{message}-{minute}", user_agent=HUMAN_AGENT, **data
        )
        return {"provider": "maileroo", "payload": payload}

    # scores: first@ 20 (an open and a click), second@ 15 (three opens), third@ 5 (an open)
    engagement = {
        "first": [
            human("opened", "first", 0),
            human("clicked", "first", 1, original_url="https://x"),
        ],
        "second": [human("opened", "second", minute) for minute in range(3)],
        "third": [human("opened", "third", 0)],
    }
    envelopes = []
    for name, events in engagement.items():
        delivered = maileroo.sample_payload(
            "delivered", f"{name}@example.com", name, now - 2 * DAY, f"{name}-delivered"
        )
        envelopes += [{"provider": "maileroo", "payload": delivered}, *events]
    send_envelopes(settings, envelopes)
    wait_for_states(settings, {"first@example.com", "second@example.com", "third@example.com"})
    wait_for_web(base)

    def page(query: str) -> tuple[list[str], dict]:
        status, body = get(f"{base}/cohorts/?min_score=0&{query}")
        assert status == 200, body
        return [member["recipient"] for member in body.pop("recipients")], body

    assert page("") == (
        ["first@example.com", "second@example.com", "third@example.com"],
        {"count": 3, "offset": 0, "limit": 100, "next_offset": None},
    )
    assert page("limit=2") == (
        ["first@example.com", "second@example.com"],
        {"count": 3, "offset": 0, "limit": 2, "next_offset": 2},
    )
    assert page("limit=2&offset=2") == (
        ["third@example.com"],
        {"count": 3, "offset": 2, "limit": 2, "next_offset": None},
    )
    assert page("offset=5")[0] == []
    for query, message in [
        ("limit=1001", "limit: expected an integer from 1 to 1000, got 1001"),
        ("limit=0", "limit: expected an integer from 1 to 1000, got 0"),
        ("limit=all", "limit: expected an integer, got 'all'"),
        ("offset=-1", "offset: expected an integer from 0, got -1"),
    ]:
        assert get(f"{base}/cohorts/?{query}") == (400, {"error": message})


def test_inactivity_sweep_publishes_the_reset(settings: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(settings, sweep_interval_seconds=1)
    create_topics(settings, topic_specs(settings, PROVIDERS))
    long_ago = int(time.time() * 1000) - 40 * DAY
    send_envelopes(
        settings,
        [
            {
                "provider": "maileroo",
                "payload": maileroo.sample_payload(
                    "delivered", "old@example.com", "o1@x", long_ago, "o1"
                ),
            },
            {
                "provider": "maileroo",
                "payload": maileroo.sample_payload(
                    "opened", None, "o1@x", long_ago + 3_600_000, "o2", user_agent=HUMAN_AGENT
                ),
            },
        ],
    )
    names = TopicNames(settings.topic_prefix)
    with running_worker(settings, tmp_path / "worker.log"):
        records = read_until(
            settings,
            names.recipient_state,
            lambda r: (
                [STATE.decode(v)["score"] for k, v in r if k == b"old@example.com"][-2:] == [5, 0]
            ),
        )
    scores = [STATE.decode(v)["score"] for k, v in records if k == b"old@example.com"]
    assert scores[-2:] == [5, 0], "the open scored, then the sweep published the reset"
