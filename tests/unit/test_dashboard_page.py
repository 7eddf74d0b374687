"""render_page: what the dashboard shows of a DashboardView, escaped and bounded."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser

import faust
import pytest

from mailstream.deliverability import rates_of
from mailstream.streams.dashboard import (
    MAX_DEAD_LETTERS,
    MAX_DELIVERABILITY_ROWS,
    MAX_EVENTS,
    DashboardView,
    add_dashboard,
    render_page,
)
from tests.dashboards import (
    ANN,
    HEALTHY,
    SPIKE_HOURS,
    SPIKING,
    counts,
    deliverability,
    fabricated_view,
)

SPIKING_KEY = "|".join(SPIKING)


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[Element] = []
        self._content: list[str | Element] = []  # text and children in document order

    def find_all(self, tag: str, **attrs: str) -> list[Element]:
        found = []
        for child in self.children:
            if child.tag == tag and all(child.attrs.get(k) == v for k, v in attrs.items()):
                found.append(child)
            found.extend(child.find_all(tag, **attrs))
        return found

    def find(self, tag: str, **attrs: str) -> Element:
        [only] = self.find_all(tag, **attrs)
        return only

    def add(self, content: str | Element) -> None:
        self._content.append(content)
        if isinstance(content, Element):
            self.children.append(content)

    def all_text(self) -> str:
        return "".join(c if isinstance(c, str) else c.all_text() for c in self._content)


class Tree(HTMLParser):
    VOID = frozenset({"meta", "input", "br", "line", "rect", "circle", "polyline"})

    def __init__(self, page: str) -> None:
        super().__init__()
        self.root = Element("#document", {})
        self._open = [self.root]
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self._open[-1].add(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open[-1].add(Element(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self._open[-1].tag == tag, (self._open[-1].tag, tag)
        self._open.pop()

    def handle_data(self, data: str) -> None:
        self._open[-1].add(data)


def parsed(view: DashboardView) -> Element:
    return Tree(render_page(view)).root


def test_the_page_is_one_self_contained_html5_document() -> None:
    page = render_page(fabricated_view())
    assert page.startswith("<!DOCTYPE html>")
    for outside in ("<script", "src=", "href=", "@import", "url("):
        assert outside not in page
    Tree(page)  # every element closed where it opened


def test_hostile_values_are_escaped_everywhere() -> None:
    hostile = '<script>alert("x")</script>.example'
    view = fabricated_view(lookup=f"{hostile}@x")
    record = deliverability(
        ("<b>team</b>", hostile, "ses"),
        "1d",
        "<i>WARN</i>",
        [counts(10)],
        diagnostics=['<img src=x onerror="alert(1)">'],
        findings=["<marquee>"],
        bounce_reasons={"<u>reason</u>": 1},
    )
    view = dataclasses.replace(
        view,
        deliverability=[record],
        suppressions={("<s>", "tenant <t>"): 1},
        dead_letters={"<k>": 1},
        latest_dead_letters=[{"error_kind": "<k>", "error_message": "<m>", "source_topic": "<t>"}],
    )
    page = render_page(view)
    for raw in ("<script>", "<img", "<b>team", "<i>WARN", "<marquee>", "<u>", "<s>", "<k>"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;.example" in page
    root = Tree(page).root
    [row] = root.find_all("tr", **{"data-status": "<i>WARN</i>"})
    assert row.attrs["data-key"] == f"<b>team</b>|{hostile}|ses|1d"


def test_each_window_is_a_row_with_its_status_worst_first() -> None:
    root = parsed(fabricated_view())
    rows = [row for row in root.find_all("tr") if "data-key" in row.attrs]
    assert [(row.attrs["data-key"], row.attrs["data-status"]) for row in rows] == [
        (f"{SPIKING_KEY}|1d", "CRITICAL"),
        (f"{SPIKING_KEY}|1h", "OK"),
        ("|".join(HEALTHY) + "|1d", "OK"),
    ]
    badge = rows[0].find("span", **{"class": "badge status-CRITICAL"})
    assert badge.all_text() == "CRITICAL"
    cells = [cell.all_text() for cell in rows[0].find_all("td")]
    assert cells[:8] == [
        "team-a",
        "news.example.com",
        "sendgrid",
        "1d",
        "24000",
        "90",
        "192",
        "360",
    ]
    assert cells[8:11] == ["0.38%", "0.78%", "1.46%"]


def test_each_domain_plots_its_three_rates_over_its_window() -> None:
    root = parsed(fabricated_view())
    plots = root.find_all("svg")
    assert {plot.attrs["data-plot"] for plot in plots} == {SPIKING_KEY, "|".join(HEALTHY)}
    spiking = next(plot for plot in plots if plot.attrs["data-plot"] == SPIKING_KEY)
    lines = {line.attrs["data-series"]: line for line in spiking.find_all("polyline")}
    assert set(lines) == {"complaint_rate", "hard_bounce_rate", "block_rate"}
    points = [
        tuple(map(float, pair.split(",")))
        for pair in (lines["complaint_rate"].attrs["points"] or "").split()
    ]
    assert len(points) == 24  # the widest window (1d), one point per hourly step
    xs = [x for x, _ in points]
    assert xs == sorted(xs)
    heights = [y for _, y in points]  # svg y grows downwards: the spike is the smallest y
    assert {hour for hour, y in enumerate(heights) if y == min(heights)} == set(SPIKE_HOURS)
    legend = " ".join(text.all_text() for text in spiking.find_all("text"))
    for label in ("Complaint rate", "Hard bounce rate", "Block rate", "warn", "critical"):
        assert label in legend


def test_thresholds_are_dashed_lines_critical_above_warn() -> None:
    spiking = next(
        plot
        for plot in parsed(fabricated_view()).find_all("svg")
        if plot.attrs["data-plot"] == SPIKING_KEY
    )
    for rate in ("complaint_rate", "hard_bounce_rate", "block_rate"):
        warn = spiking.find("line", **{"data-threshold": f"{rate}:warn"})
        critical = spiking.find("line", **{"data-threshold": f"{rate}:critical"})
        assert warn.attrs["stroke-dasharray"] and critical.attrs["stroke-dasharray"]
        assert warn.attrs["y1"] == warn.attrs["y2"]
        assert float(critical.attrs["y1"] or 0) < float(warn.attrs["y1"] or 0)
    assert "critical 0.30%" in spiking.all_text() and "warn 0.10%" in spiking.all_text()


def test_points_without_volume_are_left_out_of_the_line() -> None:
    assert rates_of({}) == {
        "complaint_rate": None,
        "hard_bounce_rate": None,
        "block_rate": None,
    }
    # attempted: 100 delivered + 6 hard + 2 soft bounces + 2 blocks
    assert rates_of(counts(100, complaints=1, hard_bounces=6, blocks=2)) == {
        "complaint_rate": 0.01,
        "hard_bounce_rate": pytest.approx(6 / 110),
        "block_rate": pytest.approx(2 / 110),
    }
    record = deliverability(SPIKING, "1d", "OK", [counts(100), counts(0) | {"soft_bounces": 0}])
    view = dataclasses.replace(fabricated_view(), deliverability=[record])
    line = parsed(view).find("polyline", **{"data-series": "complaint_rate"})
    assert len((line.attrs["points"] or "").split()) == 1


def test_the_side_panels_show_alerts_suppressions_dead_letters_and_lag() -> None:
    root = parsed(fabricated_view())
    text = {section.attrs["id"]: section.all_text() for section in root.find_all("section")}
    assert "OK → CRITICAL" in text["alerts"].replace("\n", "")
    assert "HARD_BOUNCEglobal42" in text["suppressions"]
    assert "invalid_json3" in text["dead-letters"]
    assert "email.raw.sendgrid/1@4711" in text["dead-letters"]
    assert "15 records behind in all." in text["lag"]
    assert "spam_block" in text["plots"] and "550 5.7.1 Message rejected" in text["plots"]


def test_the_recipient_section_answers_the_lookup() -> None:
    assert not parsed(fabricated_view()).find_all("div", id="recipient")
    answer = parsed(fabricated_view(ANN)).find("div", id="recipient").all_text()
    for shown in ("SUPPRESSED", "COMPLAINT", "GLOBAL", "COMPLAINED", "evt-delivered-1"):
        assert shown in answer
    assert "2026-05-28 20:10 UTC" in answer
    unknown = parsed(fabricated_view("nobody@example.com")).find("div", id="recipient")
    assert "No state for nobody@example.com" in unknown.all_text()
    erased = dataclasses.replace(
        fabricated_view(), lookup=ANN, recipient={"erased": True, "suppressed": True}
    )
    assert "is erased" in parsed(erased).find("div", id="recipient").all_text()
    form = parsed(fabricated_view(ANN)).find("form")
    assert form.attrs["method"] == "get" and form.attrs["action"] == "/"
    assert form.find("input").attrs["value"] == ANN


def test_what_is_rendered_is_bounded() -> None:
    many = [
        deliverability((f"team-{i}", f"d{i}.example", "ses"), "1d", "OK", [counts(10)])
        for i in range(MAX_DELIVERABILITY_ROWS + 300)
    ]
    letter = {"error_kind": "invalid_json", "error_message": "m", "source_topic": "t"}
    base = fabricated_view(ANN)
    assert base.recipient is not None
    event = base.recipient["events"][0]
    view = dataclasses.replace(
        base,
        deliverability=many,
        latest_dead_letters=[letter] * (MAX_DEAD_LETTERS + 5),
        recipient={**base.recipient, "events": [event] * (MAX_EVENTS + 30)},
    )
    root = parsed(view)
    rows = [row for row in root.find_all("tr") if "data-key" in row.attrs]
    assert len(rows) == MAX_DELIVERABILITY_ROWS
    assert f"Showing {MAX_DELIVERABILITY_ROWS} of {len(many)}." in root.all_text()
    dead = root.find("section", id="dead-letters")
    assert len(dead.find_all("tr")) == 1 + 2 + 1 + MAX_DEAD_LETTERS  # two header rows
    events = root.find("div", id="recipient").find_all("tr")
    assert len(events) == 1 + MAX_EVENTS


def test_add_dashboard_refuses_a_started_web_server() -> None:
    app = faust.App("dashboard-late", autodiscover=False)
    app.web.init_server()

    async def collect(lookup: str | None) -> DashboardView:
        return fabricated_view(lookup)

    with pytest.raises(RuntimeError, match="before the web server starts"):
        add_dashboard(app, collect)
