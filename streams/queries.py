"""The worker's query API: one recipient's state, and the follow-up cohort.

`GET /recipients/{email}/` is routed to the worker that owns the key's partition (Faust
table routing); an erased address is answered `{"erased": true, "suppressed": true}` by any
worker (each holds every erased hash), and nothing else about the person.
`GET /cohorts/?min_score=20&opened_within=7d` answers from this worker's
partitions (the mailbot guide's follow-up cohort: active, score at least `min_score`, a human
open within the window), highest score first, a page at a time (`limit`, default 100, at most
1000; `offset`); with several workers, ask each.

When a token is configured, every route of the worker's web server needs
`Authorization: Bearer <token>`: the queries, and the views Faust serves on the same server
(`/router/`, `/table/`), which check nothing themselves, and the dashboard at `/`. One
aiohttp middleware checks every request before any route is looked up, so a route added
later, or an unknown path, is refused the same way. A browser, which cannot send that header
on navigation, signs in at `/login` (the only route open without the token): the token,
posted once, comes back as the `mailstream_token` cookie (HttpOnly, SameSite=Strict), which
the middleware accepts in place of the header. A refused request whose Accept names
text/html gets the sign-in form.
"""

from __future__ import annotations

import hmac
import html
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import faust
from aiohttp import web as aiohttp_web
from aiohttp.typedefs import Handler
from faust.types import TableT
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from mailstream.commands import CommandError, normalize_address
from mailstream.errors import ErrorKind, MailstreamError
from mailstream.events import MAX_TENANT_CHARS, format_timestamp_ms
from mailstream.recipient import TIMESTAMP_FIELDS, RecipientState
from mailstream.streams.erasures import ErasedAddresses
from mailstream.streams.recipients import recipient_records
from mailstream.timeline import state_of
from mailstream.times import parse_duration_ms

DEFAULT_COHORT_LIMIT = 100
ERASED_ANSWER = {"erased": True, "suppressed": True}
MAX_COHORT_LIMIT = 1000
LOGIN_PATH = "/login"
TOKEN_COOKIE = "mailstream_token"  # noqa: S105 (the cookie's name)


class QueryError(MailstreamError, ValueError):
    """A query parameter that is not what the route expects; answered 400 with the message."""

    default_kind = ErrorKind.INVALID_QUERY


@dataclass(frozen=True)
class CohortQuery:
    """What `/cohorts/` is asked: the cohort (`min_score`, `opened_within_ms`) and the page."""

    min_score: int
    opened_within_ms: int
    limit: int
    offset: int
    tenant: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> CohortQuery:
        """The query string of `/cohorts/` with its defaults (`min_score=20`,
        `opened_within=7d`, `limit=100`, `offset=0`, no `tenant`); QueryError naming a bad
        parameter."""
        try:
            window = parse_duration_ms(params.get("opened_within", "7d"))
        except ValueError as error:
            raise QueryError(f"opened_within: {error}") from None
        return cls(
            min_score=_integer(params, "min_score", 20),
            opened_within_ms=window,
            limit=_integer(
                params, "limit", DEFAULT_COHORT_LIMIT, minimum=1, maximum=MAX_COHORT_LIMIT
            ),
            offset=_integer(params, "offset", 0, minimum=0),
            tenant=tenant_parameter(params),
        )


def tenant_parameter(params: Mapping[str, str]) -> str | None:
    """The `tenant` of a query string (None without one); QueryError when it is unusable."""
    tenant = params.get("tenant")
    if tenant is None:
        return None
    if not tenant or len(tenant) > MAX_TENANT_CHARS:
        raise QueryError(f"tenant: expected 1 to {MAX_TENANT_CHARS} characters")
    return tenant


