"""The worker's token gate (streams/queries.py) on its real web server, without a broker:
the bearer header for programs, the `mailstream_token` cookie for a browser signed in at
/login, and /login the only route open without the token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailstream.streams.queries import TOKEN_COOKIE, token_refusal
from tests.dashboards import TOKEN, dashboard_app

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(dashboard_app().web.web_app)) as test_client:
        yield test_client


async def test_programs_still_use_the_bearer_header(client: TestClient) -> None:
    for path in ("/metrics", "/"):
        assert (await client.get(path, headers=BEARER)).status == 200
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert wrong.status == 401
    assert await wrong.json() == {"error": "wrong bearer token"}
    missing = await client.get("/metrics")
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert await missing.json() == {"error": "missing bearer token"}


async def test_the_token_cookie_opens_every_route_and_a_wrong_one_none(
    client: TestClient,
) -> None:
    for path in ("/", "/metrics", "/router/"):
        assert (await client.get(path, cookies={TOKEN_COOKIE: TOKEN})).status == 200, path
        refused = await client.get(path, cookies={TOKEN_COOKIE: TOKEN + "x"})
        assert refused.status == 401, path
        assert await refused.json() == {"error": "wrong token cookie"}


def test_a_header_is_judged_alone_even_beside_the_right_cookie() -> None:
    assert token_refusal("Bearer wrong", TOKEN, TOKEN) == "wrong bearer token"
    assert token_refusal("", TOKEN, TOKEN) is None
    assert token_refusal("", "", TOKEN) == "wrong token cookie"
    assert token_refusal("", None, TOKEN) == "missing bearer token"


async def test_a_browser_without_the_token_gets_the_sign_in_form(client: TestClient) -> None:
    for path in ("/", "/metrics", "/no-such-page"):
        answer = await client.get(path, headers=BROWSER)
        assert answer.status == 401, path
        assert answer.content_type == "text/html"
        page = await answer.text()
        assert 'action="/login"' in page and 'name="token"' in page
        assert "mailstream_token" not in answer.headers.get("Set-Cookie", "")


async def test_login_is_the_only_route_open_without_the_token(client: TestClient) -> None:
    form = await client.get("/login", headers=BROWSER)
    assert form.status == 200
    assert 'method="post"' in await form.text()
    assert (await client.get("/login/")).status in (401, 404)
    assert (await client.get("/loginx")).status == 401


async def test_login_with_a_wrong_token_is_refused_with_the_form_again(client: TestClient) -> None:
    answer = await client.post("/login", data={"token": "wrong"}, allow_redirects=False)
    assert answer.status == 401
    assert "Wrong token." in await answer.text()
    assert "Set-Cookie" not in answer.headers
    assert (await client.post("/login", data={}, allow_redirects=False)).status == 401


async def test_login_with_the_token_sets_the_cookie_and_sends_the_browser_home(
    client: TestClient,
) -> None:
    answer = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/"
    cookie = answer.cookies[TOKEN_COOKIE]
    assert cookie.value == TOKEN
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    # the client's cookie jar now carries it, as a browser's would
    home = await client.get("/", headers=BROWSER)
    assert home.status == 200
    assert "Deliverability windows" in await home.text()


async def test_without_a_token_the_dashboard_replaces_faust_index_and_there_is_no_login() -> None:
    async with TestClient(TestServer(dashboard_app(token=None).web.web_app)) as client:
        home = await client.get("/")
        assert home.status == 200
        assert home.content_type == "text/html"
        assert (await client.get("/login")).status == 404
