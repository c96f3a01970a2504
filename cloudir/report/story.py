"""What happened, in words: a narrative and the impact, derived from the timeline with DuckDB SQL.

Every sentence carries the event ids (and custody records) behind it, so the report can link each claim to its
evidence. The suspect activity is what the findings point at: the sessions and actors of findings scored 40 or
more, never the tool's own calls. Nothing here is specific to one case: the operations that read data, share it
with another account or create a principal are listed per cloud below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

SUSPECT_SCORE = 40
MAX_CITED = 25  # event ids cited per sentence (the sentence gives the full count)

# ATT&CK enterprise tactics in kill-chain order, and the tactic each technique of a cloud finding serves first.
TACTICS = (
    "reconnaissance",
    "resource-development",
    "initial-access",
    "execution",
    "persistence",
    "privilege-escalation",
    "defense-evasion",
    "credential-access",
    "discovery",
    "lateral-movement",
    "collection",
    "command-and-control",
    "exfiltration",
    "impact",
)
TECHNIQUE_TACTIC = {
    "T1595": "reconnaissance",
    "T1583": "resource-development",
    "T1078": "initial-access",
    "T1190": "initial-access",
    "T1133": "initial-access",
    "T1199": "initial-access",
    "T1059": "execution",
    "T1651": "execution",
    "T1609": "execution",
    "T1136": "persistence",
    "T1098": "persistence",
    "T1525": "persistence",
    "T1548": "privilege-escalation",
    "T1484": "privilege-escalation",
    "T1562": "defense-evasion",
    "T1070": "defense-evasion",
    "T1535": "defense-evasion",
    "T1578": "defense-evasion",
    "T1550": "defense-evasion",
    "T1552": "credential-access",
    "T1528": "credential-access",
    "T1555": "credential-access",
    "T1110": "credential-access",
    "T1580": "discovery",
    "T1526": "discovery",
    "T1087": "discovery",
    "T1069": "discovery",
    "T1082": "discovery",
    "T1518": "discovery",
    "T1619": "discovery",
    "T1021": "lateral-movement",
    "T1530": "collection",
    "T1119": "collection",
    "T1071": "command-and-control",
    "T1573": "command-and-control",
    "T1571": "command-and-control",
    "T1105": "command-and-control",
    "T1537": "exfiltration",
    "T1567": "exfiltration",
    "T1048": "exfiltration",
    "T1041": "exfiltration",
    "T1485": "impact",
    "T1486": "impact",
    "T1490": "impact",
    "T1496": "impact",
    "T1531": "impact",
}

# Operations that read stored data (objects, blobs, secrets), per cloud.
DATA_READ_OPS = (
    "GetObject",
    "SelectObjectContent",
    "GetSecretValue",
    "DownloadDBLogFilePortion",
    "storage.objects.get",
    "google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
    "GetBlob",
    "Microsoft.KeyVault/vaults/secrets/getSecret/action",
)
# Operations that create a principal or give one credentials or rights (persistence), per cloud.
PRINCIPAL_OPS = (
    "CreateUser",
    "CreateLoginProfile",
    "CreateAccessKey",
    "AttachUserPolicy",
    "PutUserPolicy",
    "AddUserToGroup",
    "CreateRole",
    "AttachRolePolicy",
    "PutRolePolicy",
    "UpdateAssumeRolePolicy",
    "google.iam.admin.v1.CreateServiceAccount",
    "google.iam.admin.v1.CreateServiceAccountKey",
    "Microsoft.Authorization/roleAssignments/write",
    "Add user",
    "Add member to role",
    "Add service principal credentials",
)
# Operations that share a disk image, snapshot or database snapshot with other accounts, and where the
# recipients are in the request (JSON paths into the raw record).
_GCP_MEMBERS = ("$.protoPayload.serviceData.policyDelta.bindingDeltas[*]", "$.protoPayload.request.policy.bindings[*]")
SHARE_RECIPIENTS: dict[str, tuple[str, ...]] = {
    "ModifySnapshotAttribute": ("$.requestParameters.createVolumePermission.add.items[*]",),
    "ModifyImageAttribute": ("$.requestParameters.launchPermission.add.items[*]",),
    "ModifyDBSnapshotAttribute": ("$.requestParameters.valuesToAdd[*]",),
    "ModifyDBClusterSnapshotAttribute": ("$.requestParameters.valuesToAdd[*]",),
    "SetIamPolicy": _GCP_MEMBERS,
    "v1.compute.snapshots.setIamPolicy": _GCP_MEMBERS,
    "v1.compute.images.setIamPolicy": _GCP_MEMBERS,
    "v1.compute.disks.setIamPolicy": _GCP_MEMBERS,
}
# Operations that make a disk or snapshot downloadable by whoever holds a generated URL (no named recipient).
SHARE_BY_URL = ("Microsoft.Compute/snapshots/beginGetAccess/action", "Microsoft.Compute/disks/beginGetAccess/action")


@dataclass
class Sentence:
    """One claim and the events (event ids) and custody records (sequence numbers) behind it."""

    text: str
    events: list[str] = field(default_factory=list)
    records: list[int] = field(default_factory=list)


@dataclass
class Section:
    """A paragraph of the narrative."""

    key: str
    title: str
    sentences: list[Sentence]


@dataclass
class DataRead:
    """Reads of one bucket, container or store by the suspect actors."""

    store: str
    objects: list[str]
    reads: int
    bytes_out: int | None  # None: the logs do not say
    events: list[str]


@dataclass
class ExternalShare:
    """A resource shared with an account outside the ones in the timeline."""

    account: str
    resource: str
    operation: str
    time: datetime
    event_id: str


@dataclass
class Story:
    """The narrative and the impact of a case."""

    sections: list[Section] = field(default_factory=list)
    resources: dict[str, list[str]] = field(default_factory=dict)  # kind -> resource ids
    data_reads: list[DataRead] = field(default_factory=list)
    shares: list[ExternalShare] = field(default_factory=list)
    new_principals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def external_accounts(self) -> list[str]:
        """Accounts outside the organisation that received something."""
        return sorted({share.account for share in self.shares})


def _ts(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}Z" if value else "an unknown time"


def build_story(
    con: duckdb.DuckDBPyConnection | None, tables: set[str], records: list[dict[str, Any]], coverage: dict[str, Any]
) -> Story:
    """The story of a timeline with findings (``records``: the custody log; ``coverage``: per log source)."""
    story = Story()
    if con is not None and {"events", "findings"} <= tables:
        _suspects(con)
        story.sections.append(_initial_access(con))
        story.sections.append(_tactics(con))
        story.data_reads = _data_reads(con)
        story.shares = _shares(con)
        story.new_principals = _new_principals(con)
        story.sections.append(_data_section(story))
        story.sections.append(_persistence_section(story))
        story.resources = _resources(con, story, records)
    story.sections.append(_responder_section(records))
    story.sections.append(_unknown_section(coverage, story))
    return story


def _suspects(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE suspect_events AS
        WITH f AS (
            SELECT actor, session, min(first_time) - INTERVAL 1 HOUR AS t0, max(last_time) + INTERVAL 1 HOUR AS t1
            FROM findings WHERE score >= {SUSPECT_SCORE} AND first_time IS NOT NULL GROUP BY ALL
        )
        SELECT DISTINCT ON (e.event_uid) e.* FROM events e JOIN f
          ON (e.session = f.session OR e.actor = f.actor) AND e.time BETWEEN f.t0 AND f.t1
        WHERE NOT e.is_responder
        """
    )


