"""Fabricated dashboard data and a guarded worker web server that serves it, without a broker:
the unit tests of the page and of the token gate, and the browser test, share them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust

from mailstream.streams.dashboard import DashboardView, add_dashboard
from mailstream.streams.metrics import WorkerMetrics, add_metrics_page
from mailstream.streams.queries import require_bearer_token
from mailstream.topics import TopicNames

TOKEN = "s3cret-dashboard-token"
HOUR_MS = 3_600_000
WINDOW_START = 1_780_000_000_000 - 1_780_000_000_000 % HOUR_MS
THRESHOLDS = {
    "complaint_rate": (0.001, 0.003),
    "hard_bounce_rate": (0.02, 0.05),
    "block_rate": (0.05, 0.10),
}
SPIKING = ("team-a", "news.example.com", "sendgrid")
HEALTHY = ("team-b", "mail.example.org", "mailgun")
SPIKE_HOURS = range(18, 21)  # 30 complaints per 1000 delivered
ANN = "ann@example.com"


def counts(
    delivered: int, complaints: int = 0, hard_bounces: int = 0, blocks: int = 0
) -> dict[str, int]:
    return {
        "delivered": delivered,
        "hard_bounces": hard_bounces,
        "soft_bounces": 2,
        "blocks": blocks,
        "complaints": complaints,
        "unsubscribes": 1,
        "human_opens": delivered // 5,
        "human_clicks": delivered // 20,
    }


def deliverability(
    key: tuple[str, str, str],
    window: str,
    status: str,
    hourly: list[dict[str, int]],
    **extra: Any,
) -> dict[str, Any]:
    """A Deliverability record (schemas/deliverability.avsc) of hourly steps from WINDOW_START,
    its window's counts and rates the sums of the steps'."""
    tenant, domain, provider = key
    total = {name: sum(step[name] for step in hourly) for name in hourly[0]}
    attempted = total["delivered"] + total["hard_bounces"] + total["soft_bounces"] + total["blocks"]
    start = WINDOW_START + (24 - len(hourly)) * HOUR_MS
    return {
        "tenant": tenant,
        "domain": domain,
        "provider": provider,
        "window": window,
        "window_start": start,
        "window_end": start + len(hourly) * HOUR_MS,
        "counts": total,
        "complaint_rate": total["complaints"] / total["delivered"],
        "hard_bounce_rate": total["hard_bounces"] / attempted,
        "block_rate": total["blocks"] / attempted,
        "status": status,
        "findings": [],
        "series": [
            {"start": start + index * HOUR_MS, "counts": step} for index, step in enumerate(hourly)
        ],
        "bounce_reasons": {},
        "diagnostics": [],
    } | extra


def spiking_hours() -> list[dict[str, int]]:
    return [
        counts(1000, complaints=30 if hour in SPIKE_HOURS else 0, hard_bounces=8, blocks=15)
        for hour in range(24)
    ]


def fabricated_view(lookup: str | None = None) -> DashboardView:
    """One domain CRITICAL with a complaint spike in its series, one OK."""
    spiking = spiking_hours()
    records = [
        deliverability(
            SPIKING,
            "1d",
            "CRITICAL",
            spiking,
            findings=["complaint_rate 0.38% >= critical 0.30%"],
            bounce_reasons={"mailbox_full": 40, "user_unknown": 192, "spam_block": 360},
            diagnostics=[
                "550 5.7.1 Message rejected as spam by Content Filtering",
                "550 5.1.1 <bob@example.net>: Recipient address rejected",
            ],
        ),
        deliverability(SPIKING, "1h", "OK", spiking[-1:]),
        deliverability(HEALTHY, "1d", "OK", [counts(800, hard_bounces=3) for _ in range(24)]),
    ]
    recipient: Mapping[str, Any] | None = None
    if lookup == ANN:
        recipient = {
            "recipient": ANN,
            "status": "SUPPRESSED",
            "score": 12,
            "suppression_reason": "COMPLAINT",
            "scope": "GLOBAL",
            "tenant": None,
            "delivered": 14,
            "opens": 5,
            "clicks": 2,
            "complaints": 1,
            "updated_at": "2026-05-28T20:10:00.000Z",
            "events": [
                {
                    "event_type": "COMPLAINED",
                    "occurred_at": WINDOW_START + 20 * HOUR_MS,
                    "event_id": "evt-complaint-1",
                    "tenant": "team-a",
                },
                {
                    "event_type": "DELIVERED",
                    "occurred_at": WINDOW_START + 19 * HOUR_MS,
                    "event_id": "evt-delivered-1",
                    "tenant": "team-a",
                },
            ],
        }
    return DashboardView(
        deliverability=records,
        thresholds=THRESHOLDS,
        alerts=[
            {
                "alert_id": "a1",
                "tenant": SPIKING[0],
                "domain": SPIKING[1],
                "provider": SPIKING[2],
                "window": "1d",
                "previous_status": "OK",
                "status": "CRITICAL",
                "window_end": WINDOW_START + 19 * HOUR_MS,
                "delivered": 1000,
                "complaint_rate": 0.0031,
                "hard_bounce_rate": 0.008,
                "block_rate": 0.015,
                "findings": ["complaint_rate 0.31% >= critical 0.30%"],
            }
        ],
        suppressions={
            ("HARD_BOUNCE", "global"): 42,
            ("COMPLAINT", "tenant team-a"): 7,
            ("UNSUBSCRIBE", "tenant team-a"): 19,
        },
        dead_letters={"invalid_json": 3, "missing_field": 1},
        latest_dead_letters=[
            {
                "source_topic": "email.raw.sendgrid",
                "source_partition": 1,
                "source_offset": 4711,
                "error_kind": "invalid_json",
                "error_message": "Expecting value: line 1 column 1 (char 0)",
                "failed_at": WINDOW_START + 21 * HOUR_MS,
            }
        ],
        lag={("email.events", 0): 12, ("email.events", 1): 0, ("email.raw.sendgrid", 0): 3},
        lookup=lookup,
        recipient=recipient,
        generated_at=WINDOW_START + 24 * HOUR_MS,
    )


def dashboard_app(token: str | None = TOKEN) -> faust.App:
    """A worker's web server as the worker builds it (the token gate, /metrics, the dashboard),
    its routes in place, serving fabricated_view: `app.web.web_app` is the aiohttp app."""
    app = faust.App("dashboard-test", autodiscover=False, web_enabled=True)
    require_bearer_token(app, token)
    add_metrics_page(app, WorkerMetrics(TopicNames("test.")))

    async def collect(lookup: str | None) -> DashboardView:
        return fabricated_view(lookup)

    add_dashboard(app, collect)
    app.web.init_server()
    return app
