"""The ``flows`` table: one row per network flow record (AWS VPC, Azure NSG / VNet, GCP VPC flow logs).

Times are UTC. ``time`` is when the flow (or the aggregation interval's first packet) started. ``bytes`` and
``packets`` count the ``src_addr`` -> ``dst_addr`` direction; ``reply_*`` the other one where the log has it
(Azure version 2 and VNet tuples). ``source_position`` is the record's 0-based index among the file's flow
records (lines, tuples or log entries) in file order.
"""

FLOWS_DDL = """
CREATE TABLE IF NOT EXISTS flows (
    flow_uid        UHUGEINT NOT NULL,    -- md5 of the normalized record: exact duplicates share it
    time            TIMESTAMP NOT NULL,   -- flow or aggregation-interval start, UTC
    end_time        TIMESTAMP,
    cloud           VARCHAR NOT NULL,     -- aws | azure | gcp
    source_format   VARCHAR NOT NULL,     -- aws_vpc_flow | azure_nsg_flow | azure_vnet_flow | gcp_vpc_flow
    account         VARCHAR,              -- AWS account / Azure subscription / GCP project
    region          VARCHAR,
    network         VARCHAR,              -- VPC id / NSG or VNet flow-log target resource id / VPC network name
    subnet          VARCHAR,
    interface       VARCHAR,              -- ENI id / NIC MAC address
    instance        VARCHAR,              -- EC2 instance id / VM name (when the log or the metadata says)
    src_addr        VARCHAR,
    dst_addr        VARCHAR,
    src_port        INTEGER,
    dst_port        INTEGER,
    protocol        INTEGER,              -- IANA number (6 TCP, 17 UDP, 1 ICMP)
    packets         BIGINT,
    bytes           BIGINT,
    reply_packets   BIGINT,
    reply_bytes     BIGINT,
    action          VARCHAR,              -- ACCEPT | REJECT
    direction       VARCHAR,              -- ingress | egress, as the log states it (NULL when it does not)
    flow_state      VARCHAR,              -- Azure: B(egin) C(ontinuing) E(nd) D(enied); NULL elsewhere
    log_status      VARCHAR,              -- AWS: OK | NODATA | SKIPDATA
    source_file     VARCHAR NOT NULL,
    source_position BIGINT,
    raw             VARCHAR               -- the original line, tuple or log entry
);
"""

FLOWS_COLUMNS = (
    "time",
    "end_time",
    "cloud",
    "source_format",
    "account",
    "region",
    "network",
    "subnet",
    "interface",
    "instance",
    "src_addr",
    "dst_addr",
    "src_port",
    "dst_port",
    "protocol",
    "packets",
    "bytes",
    "reply_packets",
    "reply_bytes",
    "action",
    "direction",
    "flow_state",
    "log_status",
)
"""The normalized columns every flow format maps (ingest adds uid, source file, position and raw)."""