def _initial_access(con: duckdb.DuckDBPyConnection) -> Section:
    sentences: list[Sentence] = []
    first = con.execute(
        f"""
        SELECT title, first_time, actor, event_ids FROM findings WHERE score >= {SUSPECT_SCORE}
        ORDER BY first_time NULLS LAST, score DESC LIMIT 1
        """
    ).fetchone()
    if first is None:
        sentences.append(Sentence(f"No finding scored {SUSPECT_SCORE} or more: no suspect activity to describe."))
        return Section("access", "Initial access", sentences)
    sentences.append(
        Sentence(f"The earliest suspect activity is at {_ts(first[1])}: {first[0]}.", list(first[3] or [])[:MAX_CITED])
    )
    for actor, sessions, ips, agents, start, end, count, ids in con.execute(
        f"""
        SELECT actor, list_distinct(list(session) FILTER (session IS NOT NULL)),
               list_distinct(list(source_ip) FILTER (source_ip IS NOT NULL)),
               list_distinct(list(user_agent) FILTER (user_agent IS NOT NULL)),
               min(time), max(time), count(*), list(event_id ORDER BY time)[1:{MAX_CITED}]
        FROM suspect_events GROUP BY actor ORDER BY min(time), actor
        """
    ).fetchall():
        creds = f" with credentials {', '.join(sorted(sessions))}" if sessions else ""
        origin = f" from {', '.join(sorted(ips)[:5])}" if ips else ""
        agent = f" (user agents: {'; '.join(sorted(agents)[:3])})" if agents else ""
        sentences.append(
            Sentence(
                f"Identity {actor} acted{creds}{origin}{agent}: {count} events between {_ts(start)} and {_ts(end)}.",
                list(ids or []),
            )
        )
    return Section("access", "Initial access, identities and credentials", sentences)


