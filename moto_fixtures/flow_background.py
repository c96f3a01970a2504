"""Synthetic AWS VPC flow logs for a fleet, from documented behaviour, with planted beacons (in DuckDB SQL).

Shared by the flow tests, the demo and ``benchmarks/flow_benchmark.py``. Written without looking at any
detector output; every behaviour below is what AWS and common agents document:

* web tiers (three Auto Scaling groups, 40 % of the fleet) receive HTTPS from their load balancer's nodes
  (one new connection per 2 minutes per instance, kept alive in between); ``web-a`` calls a payment API
  about 10 times an hour at random;
* every instance runs the SSM agent (a health ping every 5 minutes to one of the region's SSM addresses),
  asks the VPC resolver (``10.0.0.2:53``) about 6 times an hour and the Amazon Time Sync Service
  (``169.254.169.123``) every 1,024 s, and runs ``apt`` twice a day at random times against the mirrors;
  web instances run the CloudWatch agent (metrics every 60 s);
* web, batch and worker instances read S3 at random times (about 4 an hour), workers poll SQS (about 20 an hour);
* batch Auto Scaling groups (20 %) run cron jobs against partner APIs: ``batch-etl`` every hour on the hour
  plus up to 90 s of start-up, ``batch-reports`` every 15 minutes plus up to 30 s;
* singletons (15 %, no group, own image): a bastion receiving SSH, build servers fetching from GitHub during
  working hours, and two metric exporters polling a SaaS status API every 5 minutes;
* planted beacons: periods log-uniform in 30 s .. 1 h, jitter 0-50 % of the period on each sleep, 5 % of beats
  missed, a third running from the first day, each on one instance (a third on one member of a web Auto
  Scaling group), to an address no one else uses.

Each connection is one record per direction, in the default (version 2) format: ``start`` is the first packet,
``end`` the end of the aggregation window (60 s or 600 s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

ACCOUNT = "111122223333"
REGION = "eu-west-1"
VPC = "vpc-0b0b0b0b0b0b0b0b0"
HEADER = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
)
T0 = datetime(2026, 11, 15, tzinfo=UTC)


@dataclass(frozen=True)
class Fleet:
    """What to generate."""

    instances: int = 300
    days: int = 14
    beacons: int = 30
    window: int = 600  # flow-log aggregation interval, 60 or 600 s
    seed: int = 1
    start: datetime = T0


_MACROS = """
CREATE OR REPLACE TEMP MACRO rnd(a, b) AS ((hash(a, b, {seed}) % 1000003) / 1000003.0);
"""

_INSTANCES = """
CREATE OR REPLACE TEMP TABLE gen_instances AS
SELECT idx, kind, grp, subnet,
       printf('i-%017x', 1000 + idx) AS instance_id, printf('eni-%017x', 5000 + idx) AS eni,
       '10.0.' || subnet || '.' || (10 + idx % 200) AS addr,
       CASE WHEN grp IS NULL THEN printf('ami-%017x', 900 + idx) ELSE 'ami-0' || md5(grp)[1:16] END AS image,
       CASE WHEN grp IS NULL THEN NULL ELSE 'lt-0' || md5(grp || 'lt')[1:16] END AS template,
       CASE WHEN grp IS NULL THEN 'sg-0' || md5(idx::VARCHAR)[1:16] ELSE 'sg-0' || md5(grp || 'sg')[1:16] END AS sg
