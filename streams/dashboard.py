"""The worker's dashboard: one HTML page at `/` of its web server.

It shows the deliverability windows (email.deliverability) with a plot of each sending
domain's rates over its window, the latest alerts (email.alerts), suppressions, dead letters,
the consumer lag, and a recipient lookup (`/?recipient=ADDRESS`). The page is self-contained
(inline CSS and SVG, nothing fetched) and escapes every value: domains, diagnostics and
addresses come from webhooks anyone can send.

`add_dashboard` replaces the JSON index Faust serves at `/`. Behind a token (streams/queries.py)
a browser signs in once at `/login`, which sets the token cookie.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
from faust.web import Request, Response, View
from faust.web.base import Web

from mailstream.deliverability import rates_of
from mailstream.policy import RATES

MAX_DELIVERABILITY_ROWS = 200
MAX_PLOTS = 50
MAX_ALERTS = 50
MAX_DEAD_LETTERS = 20
MAX_EVENTS = 50
MAX_LAG_ROWS = 200
MAX_SUPPRESSION_ROWS = 100
TOP_BOUNCE_REASONS = 5
LATEST_DIAGNOSTICS = 3

NOTHING = "\u2014"  # an em dash: no value
RATE_LABELS = {
    "complaint_rate": "Complaint rate",
    "hard_bounce_rate": "Hard bounce rate",
    "block_rate": "Block rate",
}
RATE_COLORS = {"complaint_rate": "#c2410c", "hard_bounce_rate": "#7c3aed", "block_rate": "#0369a1"}
WARN_COLOR = "#d97706"
CRITICAL_COLOR = "#dc2626"
STATUS_ORDER = {"CRITICAL": 0, "WARN": 1, "UNKNOWN": 2, "OK": 3}
RECIPIENT_COUNTERS = (
    "delivered",
    "opens",
    "clicks",
    "replies",
    "hard_bounces",
    "soft_bounces",
    "blocked",
    "rejected",
    "complaints",
    "unsubscribes",
)
RECIPIENT_TIMES = ("last_open_at", "last_click_at", "suppressed_at", "updated_at")

# Faust mounts one of these at "/" (its JSON status or its sensor statistics).
FAUST_INDEX_BLUEPRINTS = frozenset(
    {"faust.web.apps.production_index:blueprint", "faust.web.apps.stats:blueprint"}
)


@dataclass(frozen=True)
class DashboardView:
    """What one page shows; records are decoded Avro (dicts), timestamps epoch ms."""

    deliverability: Sequence[Mapping[str, Any]]
    thresholds: Mapping[str, tuple[float, float]]  # rate field -> (warn, critical), fractions
    alerts: Sequence[Mapping[str, Any]]  # newest first
    suppressions: Mapping[tuple[str, str], int]  # (reason, scope label) -> recipients
    dead_letters: Mapping[str, int]  # error kind -> count
    latest_dead_letters: Sequence[Mapping[str, Any]]  # newest first
    lag: Mapping[tuple[str, int], int]  # (topic, partition) -> records behind
    lookup: str | None  # the address asked for; None: nothing asked
    recipient: Mapping[str, Any] | None  # its state plus "events"; None: not found
    generated_at: int


Collect = Callable[[str | None], Awaitable[DashboardView]]


def add_dashboard(app: faust.App, collect: Collect) -> None:
    """Serve the dashboard at `/` in place of Faust's index; `collect(lookup)` gathers what a
    request shows (`lookup`: its `recipient` parameter, None without one). Call it before the
    web server starts."""
    _drop_faust_index(app.web)

    @app.page("/")
    class DashboardPage(View):
        async def get(self, request: Request) -> Response:
            lookup = request.query.get("recipient", "").strip() or None
            view = await collect(lookup)
            return self.html(render_page(view), headers={"Cache-Control": "no-store"})


def _drop_faust_index(web: Web) -> None:
    """aiohttp answers a path with the first route registered for it, and Faust registers its
    index only when the server starts, after every `app.page`: a second GET route of the same
    resource would fail the start instead. Faust's blueprint list has no public removal."""
    manager = web.blueprints
    if manager.applied:
        raise RuntimeError("add_dashboard must be called before the web server starts")
    manager._enabled = [
        (prefix, blueprint)
        for prefix, blueprint in manager._enabled
        if blueprint not in FAUST_INDEX_BLUEPRINTS
    ]


