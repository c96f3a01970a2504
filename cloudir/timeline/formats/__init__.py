"""The format registry: how to find records in a file and how to map each record to ``events``.

Two small layers, each entry a plain SQL fragment (plaso-like, one module per log format):

* :data:`CONTAINERS` unwrap a JSON document into records (CloudTrail ``Records`` files, LookupEvents
  pages, GCP ``entries`` pages, Azure ``value`` pages and diagnostic ``records``, Panther test cases,
  bare arrays). A document matching none of them is itself one record.
* :data:`RECORD_FORMATS` detect a record's log type from its top-level keys and map it to the event
  columns. ``fields`` is the JSON structure handed to ``json_transform`` (the record is parsed once);
  ``columns`` are SQL expressions over that struct ``p`` and the raw record ``rec``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cloudir.timeline.formats import (
    aks_kube_audit,
    azure_activity,
    cloudtrail,
    cloudtrail_csv,
    containers,
    entra_audit,
    entra_signin,
    gcp_audit,
    k8s_audit,
    la_audit_logs,
    la_aws_cloudtrail,
    la_azure_activity,
    la_office_activity,
    la_signin_logs,
    ocsf_api_activity,
    office_activity,
    workspace_activity,
)
from cloudir.timeline.schema import EVENTS_COLUMNS

# Columns ingest fills itself; every record format maps all the others.
INGEST_COLUMNS = frozenset(
    {"event_uid", "cloud", "source_format", "source_file", "source_position", "is_responder", "raw"}
    | {"content_hash", "id_collision", "operation_original"}
)
MAPPED_COLUMNS = tuple(column for column in EVENTS_COLUMNS if column not in INGEST_COLUMNS)


@dataclass(frozen=True)
class Container:
    """A wrapper shape: ``detect`` is SQL over ``keys`` (top-level keys of ``doc``), ``records`` a JSON list."""

    name: str
    detect: str
    records: str


@dataclass(frozen=True)
class RecordFormat:
    """One log record type and its mapping to the event columns."""

    name: str
    cloud: str
    detect: str
    fields: dict[str, Any]
    columns: dict[str, str]
    cloud_sql: str | None = None  # when the cloud depends on the record or its container (``container``)
    # also read in snake case (a cloud SDK's ``as_dict()``), but for the keys inside these dictionaries
    snake_case_keep: tuple[str, ...] | None = None
    not_read: str | None = None  # SQL over ``rec``: why a record of its log family it does not read is quarantined

    @property
    def transform_spec(self) -> str:
        """The ``json_transform`` structure as a JSON literal."""
        return json.dumps(self.fields, separators=(",", ":"))


CONTAINERS: tuple[Container, ...] = tuple(Container(**spec) for spec in containers.CONTAINERS)

RECORD_FORMATS: tuple[RecordFormat, ...] = tuple(
    RecordFormat(
        name=module.NAME,
        cloud=module.CLOUD,
        detect=module.DETECT,
        fields=module.FIELDS,
        columns=module.COLUMNS,
        cloud_sql=getattr(module, "CLOUD_SQL", None),
        snake_case_keep=getattr(module, "SNAKE_CASE_KEEP", None),
        not_read=getattr(module, "NOT_READ", None),
    )
    for module in (
        cloudtrail,
        cloudtrail_csv,
        gcp_audit,
        k8s_audit,
        aks_kube_audit,
        entra_signin,
        entra_audit,
        azure_activity,
        la_audit_logs,
        la_signin_logs,
        la_azure_activity,
        la_aws_cloudtrail,
        la_office_activity,
        office_activity,
        workspace_activity,
        ocsf_api_activity,
    )
)


def _check() -> None:
    for fmt in RECORD_FORMATS:
        missing = set(MAPPED_COLUMNS) - set(fmt.columns)
        if missing:
            raise RuntimeError(f"timeline format {fmt.name} does not map {sorted(missing)}")


_check()
