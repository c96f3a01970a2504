"""One self-contained HTML report: inline CSS, JS and SVG, no external URL, every value escaped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import Any

from cloudir import __version__
from cloudir.report.data import ActivityChart, ReportData

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#1d232a}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #d8dee4;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;width:100%;margin:.5em 0}th,td{border:1px solid #d8dee4;padding:4px 6px;
text-align:left;vertical-align:top}th{background:#f3f5f7}td.num{text-align:right}code{font-size:.9em;
word-break:break-all}.ok{color:#116329;font-weight:bold}.bad{color:#b3261e;font-weight:bold}
.sev-critical{background:#fde2e1}.sev-high{background:#feecd6}.sev-medium{background:#fff7d1}
.muted{color:#5c6670}.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #d8dee4;
border-radius:6px;padding:.6em 1em;min-width:10em}.card b{display:block;font-size:1.4em}
svg text{font:11px system-ui,sans-serif}code.wide{display:inline-block;min-width:16em}
details{margin:.3em 0}input{padding:3px 6px;width:20em}
"""
_JS = """
document.querySelectorAll('input[data-filter]').forEach(function (box) {
  var table = document.getElementById(box.getAttribute('data-filter'));
  if (!table) { return; }
  box.addEventListener('input', function () {
    var needle = box.value.toLowerCase();
    table.querySelectorAll('tbody tr').forEach(function (row) {
      row.style.display = row.textContent.toLowerCase().indexOf(needle) === -1 ? 'none' : '';
    });
  });
});
document.body.setAttribute('data-ready', 'true');
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _e(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return escape(f"{value:%Y-%m-%d %H:%M:%S}Z")
    if isinstance(value, list | tuple):
        return escape(", ".join(map(str, value)))
    return escape(str(value), quote=True)


def _long_text(text: str, limit: int = 300) -> str:
    """Escaped text; beyond ``limit`` characters the rest folds into a <details> element."""
    if len(text) <= limit:
        return _e(text)
    return f"{_e(text[:limit])}<details><summary>more</summary>{_e(text[limit:])}</details>"


def _response_status(record: dict[str, Any] | None) -> str:
    if record is None:
        return "-"
    status = str(record["action"]).removeprefix("response.")
    return "in progress" if status == "started" else status


def _table(table_id: str, headers: list[str], rows: list[list[str]], *, filterable: bool = False) -> str:
    """Cells are already-escaped HTML."""
    if not rows:
        return '<p class="muted">none</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    box = f'<input type="search" placeholder="filter" data-filter="{table_id}">' if filterable else ""
    return f'{box}<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _chart_svg(chart: ActivityChart) -> str:
    left, top, row_h, width = 260, 20, 26, 900
    height = top + row_h * len(chart.actors) + 40
    span = max(chart.end - chart.start, 1.0)

    def x(epoch: float) -> float:
        return left + (epoch - chart.start) / span * (width - left - 20)

    rows = {actor: index for index, actor in enumerate(chart.actors)}
    peak = max((c[2] for c in chart.cells), default=1)
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="activity by actor over time">']
    for actor, index in rows.items():
        y = top + index * row_h + row_h / 2
        label = actor if len(actor) <= 40 else "…" + actor[-39:]
        parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y}" y2="{y}" stroke="#eef1f4"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end"><title>{_e(actor)}</title>{_e(label)}</text>')
    for actor, bucket, count, responder in chart.cells:
        y = top + rows[actor] * row_h + row_h / 2
        radius = 2 + 8 * (count / peak) ** 0.5
        colour = "#8a96a3" if responder else "#2f6fb3"
        parts.append(
            f'<circle cx="{x(bucket + chart.bucket_seconds / 2):.1f}" cy="{y}" r="{radius:.1f}" fill="{colour}" '
            f'fill-opacity="0.7"><title>{_e(actor)}: {count} events</title></circle>'
        )
    for actor, epoch, score, title in chart.marks:
        y = top + rows[actor] * row_h + row_h / 2
        cx = x(epoch)
        parts.append(
            f'<path d="M{cx:.1f} {y - 9} l6 9 l-6 9 l-6 -9 z" fill="#c62828" stroke="#fff">'
            f"<title>finding (score {score}): {_e(title)}</title></path>"
        )
    axis_y = top + row_h * len(chart.actors) + 14
    for tick, anchor in enumerate(("start", "middle", "middle", "middle", "end")):
        epoch = chart.start + span * tick / 4
        label = datetime.fromtimestamp(epoch, UTC).strftime("%m-%d %H:%M")
        parts.append(f'<text x="{x(epoch):.1f}" y="{axis_y}" text-anchor="{anchor}">{label}</text>')
    parts.append(
        f'<text x="{left}" y="{axis_y + 16}" class="muted">blue: events (area ~ count), grey: cloudir\'s own calls, '
        "red diamond: finding</text></svg>"
    )
    return "".join(parts)


def render_html(data: ReportData, summary: dict[str, Any]) -> str:
    """The full report page."""
    verify = data.verification
    verdict = (
        f'<span class="ok">VERIFIED</span>: {verify.records} custody records chained, '
        f"{verify.artifacts_checked} artifacts match; head <code>{_e(verify.head)}</code>"
        if verify.ok
        else '<span class="bad">BROKEN</span>: ' + "<br>".join(_e(p) for p in verify.problems)
    )
    warnings = "".join(f"<li>{_e(w)}</li>" for w in verify.warnings)
    detected = summary["detected"]
    cards = [
        ("timeline events", data.events if data.events is not None else "no timeline"),
        ("findings", len(data.findings)),
        ("incidents", len(data.incidents)),
        ("evidence artifacts", len(data.evidence)),
        ("cloud API calls by cloudir", data.api_call_count),
        ("containment", summary["actions_taken"]["containment"]),
    ]
    triggers = _table(
        "triggers",
        ["finding", "source", "type", "severity", "activity time", "target", "response"],
        [
            [
                f"<code>{_e(t['finding_id'])}</code>",
                _e(t["source"]),
                _e(t["finding_type"]),
                _e(t["severity"]),
                _e(t["time"]),
                f"{_e(t['target']['kind'])} <code>{_e(t['target']['value'])}</code>",
                _e(_response_status(data.responses.get(t["finding_id"]))),
            ]
            for t in data.triggers
        ],
    )
    findings = _table(
        "findings",
        ["score", "severity", "title", "actor", "first seen", "explanation", "MITRE", "events", "analyzer"],
        [
            [
                f'<span class="sev-{_e(f["severity"])}">{_e(f["score"])}</span>',
                _e(f["severity"]),
                _e(f["title"]),
                f"<code class='wide'>{_e(f['actor'])}</code>",
                _e(f["first_time"]),
                _long_text(str(f["explanation"])),
                _e(f["mitre"]),
                _e(f["event_count"]),
                _e(f"{f['analyzer']}/{f['rule']}"),
            ]
            for f in data.findings[:25]
        ],
        filterable=True,
    )
    incidents = _table(
        "incidents",
        ["incident", "score", "severity", "identity", "first", "last", "findings", "analyzers", "title"],
        [
            [
                f"<code>{_e(i['incident_id'])}</code>",
                _e(i["score"]),
                _e(i["severity"]),
                f"<code class='wide'>{_e(i['identity'])}</code>",
                _e(i["first_time"]),
                _e(i["last_time"]),
                _e(i["finding_count"]),
                _e(i["analyzers"]),
                _e(i["title"]),
            ]
            for i in data.incidents
        ],
    )
    evidence = _table(
        "evidence",
        ["path", "SHA-256", "bytes", "custody record"],
        [
            [f"<code>{_e(a['path'])}</code>", f"<code>{_e(a['sha256'])}</code>", _e(a["size"]), _e(a["seq"])]
            for a in data.evidence
        ],
        filterable=True,
    )
    coverage = (
        "".join(
            f"<h3>{_e(source)}</h3><pre>{_e(json.dumps(content, indent=2, sort_keys=True, default=str))}</pre>"
            for source, content in data.coverage.items()
        )
        or '<p class="muted">no log coverage report in this case (logs/*/coverage.json)</p>'
    )
    actions = _table(
        "actions",
        ["#", "time", "action", "target", "outcome", "API calls", "artifacts", "error"],
        [
            [
                _e(r["seq"]),
                _e(r["time"]),
                _e(r["action"]),
                f"<code>{_e(r['target'])}</code>",
                _e(r["outcome"]),
                _e(", ".join(f"{c['service']}:{c['operation']}" for c in r["api_calls"])),
                _e(len(r["artifacts"])),
                _e(r["error"]),
            ]
            for r in data.actions
        ],
        filterable=True,
    )
    chart = _chart_svg(data.chart) if data.chart and data.chart.actors else '<p class="muted">no timeline events</p>'
    span = f"{_e(data.event_range[0])} to {_e(data.event_range[1])}" if data.event_range else "no events"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cloudir report: case {_e(data.meta.get("case_id"))}</title><style>{_CSS}</style></head>
<body>
<h1>Investigation report: case {_e(data.meta.get("case_id"))}</h1>
<p class="muted">{_e(data.meta.get("description"))} &middot; created {_e(data.meta.get("created"))}
&middot; generated {generated} by cloudir {_e(__version__)}</p>
<h2 id="summary">Summary</h2>
<div class="cards">{"".join(f"<div class='card'><b>{_e(v)}</b>{_e(k)}</div>" for k, v in cards)}</div>
<p>First detection: {_e(detected["first_detection"] or "unknown")}; earliest suspicious activity in the logs:
{_e(detected["earliest_suspicious_activity"] or "none found")}. Timeline covers {span}.</p>
<p>Chain of custody: {verdict}</p>{f"<ul>{warnings}</ul>" if warnings else ""}
<h2 id="triggers">Triggers</h2>{triggers}
<h2 id="chart">Activity by actor</h2>{chart}
<h2 id="findings">Top findings</h2>{findings}
<h2 id="incidents">Incidents</h2>{incidents}
<h2 id="evidence">Evidence</h2>{evidence}
<h2 id="coverage">Log coverage</h2>{coverage}
<h2 id="actions">What cloudir did</h2>{actions}
<script>{_JS}</script>
</body></html>
"""
