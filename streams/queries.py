"""The worker's query API: one recipient's state, and the follow-up cohort.

`GET /recipients/{email}/` is routed to the worker that owns the key's partition (Faust
table routing). `GET /cohorts/?min_score=20&opened_within=7d` answers from this worker's
partitions (the mailbot guide's follow-up cohort: active, score at least `min_score`, a human
open within the window); with several workers, ask each. When a token is configured, every
request needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import faust
from faust.types import TableT
from faust.web import Request, Response, View, Web

from mailstream.commands import CommandError, normalize_address
from mailstream.events import format_timestamp_ms
from mailstream.recipient import TIMESTAMP_FIELDS, RecipientState
from mailstream.times import parse_duration_ms


def cohort(
    states: Iterable[Mapping[str, Any]], min_score: int, opened_since: int
) -> list[Mapping[str, Any]]:
    """Active recipients scoring at least `min_score` with a human open at or after
    `opened_since` (epoch ms), highest score first."""
    chosen = [
        state
        for state in states
        if state.get("status") == "ACTIVE"
        and state.get("score", 0) >= min_score
        and (state.get("last_open_at") or 0) >= opened_since
    ]
    return sorted(chosen, key=lambda state: (-state["score"], state["recipient"]))


def rendered(record: Mapping[str, Any]) -> dict[str, Any]:
    """A published state record for JSON: ISO 8601 timestamps, no internal fields."""
    public = RecipientState.from_record(record).to_record()
    for name in TIMESTAMP_FIELDS:
        if public.get(name) is not None:
            public[name] = format_timestamp_ms(public[name])
    return public


def add_queries(
    app: faust.App, recipients: TableT[bytes, dict[str, Any]], token: str | None
) -> None:
    def refused(web: Web, request: Request) -> Response | None:
        if token is None:
            return None
        presented = request.headers.get("Authorization", "")
        if hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
            return None
        reason = "missing bearer token" if not presented else "wrong bearer token"
        return web.json({"error": reason}, status=401)

    @app.page("/recipients/{email}/")
    class RecipientView(View):
        async def get(self, request: Request, email: str) -> Response:
            """Checks the address first: the table routes by the key as written in the path,
            so a mixed-case address is redirected to its canonical (lower-case) path."""
            denial = refused(self.web, request)
            if denial is not None:
                return denial
            try:
                address = normalize_address(email)
            except CommandError as error:
                return self.json({"error": str(error)}, status=400)
            if address != email:
                location = f"/recipients/{quote(address, safe='@')}/"
                return self.json({"redirect": location}, status=307, headers={"Location": location})
            return await self.owned(request, email=address)  # type: ignore[call-arg]

        # faust types a table route as (view, request); it passes match_info on by keyword
        @app.table_route(table=recipients, match_info="email")  # type: ignore[arg-type]
        async def owned(self, request: Request, email: str) -> Response:
            stored = recipients.get(email.encode())
            if stored is None:
                return self.json({"error": f"no state for {email}"}, status=404)
            return self.json(rendered(stored))

    @app.page("/cohorts/")
    class CohortView(View):
        async def get(self, request: Request) -> Response:
            denial = refused(self.web, request)
            if denial is not None:
                return denial
            try:
                min_score = int(request.query.get("min_score", "20"))
                window = parse_duration_ms(request.query.get("opened_within", "7d"))
            except ValueError as error:
                return self.json({"error": str(error)}, status=400)
            since = int(time.time() * 1000) - window
            members = cohort(recipients.values(), min_score, since)
            return self.json({"count": len(members), "recipients": [rendered(m) for m in members]})
