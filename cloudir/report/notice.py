"""Draft incident notifications for regulators: the facts each regime asks for and its deadline clock.

The clocks run from the detection time (the earliest finding that opened the case, else the case's creation).
SEC Form 8-K Item 1.05 runs from the materiality determination, which cloudir cannot know: its clock is shown from
detection as the earliest possible deadline, counted in business days (weekends skipped; US federal holidays are
not modelled).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloudir.coverage import iso_utc, parse_utc
from cloudir.report.story import Story
from cloudir.report.summary import md_text


@dataclass(frozen=True)
class Deadline:
    """One report a regime requires, due a fixed time after detection."""

    what: str
    hours: int = 0
    months: int = 0
    business_days: int = 0

    def due(self, start: datetime) -> datetime:
        """When this report is due for an incident detected at ``start``."""
        if self.months:
            month = start.month - 1 + self.months
            year, month = start.year + month // 12, month % 12 + 1
            return start.replace(year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1]))
        due = start + timedelta(hours=self.hours)
        remaining = self.business_days
        while remaining:
            due += timedelta(days=1)
            if due.weekday() < 5:
                remaining -= 1
        return due


@dataclass(frozen=True)
class Regime:
    """A notification regime: who is told, under which provision, by when."""

    key: str
    name: str
    authority: str
    deadlines: tuple[Deadline, ...]
    clock_note: str
    asks: tuple[str, ...]  # facts the regime asks for that the logs cannot give


REGIMES: dict[str, Regime] = {
    "gdpr": Regime(
        "gdpr",
        "GDPR Art. 33 personal data breach notification",
        "the lead supervisory authority",
        (Deadline("notification to the supervisory authority", hours=72),),
        "72 hours after becoming aware of the breach; reasons for any delay must accompany a late notice.",
        (
            "categories and approximate number of data subjects concerned",
            "categories and approximate number of personal data records concerned",
            "likely consequences of the breach",
            "name and contact details of the data protection officer",
        ),
    ),
    "nis2": Regime(
        "nis2",
        "NIS2 Directive Art. 23 significant incident reporting",
        "the national CSIRT or competent authority",
        (
            Deadline("early warning", hours=24),
            Deadline("incident notification", hours=72),
            Deadline("final report", months=1),
        ),
        "from becoming aware of the significant incident; the final report is due one month after the incident "
        "notification, shown here from detection (the earliest date).",
        (
            "whether the incident is suspected to be caused by unlawful or malicious acts",
            "whether it could have a cross-border impact",
            "severity and impact assessment, indicators of compromise",
        ),
    ),
    "ccspa": Regime(
        "ccspa",
        "Critical Cyber Systems Protection Act (Canada, Bill C-8) cyber security incident report",
        "the Communications Security Establishment",
        (Deadline("report to the Communications Security Establishment", hours=72),),
        "within 72 hours of becoming aware of the incident (the Act's proposed default period).",
        ("which critical cyber system and vital service is affected", "the designated operator's class"),
    ),
    "sec": Regime(
        "sec",
        "SEC Form 8-K Item 1.05 material cybersecurity incident",
        "the U.S. Securities and Exchange Commission (EDGAR filing)",
        (Deadline("Form 8-K Item 1.05 filing", business_days=4),),
        "four business days after the materiality determination; shown from detection as the earliest possible date.",
        (
            "the date of the materiality determination",
            "the material impact or reasonably likely material impact on the registrant",
        ),
    ),
}


@dataclass
class Notice:
    """A drafted notice for one regime."""

    regime: Regime
    detected: datetime
    detected_basis: str
    aware: datetime | None
    clocks: list[tuple[Deadline, datetime]]
    nature: list[str]
    affected: list[str]
    measures: list[str]
    contact: str
    to_confirm: list[str]


def draft_notice(
    key: str, summary: dict[str, Any], story: Story, case_created: str, contact: str | None = None
) -> Notice:
    """The notice for regime ``key`` (one of :data:`REGIMES`)."""
    regime = REGIMES[key]
    detections = summary["detected"]["detections"]
    activity = [parse_utc(d["activity_time"]) for d in detections if d.get("activity_time")]
    received = [parse_utc(d["received_by_cloudir"]) for d in detections if d.get("received_by_cloudir")]
    if activity:
        detected, basis = min(activity), "time of the first finding that opened the case"
    else:
        detected, basis = parse_utc(case_created), "case creation; no finding was received"
    nature = [s.text for section in story.sections if section.key in {"access", "tactics"} for s in section.sentences]
    affected = [f"{kind}: {', '.join(values[:30])}" for kind, values in story.resources.items()]
    affected += [s.text for section in story.sections if section.key == "data" for s in section.sentences]
    measures = [s.text for section in story.sections if section.key == "response" for s in section.sentences]
    unknown = [s.text for section in story.sections if section.key == "unknown" for s in section.sentences]
    return Notice(
        regime=regime,
        detected=detected,
        detected_basis=basis,
        aware=min(received) if received else None,
        clocks=[(deadline, deadline.due(detected)) for deadline in regime.deadlines],
        nature=nature or ["No suspect activity has been established from the logs yet."],
        affected=affected or ["No affected system has been established yet."],
        measures=measures,
        contact=contact or "to be completed: name, role, telephone and e-mail of the incident contact",
        to_confirm=[*unknown, *regime.asks],
    )


def render_notice(notice: Notice, case_id: str) -> str:
    """The notice as Markdown (every fact escaped: the logs are attacker-written)."""
    regime = notice.regime
    lines = [
        f"# DRAFT: {md_text(regime.name)}",
        "",
        (
            f"Case {md_text(case_id)}. Addressee: {regime.authority}. Draft generated by cloudir from the case's "
            "evidence: review every statement before sending."
        ),
        "",
        "## Deadlines",
        f"Clock: {regime.clock_note}",
        "",
        *[f"- {deadline.what}: due **{iso_utc(due)}**" for deadline, due in notice.clocks],
        "",
        "## Times",
        f"- detection: {iso_utc(notice.detected)} ({notice.detected_basis})",
        f"- awareness (finding received by the responders): {iso_utc(notice.aware) if notice.aware else 'unknown'}",
        "",
        "## Nature of the incident",
        *[f"- {md_text(t)}" for t in notice.nature],
        "",
        "## Systems and data affected",
        *[f"- {md_text(t)}" for t in notice.affected],
        "",
        "## Measures taken",
        *([f"- {md_text(t)}" for t in notice.measures] or ["- none recorded yet"]),
        "",
        "## Contact",
        f"- {md_text(notice.contact)}",
        "",
        "## Still to be confirmed",
        *[f"- {md_text(t)}" for t in notice.to_confirm],
        "",
    ]
    return "\n".join(lines)