def render_page(view: DashboardView) -> str:
    """The whole page: HTML5, inline CSS and SVG, every value escaped, every list bounded."""
    records = sorted(view.deliverability, key=_severity_order)
    body = "\n".join(
        (
            _header(view, records),
            _deliverability_table(records),
            _plots(records, view.thresholds),
            '<div class="grid">',
            _alerts(view.alerts),
            _suppressions(view.suppressions),
            _dead_letters(view.dead_letters, view.latest_dead_letters),
            _lag(view.lag),
            "</div>",
            _recipient_lookup(view.lookup, view.recipient),
        )
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>mailstream · deliverability</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _key(record: Mapping[str, Any], *names: str) -> str:
    return "|".join(str(record.get(name, "")) for name in names)


def _severity_order(record: Mapping[str, Any]) -> tuple[int, str, str, str, str]:
    return (
        STATUS_ORDER.get(str(record.get("status")), STATUS_ORDER["UNKNOWN"]),
        str(record.get("tenant", "")),
        str(record.get("domain", "")),
        str(record.get("provider", "")),
        str(record.get("window", "")),
    )


def format_time(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return NOTHING
    try:
        return f"{datetime.fromtimestamp(epoch_ms / 1000, UTC):%Y-%m-%d %H:%M} UTC"
    except (ValueError, OverflowError, OSError):  # beyond the years datetime knows
        return f"{epoch_ms} ms"


def format_published_time(value: object) -> str:
    """A timestamp of a published state (ISO 8601, as `/recipients/` answers) as the page
    shows times; anything else as it is."""
    if not value:
        return NOTHING
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def format_rate(rate: float | None) -> str:
    return NOTHING if rate is None else f"{rate * 100:.2f}%"


def _label(field_name: str) -> str:
    return field_name.replace("_", " ").capitalize()


def _badge(status: object) -> str:
    text = _e(status)
    return f'<span class="badge status-{text}">{text}</span>'


def _section(title: str, content: str, *, section_id: str, classes: str = "") -> str:
    classes = f"panel {classes}".strip()
    return (
        f'<section id="{section_id}" class="{classes}"><h2>{_e(title)}</h2>\n{content}\n</section>'
    )


def _more(shown: int, total: int) -> str:
    return f'<p class="note">Showing {shown} of {total}.</p>' if total > shown else ""


def _table(headings: Sequence[str], rows: Iterable[str], empty: str) -> str:
    rendered = "\n".join(rows)
    if not rendered:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(heading)}</th>" for heading in headings)
    return f"<table><thead><tr>{head}</tr></thead>\n<tbody>\n{rendered}\n</tbody></table>"


def _header(view: DashboardView, records: Sequence[Mapping[str, Any]]) -> str:
    tally = {status: 0 for status in STATUS_ORDER}
    for record in records:
        status = str(record.get("status"))
        tally[status if status in tally else "UNKNOWN"] += 1
    counts = " ".join(
        f'<span class="tally">{_badge(status)} {count}</span>'
        for status, count in tally.items()
        if count or status != "UNKNOWN"
    )
    return (
        '<header><h1>mailstream <span class="sub">deliverability</span></h1>'
        f'<div class="summary">{counts}'
        f'<span class="generated">generated {_e(format_time(view.generated_at))}</span></div>'
        "</header>"
    )


def _deliverability_table(records: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for record in records[:MAX_DELIVERABILITY_ROWS]:
        counts = record.get("counts") or {}
        findings = "<br>".join(_e(finding) for finding in record.get("findings") or ())
        rates = "".join(f'<td class="num">{_e(format_rate(record.get(r)))}</td>' for r in RATES)
        rows.append(
            f'<tr data-key="{_e(_key(record, "tenant", "domain", "provider", "window"))}"'
            f' data-status="{_e(record.get("status"))}">'
            f"<td>{_e(record.get('tenant'))}</td>"
            f'<td class="domain">{_e(record.get("domain"))}</td>'
            f"<td>{_e(record.get('provider'))}</td>"
            f"<td>{_e(record.get('window'))}</td>"
            + "".join(
                f'<td class="num">{_e(counts.get(name, 0))}</td>'
                for name in ("delivered", "complaints", "hard_bounces", "blocks")
            )
            + rates
            + f"<td>{_badge(record.get('status'))}</td>"
            f'<td class="findings">{findings}</td></tr>'
        )
    headings = (
        "Tenant",
        "Domain",
        "Provider",
        "Window",
        "Delivered",
        "Complaints",
        "Hard bounces",
        "Blocks",
        "Complaint rate",
        "Hard bounce rate",
        "Block rate",
        "Status",
        "Findings",
    )
    content = _table(headings, rows, "No deliverability windows yet.") + _more(
        len(rows), len(records)
    )
    return _section("Deliverability windows", content, section_id="deliverability")


def _plots(
    records: Sequence[Mapping[str, Any]], thresholds: Mapping[str, tuple[float, float]]
) -> str:
    """One card per (tenant, domain, provider), plotting its widest window with at least two
    steps of events (one step draws no line), else its widest."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(_key(record, "tenant", "domain", "provider"), []).append(record)
    cards = []
    for key, windows in list(groups.items())[:MAX_PLOTS]:
        widest = max(
            windows,
            key=lambda r: (
                len(r.get("series") or ()) >= 2,
                int(r.get("window_end", 0)) - int(r.get("window_start", 0)),
            ),
        )
        statuses = " ".join(
            f'<span class="window">{_e(w.get("window"))} {_badge(w.get("status"))}</span>'
            for w in windows
        )
        cards.append(
            f'<article class="card" data-card="{_e(key)}">'
            f'<h3>{_e(widest.get("domain"))} <span class="muted">{_e(widest.get("tenant"))}'
            f" · {_e(widest.get('provider'))} · window {_e(widest.get('window'))}</span></h3>"
            f'<div class="windows">{statuses}</div>'
            f"{plot_svg(key, widest, thresholds)}"
            f"{_bounce_details(widest)}</article>"
        )
    content = "\n".join(cards) or '<p class="empty">Nothing to plot yet.</p>'
    content += _more(len(cards), len(groups))
    return _section(
        "Rates over each window",
        f'<div class="cards">{content}</div>',
        section_id="plots",
    )


PLOT_WIDTH = 640
PANEL_HEIGHT = 88
PANEL_GAP = 26
PLOT_LEFT = 64
PLOT_RIGHT = 112
PLOT_TOP = 30
PLOT_BOTTOM = 34


def plot_svg(
    key: str, record: Mapping[str, Any], thresholds: Mapping[str, tuple[float, float]]
) -> str:
    """Three stacked panels sharing the time axis, one per rate, each on its own scale (a
    complaint rate of 0.3% would be flat beside a block rate of 10%), with dashed lines at the
    warn and critical thresholds."""
    series = [point for point in record.get("series") or () if "start" in point]
    start = int(record.get("window_start", series[0]["start"] if series else 0))
    end = int(record.get("window_end", start))
    span = max(end - start, 1)
    inner_width = PLOT_WIDTH - PLOT_LEFT - PLOT_RIGHT
    height = PLOT_TOP + 3 * PANEL_HEIGHT + 2 * PANEL_GAP + PLOT_BOTTOM
    rates = [(int(point["start"]), rates_of(point.get("counts") or {})) for point in series]

    def x_of(moment: int) -> float:
        return PLOT_LEFT + inner_width * min(max(moment - start, 0), span) / span

    parts = [
        f'<svg data-plot="{_e(key)}" class="plot" viewBox="0 0 {PLOT_WIDTH} {height}"'
        f' width="{PLOT_WIDTH}" height="{height}" role="img"'
        f' aria-label="{_e("rates of " + key)}" xmlns="http://www.w3.org/2000/svg">',
        _legend(),
    ]
    for index, rate in enumerate(RATES):
        top = PLOT_TOP + index * (PANEL_HEIGHT + PANEL_GAP)
        bottom = top + PANEL_HEIGHT
        limits = thresholds.get(rate)
        warn, critical = limits if limits is not None else (None, None)
        values = [value for _, point in rates if (value := point[rate]) is not None]
        ceiling = max([*values, critical or 0.0, warn or 0.0]) * 1.15 or 0.01

        def y_of(value: float, top: int = top, ceiling: float = ceiling) -> float:
            return top + PANEL_HEIGHT * (1 - min(value, ceiling) / ceiling)

        color = RATE_COLORS[rate]
        parts.append(
            f'<g class="panel-{rate}">'
            f'<rect x="{PLOT_LEFT}" y="{top}" width="{inner_width}" height="{PANEL_HEIGHT}"'
            ' class="frame"/>'
            f'<text x="{PLOT_LEFT - 6}" y="{top + 4}" class="tick" text-anchor="end">'
            f"{_e(format_rate(ceiling))}</text>"
            f'<text x="{PLOT_LEFT - 6}" y="{bottom}" class="tick" text-anchor="end">0%</text>'
            f'<text x="{PLOT_LEFT + 6}" y="{top + 14}" class="axis-label" fill="{color}">'
            f"{_e(RATE_LABELS[rate])}</text>"
        )
        label_gap = 0.0
        if warn is not None and critical is not None:
            # two thresholds close on this scale: their labels would print over each other
            label_gap = max(0.0, 12 - (y_of(warn) - y_of(critical))) / 2
        for level, threshold, line_color, nudge in (
            ("warn", warn, WARN_COLOR, label_gap),
            ("critical", critical, CRITICAL_COLOR, -label_gap),
        ):
            if threshold is None:
                continue
            y = y_of(threshold)
            parts.append(
                f'<line data-threshold="{rate}:{level}" x1="{PLOT_LEFT}"'
                f' x2="{PLOT_LEFT + inner_width}"'
                f' y1="{y:.1f}" y2="{y:.1f}" stroke="{line_color}" stroke-width="1.2"'
                f' stroke-dasharray="{"5 4" if level == "warn" else "9 3"}"/>'
                f'<text x="{PLOT_LEFT + inner_width + 6}" y="{y + 4 + nudge:.1f}" class="tick"'
                f' fill="{line_color}">{level} {_e(format_rate(threshold))}</text>'
            )
        points = [
            (x_of(moment), y_of(value))
            for moment, point in rates
            if (value := point[rate]) is not None
        ]
        coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(
            f'<polyline data-series="{rate}" points="{coordinates}" fill="none"'
            f' stroke="{color}" stroke-width="2" stroke-linejoin="round"/>'
        )
        parts.extend(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in points
        )
        parts.append("</g>")
    axis_y = height - PLOT_BOTTOM + 16
    parts.append(
        f'<text x="{PLOT_LEFT}" y="{axis_y}" class="tick">{_e(format_time(start))}</text>'
        f'<text x="{PLOT_LEFT + inner_width}" y="{axis_y}" class="tick" text-anchor="end">'
        f"{_e(format_time(end))}</text>"
        f'<text x="{PLOT_LEFT + inner_width / 2:.0f}" y="{axis_y + 14}" class="axis-label"'
        ' text-anchor="middle">event time (step start)</text>'
        f'<text x="14" y="{PLOT_TOP + 1.5 * PANEL_HEIGHT + PANEL_GAP}" class="axis-label"'
        f' text-anchor="middle" transform="rotate(-90 14'
        f' {PLOT_TOP + 1.5 * PANEL_HEIGHT + PANEL_GAP})">rate per step</text>'
        "</svg>"
    )
    return "".join(parts)


def _legend() -> str:
    entries = [
        *((RATE_LABELS[rate], RATE_COLORS[rate], "") for rate in RATES),
        ("warn", WARN_COLOR, "5 4"),
        ("critical", CRITICAL_COLOR, "9 3"),
    ]
    parts = ['<g class="legend">']
    x = PLOT_LEFT
    for label, color, dashes in entries:
        dash = f' stroke-dasharray="{dashes}"' if dashes else ""
        parts.append(
            f'<line x1="{x}" x2="{x + 18}" y1="12" y2="12" stroke="{color}"'
            f' stroke-width="2"{dash}/>'
            f'<text x="{x + 22}" y="16" class="tick">{_e(label)}</text>'
        )
        x += 30 + 7 * len(label)
    parts.append("</g>")
    return "".join(parts)


def _bounce_details(record: Mapping[str, Any]) -> str:
    reasons = sorted(
        (record.get("bounce_reasons") or {}).items(), key=lambda item: (-int(item[1]), item[0])
    )[:TOP_BOUNCE_REASONS]
    reason_items = "".join(
        f"<li><span>{_e(reason)}</span> <b>{_e(count)}</b></li>" for reason, count in reasons
    )
    diagnostics = "".join(
        f"<li><code>{_e(line)}</code></li>"
        for line in list(record.get("diagnostics") or ())[:LATEST_DIAGNOSTICS]
    )
    return (
        '<div class="details">'
        "<div><h4>Top bounce reasons</h4>"
        f'<ul class="reasons">{reason_items or "<li>none</li>"}</ul></div>'
        "<div><h4>Latest diagnostics</h4>"
        f'<ul class="diagnostics">{diagnostics or "<li>none</li>"}</ul></div>'
        "</div>"
    )


def _alerts(alerts: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        f'<tr data-alert="{_e(alert.get("alert_id"))}">'
        f'<td class="time">{_e(format_time(alert.get("window_end")))}</td>'
        f"<td>{_e(_key(alert, 'tenant', 'domain', 'provider', 'window').replace('|', ' · '))}</td>"
        f"<td>{_badge(alert.get('previous_status'))} → {_badge(alert.get('status'))}</td>"
        f'<td class="findings">{"<br>".join(_e(f) for f in alert.get("findings") or ())}</td></tr>'
        for alert in alerts[:MAX_ALERTS]
    ]
    content = _table(("At", "Window", "Change", "Findings"), rows, "No alerts.")
    return _section(
        "Latest alerts",
        content + _more(len(rows), len(alerts)),
        section_id="alerts",
        classes="span2",
    )


def _suppressions(suppressions: Mapping[tuple[str, str], int]) -> str:
    ordered = sorted(suppressions.items(), key=lambda item: (-item[1], item[0]))
    rows = [
        f'<tr><td>{_e(reason)}</td><td>{_e(scope)}</td><td class="num">{_e(count)}</td></tr>'
        for (reason, scope), count in ordered[:MAX_SUPPRESSION_ROWS]
    ]
    content = _table(("Reason", "Scope", "Recipients"), rows, "No suppressed recipients.")
    return _section(
        "Suppressions", content + _more(len(rows), len(ordered)), section_id="suppressions"
    )


def _dead_letters(counts: Mapping[str, int], latest: Sequence[Mapping[str, Any]]) -> str:
    kinds = [
        f'<tr><td>{_e(kind)}</td><td class="num">{_e(count)}</td></tr>'
        for kind, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    letters = [
        f'<tr><td class="time">{_e(format_time(letter.get("failed_at")))}</td>'
        f"<td>{_e(letter.get('error_kind'))}</td>"
        f'<td class="message">{_e(letter.get("error_message"))}</td>'
        f"<td><code>{_e(letter.get('source_topic'))}/{_e(letter.get('source_partition'))}"
        f"@{_e(letter.get('source_offset'))}</code></td></tr>"
        for letter in latest[:MAX_DEAD_LETTERS]
    ]
    content = (
        _table(("Kind", "Count"), kinds, "No dead letters.")
        + "<h4>Latest</h4>"
        + _table(("Failed at", "Kind", "Message", "Source"), letters, "None.")
        + _more(len(letters), len(latest))
    )
    return _section("Dead letters", content, section_id="dead-letters", classes="span2")


def _lag(lag: Mapping[tuple[str, int], int]) -> str:
    ordered = sorted(lag.items(), key=lambda item: (-item[1], item[0]))
    rows = [
        f'<tr><td>{_e(topic)}</td><td class="num">{_e(partition)}</td>'
        f'<td class="num">{_e(behind)}</td></tr>'
        for (topic, partition), behind in ordered[:MAX_LAG_ROWS]
    ]
    total = f'<p class="note">{sum(lag.values())} records behind in all.</p>' if lag else ""
    content = _table(("Topic", "Partition", "Behind"), rows, "No partitions assigned.")
    return _section(
        "Consumer lag", total + content + _more(len(rows), len(ordered)), section_id="lag"
    )


def _recipient_lookup(lookup: str | None, recipient: Mapping[str, Any] | None) -> str:
    form = (
        '<form method="get" action="/" class="lookup">'
        '<label for="recipient-address">Address</label>'
        f'<input id="recipient-address" name="recipient" type="email" value="{_e(lookup or "")}"'
        ' placeholder="someone@example.com" required>'
        '<button type="submit">Look up</button></form>'
    )
    answer = "" if lookup is None else _recipient_answer(lookup, recipient)
    return _section("Recipient lookup", form + answer, section_id="lookup")


def _recipient_answer(lookup: str, recipient: Mapping[str, Any] | None) -> str:
    address = _e(lookup)
    if recipient is None:
        inner = (
            f'<p class="empty">No state for <b>{address}</b> on this worker (with several '
            "workers, ask <code>/recipients/ADDRESS/</code>, routed to the one that owns "
            "it).</p>"
        )
    elif recipient.get("erased"):
        inner = f"<p><b>{address}</b> is erased {_badge('SUPPRESSED')}: nothing else is kept.</p>"
    else:
        facts = [
            ("Status", _badge(recipient.get("status"))),
            ("Score", _e(recipient.get("score"))),
            ("Suppression", _e(recipient.get("suppression_reason") or "none")),
        ]
        if recipient.get("scope"):
            facts.append(("Scope", _e(f"{recipient.get('scope')} {recipient.get('tenant') or ''}")))
        facts.extend((_label(name), _e(recipient.get(name, 0))) for name in RECIPIENT_COUNTERS)
        facts.extend(
            (_label(name), _e(format_published_time(recipient.get(name))))
            for name in RECIPIENT_TIMES
        )
        listed = "".join(f"<div><dt>{_e(term)}</dt><dd>{value}</dd></div>" for term, value in facts)
        events = list(recipient.get("events") or ())
        rows = [
            f'<tr><td class="time">{_e(format_time(event.get("occurred_at")))}</td>'
            f"<td>{_e(event.get('event_type'))}</td><td>{_e(event.get('bounce_class') or '')}</td>"
            f"<td>{_e(event.get('tenant') or '')}</td>"
            f"<td><code>{_e(event.get('event_id'))}</code></td></tr>"
            for event in events[:MAX_EVENTS]
        ]
        inner = (
            f'<h3>{_e(recipient.get("recipient", lookup))}</h3><dl class="facts">{listed}</dl>'
            "<h4>Recent events</h4>"
            + _table(
                ("Occurred", "Event", "Bounce class", "Tenant", "Event id"), rows, "No events."
            )
            + _more(len(rows), len(events))
        )
    return f'<div id="recipient">{inner}</div>'


STYLE = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; padding: 20px 28px 40px; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display: flex; align-items: baseline; justify-content: space-between; flex-wrap: wrap;
  gap: 12px; margin-bottom: 16px; }
h1 { margin: 0; font-size: 22px; } h1 .sub { color: var(--muted); font-weight: 500; }
h2 { margin: 0 0 10px; font-size: 16px; } h3 { margin: 0 0 6px; font-size: 15px; }
h4 { margin: 12px 0 4px; font-size: 13px; color: var(--muted); font-weight: 600; }
.summary { display: flex; gap: 14px; align-items: center; }
.generated, .muted, .note, .empty { color: var(--muted); font-weight: 400; }
.note, .empty { margin: 6px 0 0; font-size: 13px; }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px;
  margin-bottom: 16px; overflow-x: auto; }
.grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 16px; }
.grid .span2 { grid-column: span 2; }
@media (max-width: 1100px) {
  .grid { grid-template-columns: 1fr; } .grid .span2 { grid-column: auto; }
}
.grid .panel { margin-bottom: 0; }
.grid + .panel { margin-top: 16px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line);
  padding: 5px 8px; white-space: nowrap; }
td { border-bottom: 1px solid var(--line); padding: 5px 8px; vertical-align: top; }
tbody tr:last-child td { border-bottom: none; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.domain { font-weight: 600; overflow-wrap: break-word; }
td.time { white-space: nowrap; }
td.findings, td.message { color: #374151; font-size: 12px; max-width: 360px;
  word-break: break-word; }
tr[data-status="CRITICAL"] td { background: #fef2f2; }
tr[data-status="WARN"] td { background: #fffbeb; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 11px;
  font-weight: 700; letter-spacing: .03em; background: #e5e7eb; color: #374151; }
.status-OK, .status-ACTIVE { background: #dcfce7; color: #166534; }
.status-WARN { background: #fef3c7; color: #92400e; }
.status-CRITICAL, .status-SUPPRESSED { background: #fee2e2; color: #991b1b; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
.windows { display: flex; gap: 12px; margin-bottom: 6px; font-size: 12px; color: var(--muted); }
svg.plot { display: block; width: 100%; height: auto; }
svg .frame { fill: #fafafa; stroke: var(--line); }
svg .tick { font-size: 11px; fill: var(--muted); }
svg .axis-label { font-size: 12px; font-weight: 600; fill: #374151; }
.details { display: grid; grid-template-columns: 1fr 2fr; gap: 12px; font-size: 12px; }
.details ul { margin: 0; padding: 0; list-style: none; }
.reasons li { display: flex; justify-content: space-between; max-width: 220px; }
.diagnostics code { white-space: pre-wrap; overflow-wrap: anywhere; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
form.lookup { display: flex; gap: 8px; align-items: center; }
form.lookup input { padding: 6px 8px; border: 1px solid #d1d5db; border-radius: 6px; width: 320px; }
button { padding: 6px 14px; border: 0; border-radius: 6px; background: #1f2937; color: #fff;
  cursor: pointer; }
#recipient { margin-top: 12px; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr));
  gap: 6px 16px; margin: 8px 0; }
dl.facts dt { color: var(--muted); font-size: 12px; } dl.facts dd { margin: 0; font-weight: 600; }
"""
