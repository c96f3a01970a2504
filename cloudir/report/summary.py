"""The incident summary for notification deadlines: when detected, what is affected, what was done, evidence."""

from __future__ import annotations

import json
from typing import Any

from cloudir.report.data import ReportData


def build_summary(data: ReportData) -> dict[str, Any]:
    """A plain-dict summary (the ``--format json`` output)."""
    received = {r["details"].get("finding_id"): r["time"] for r in data.records if r["action"] == "trigger.received"}
    detections = [
        {
            "finding_id": t["finding_id"],
            "source": t["source"],
            "finding_type": t["finding_type"],
            "severity": t["severity"],
            "activity_time": t["time"],
            "received_by_cloudir": received.get(t["finding_id"]),
            "response_status": data.responses.get(t["finding_id"], {}).get("action", "response.none").split(".", 1)[1],
        }
        for t in data.triggers
    ]
    # what the tool acquired or contained; a log pull's scope is not an affected resource
    targets = sorted(
        {
            str(r["target"])
            for r in data.records
            if r["action"].endswith(".start") and not r["action"].startswith("logs.") and r["target"]
        }
    )
    steps = list(
        dict.fromkeys(
            str(r["details"]["title"]) for r in data.records if r["outcome"] == "ok" and r["details"].get("title")
        )
    )
    contained = [r for r in data.records if ".contain" in r["action"] and r["outcome"] == "ok"]
    awaiting = sorted(
        {
            str(r["details"].get("result", {}).get("finding_id"))
            for r in data.records
            if str(r["details"].get("step", "")).endswith(".awaiting-approval") and r["outcome"] == "ok"
        }
    )
    first_activity = min((f["first_time"] for f in data.findings if f.get("first_time")), default=None)
    evidence = data.evidence
    story = data.story
    return {
        "case_id": data.meta.get("case_id"),
        "case_created": data.meta.get("created"),
        "narrative": [
            {"section": section.key, "title": section.title, "sentences": [s.text for s in section.sentences]}
            for section in story.sections
        ],
        "impact": {
            "resources_by_kind": story.resources,
            "data_reads": [
                {"store": r.store, "reads": r.reads, "objects": r.objects, "bytes_out": r.bytes_out}
                for r in story.data_reads
            ],
            "external_accounts": story.external_accounts,
            "shares": [
                {"account": s.account, "resource": s.resource, "operation": s.operation, "time": s.time}
                for s in story.shares
            ],
        },
        "detected": {
            "first_detection": min((d["received_by_cloudir"] or d["activity_time"] for d in detections), default=None),
            "earliest_suspicious_activity": f"{first_activity:%Y-%m-%dT%H:%M:%SZ}" if first_activity else None,
            "detections": detections,
        },
        "affected": {
            "resources": targets,
            "identities": sorted({str(i["identity"]) for i in data.incidents if i.get("identity")}),
            "incidents": [
                {"incident_id": i["incident_id"], "score": i["score"], "severity": i["severity"], "title": i["title"]}
                for i in data.incidents
            ],
        },
        "actions_taken": {
            "steps_done": steps,
            "containment": "performed" if contained else ("awaiting approval" if awaiting else "not performed"),
            "awaiting_approval": awaiting,
            "api_calls": data.api_call_count,
        },
        "evidence": {
            "artifacts": len(evidence),
            "bytes": sum(int(a["size"]) for a in evidence),
            "custody_records": len(data.records),
            "custody_head": data.verification.head,
            "custody_verified": data.verification.ok,
            "verification_problems": data.verification.problems,
            "timeline_events": data.events,
            "findings": len(data.findings),
        },
    }


def render_summary(summary: dict[str, Any], fmt: str) -> str:
    """The summary as JSON or Markdown."""
    if fmt == "json":
        return json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"
    if fmt != "md":
        raise ValueError(f"unknown summary format {fmt!r}")
    detected, affected = summary["detected"], summary["affected"]
    actions, evidence = summary["actions_taken"], summary["evidence"]
    lines = [f"# Incident summary: case {md_text(summary['case_id'])}", "", "## What happened"]
    for section in summary["narrative"]:
        lines += [f"### {md_text(section['title'])}", *[f"- {md_text(s)}" for s in section["sentences"]]]
    impact = summary["impact"]
    lines += ["", "## Impact"]
    lines += [f"- {md_text(kind)}: {md_text(', '.join(v))}" for kind, v in impact["resources_by_kind"].items()]
    lines += [f"- accounts outside the organisation: {md_text(', '.join(impact['external_accounts']) or 'none seen')}"]
    lines += [
        "",
        "## When detected",
        f"- first detection (finding received): {md_text(detected['first_detection'] or 'unknown')}",
        "- earliest suspicious activity in the logs: "
        + md_text(detected["earliest_suspicious_activity"] or "none found"),
    ]
    lines += [
        f"- {md_text(d['source'])} finding `{md_text(d['finding_id'])}` "
        f"({md_text(d['finding_type'])}, {md_text(d['severity'])}): "
        f"activity at {md_text(d['activity_time'])}, received {md_text(d['received_by_cloudir'] or '-')}, "
        f"response {md_text(d['response_status'])}"
        for d in detected["detections"]
    ]
    lines += ["", "## What is affected"]
    lines += [f"- resource `{md_text(r)}`" for r in affected["resources"]] or ["- no resource resolved"]
    lines += [f"- identity `{md_text(i)}`" for i in affected["identities"]]
    lines += [
        f"- incident {md_text(i['incident_id'])} ({md_text(i['severity'])}, score {i['score']}): {md_text(i['title'])}"
        for i in affected["incidents"]
    ]
    lines += [
        "",
        "## What was done",
        f"- containment: {actions['containment']}",
        f"- {actions['api_calls']} cloud API calls, each recorded in the custody log",
    ]
    lines += [f"- done: {md_text(step)}" for step in actions["steps_done"]]
    verdict = "verified" if evidence["custody_verified"] else "BROKEN: " + "; ".join(evidence["verification_problems"])
    lines += [
        "",
        "## Evidence",
        f"- {evidence['artifacts']} artifacts, {evidence['bytes']} bytes, SHA-256 recorded in custody",
        f"- custody log: {evidence['custody_records']} records, head `{evidence['custody_head']}`, {md_text(verdict)}",
        "- timeline events: {}; findings: {}".format(
            evidence["timeline_events"] if evidence["timeline_events"] is not None else "none", evidence["findings"]
        ),
        "",
    ]
    return "\n".join(lines)


def md_text(value: Any) -> str:
    """Neutralise Markdown/HTML control characters in attacker-controlled text."""
    text = str(value).replace("\n", " ").replace("\r", " ")
    for char in "\\`*_[]<>|#":
        text = text.replace(char, "\\" + char)
    return text
