"""One self-contained HTML report from Jinja2 templates: inline CSS, JS and SVG, no external URL.

Autoescaping is on for every template: each value from a case (log fields, finding titles, tags, file names) is
attacker-written and reaches the page only as text. This module computes the layout (numbers, groups, anchors);
the templates under ``templates/`` turn it into markup.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from cloudir import __version__
from cloudir.coverage import parse_utc
from cloudir.report.data import ActivityChart, BeaconSeries, ReportData
from cloudir.report.notice import Notice

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
LINKS_PER_SENTENCE = 6
_ENV = Environment(
    loader=PackageLoader("cloudir.report", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}Z"
    return str(value)


def _join(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else _when(value)


_ENV.filters["when"] = _when
_ENV.filters["join_all"] = _join


@dataclass
class Lane:
    """One row of the attack timeline chart."""

    label: str
    title: str
    y: float
    responder: bool
    dots: list[tuple[float, float, str]] = field(default_factory=list)  # x, radius, tooltip
    marks: list[tuple[float, str]] = field(default_factory=list)  # x, tooltip


@dataclass
class ChartView:
    """The chart's geometry in SVG user units (the SVG scales to the page width)."""

    width: int
    height: int
    left: int
    lanes: list[Lane]
    ticks: list[tuple[float, str, str]]  # x, label, anchor
    separator: float | None  # y of the line between the suspects' lanes and the responders'


def _chart_view(chart: ActivityChart, records: list[dict[str, Any]]) -> ChartView:
    left, top, row_h, width = 300, 16, 24, 1200
    actions = [
        (parse_utc(r["time"]).timestamp(), f"{r['action']} {r['target'] or ''}")
        for r in records
        if r["action"].endswith(".completed") or ".contain" in r["action"]
    ]
    start = min([chart.start, *(t for t, _ in actions)])
    end = max([chart.end, *(t for t, _ in actions)])
    span = max(end - start, 1.0)

    def x(epoch: float) -> float:
        return round(left + (epoch - start) / span * (width - left - 16), 1)

    responder = {actor for actor, _, _, is_responder in chart.cells if is_responder}
    ordered = [a for a in chart.actors if a not in responder] + [a for a in chart.actors if a in responder]
    lanes = {
        actor: Lane(actor if len(actor) <= 44 else "…" + actor[-43:], actor, 0.0, actor in responder)
        for actor in ordered
    }
    # cloudir's own actions get a lane of their own, outside the actor dict (an actor may be named anything)
    actions_lane = Lane("cloudir actions (custody log)", "cloudir actions", 0.0, True)
    rows = [*lanes.values(), actions_lane]
    separator = None
    for index, lane in enumerate(rows):
        gap = 12 if lane.responder else 0
        lane.y = top + index * row_h + row_h / 2 + gap
        if lane.responder and separator is None:
            separator = lane.y - row_h / 2 - gap / 2
    peak = max((count for _, _, count, _ in chart.cells), default=1)
    for actor, bucket, count, _ in chart.cells:
        radius = round(2 + 8 * (count / peak) ** 0.5, 1)
        lanes[actor].dots.append((x(bucket + chart.bucket_seconds / 2), radius, f"{actor}: {count} events"))
    for actor, epoch, score, title in chart.marks:
        lanes[actor].marks.append((x(epoch), f"finding (score {score}): {title}"))
    actions_lane.marks.extend((x(t), label) for t, label in actions)
    height = int(top + row_h * len(rows) + 12 + 44)
    ticks = []
    for tick, anchor in enumerate(("start", "middle", "middle", "middle", "end")):
        epoch = start + span * tick / 4
        ticks.append((x(epoch), datetime.fromtimestamp(epoch, UTC).strftime("%m-%d %H:%M"), anchor))
    return ChartView(width, height, left, rows, ticks, separator)


