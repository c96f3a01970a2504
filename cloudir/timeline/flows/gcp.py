"""GCP VPC Flow Logs: Cloud Logging entries of ``compute.googleapis.com/vpc_flows`` (pages or JSON Lines).

One entry is one sampled, aggregated connection as seen by the ``reporter`` (``SRC`` or ``DEST``): the flow's
instance, network and direction are those of the reporting side.
"""

from __future__ import annotations

CLOUD = "gcp"
NAME = "gcp_vpc_flow"
DETECT_MARKERS = ("vpc_flows",)

_SIDE = '{"project_id":"VARCHAR","region":"VARCHAR","zone":"VARCHAR","vm_name":"VARCHAR"}'
_VPC = '{"project_id":"VARCHAR","vpc_name":"VARCHAR","subnetwork_name":"VARCHAR"}'
ENTRY_SPEC = (
    '{"logName":"VARCHAR","insertId":"VARCHAR","timestamp":"VARCHAR",'
    '"resource":{"labels":{"project_id":"VARCHAR","location":"VARCHAR","subnetwork_name":"VARCHAR"}},'
    '"jsonPayload":{"connection":{"src_ip":"VARCHAR","dest_ip":"VARCHAR","src_port":"VARCHAR",'
    '"dest_port":"VARCHAR","protocol":"VARCHAR"},"bytes_sent":"VARCHAR","packets_sent":"VARCHAR",'
    '"start_time":"VARCHAR","end_time":"VARCHAR","reporter":"VARCHAR",'
    f'"src_instance":{_SIDE},"dest_instance":{_SIDE},"src_vpc":{_VPC},"dest_vpc":{_VPC}}}}}'
)


def entries_sql(documents: str) -> str:
    """One row per log entry: file_no, position, e (struct), raw, from (file_no, doc_row, doc) ``documents``."""
    return f"""
    SELECT file_no, row_number() OVER (PARTITION BY file_no ORDER BY doc_i, e_i) - 1 AS position,
           json_transform(entry, '{ENTRY_SPEC}') AS e, entry::VARCHAR AS raw
    FROM (
        SELECT file_no, doc_i, unnest(entries) AS entry, generate_subscripts(entries, 1) AS e_i
        FROM (SELECT file_no, row_number() OVER (PARTITION BY file_no ORDER BY doc_row) AS doc_i,
                     coalesce(json_extract(doc, '$.entries[*]'), [doc]) AS entries FROM ({documents}))
    )
    """


def columns() -> dict[str, str]:
    """The flows columns as SQL over the entry struct ``e``."""
    p = "e.jsonPayload"
    src = f"{p}.reporter = 'SRC'"
    side = f"CASE WHEN {src} THEN {p}.src_instance ELSE {p}.dest_instance END"
    vpc = f"CASE WHEN {src} THEN {p}.src_vpc ELSE {p}.dest_vpc END"
    return {
        "time": f"utc_ts({p}.start_time)",
        "end_time": f"utc_ts({p}.end_time)",
        "cloud": f"'{CLOUD}'",
        "source_format": f"'{NAME}'",
        "account": f"coalesce(({side}).project_id, e.resource.labels.project_id)",
        "region": f"coalesce(({side}).region, e.resource.labels.location)",
        "network": f"({vpc}).vpc_name",
        "subnet": f"coalesce(({vpc}).subnetwork_name, e.resource.labels.subnetwork_name)",
        "interface": "NULL::VARCHAR",
        "instance": f"({side}).vm_name",
        "src_addr": f"{p}.connection.src_ip",
        "dst_addr": f"{p}.connection.dest_ip",
        "src_port": f"try_cast({p}.connection.src_port AS INTEGER)",
        "dst_port": f"try_cast({p}.connection.dest_port AS INTEGER)",
        "protocol": f"try_cast({p}.connection.protocol AS INTEGER)",
        "packets": f"try_cast({p}.packets_sent AS BIGINT)",
        "bytes": f"try_cast({p}.bytes_sent AS BIGINT)",
        "reply_packets": "NULL::BIGINT",
        "reply_bytes": "NULL::BIGINT",
        "action": "'ACCEPT'",
        "direction": f"CASE {p}.reporter WHEN 'SRC' THEN 'egress' WHEN 'DEST' THEN 'ingress' END",
        "flow_state": "NULL::VARCHAR",
        "log_status": "NULL::VARCHAR",
    }


def problem() -> str:
    """SQL naming an entry that is not a VPC flow record (NULL when it is one)."""
    return "CASE WHEN e.jsonPayload.connection IS NULL THEN 'log entry without a VPC flow connection' END"