def _tactics(con: duckdb.DuckDBPyConnection) -> Section:
    rows = con.execute(
        f"""
        SELECT split_part(technique, '.', 1) AS base, technique, title, first_time, event_ids
        FROM (SELECT unnest(mitre) AS technique, title, first_time, event_ids FROM findings
              WHERE score >= {SUSPECT_SCORE})
        ORDER BY first_time, technique
        """
    ).fetchall()
    by_tactic: dict[str, list[Sentence]] = {}
    seen: set[tuple[str, str]] = set()
    for base, technique, title, first_time, event_ids in rows:
        tactic = TECHNIQUE_TACTIC.get(base, "other")
        if (tactic, title) in seen:
            continue
        seen.add((tactic, title))
        by_tactic.setdefault(tactic, []).append(
            Sentence(
                f"{tactic.replace('-', ' ').capitalize()} ({technique}), {_ts(first_time)}: {title}.",
                list(event_ids or [])[:MAX_CITED],
            )
        )
    sentences = [s for tactic in (*TACTICS, "other") for s in by_tactic.get(tactic, [])]
    return Section("tactics", "What they did, in ATT&CK tactic order", sentences)


def _data_reads(con: duckdb.DuckDBPyConnection) -> list[DataRead]:
    rows = con.execute(
        """
        WITH r AS (
            SELECT event_id, time,
                   coalesce(json_extract_string(raw, '$.requestParameters.bucketName'),
                            json_extract_string(raw, '$.requestParameters.secretId'),
                            regexp_extract(resources[1], '^(.*?/(buckets|containers)/[^/]+)', 1),
                            resources[1], service) AS store,
                   coalesce(json_extract_string(raw, '$.requestParameters.key'),
                            regexp_extract(resources[1], '/objects/(.*)$', 1),
                            regexp_extract(resources[1], '/blobs/(.*)$', 1)) AS object,
                   TRY_CAST(json_extract_string(raw, '$.additionalEventData.bytesTransferredOut') AS BIGINT) AS b
            FROM suspect_events WHERE operation IN ? AND coalesce(status, 'success') NOT IN ('failure', 'error')
        )
        SELECT store, list_sort(list_distinct(list(object) FILTER (object IS NOT NULL AND object <> ''))),
               count(*), sum(b), list(event_id ORDER BY time)
        FROM r GROUP BY store ORDER BY count(*) DESC, store
        """,
        [list(DATA_READ_OPS)],
    ).fetchall()
    return [
        DataRead(str(r[0]), list(r[1] or []), int(r[2]), None if r[3] is None else int(r[3]), list(r[4] or []))
        for r in rows
    ]


