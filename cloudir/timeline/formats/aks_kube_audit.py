"""AKS ``kube-audit`` / ``kube-audit-admin`` diagnostic records: the audit event is JSON text in ``properties.log``."""

import json

from cloudir.timeline.formats import k8s_audit

NAME = "aks_kube_audit"
CLOUD = "azure"
DETECT = (
    "list_contains(keys, 'category') AND rec ->> 'category' IN ('kube-audit', 'kube-audit-admin') "
    "AND json_exists(rec, '$.properties.log')"
)

FIELDS = {"time": "VARCHAR", "resourceId": "VARCHAR", "properties": {"log": "VARCHAR"}}

_EVENT = f"(json_transform(p.properties.log, '{json.dumps(k8s_audit.FIELDS, separators=(',', ':'))}'))"

COLUMNS = {
    **k8s_audit.columns(_EVENT),
    "time": f"utc_ts(coalesce({_EVENT}.requestReceivedTimestamp, p.time))",
    "account": "regexp_extract(p.resourceId, '(?i)/subscriptions/([^/]+)', 1)",
    "resources": f"list_filter(list_concat({k8s_audit.columns(_EVENT)['resources']}, [p.resourceId]), "
    "lambda r: r IS NOT NULL)",
}
