"""Azure NSG flow logs (version 1 and 2) and VNet flow logs, as written to ``PT1H.json`` blobs.

NSG: ``records[].properties.flows[].flows[].flowTuples[]``, tuples
``unix seconds,src,dst,sport,dport,T|U,I|O,A|D`` (version 2 adds ``,B|C|E,packets,bytes,packets,bytes`` for
both directions). VNet: ``records[].flowRecords.flows[].flowGroups[].flowTuples[]``, tuples
``unix milliseconds,src,dst,sport,dport,protocol number,I|O,B|C|E|D,X|NX,packets,bytes,packets,bytes``.
"""

from __future__ import annotations

CLOUD = "azure"
NSG = "azure_nsg_flow"
VNET = "azure_vnet_flow"
DETECT_MARKERS = ("NetworkSecurityGroupFlowEvent", "FlowLogFlowEvent")

RECORD_SPEC = (
    '{"time":"VARCHAR","category":"VARCHAR","resourceId":"VARCHAR","macAddress":"VARCHAR",'
    '"flowLogVersion":"VARCHAR","targetResourceID":"VARCHAR",'
    '"properties":{"Version":"VARCHAR","flows":[{"rule":"VARCHAR","flows":[{"mac":"VARCHAR",'
    '"flowTuples":["VARCHAR"]}]}]},'
    '"flowRecords":{"flows":[{"aclID":"VARCHAR","flowGroups":[{"rule":"VARCHAR","flowTuples":["VARCHAR"]}]}]}}'
)
"""What ``json_transform`` keeps of a record: both layouts, the other one's fields NULL."""


def tuples_sql(documents: str) -> str:
    """One row per tuple: file_no, position, fmt, network, interface, tuple, from (file_no, doc) ``documents``."""
    return f"""
    WITH recs AS (
        SELECT file_no, doc_i, r_i, json_transform(rec, '{RECORD_SPEC}') AS r
        FROM (
            SELECT file_no, doc_i, unnest(recs) AS rec, generate_subscripts(recs, 1) AS r_i
            FROM (SELECT file_no, row_number() OVER (PARTITION BY file_no ORDER BY doc_row) AS doc_i,
                         coalesce(json_extract(doc, '$.records[*]'), [doc]) AS recs FROM ({documents}))
        )
    ),
    nsg AS (
        SELECT file_no, doc_i, r_i, f_i, g_i, '{NSG}' AS fmt, r.resourceId AS network, g.mac AS interface,
               unnest(g.flowTuples) AS tuple, generate_subscripts(g.flowTuples, 1) AS t_i
        FROM (
            SELECT file_no, doc_i, r_i, r, f_i, unnest(f.flows) AS g, generate_subscripts(f.flows, 1) AS g_i
            FROM (SELECT file_no, doc_i, r_i, r, unnest(r.properties.flows) AS f,
                         generate_subscripts(r.properties.flows, 1) AS f_i FROM recs
                  WHERE r.category = 'NetworkSecurityGroupFlowEvent')
        )
    ),
    vnet AS (
        SELECT file_no, doc_i, r_i, f_i, g_i, '{VNET}' AS fmt, r.targetResourceID AS network,
               r.macAddress AS interface, unnest(g.flowTuples) AS tuple, generate_subscripts(g.flowTuples, 1) AS t_i
        FROM (
            SELECT file_no, doc_i, r_i, r, f_i, unnest(f.flowGroups) AS g, generate_subscripts(f.flowGroups, 1) AS g_i
            FROM (SELECT file_no, doc_i, r_i, r, unnest(r.flowRecords.flows) AS f,
                         generate_subscripts(r.flowRecords.flows, 1) AS f_i FROM recs
                  WHERE r.category = 'FlowLogFlowEvent')
        )
    )
    SELECT file_no, row_number() OVER (PARTITION BY file_no ORDER BY doc_i, r_i, f_i, g_i, t_i) - 1 AS position,
           fmt, network, interface, tuple, string_split(tuple, ',') AS t
    FROM (SELECT * FROM nsg UNION ALL SELECT * FROM vnet)
    """


def columns() -> dict[str, str]:
    """The flows columns as SQL over ``fmt``, ``network``, ``interface`` and the split tuple ``t``."""
    vnet = f"fmt = '{VNET}'"
    state = f"CASE WHEN {vnet} THEN t[8] ELSE nullif(t[9], '') END"
    return {
        "time": f"CASE WHEN {vnet} THEN make_timestamp(try_cast(t[1] AS BIGINT) * 1000) "
        "ELSE make_timestamp(try_cast(t[1] AS BIGINT) * 1000000) END",
        "end_time": "NULL::TIMESTAMP",
        "cloud": f"'{CLOUD}'",
        "source_format": "fmt",
        "account": r"nullif(regexp_extract(network, '(?i)/subscriptions/([^/]+)', 1), '')",
        "region": "NULL::VARCHAR",
        "network": "network",
        "subnet": "NULL::VARCHAR",
        "interface": "interface",
        "instance": "NULL::VARCHAR",
        "src_addr": "nullif(t[2], '')",
        "dst_addr": "nullif(t[3], '')",
        "src_port": "try_cast(t[4] AS INTEGER)",
        "dst_port": "try_cast(t[5] AS INTEGER)",
        "protocol": "CASE t[6] WHEN 'T' THEN 6 WHEN 'U' THEN 17 ELSE try_cast(t[6] AS INTEGER) END",
        "packets": "try_cast(t[10] AS BIGINT)",
        "bytes": "try_cast(t[11] AS BIGINT)",
        "reply_packets": "try_cast(t[12] AS BIGINT)",
        "reply_bytes": "try_cast(t[13] AS BIGINT)",
        "action": f"CASE WHEN {vnet} THEN CASE WHEN t[8] = 'D' THEN 'REJECT' ELSE 'ACCEPT' END "
        "WHEN t[8] = 'A' THEN 'ACCEPT' WHEN t[8] = 'D' THEN 'REJECT' END",
        "direction": "CASE t[7] WHEN 'I' THEN 'ingress' WHEN 'O' THEN 'egress' END",
        "flow_state": state,
        "log_status": "NULL::VARCHAR",
    }


def problem() -> str:
    """SQL naming a malformed tuple (NULL when it has a usable shape)."""
    return (
        f"CASE WHEN fmt = '{NSG}' AND len(t) NOT IN (8, 13) THEN 'NSG flow tuple with ' || len(t) || ' fields' "
        f"WHEN fmt = '{VNET}' AND len(t) <> 13 THEN 'VNet flow tuple with ' || len(t) || ' fields' END"
    )