def _evidence_groups(evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Artifacts per kind (the first two path parts): count, bytes and a manifest hash."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for artifact in evidence:
        parts = str(artifact["path"]).split("/")
        groups.setdefault("/".join(parts[:2]) if len(parts) > 2 else parts[0], []).append(artifact)
    out = []
    for kind, items in sorted(groups.items()):
        manifest = "".join(f"{a['sha256']}  {a['path']}\n" for a in sorted(items, key=lambda a: str(a["path"])))
        out.append(
            {
                "kind": kind,
                "count": len(items),
                "bytes": sum(int(a["size"]) for a in items),
                "manifest_sha256": hashlib.sha256(manifest.encode()).hexdigest(),
            }
        )
    return out


def _coverage_rows(coverage: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    sources, retention, locations, warnings = [], [], [], []
    for cloud, report in sorted(coverage.items()):
        for item in report.get("sources", []):
            sources.append({"cloud": cloud, **item})
        for item in report.get("retention", []):
            oldest = parse_utc(str(item["oldest_event"]))
            gone = oldest + timedelta(days=float(item["retention_days"]))
            retention.append({"cloud": cloud, **item, "gone": f"{gone:%Y-%m-%d %H:%M}Z"})
        for name, value in sorted(report.get("locations", {}).items()):
            if isinstance(value, dict):
                facts = "; ".join(f"{k}: {_join(v) if v not in (None, []) else '-'}" for k, v in sorted(value.items()))
                locations.append({"cloud": cloud, "location": name, "facts": facts})
        warnings += [{"cloud": cloud, "text": w} for w in report.get("warnings", [])]
    return {"sources": sources, "retention": retention, "locations": locations, "warnings": warnings}


def _narrative(data: ReportData) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Sections whose sentences carry links, and the cited events in citation order (anchors ev-1, ev-2...)."""
    anchors: dict[str, int] = {}
    sections = []
    for section in data.story.sections:
        sentences = []
        for sentence in section.sentences:
            links = []
            for event_id in sentence.events:
                if event_id in data.cited_events:
                    links.append(anchors.setdefault(event_id, len(anchors) + 1))
            sentences.append(
                {
                    "text": sentence.text,
                    "links": links[:LINKS_PER_SENTENCE],
                    "more": max(len(links) - LINKS_PER_SENTENCE, 0),
                    "records": sentence.records,
                }
            )
        sections.append({"key": section.key, "title": section.title, "sentences": sentences})
    cited = [{"anchor": n, **data.cited_events[event_id]} for event_id, n in anchors.items()]
    return sections, cited


@dataclass
class BeaconView:
    """A beacon finding's connections per hour as bars (SVG coordinates), with its axis labels."""

    width: int
    height: int
    caption: str
    bars: list[tuple[float, float, float, str]]  # x, y, height, tooltip
    ticks: list[tuple[float, str, str]]  # x, label, text-anchor


BEACON_WIDTH, BEACON_HEIGHT, BEACON_BAR_AREA = 720, 96, 64


def _beacon_view(series: BeaconSeries) -> BeaconView:
    """Bars of connections per hour from the first to the last check-in (an empty hour is a gap, not a bar)."""
    hours = series.hours
    start = min((h for h, _ in hours), default=series.first)
    end = max((h for h, _ in hours), default=series.last) + 3600
    slots = max(1, round((end - start) / 3600))
    slot = (BEACON_WIDTH - 16) / slots
    peak = max((n for _, n in hours), default=1) or 1
    bars = []
    for hour, count in hours:
        height = max(1.0, BEACON_BAR_AREA * count / peak)
        x = 8 + (hour - start) / 3600 * slot
        when = datetime.fromtimestamp(hour, UTC)
        bars.append(
            (round(x, 1), round(8 + BEACON_BAR_AREA - height, 1), round(height, 1), f"{when:%Y-%m-%d %H}:00Z: {count}")
        )
    ticks = [
        (8.0, f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H}:00Z", "start"),
        (BEACON_WIDTH - 8.0, f"{datetime.fromtimestamp(end, UTC):%Y-%m-%d %H}:00Z", "end"),
    ]
    caption = (
        f"connections per hour to {series.dst_addr}:{series.dst_port} (one about every {round(series.period)} s), "
        f"peak {peak} in an hour"
    )
    return BeaconView(BEACON_WIDTH, BEACON_HEIGHT, caption, bars, ticks)


def _incidents(data: ReportData) -> list[dict[str, Any]]:
    by_incident: dict[Any, list[dict[str, Any]]] = {}
    for row in data.findings:
        beacon = data.beacons.get(row["finding_id"])
        finding = {**row, "beacon": _beacon_view(beacon) if beacon else None}
        by_incident.setdefault(finding.get("incident_id"), []).append(finding)
    incidents = [{**incident, "findings": by_incident.pop(incident["incident_id"], [])} for incident in data.incidents]
    loose = [f for findings in by_incident.values() for f in findings]
    if loose:
        incidents.append({"incident_id": None, "title": "Findings outside any incident", "findings": loose})
    return incidents


def render_html(data: ReportData, summary: dict[str, Any], notices: list[Notice] | None = None) -> str:
    """The full report page."""
    sections, cited = _narrative(data)
    story = data.story
    cards = [
        ("findings", len(data.findings)),
        ("incidents", len(data.incidents)),
        ("accounts outside the organisation", len(story.external_accounts)),
        ("data stores read", len(story.data_reads)),
        ("objects read", sum(len(r.objects) for r in story.data_reads)),
        ("containment", summary["actions_taken"]["containment"]),
    ]
    template = _ENV.get_template("report.html.j2")
    return template.render(
        csp=CSP,
        version=__version__,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        meta=data.meta,
        verify=data.verification,
        summary=summary,
        cards=cards,
        sections=sections,
        cited=cited,
        story=story,
        notices=notices or [],
        chart=_chart_view(data.chart, data.records) if data.chart and data.chart.actors else None,
        triggers=data.triggers,
        responses={k: str(v["action"]).removeprefix("response.") for k, v in data.responses.items()},
        incidents=_incidents(data),
        evidence=data.evidence,
        evidence_groups=_evidence_groups(data.evidence),
        coverage=_coverage_rows(data.coverage),
        records=data.records,
        events=data.events,
        event_range=data.event_range,
        api_calls=data.api_call_count,
    )
