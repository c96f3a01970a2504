"""Beaconing: an implant calling its operator on a period, from the API side and from the network side.

API side: per channel (identity + user-agent family) in the incident window, calls less than 2 s apart are one
beat; the intervals must be whole multiples of the median period within 15 % (missed beats allowed), many of
them over a long span (a burst of automation is not beaconing), and the channel must not be periodic in the
baseline.

Network side (table ``flows``): per (workload, external destination address, port, protocol) over the whole
flow-log span, RITA-style components, each 0..1, explain the score: interval regularity (Bowley skew and median
absolute deviation of the inter-arrival times of new connections), connection count over the span, size
regularity (the same on bytes out per beat) and persistence across days. The workload's peer group
(:func:`build_instance_peers`) then raises the score when no peer ever contacted the destination's
network and few workloads of the estate did, and lowers it when the destination is common to the group. No
baseline is needed: a beacon running from the first day of logs is compared with its peers, not its past.
"""

from __future__ import annotations

import duckdb

from cloudir.analyze.base import MAX_EVENT_IDS, AnalyzerMeta, table_exists

META = AnalyzerMeta(
    name="beaconing",
    description=(
        "API: per identity + user-agent family in the incident window, calls < 2 s apart are one beat; at least "
        "24 intervals over at least 2 h, 70 % of them whole multiples of the median period within 15 %, not "
        "periodic in the baseline. Flows: per workload -> external destination:port, new connections scored on "
        "Bowley skew and MAD of inter-arrival times, connections over the span, size regularity and days present; "
        "raised when no peer (same Auto Scaling group / MIG / VMSS, template or image, subnet) and few workloads "
        "of the estate contact that network, lowered when the peer group does."
    ),
    mitre=("T1071", "T1029"),
    default_weight=0.8,
)

MIN_BEATS = 10
MIN_API_INTERVALS = 24
MIN_API_SPAN_SECONDS = 2 * 3600
"""A burst of automation (a deployment calling every 15 s for ten minutes) is regular but not a beacon."""
JITTER = 0.15
MAX_MISSED_PER_BEAT = 1.0
"""A channel is periodic only if at least half of the expected beats are present (missed <= observed intervals):
a few calls scattered over days fit almost any period with thousands of "missed" beats."""

CONNECTION_GAP_SECONDS = 120
"""Records of one source port less than this apart are one connection (flow logs cut long ones per interval)."""
BEAT_MERGE_SECONDS = 2
TIME_RESOLUTION_SECONDS = 1
"""Flow-log times are whole seconds: interval quartiles a second apart (a beacon without jitter, 965.4 s apart, is
seen 965 or 966 s apart) are no evidence of skew, so the Bowley skew counts only what exceeds this."""
MIN_FLOW_BEATS = 12
MIN_PERIOD_SECONDS = 10
MAX_PERIOD_SECONDS = 6 * 3600
MIN_STRENGTH = 0.6
"""Below this beacon strength (before peer and estate factors) a channel is not a candidate."""
SERIES_BUCKET = "1 hour"
SMALL_ESTATE = 10  # workloads: in fewer, a destination several of them contact is not "common in the estate"
"""Bucket of the per-destination connection series shown in the report."""

PRIVATE_ADDRESS = (
    r"^(10\.|127\.|169\.254\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|100\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\.)"
    r"|^168\.63\.129\.16$|^(f[cd][0-9a-f]{2}|fe80):|^::1?$"
)
"""RFC 1918, loopback, link-local (the AWS / GCP / Azure metadata, DNS and time services), Azure's platform address
168.63.129.16 (DNS, DHCP, health probes), CGNAT and IPv6 ULA / link-local: never an external destination."""