def _shares(con: duckdb.DuckDBPyConnection) -> list[ExternalShare]:
    shares: list[ExternalShare] = []
    own = {str(r[0]) for r in con.execute("SELECT DISTINCT account FROM events WHERE account IS NOT NULL").fetchall()}
    for operation, paths in SHARE_RECIPIENTS.items():
        for path in paths:
            for event_id, time, resource, recipients in con.execute(
                """
                SELECT event_id, time,
                       coalesce(json_extract_string(raw, '$.requestParameters.snapshotId'),
                                json_extract_string(raw, '$.requestParameters.imageId'),
                                json_extract_string(raw, '$.requestParameters.dBSnapshotIdentifier'),
                                json_extract_string(raw, '$.requestParameters.dBClusterSnapshotIdentifier'),
                                resources[1], '?'),
                       json_extract(raw, ?)
                FROM suspect_events WHERE operation = ? ORDER BY time
                """,
                [path, operation],
            ).fetchall():
                for account in _recipients(recipients):
                    if account not in own:
                        shares.append(ExternalShare(account, str(resource), operation, time, str(event_id)))
    for event_id, time, resource, operation in con.execute(
        "SELECT event_id, time, coalesce(resources[1], '?'), operation FROM suspect_events WHERE operation IN ? "
        "AND coalesce(status, 'success') NOT IN ('failure', 'error') ORDER BY time",
        [list(SHARE_BY_URL)],
    ).fetchall():
        shares.append(ExternalShare("anyone holding the access URL", str(resource), operation, time, str(event_id)))
    return shares


def _recipients(items: list[Any] | None) -> list[str]:
    """Account ids, members (or 'public (all)') named in a share request's recipient items."""
    found: list[str] = []
    for item in items or []:
        if item is None:
            continue
        value = json.loads(str(item))
        if isinstance(value, dict):
            if value.get("action", "ADD") != "ADD":
                continue
            value = value.get("userId") or value.get("group") or value.get("member") or value.get("members") or ""
        for text in map(str, value if isinstance(value, list) else [value]):
            if text:
                public = text.lower() in {"all", "allusers", "allauthenticatedusers"}
                found.append("public (all)" if public else text)
    return found


