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
    targets = sorted({str(r["target"]) for r in data.records if r["action"].endswith(".start") and r["target"]})
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
    return {
        "case_id": data.meta.get("case_id"),
        "case_created": data.meta.get("created"),
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
    lines = [
        f"# Incident summary: case {_md(summary['case_id'])}",
        "",
        "## When detected",
        f"- first detection (finding received): {_md(detected['first_detection'] or 'unknown')}",
        f"- earliest suspicious activity in the logs: {_md(detected['earliest_suspicious_activity'] or 'none found')}",
    ]
    lines += [
        f"- {_md(d['source'])} finding `{_md(d['finding_id'])}` ({_md(d['finding_type'])}, {_md(d['severity'])}): "
        f"activity at {_md(d['activity_time'])}, received {_md(d['received_by_cloudir'] or '-')}, "
        f"response {_md(d['response_status'])}"
        for d in detected["detections"]
    ]
    lines += ["", "## What is affected"]
    lines += [f"- resource `{_md(r)}`" for r in affected["resources"]] or ["- no resource resolved"]
    lines += [f"- identity `{_md(i)}`" for i in affected["identities"]]
    lines += [
        f"- incident {_md(i['incident_id'])} ({_md(i['severity'])}, score {i['score']}): {_md(i['title'])}"
        for i in affected["incidents"]
    ]
    lines += [
        "",
        "## What was done",
        f"- containment: {actions['containment']}",
        f"- {actions['api_calls']} cloud API calls, each recorded in the custody log",
    ]
    lines += [f"- done: {_md(step)}" for step in actions["steps_done"]]
    verdict = "verified" if evidence["custody_verified"] else "BROKEN: " + "; ".join(evidence["verification_problems"])
    lines += [
        "",
        "## Evidence",
        f"- {evidence['artifacts']} artifacts, {evidence['bytes']} bytes, SHA-256 recorded in custody",
        f"- custody log: {evidence['custody_records']} records, head `{evidence['custody_head']}`, {_md(verdict)}",
        "- timeline events: {}; findings: {}".format(
            evidence["timeline_events"] if evidence["timeline_events"] is not None else "none", evidence["findings"]
        ),
        "",
    ]
    return "\n".join(lines)


def _md(value: Any) -> str:
    """Neutralise Markdown/HTML control characters in attacker-controlled text."""
    text = str(value).replace("\n", " ").replace("\r", " ")
    for char in "\\`*_[]<>|#":
        text = text.replace(char, "\\" + char)
    return text