def _api_beacon_sql(source: str) -> str:
    """Candidates from a relation ``source`` with columns key, identity, actor, event_id, time, size, in_incident."""
    return f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids)
        WITH src AS ({source}),
        gaps AS (
            SELECT *, epoch(time) - epoch(lag(time) OVER (PARTITION BY key, in_incident ORDER BY time)) AS gap
            FROM src
        ),
        beats AS (SELECT * FROM gaps WHERE gap IS NULL OR gap > 2),
        deltas AS (
            SELECT key, in_incident, size, time,
                   epoch(time) - epoch(lag(time) OVER (PARTITION BY key, in_incident ORDER BY time)) AS d
            FROM beats
        ),
        periods AS (
            SELECT key, in_incident, median(d) AS period, count(d) AS n,
                   coalesce(stddev_pop(size) / nullif(avg(size), 0), 0) AS size_cv,
                   epoch(max(time)) - epoch(min(time)) AS span
            FROM deltas WHERE d IS NOT NULL GROUP BY ALL HAVING count(d) >= {MIN_BEATS}
        ),
        regularity AS (
            SELECT key, in_incident, any_value(period) AS period, any_value(n) AS n, any_value(size_cv) AS size_cv,
                   any_value(span) AS span,
                   avg(CASE WHEN abs(d / period - greatest(round(d / period), 1)) / greatest(round(d / period), 1)
                            <= {JITTER} THEN 1.0 ELSE 0.0 END) AS regular,
                   sum(greatest(round(d / period), 1)) - count(*) AS missed
            FROM deltas JOIN periods USING (key, in_incident)
            WHERE d IS NOT NULL AND period BETWEEN 10 AND 21600
            GROUP BY ALL
        ),
        known AS (SELECT key FROM regularity WHERE NOT in_incident AND regular >= 0.6),
        beacons AS (
            SELECT * FROM regularity
            WHERE in_incident AND regular >= 0.7 AND missed <= {MAX_MISSED_PER_BEAT} * n
              AND n >= {MIN_API_INTERVALS} AND span >= {MIN_API_SPAN_SECONDS} AND key NOT IN (SELECT key FROM known)
        ),
        events AS (  -- only for the channels that make a finding: a list per channel of every event is memory
            SELECT key, min(actor) AS actor, min(identity) AS identity, min(time) AS t0,
                   max(time) AS t1, list(event_id ORDER BY time, event_id) AS ids
            FROM src SEMI JOIN beacons USING (key) WHERE in_incident GROUP BY key
        )
        SELECT 'beaconing', 'api-beacon',
               least(95, 100 * (regular - 0.5) * 2 * CASE WHEN size_cv <= 0.2 THEN 1.0 ELSE 0.8 END),
               e.actor, e.identity, NULL, e.t0, e.t1,
               'Periodic activity every ' || CAST(round(period) AS BIGINT) || ' s: ' || r.key,
               round(100 * regular) || '% of ' || n || ' intervals are whole multiples of '
                   || CAST(round(period) AS BIGINT)
                   || ' s (within {int(JITTER * 100)} %) over ' || round(span / 3600, 1) || ' h, '
                   || CAST(missed AS BIGINT) || ' missed beats; '
                   || 'size variation ' || round(100 * size_cv) || '%; this channel was not periodic in the baseline',
               ['T1071', 'T1029'], e.ids[1:{MAX_EVENT_IDS}]
        FROM beacons r JOIN events e USING (key)
    """


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Insert candidates for periodic API channels and, when the timeline has flows, beaconing destinations."""
    con.execute(
        _api_beacon_sql(
            "SELECT identity || ' via ' || ua_family AS key, identity, "
            "actor, event_id, time, 1.0 AS size, in_incident FROM ev WHERE NOT aws_service"
        )
    )
    if table_exists(con, "flows"):
        score_flows(con)


