"""Network flow logs into the timeline's ``flows`` table: AWS VPC, Azure NSG / VNet and GCP VPC flow logs.

:func:`detect_flow_log` recognises a flow-log file from its first bytes (the events normalizer leaves those files
alone); :func:`ingest_flows` maps them in DuckDB SQL with the same accounting as ``events``: records in =
flows + exact duplicates + quarantined, per file, a bad record quarantined with its file, position and reason.
"""

from cloudir.timeline.flows.ingest import FlowStats, detect_flow_log, ingest_flows

__all__ = ["FlowStats", "detect_flow_log", "ingest_flows"]