FROM (
    SELECT idx, kind,
           CASE kind WHEN 'web' THEN 'web-' || chr(CAST(97 + idx % 3 AS INTEGER)) WHEN 'batch' THEN
                CASE WHEN idx % 2 = 0 THEN 'batch-etl' ELSE 'batch-reports' END
                WHEN 'worker' THEN 'workers-' || (idx % 2) END AS grp,
           CASE kind WHEN 'web' THEN 10 + idx % 3 WHEN 'batch' THEN 20 WHEN 'worker' THEN 30 ELSE 40 END AS subnet
    FROM (SELECT range AS idx, range / $n AS f FROM range($n)) s,
         LATERAL (SELECT CASE WHEN f < 0.40 THEN 'web' WHEN f < 0.60 THEN 'batch' WHEN f < 0.85 THEN 'worker'
                              ELSE 'single' END AS kind)
)
"""

# One row per connection: the instance, when, the remote side, ports, protocol and bytes each way.
_CONNECTIONS = r"""
CREATE OR REPLACE TEMP TABLE gen_connections AS
WITH i AS (SELECT * FROM gen_instances),
singles AS (SELECT *, row_number() OVER (ORDER BY idx) - 1 AS k FROM i WHERE kind = 'single'),
periodic AS (  -- every `period` s from a per-instance phase, with a little timer noise
    SELECT i.idx, s.name,
           $t0 + rnd(i.idx, s.name) * s.period + n * s.period + rnd(i.idx * 7 + n, s.name) * s.noise AS t,
           s.remote, s.rport, s.proto, s.out_b, s.in_b, false AS inbound, s.rotate, n
    FROM i JOIN (VALUES
        ('ssm', 300, 2, '52.95.', 443, 6, 1200, 2400, 4, 'all'),
        ('cloudwatch', 60, 2, '52.94.', 443, 6, 3000, 400, 4, 'web'),
        ('ntp', 1024, 1, '169.254.169.123', 123, 17, 76, 76, 0, 'all')
    ) s(name, period, noise, remote, rport, proto, out_b, in_b, rotate, who) ON s.who = 'all' OR s.who = i.kind
    CROSS JOIN range(CAST($days * 86400 / s.period AS BIGINT)) r(n)
),
random_calls AS (  -- Poisson-like: `per_hour` calls at uniform random times
    SELECT i.idx, s.name, $t0 + rnd(i.idx * 100003 + n, s.name) * $days * 86400 AS t, s.remote, s.rport, s.proto,
           s.out_b, s.in_b, s.inbound, s.rotate, n
    FROM i JOIN (VALUES
        ('dns', 6, '10.0.0.2', 53, 17, 80, 160, false, 0, 'all'),
        ('s3', 4, '52.218.', 443, 6, 2000, 60000, false, 3, 'web'),
        ('s3', 4, '52.218.', 443, 6, 2000, 60000, false, 3, 'batch'),
        ('s3', 4, '52.218.', 443, 6, 2000, 60000, false, 3, 'worker'),
        ('sqs', 20, '52.119.', 443, 6, 900, 1800, false, 2, 'worker'),
        ('payment', 10, '198.51.100.20', 443, 6, 1500, 900, false, 0, 'web-a')
    ) s(name, per_hour, remote, rport, proto, out_b, in_b, inbound, rotate, who)
      ON s.who = i.kind OR s.who = i.grp OR s.who = 'all'
    CROSS JOIN range(CAST($days * 24 * s.per_hour AS BIGINT)) r(n)
),
apt AS (
    SELECT idx, 'apt' AS name, $t0 + d * 86400 + rnd(idx * 31 + d * 2 + h, 'apt') * 43200 + h * 43200 AS t,
           '91.189.91.8' || (1 + (idx + d) % 3) AS remote, 80 AS rport, 6 AS proto, 4000 AS out_b,
           2000000 AS in_b, false AS inbound, 0 AS rotate, d AS n
    FROM i CROSS JOIN range($days) a(d) CROSS JOIN range(2) b(h)
),
lb AS (  -- load balancer nodes open a connection to each web instance about every 2 minutes
    SELECT idx, 'lb' AS name, $t0 + n * 120 + rnd(idx * 1000003 + n, 'lb') * 120 AS t,
           '10.0.' || (200 + subnet) || '.' || (10 + n % 3) AS remote, 443 AS rport, 6 AS proto, 20000 AS out_b,
           4000 AS in_b, true AS inbound, 0 AS rotate, n
    FROM i CROSS JOIN range(CAST($days * 720 AS BIGINT)) r(n) WHERE kind = 'web'
),
cron AS (
    SELECT i.idx, 'cron' AS name, $t0 + n * c.period + rnd(i.idx * 7919 + n, 'cron') * c.startup AS t,
           c.remote, 443 AS rport, 6 AS proto, 8000 AS out_b, 300000 AS in_b, false AS inbound, 0 AS rotate, n
    FROM i JOIN (VALUES ('batch-etl', 3600, 90, '203.0.113.10'), ('batch-reports', 900, 30, '203.0.113.20'))
        c(grp, period, startup, remote) USING (grp)
    CROSS JOIN range(CAST($days * 86400 / c.period AS BIGINT)) r(n)
),
single_jobs AS (
    SELECT idx, 'bastion' AS name, $t0 + rnd(idx * 17 + n, 'ssh') * $days * 86400 AS t,
           '198.18.0.' || (5 + n % 3) AS remote, 22 AS rport, 6 AS proto, 50000 AS out_b, 8000 AS in_b,
           true AS inbound, 0 AS rotate, n
    FROM singles CROSS JOIN range($days * 3) r(n) WHERE k = 0
    UNION ALL
    SELECT idx, 'build', $t0 + (n // 10) * 3600 + rnd(idx * 13 + n, 'gh') * 3600, '140.82.121.4', 443, 6, 3000,
           900000, false, 0, n
    FROM singles CROSS JOIN range($days * 24 * 10) r(n) WHERE k BETWEEN 1 AND 3 AND (n // 10) % 24 BETWEEN 8 AND 18
    UNION ALL
    SELECT idx, 'exporter', $t0 + rnd(idx, 'exp') * 300 + n * 300 + rnd(idx * 3 + n, 'exp') * 3, '192.0.2.20' || k,
           443, 6, 700, 1500, false, 0, n
    FROM singles CROSS JOIN range($days * 288) r(n) WHERE k IN (4, 5)
),
all_calls AS (
    SELECT * FROM periodic UNION ALL SELECT * FROM random_calls UNION ALL SELECT * FROM apt
    UNION ALL SELECT * FROM lb UNION ALL SELECT * FROM cron UNION ALL SELECT * FROM single_jobs
)
SELECT c.idx, c.t, CASE WHEN c.rotate > 0 THEN c.remote || (10 + (c.n + c.idx) % c.rotate) || '.'
                         || (20 + (c.n * 7 + c.idx) % 200) ELSE c.remote END AS remote,
       c.rport, c.proto, c.inbound,
       CAST(c.out_b * (0.5 + rnd(c.idx * 3 + c.n, c.name || 'b')) AS BIGINT) AS out_b,
       CAST(c.in_b * (0.5 + rnd(c.idx * 5 + c.n, c.name || 'c')) AS BIGINT) AS in_b,
       NULL::INTEGER AS beacon
FROM all_calls c WHERE c.t < $t0 + $days * 86400
"""

_BEACONS = """
CREATE OR REPLACE TEMP TABLE gen_beacons AS
WITH b AS (
    SELECT range AS beacon,
           30 * pow(120, rnd(range, 'period')) AS period,
           [0.0, 0.1, 0.2, 0.3, 0.4, 0.5][1 + range % 6] AS jitter,
           CASE WHEN range % 3 = 0 THEN 0 ELSE floor(rnd(range, 'day') * ($days - 2)) END AS start_day,
           CASE range % 3 WHEN 0 THEN 'web' WHEN 1 THEN 'batch' ELSE 'any' END AS host_kind,
           CASE WHEN range % 7 = 3 THEN 53 WHEN range % 5 = 1 THEN 8080 ELSE 443 END AS rport,
           CASE WHEN range % 7 = 3 THEN 17 ELSE 6 END AS proto
    FROM range($beacons)
),
hosts AS (
    SELECT b.*, (SELECT arg_min(i.idx, hash(i.idx, b.beacon, $seed)) FROM gen_instances i
                 WHERE b.host_kind = 'any' OR i.kind = b.host_kind) AS idx
    FROM b
)
SELECT h.*, i.instance_id, '45.' || (10 + h.beacon) || '.' || (h.beacon * 37 % 250) || '.' || (7 + h.beacon % 200)
       AS remote
FROM hosts h JOIN gen_instances i USING (idx)
"""

_BEACON_CONNECTIONS = """
INSERT INTO gen_connections
WITH sleeps AS (
    SELECT b.beacon, b.idx, b.remote, b.rport, b.proto, n,
           b.period * (1 + b.jitter * (2 * rnd(b.beacon * 1000003 + n, 'j') - 1)) AS d,
           $t0 + b.start_day * 86400 + rnd(b.beacon, 'phase') * 3600 AS t_start
    FROM gen_beacons b CROSS JOIN range(CAST($days * 86400 / (b.period * 0.5) AS BIGINT)) r(n)
),
beats AS (
    SELECT *, t_start + sum(d) OVER (PARTITION BY beacon ORDER BY n) AS t FROM sleeps
)
SELECT idx, t, remote, rport, proto, false, CAST(420 + 40 * rnd(beacon * 3 + n, 'bo') AS BIGINT),
       CAST(CASE WHEN rnd(beacon * 5 + n, 'task') < 0.03 THEN 40000 ELSE 300 + 60 * rnd(beacon + n, 'bi') END
            AS BIGINT),
       beacon
FROM beats WHERE t < $t0 + $days * 86400 AND rnd(beacon * 11 + n, 'miss') >= 0.05
"""

_RECORDS = """
CREATE OR REPLACE TEMP TABLE gen_records AS
WITH c AS (
    SELECT c.*, i.eni, i.addr, 32768 + CAST(rnd(c.idx * 65537 + c.t, 'port') * 28000 AS INTEGER) AS eport,
           CAST(floor(c.t) AS BIGINT) AS s
    FROM gen_connections c JOIN gen_instances i USING (idx)
),
r AS (  -- the initiator's packets, then the reply
    SELECT eni, s, CASE WHEN inbound THEN remote ELSE addr END AS src, CASE WHEN inbound THEN addr ELSE remote END
           AS dst, eport AS sport, rport AS dport, proto, CASE WHEN inbound THEN in_b ELSE out_b END AS b
    FROM c
    UNION ALL
    SELECT eni, s, CASE WHEN inbound THEN addr ELSE remote END, CASE WHEN inbound THEN remote ELSE addr END,
           rport, eport, proto, CASE WHEN inbound THEN out_b ELSE in_b END
    FROM c
)
SELECT s, '2 ' || $account || ' ' || eni || ' ' || src || ' ' || dst || ' ' || sport || ' ' || dport || ' ' || proto
       || ' ' || greatest(1, b // 1200) || ' ' || b || ' ' || s || ' ' || (s // $window + 1) * $window
       || ' ACCEPT OK' AS line
FROM r
"""


_EXTRA_BEACON = """
INSERT INTO gen_connections
SELECT i.idx, $t0 + 600 + n * $period + $period * $jitter * (2 * rnd(i.idx * 1000003 + n, 'x') - 1), $remote, 443, 6,
       false, CAST(420 + 40 * rnd(i.idx + n, 'xo') AS BIGINT), CAST(300 + 60 * rnd(i.idx + n, 'xi') AS BIGINT), -1
FROM gen_instances i CROSS JOIN range(CAST(($days * 86400 - 1200) / $period AS BIGINT)) r(n)
WHERE list_contains($instances, i.instance_id)
"""


def _run(con: duckdb.DuckDBPyConnection, fleet: Fleet, sql: str, **extra: Any) -> None:
    params: dict[str, Any] = {
        "seed": fleet.seed,
        "n": fleet.instances,
        "days": fleet.days,
        "beacons": fleet.beacons,
        "window": fleet.window,
        "account": ACCOUNT,
        "t0": int(fleet.start.timestamp()),
        **extra,
    }
    con.execute(sql, {name: value for name, value in params.items() if f"${name}" in sql})


def generate(con: duckdb.DuckDBPyConnection, fleet: Fleet) -> None:
    """Create ``gen_instances``, ``gen_beacons``, ``gen_connections`` and ``gen_records`` (one text line each)."""
    _run(con, fleet, _MACROS.format(seed=int(fleet.seed)))
    _run(con, fleet, _INSTANCES)
    _run(con, fleet, _CONNECTIONS)
    _run(con, fleet, _BEACONS)
    if fleet.beacons:
        _run(con, fleet, _BEACON_CONNECTIONS)
    _run(con, fleet, _RECORDS)


def add_beacon(
    con: duckdb.DuckDBPyConnection,
    fleet: Fleet,
    instances: list[str],
    remote: str,
    *,
    period: float,
    jitter: float = 0.1,
) -> None:
    """Plant one more beacon (to ``remote``:443, from 10 minutes in) on each of ``instances``; rebuild the records."""
    _run(con, fleet, _EXTRA_BEACON, instances=instances, remote=remote, period=period, jitter=jitter)
    _run(con, fleet, _RECORDS)


def describe_instances(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The fleet as one DescribeInstances response page."""
    rows = con.execute(
        "SELECT instance_id, eni, addr, subnet, image, template, grp, sg FROM gen_instances ORDER BY idx"
    ).fetchall()
    instances = []
    for instance_id, eni, addr, subnet, image, template, grp, sg in rows:
        tags = [{"Key": "Name", "Value": f"{grp or 'single'}-{instance_id[-4:]}"}]
        if grp:
            tags += [
                {"Key": "aws:autoscaling:groupName", "Value": grp},
                {"Key": "aws:ec2launchtemplate:id", "Value": template},
            ]
        instances.append(
            {
                "InstanceId": instance_id,
                "ImageId": image,
                "VpcId": VPC,
                "SubnetId": f"subnet-{subnet:017x}",
                "PrivateIpAddress": addr,
                "SecurityGroups": [{"GroupId": sg, "GroupName": sg}],
                "Tags": tags,
                "NetworkInterfaces": [
                    {"NetworkInterfaceId": eni, "PrivateIpAddresses": [{"PrivateIpAddress": addr, "Primary": True}]}
                ],
            }
        )
    return {"Reservations": [{"ReservationId": "r-0fleet", "OwnerId": ACCOUNT, "Instances": instances}]}


def write_s3_layout(con: duckdb.DuckDBPyConnection, fleet: Fleet, folder: Path) -> list[Path]:
    """Write the records as S3-delivered text files (one gzip file per day, header first) and the inventory."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances.json").write_text(json.dumps(describe_instances(con)), encoding="utf-8")
    files = []
    t0 = int(fleet.start.timestamp())
    for day in range(fleet.days):
        stamp = datetime.fromtimestamp(t0 + day * 86400, UTC).strftime("%Y%m%dT0000Z")
        target = folder / f"{ACCOUNT}_vpcflowlogs_{REGION}_fl-0bench_{stamp}_{day:04d}.log.gz"
        con.execute(
            f'COPY (SELECT line AS "{HEADER}" FROM gen_records WHERE s >= $lo AND s < $hi ORDER BY s) TO $target '
            "(HEADER, QUOTE '', ESCAPE '', DELIMITER '|', COMPRESSION gzip)",
            {"lo": t0 + day * 86400, "hi": t0 + (day + 1) * 86400, "target": str(target)},
        )
        files.append(target)
    return files