def build_instance_peers(con: duckdb.DuckDBPyConnection) -> None:
    """``flow_workloads`` (flows with the owning workload), ``workload_attrs`` and ``instance_peers``.

    A flow's workload is its instance id, else the inventory's instance owning its interface or local private
    address, else the interface, else the local address. Two workloads are peers when they share an Auto Scaling
    group, a launch template, an image, a subnet with the same security groups, or the set of ports they serve.
    """
    inventory = table_exists(con, "instances")
    by_interface = (
        "SELECT interface, any_value(instance) AS instance "
        "FROM (SELECT unnest(interfaces) AS interface, instance FROM instances) GROUP BY 1"
        if inventory
        else "SELECT NULL::VARCHAR AS interface, NULL::VARCHAR AS instance"
    )
    by_address = (
        "SELECT address, network, any_value(instance) AS instance "
        "FROM (SELECT unnest(addresses) AS address, network, instance FROM instances) GROUP BY ALL"
        if inventory
        else "SELECT NULL::VARCHAR AS address, NULL::VARCHAR AS network, NULL::VARCHAR AS instance"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE inv_interface AS {by_interface}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE inv_address AS {by_address}")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW flow_workloads AS
        SELECT f.*, coalesce(f.instance, ii.instance, ia.instance, f.interface, f.local_addr) AS workload
        FROM (SELECT *, CASE WHEN direction = 'ingress'
                                  OR (direction IS NULL AND NOT regexp_matches(lower(src_addr), '{PRIVATE_ADDRESS}'))
                             THEN dst_addr ELSE src_addr END AS local_addr
              FROM flows WHERE coalesce(log_status, 'OK') = 'OK') f
        LEFT JOIN inv_interface ii ON ii.interface = f.interface AND f.instance IS NULL
        LEFT JOIN inv_address ia ON ia.address = f.local_addr AND f.instance IS NULL AND f.interface IS NULL
             AND ia.network IS NOT DISTINCT FROM f.network
        """
    )
    inventory_attrs = (
        "SELECT instance AS workload, group_name, template, image, subnet, "
        "array_to_string(list_sort(security_groups), ',') AS sg_key FROM instances"
        if inventory
        else "SELECT NULL::VARCHAR AS workload, NULL::VARCHAR AS group_name, NULL::VARCHAR AS template, "
        "NULL::VARCHAR AS image, NULL::VARCHAR AS subnet, NULL::VARCHAR AS sg_key"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE workload_attrs AS
        WITH seen AS (
            SELECT workload, any_value(subnet) AS subnet,
                   list_sort(list_distinct(list(dst_port) FILTER (WHERE direction = 'ingress'
                       OR (direction IS NULL AND local_addr = dst_addr)))) AS served
            FROM flow_workloads WHERE action = 'ACCEPT' GROUP BY workload
        ),
        inv AS ({inventory_attrs})
        SELECT s.workload, i.group_name, i.template, i.image, coalesce(i.subnet, s.subnet) AS subnet, i.sg_key,
               CASE WHEN len(s.served) BETWEEN 1 AND 20 THEN array_to_string(s.served, ',') END AS served
        FROM seen s LEFT JOIN inv i USING (workload)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE instance_peers AS
        SELECT a.workload, b.workload AS peer,
               CASE WHEN a.group_name = b.group_name THEN 'group ' || a.group_name
                    WHEN a.template = b.template THEN 'launch template'
                    WHEN a.image = b.image THEN 'image'
                    WHEN a.subnet = b.subnet AND a.sg_key = b.sg_key THEN 'subnet and security groups'
                    ELSE 'ports served' END AS basis
        FROM workload_attrs a JOIN workload_attrs b ON a.workload <> b.workload
         AND (a.group_name = b.group_name OR a.template = b.template OR a.image = b.image
              OR (a.subnet = b.subnet AND a.sg_key = b.sg_key) OR (a.subnet = b.subnet AND a.served = b.served))
        """
    )


_EVENT_PRINCIPALS = """
    list_filter([
        e.raw -> 'claims' ->> 'http://schemas.microsoft.com/identity/claims/objectidentifier',
        e.raw -> 'claims' ->> 'appid', e.raw -> 'claims' ->> 'xms_mirid',
        e.raw -> 'identity' -> 'claims' ->> 'http://schemas.microsoft.com/identity/claims/objectidentifier',
        e.raw -> 'identity' -> 'claims' ->> 'appid', e.raw -> 'identity' -> 'claims' ->> 'xms_mirid',
        e.raw ->> 'servicePrincipalId', e.raw ->> 'appId',
        e.raw -> 'properties' ->> 'servicePrincipalId', e.raw -> 'properties' ->> 'appId'
    ] || coalesce(json_extract_string(e.raw, '$.protoPayload.authenticationInfo.serviceAccountDelegationInfo[*]'
                                              || '.firstPartyPrincipal.principalEmail'), []), lambda k: k IS NOT NULL)
"""
"""What else an Azure or GCP record says about who called, beside its actor: Activity Log claims (object id, client
id, the managed identity's resource id ``xms_mirid``), a sign-in's service principal and app ids, and the GCP
service accounts that delegated to the caller (a token of the instance's account used to impersonate another)."""