def _integer(
    params: Mapping[str, str],
    name: str,
    default: int,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    text = params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{name}: expected an integer, got {text[:40]!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"from {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise QueryError(f"{name}: expected an integer {bounds}, got {value}")
    return value


def cohort(
    states: Iterable[RecipientState],
    min_score: int,
    opened_since: int,
    tenant: str | None = None,
) -> list[RecipientState]:
    """Recipients that may be mailed scoring at least `min_score` with a human open at or
    after `opened_since` (epoch ms), highest score first. With `tenant`: that tenant's
    cohort, by its own score and opens, leaving out whom it must not mail."""
    chosen = []
    for state in states:
        if state.suppressed_for(tenant):
            continue
        judged = state if tenant is None else state.tenants.get(tenant)
        if (
            judged is not None
            and judged.score >= min_score
            and (judged.last_open_at or 0) >= opened_since
        ):
            chosen.append((judged.score, state))
    chosen.sort(key=lambda pair: (-pair[0], pair[1].recipient))
    return [state for _, state in chosen]


def cohort_page(
    states: Iterable[RecipientState], query: CohortQuery, now_ms: int
) -> dict[str, Any]:
    """The answer of `/cohorts/`: the cohort's size, one page of it, and where the next page
    starts (None after the last)."""
    members = cohort(states, query.min_score, now_ms - query.opened_within_ms, query.tenant)
    page = members[query.offset : query.offset + query.limit]
    following = query.offset + len(page)
    return {
        "count": len(members),
        "offset": query.offset,
        "limit": query.limit,
        "next_offset": following if following < len(members) else None,
        "recipients": [rendered(member, query.tenant) for member in page],
    }


def rendered(state: RecipientState, tenant: str | None = None) -> dict[str, Any]:
    """A recipient's state for JSON, as published: ISO 8601 timestamps, no internal fields.
    With `tenant`: as that tenant sees it (its own score and counters; SUPPRESSED for a
    global suppression or its own, `scope` saying which)."""
    public = state.to_record() if tenant is None else _as_seen_by_tenant(state, tenant)
    for record in (public, *public.get("tenants", ())):
        for name in TIMESTAMP_FIELDS:
            if record.get(name) is not None:
                record[name] = format_timestamp_ms(record[name])
    return public


def _as_seen_by_tenant(state: RecipientState, tenant: str) -> dict[str, Any]:
    view = state.tenants.get(tenant) or RecipientState(recipient=state.recipient)
    shown = state if state.suppressed else view
    public = view.to_record() | {"recipient": state.recipient, "tenant": tenant}
    del public["tenants"]
    for name in ("status", "suppressed_at", "suppression_event_id", "suppression_note"):
        value = getattr(shown, name)
        public[name] = value.value if name == "status" else value
    reason = shown.suppression_reason
    public["suppression_reason"] = reason.value if reason is not None else None
    public["scope"] = "GLOBAL" if state.suppressed else ("TENANT" if view.suppressed else None)
    return public


def presents(presented: str, secret: str) -> bool:
    """Whether `presented` is `secret`, compared in constant time."""
    return hmac.compare_digest(presented.encode(), secret.encode())


def bearer_token_refusal(presented: str, token: str) -> str | None:
    """Why an `Authorization` header value does not carry `token`; None when it does."""
    if presents(presented, f"Bearer {token}"):
        return None
    return "missing bearer token" if not presented else "wrong bearer token"


def token_refusal(authorization: str, cookie: str | None, token: str) -> str | None:
    """Why a request carries neither the bearer header nor the token cookie; None when it
    carries the token. A header, when there is one, is judged alone."""
    if authorization or cookie is None:
        return bearer_token_refusal(authorization, token)
    if presents(cookie, token):
        return None
    return "wrong token cookie"


def login_page(message: str | None = None) -> str:
    """The sign-in form of `/login` (a browser cannot send the bearer header on navigation)."""
    notice = f'<p class="notice">{html.escape(message)}</p>' if message else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>mailstream · sign in</title><style>"
        "body{font:15px system-ui,sans-serif;background:#f6f7f9;color:#1f2937;display:grid;"
        "place-items:center;min-height:90vh;margin:0}"
        "form{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:24px;width:340px}"
        "input{width:100%;padding:8px;margin:8px 0 14px;border:1px solid #d1d5db;border-radius:6px}"
        "button{padding:8px 16px;border:0;border-radius:6px;background:#1f2937;color:#fff}"
        ".notice{color:#991b1b}"
        "</style></head><body>"
        f'<form method="post" action="{LOGIN_PATH}"><h1>mailstream</h1>{notice}'
        '<label for="token">Worker token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required>'
        '<button type="submit">Sign in</button></form></body></html>\n'
    )


def wants_html(request: aiohttp_web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def require_bearer_token(app: faust.App, token: str | None) -> None:
    """With a token, every request to the worker's web server needs it (401 otherwise),
    whatever the route, in the `Authorization: Bearer` header or, from a browser signed in at
    `/login`, in the `mailstream_token` cookie; without one, nothing changes."""
    if token is None:
        return
    secret: str = token  # narrowed for the closures below
    server = app.web
    if not isinstance(server, AiohttpWeb):
        # fail closed: a web driver this function cannot guard must not serve unguarded
        raise TypeError(f"cannot guard the web driver {type(server).__name__} with a token")

    @aiohttp_web.middleware
    async def bearer_token_gate(
        request: aiohttp_web.Request, handler: Handler
    ) -> aiohttp_web.StreamResponse:
        if request.path == LOGIN_PATH:
            return await handler(request)
        refusal = token_refusal(
            request.headers.get("Authorization", ""), request.cookies.get(TOKEN_COOKIE), secret
        )
        if refusal is None:
            return await handler(request)
        response: aiohttp_web.StreamResponse
        if wants_html(request):
            response = cast(
                aiohttp_web.Response,
                server.html(
                    login_page("Sign in to see this page."),
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                ),
            )
        else:
            response = server.json(
                {"error": refusal}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return response

    server.web_app.middlewares.append(bearer_token_gate)

    @app.page(LOGIN_PATH)
    class LoginView(View):
        async def get(self, request: Request) -> Response:
            return self.html(login_page())

        async def post(self, request: Request) -> Response:
            form = await cast(aiohttp_web.Request, request).post()
            presented = form.get("token")
            if not isinstance(presented, str) or not presents(presented, secret):
                return self.html(login_page("Wrong token."), status=401)
            response = self.html("", status=303, headers={"Location": "/"})
            cast(aiohttp_web.Response, response).set_cookie(
                TOKEN_COOKIE, secret, httponly=True, samesite="Strict", path="/"
            )
            return response


def add_queries(
    app: faust.App,
    recipients: TableT[bytes, dict[str, Any]],
    erased: ErasedAddresses,
    token: str | None,
) -> None:
    """The query routes; with `token`, the whole web server behind it (require_bearer_token)."""
    require_bearer_token(app, token)

    @app.page("/recipients/{email}/")
    class RecipientView(View):
        async def get(self, request: Request, email: str) -> Response:
            """Checks the address first: the table routes by the key as written in the path,
            so a mixed-case address is redirected to its canonical (lower-case) path."""
            try:
                address = normalize_address(email)
            except CommandError as error:
                return self.json({"error": str(error)}, status=400)
            if erased.is_erased(address):
                return self.json(ERASED_ANSWER)
            if address != email:
                location = f"/recipients/{quote(address, safe='@')}/"
                if request.query_string:
                    location += f"?{request.query_string}"
                return self.json({"redirect": location}, status=307, headers={"Location": location})
            try:
                tenant_parameter(request.query)
            except QueryError as error:
                return self.json({"error": error.message}, status=400)
            return await self.owned(request, email=address)  # type: ignore[call-arg]

        # faust types a table route as (view, request); it passes match_info on by keyword
        @app.table_route(table=recipients, match_info="email")  # type: ignore[arg-type]
        async def owned(self, request: Request, email: str) -> Response:
            stored = recipients.get(email.encode())
            if stored is None:
                return self.json({"error": f"no state for {email}"}, status=404)
            return self.json(rendered(state_of(stored), request.query.get("tenant")))

    @app.page("/cohorts/")
    class CohortView(View):
        async def get(self, request: Request) -> Response:
            try:
                query = CohortQuery.from_params(request.query)
            except QueryError as error:
                return self.json({"error": error.message}, status=400)
            now_ms = int(time.time() * 1000)
            states = (state_of(stored) for stored in recipient_records(recipients))
            return self.json(cohort_page(states, query, now_ms))