def _new_principals(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = con.execute(
        """
        WITH p AS (
            SELECT event_id, time, operation,
                   coalesce(json_extract_string(raw, '$.requestParameters.userName'),
                            json_extract_string(raw, '$.requestParameters.roleName'),
                            json_extract_string(raw, '$.requestParameters.accountId'),
                            resources[1], '?') AS principal,
                   coalesce(json_extract_string(raw, '$.requestParameters.policyArn'), '') AS policy,
                   coalesce(json_extract_string(raw, '$.requestParameters.policyDocument'), '') AS document
            FROM suspect_events WHERE operation IN ? AND coalesce(status, 'success') NOT IN ('failure', 'error')
        )
        SELECT principal, list(operation ORDER BY time), min(time),
               bool_or(policy ILIKE '%AdministratorAccess' OR regexp_matches(document, '"Action"\\s*:\\s*"\\*"')
                       OR policy ILIKE '%roles/owner%'),
               bool_or(operation IN ('CreateUser', 'CreateRole', 'google.iam.admin.v1.CreateServiceAccount',
                                     'Add user')),
               list(event_id ORDER BY time)
        FROM p GROUP BY principal ORDER BY min(time), principal
        """,
        [list(PRINCIPAL_OPS)],
    ).fetchall()
    return [
        {
            "principal": r[0],
            "operations": list(r[1] or []),
            "time": r[2],
            "admin": bool(r[3]),
            "created": bool(r[4]),
            "events": list(r[5] or []),
        }
        for r in rows
    ]


def _data_section(story: Story) -> Section:
    sentences: list[Sentence] = []
    for read in story.data_reads:
        names = ", ".join(read.objects[:20]) + (f" and {len(read.objects) - 20} more" if len(read.objects) > 20 else "")
        volume = f", {read.bytes_out} bytes out" if read.bytes_out is not None else ""
        what = f": {names}" if names else ""
        sentences.append(
            Sentence(f"They read {read.reads} times from {read.store}{volume}{what}.", read.events[:MAX_CITED])
        )
    for share in story.shares:
        sentences.append(
            Sentence(
                f"At {_ts(share.time)} they shared {share.resource} with "
                f"{'account ' if share.account[:1].isdigit() else ''}{share.account} "
                f"({share.operation}): a copy can leave the organisation.",
                [share.event_id],
            )
        )
    if not sentences:
        sentences.append(Sentence("The logs show no data read, copied or shared by the suspect identities."))
    return Section("data", "Data read, copied or shared", sentences)


def _persistence_section(story: Story) -> Section:
    sentences = []
    for p in story.new_principals:
        verb = "created" if p["created"] else "changed"
        ops = ", ".join(dict.fromkeys(p["operations"]))
        role = (" - a new administrator" if p["created"] else " - now an administrator") if p["admin"] else ""
        sentences.append(
            Sentence(
                f"At {_ts(p['time'])} they {verb} principal {p['principal']} ({ops}){role}.", p["events"][:MAX_CITED]
            )
        )
    if not sentences:
        sentences.append(Sentence("The logs show no principal, key or role created or changed by them."))
    return Section("persistence", "Persistence created", sentences)


def _resources(con: duckdb.DuckDBPyConnection, story: Story, records: list[dict[str, Any]]) -> dict[str, list[str]]:
    kinds: dict[str, set[str]] = {}
    for record in records:
        action = str(record["action"])
        if action.endswith(".start") and not action.startswith("logs.") and record["target"]:
            kinds.setdefault("instance or disk (acquired)", set()).add(str(record["target"]))
    for read in story.data_reads:
        kinds.setdefault("bucket or store", set()).add(read.store)
        kinds.setdefault("object", set()).update(f"{read.store}/{name}" for name in read.objects)
    for share in story.shares:
        kinds.setdefault("snapshot or image shared", set()).add(share.resource)
    for principal in story.new_principals:
        kinds.setdefault("principal created or changed", set()).add(str(principal["principal"]))
    for (identity,) in con.execute(
        f"SELECT DISTINCT actor FROM findings WHERE score >= {SUSPECT_SCORE} AND actor IS NOT NULL"
    ).fetchall():
        kinds.setdefault("identity used", set()).add(str(identity))
    return {kind: sorted(values) for kind, values in kinds.items()}


def _responder_section(records: list[dict[str, Any]]) -> Section:
    sentences: list[Sentence] = []
    for record in records:
        action, target, seq = record["action"], record["target"], int(record["seq"])
        if action == "acquire.completed":
            sentences.append(Sentence(f"cloudir preserved and acquired {target} at {record['time']}.", records=[seq]))
        elif action == "logs.completed":
            sentences.append(Sentence(f"cloudir collected the logs {target} at {record['time']}.", records=[seq]))
        elif action == "contain.completed":
            sentences.append(Sentence(f"cloudir contained {target} at {record['time']}.", records=[seq]))
        elif action.startswith("playbook:") and record["outcome"] == "ok" and action.endswith((".acquire", ".contain")):
            done = "acquired" if action.endswith(".acquire") else "contained"
            title = record["details"].get("title") or record["details"].get("step")
            sentences.append(Sentence(f"cloudir {done} {target} at {record['time']}: {title}.", records=[seq]))
        elif str(record["details"].get("step", "")).endswith(".awaiting-approval"):
            sentences.append(
                Sentence(f"Containment of {target} waits for approval since {record['time']}.", records=[seq])
            )
        elif record["outcome"] == "failed" and action.endswith((".completed", ".failed")):
            sentences.append(Sentence(f"{action} of {target} failed at {record['time']}.", records=[seq]))
    if not sentences:
        sentences.append(Sentence("cloudir has not acquired, collected or contained anything in this case yet."))
    return Section("response", "What cloudir preserved and contained", sentences)


def _unknown_section(coverage: dict[str, Any], story: Story) -> Section:
    sentences: list[Sentence] = []
    for source, report in sorted(coverage.items()):
        sentences.extend(Sentence(f"Log coverage ({source}): {warning}.") for warning in report.get("warnings", []))
        for item in report.get("sources", []):
            if item.get("status") != "complete":
                reason = f" ({item['stopped_reason']})" if item.get("stopped_reason") else ""
                sentences.append(
                    Sentence(
                        f"{item.get('source')} in {item.get('location')} is {item.get('status')}{reason}: "
                        "activity there may be missing."
                    )
                )
        for name, location in sorted(report.get("locations", {}).items()):
            if isinstance(location, dict) and location.get("data_events") is False:
                sentences.append(Sentence(f"{name} ({source}) logs no data events: object reads there are not seen."))
    if not coverage:
        sentences.append(
            Sentence("No log coverage report in the case: which sources and regions were seen is unknown.")
        )
    if story.data_reads and all(read.bytes_out is None for read in story.data_reads):
        sentences.append(Sentence("The logs do not give the volume of the data read; the bytes taken are unknown."))
    return Section("unknown", "What remains unknown", sentences)