def build_principal_events(con: duckdb.DuckDBPyConnection) -> None:
    """``instance_principals`` (each Azure / GCP instance's identities, with how many instances hold each) and
    ``principal_events`` (the Azure / GCP events of the beacons' span, one row per identity they name)."""
    identities = table_exists(con, "instances") and bool(
        _scalar(
            con,
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'instances' AND column_name = 'identities'",
        )
    )
    held = (
        "SELECT DISTINCT cloud, instance AS workload, unnest(identities) AS principal, addresses FROM instances"
        if identities
        else "SELECT NULL::VARCHAR AS cloud, NULL::VARCHAR AS workload, NULL::VARCHAR AS principal, "
        "NULL::VARCHAR[] AS addresses"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE instance_principals AS
        SELECT *, count(DISTINCT workload) OVER (PARTITION BY principal) AS shared FROM ({held})
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE principal_events AS
        WITH span AS (SELECT min(first_time) - INTERVAL 1 HOUR AS lo, max(last_time) + INTERVAL 1 HOUR AS hi
                      FROM beacon_stats),
        keys AS (SELECT DISTINCT principal FROM instance_principals),
        named AS (
            SELECT ev.event_uid, ev.identity, ev.operation, ev.time, ev.source_ip, lower(ev.actor) AS principal
            FROM ev, span WHERE ev.cloud IN ('azure', 'gcp') AND ev.time BETWEEN span.lo AND span.hi
            UNION ALL
            SELECT ev.event_uid, ev.identity, ev.operation, ev.time, ev.source_ip, lower(unnest({_EVENT_PRINCIPALS}))
            FROM ev JOIN events e USING (event_uid), span
            WHERE ev.cloud IN ('azure', 'gcp') AND ev.time BETWEEN span.lo AND span.hi
              AND coalesce(ev.actor_type, '') <> 'User'
        )
        SELECT DISTINCT * FROM named SEMI JOIN keys USING (principal)
        """
    )


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def score_flows(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``network_beacons`` (one row per scored channel, with its hourly series) and flow candidates."""
    build_instance_peers(con)
    con.execute(
        rf"""
        CREATE OR REPLACE TEMP TABLE egress AS
        SELECT f.workload, f.dst_addr, f.dst_port, f.protocol, f.src_port, f.time,
               coalesce(f.end_time, f.time) AS end_time, coalesce(f.bytes, 0) AS bytes,
               CASE WHEN contains(f.dst_addr, ':') THEN regexp_extract(f.dst_addr, '^([^:]*:[^:]*:[^:]*)', 1) || '::/48'
                    ELSE regexp_extract(f.dst_addr, '^(\d+\.\d+\.\d+)\.', 1) || '.0/24' END AS dst_net
        FROM flow_workloads f
        WHERE f.action = 'ACCEPT' AND coalesce(f.log_status, 'OK') = 'OK'
          AND NOT regexp_matches(lower(f.dst_addr), '{PRIVATE_ADDRESS}')
          AND (f.direction = 'egress' OR (f.direction IS NULL AND f.local_addr = f.src_addr))
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE beats AS
        WITH marked AS (
            SELECT *, CASE WHEN time > lag(end_time) OVER w + INTERVAL {CONNECTION_GAP_SECONDS} SECOND
                                OR lag(end_time) OVER w IS NULL THEN 1 ELSE 0 END AS new_connection
            FROM egress
            WINDOW w AS (PARTITION BY workload, dst_addr, dst_port, protocol, src_port ORDER BY time, end_time, bytes)
        ),
        -- the running sums count tied rows together (RANGE, not ROWS): the same numbering in any order of ties
        connections AS (
            SELECT workload, dst_addr, dst_port, protocol, any_value(dst_net) AS dst_net, min(time) AS time,
                   sum(bytes) AS bytes
            FROM (SELECT *, sum(new_connection) OVER (PARTITION BY workload, dst_addr, dst_port, protocol, src_port
                                                      ORDER BY time, end_time, bytes) AS connection
                  FROM marked)
            GROUP BY workload, dst_addr, dst_port, protocol, src_port, connection
        ),
        starts AS (
            SELECT *, CASE WHEN epoch(time) - epoch(lag(time) OVER c) <= {BEAT_MERGE_SECONDS} THEN 0 ELSE 1 END AS b
            FROM connections
            WINDOW c AS (PARTITION BY workload, dst_addr, dst_port, protocol ORDER BY time)
        )
        SELECT workload, dst_addr, dst_port, protocol, any_value(dst_net) AS dst_net, min(time) AS time,
               sum(bytes) AS bytes, count(*) AS connections
        FROM (SELECT *, sum(b) OVER (PARTITION BY workload, dst_addr, dst_port, protocol ORDER BY time) AS beat
              FROM starts)
        GROUP BY workload, dst_addr, dst_port, protocol, beat
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE beacon_stats AS
        WITH deltas AS (
            SELECT *, epoch(time) - epoch(lag(time) OVER (PARTITION BY workload, dst_addr, dst_port, protocol
                                                         ORDER BY time)) AS d
            FROM beats
            WHERE (workload, dst_addr, dst_port, protocol) IN (
                SELECT (workload, dst_addr, dst_port, protocol) FROM beats
                GROUP BY ALL HAVING count(*) >= {MIN_FLOW_BEATS}
            )
        ),
        q AS (
            SELECT workload, dst_addr, dst_port, protocol, any_value(dst_net) AS dst_net, count(*) AS n_beats,
                   sum(connections) AS n_connections, min(time) AS first_time, max(time) AS last_time,
                   sum(bytes) AS bytes_out, count(DISTINCT CAST(time AS DATE)) AS days,
                   quantile_cont(d, [0.25, 0.5, 0.75]) AS dq, quantile_cont(bytes, [0.25, 0.5, 0.75]) AS bq
            FROM deltas GROUP BY ALL
        ),
        mad AS (
            SELECT d.workload, d.dst_addr, d.dst_port, d.protocol,
                   median(abs(d.d - q.dq[2])) AS d_mad, median(abs(d.bytes - q.bq[2])) AS b_mad
            FROM deltas d JOIN q USING (workload, dst_addr, dst_port, protocol) GROUP BY ALL
        ),
        workload_days AS (
            SELECT workload, count(DISTINCT CAST(time AS DATE)) AS observed_days
            FROM flow_workloads WHERE workload IN (SELECT workload FROM q) GROUP BY workload
        ),
        scored AS (
            SELECT q.*, m.d_mad, m.b_mad, wd.observed_days, q.dq[2] AS period,
                   1 - least(1, coalesce(greatest(0, abs(q.dq[1] + q.dq[3] - 2 * q.dq[2]) - {TIME_RESOLUTION_SECONDS})
                                         / nullif(q.dq[3] - q.dq[1], 0), 0)) AS interval_skew_score,
                   greatest(0, 1 - m.d_mad / nullif(q.dq[2], 0)) AS interval_mad_score,
                   least(1, (q.n_beats - 1) * q.dq[2] / nullif(epoch(q.last_time) - epoch(q.first_time), 0))
                       AS count_score,
                   1 - least(1, abs(coalesce((q.bq[1] + q.bq[3] - 2 * q.bq[2]) / nullif(q.bq[3] - q.bq[1], 0), 0)))
                       AS size_skew_score,
                   CASE WHEN q.bq[2] = 0 THEN 1 ELSE greatest(0, 1 - m.b_mad / q.bq[2]) END AS size_mad_score,
                   least(1, q.days / greatest(wd.observed_days, 1)) AS persistence_score
            FROM q JOIN mad m USING (workload, dst_addr, dst_port, protocol) JOIN workload_days wd USING (workload)
            WHERE q.dq[2] BETWEEN {MIN_PERIOD_SECONDS} AND {MAX_PERIOD_SECONDS}
        )
        SELECT *,
               (interval_skew_score + interval_mad_score) / 2
               * (0.5 + 0.5 * (0.4 * count_score + 0.15 * size_skew_score + 0.15 * size_mad_score
                               + 0.3 * persistence_score)) AS strength
        FROM scored
        """
    )
    build_principal_events(con)
    con.execute(
        f"""
        CREATE OR REPLACE TABLE network_beacons AS
        WITH estate AS (
            SELECT dst_net, dst_port, count(DISTINCT workload) AS workloads FROM egress GROUP BY ALL
        ),
        contacted AS (SELECT DISTINCT workload, dst_net, dst_port FROM egress),
        peer_seen AS (
            SELECT s.workload, s.dst_net, s.dst_port, count(DISTINCT p.peer) AS peers_contacted
            FROM beacon_stats s JOIN instance_peers p ON p.workload = s.workload
            JOIN contacted c ON c.workload = p.peer AND c.dst_net = s.dst_net AND c.dst_port = s.dst_port
            GROUP BY ALL
        ),
        sizes AS (SELECT workload, count(*) AS n_peers, string_agg(DISTINCT basis, ', ' ORDER BY basis) AS peer_basis
                  FROM instance_peers GROUP BY workload),
        total AS (SELECT count(*) AS n FROM workload_attrs),
        windows AS (SELECT workload, min(first_time) AS t0, max(last_time) AS t1 FROM beacon_stats GROUP BY ALL),
        api AS (
            SELECT w.workload, ev.identity, ev.operation, count(*) AS n, 'credentials' AS kind, 1 AS shared,
                   0 AS from_instance
            FROM windows w
            JOIN ev ON regexp_extract(ev.actor, ':assumed-role/[^/]+/([^/]+)$', 1) = w.workload
                   AND ev.time BETWEEN w.t0 - INTERVAL 1 HOUR AND w.t1 + INTERVAL 1 HOUR
            GROUP BY ALL
            UNION ALL
            SELECT w.workload, k.identity, k.operation, count(DISTINCT k.event_uid) AS n,
                   CASE p.cloud WHEN 'azure' THEN 'managed identity' ELSE 'service account' END AS kind,
                   max(p.shared) AS shared,
                   count(DISTINCT k.event_uid) FILTER (WHERE list_contains(p.addresses, k.source_ip)) AS from_instance
            FROM windows w JOIN instance_principals p USING (workload)
            JOIN principal_events k ON k.principal = p.principal
                 AND k.time BETWEEN w.t0 - INTERVAL 1 HOUR AND w.t1 + INTERVAL 1 HOUR
            GROUP BY ALL
        ),
        credentials AS (  -- the busiest identity and operation (of equal counts, the one sorting last)
            SELECT workload, top.identity, api_calls, top.kind AS credential_kind, top.shared AS shared_by,
                   calls_from_instance, top_operations
            FROM (SELECT workload, arg_max({{'identity': identity, 'kind': kind, 'shared': shared}},
                                           (n, identity, operation, kind, shared)) AS top,
                         sum(n) AS api_calls, sum(from_instance) AS calls_from_instance,
                         array_to_string(list(operation || ' ' || n ORDER BY n DESC, operation)[1:5], ', ')
                             AS top_operations
                  FROM api GROUP BY workload)
        )
        SELECT s.*, coalesce(ps.peers_contacted, 0) AS peers_contacted, coalesce(z.n_peers, 0) AS n_peers,
               z.peer_basis, e.workloads AS estate_workloads, t.n AS estate_total,
               CASE WHEN coalesce(z.n_peers, 0) = 0 THEN 1.0
                    ELSE 1.15 - 0.9 * coalesce(ps.peers_contacted, 0) / z.n_peers END AS peer_factor,
               CASE WHEN e.workloads <= 1 THEN 1.1 WHEN t.n < {SMALL_ESTATE} THEN 1.0
                    WHEN e.workloads / t.n <= 0.02 THEN 1.0 WHEN e.workloads / t.n <= 0.1 THEN 0.8
                    ELSE 0.4 END AS estate_factor,
               c.identity, c.api_calls, c.top_operations, c.credential_kind, c.shared_by, c.calls_from_instance,
               (SELECT list({{'hour': h, 'connections': n}} ORDER BY h) FROM (
                    SELECT time_bucket(INTERVAL '{SERIES_BUCKET}', b.time) AS h, sum(b.connections) AS n FROM beats b
                    WHERE b.workload = s.workload AND b.dst_addr = s.dst_addr AND b.dst_port = s.dst_port
                      AND b.protocol = s.protocol GROUP BY 1)) AS series
        FROM beacon_stats s
        LEFT JOIN peer_seen ps USING (workload, dst_net, dst_port)
        LEFT JOIN sizes z USING (workload)
        JOIN estate e USING (dst_net, dst_port)
        CROSS JOIN total t
        LEFT JOIN credentials c USING (workload)
        WHERE s.strength >= {MIN_STRENGTH}
        """
    )
    con.execute(
        """
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids, op_key)
        SELECT 'beaconing', 'flow-beacon', least(95, 100 * strength * peer_factor * estate_factor),
               workload, coalesce(identity, workload), workload, first_time, last_time,
               'Beacon every ' || CAST(round(period) AS BIGINT) || ' s: ' || workload || ' -> ' || dst_addr || ':'
                   || dst_port,
               workload || ' opened ' || n_connections || ' connections to ' || dst_addr || ':' || dst_port
                   || CASE protocol WHEN 6 THEN '/tcp' WHEN 17 THEN '/udp' ELSE '/' || protocol END
                   || ' about every ' || CAST(round(period) AS BIGINT) || ' s (jitter ±'
                   || CAST(round(100 * d_mad / period) AS INTEGER) || ' %, interval skew '
                   || coalesce(round((dq[1] + dq[3] - 2 * dq[2]) / nullif(dq[3] - dq[1], 0), 2), 0)
                   || ') on ' || days || ' of '
                   || observed_days || ' days, ' || CAST(first_time AS VARCHAR) || ' .. '
                   || CAST(last_time AS VARCHAR) || '; ' || bytes_out || ' bytes out (median '
                   || CAST(round(bq[2]) AS BIGINT) || ' per beat); '
                   || CASE WHEN n_peers = 0 THEN 'no peer workloads'
                           ELSE peers_contacted || ' of ' || n_peers || ' peers (' || coalesce(peer_basis, '-')
                                || ') ever contacted '
                                || dst_net END
                   || ', ' || estate_workloads || ' of ' || estate_total || ' workloads in the estate did'
                   || CASE WHEN api_calls IS NULL THEN '; no API activity seen with this workload''s credentials'
                           WHEN credential_kind = 'credentials'
                               THEN '; API activity with its credentials (' || identity || '): ' || api_calls
                                    || ' calls, e.g. ' || top_operations
                           ELSE '; API activity made by the instance''s ' || credential_kind || ' (' || identity || ', '
                                || CASE WHEN shared_by > 1
                                        THEN 'shared by ' || shared_by
                                             || ' instances: not proof that this one made the calls'
                                        ELSE 'attached to no other instance' END
                                || '): ' || api_calls || ' calls, e.g. ' || top_operations || '; '
                                || calls_from_instance || ' of them from this instance''s known addresses' END
                   || '. Components: intervals ' || round(interval_skew_score, 2) || '/' || round(interval_mad_score, 2)
                   || ', count ' || round(count_score, 2) || ', size ' || round(size_skew_score, 2) || '/'
                   || round(size_mad_score, 2) || ', persistence ' || round(persistence_score, 2) || ', peers x'
                   || round(peer_factor, 2) || ', estate x' || round(estate_factor, 2),
               ['T1071', 'T1029'], [], 'flow:' || dst_addr || ':' || dst_port || '/' || protocol
        FROM network_beacons
        """
    )
