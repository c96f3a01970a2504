"""Kubernetes audit detections on the three envelopes the timeline reads - a bare audit.k8s.io Event (EKS, any
kube-apiserver), AKS diagnostic ``kube-audit`` records (the Event as text in ``properties.log``) and GKE Cloud Audit
Logs (``io.k8s.*`` methods) - ingested and analyzed through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.analyze.conftest import rules_through_the_cli

TIME = "2026-11-02T10:00:00.000000Z"


def _event(audit_id: str, verb: str, resource: str, user: str, code: int = 201, **extra: Any) -> dict[str, Any]:
    """An audit.k8s.io/v1 Event (stage ResponseComplete)."""
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["198.51.100.20"],
        "objectRef": {"resource": resource, "namespace": "default", "apiVersion": "v1"},
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": TIME,
        "stageTimestamp": TIME,
        **extra,
    }


def _aks(event: dict[str, Any]) -> dict[str, Any]:
    """The Event as AKS diagnostic settings deliver it."""
    cluster = "/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/A1"
    properties = {"log": json.dumps(event), "stream": "stdout"}
    return {"category": "kube-audit", "time": TIME, "properties": properties, "resourceId": cluster}


def _gke(insert_id: str, method: str, caller: str, authentication: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A GKE Kubernetes API call as a Cloud Audit Logs LogEntry."""
    return {
        "insertId": insert_id,
        "logName": "projects/p1/logs/cloudaudit.googleapis.com%2Factivity",
        "timestamp": TIME,
        "resource": {"type": "k8s_cluster", "labels": {"project_id": "p1", "location": "europe-west1"}},
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "k8s.io",
            "methodName": method,
            "authenticationInfo": authentication,
            "requestMetadata": {"callerIp": caller, "callerSuppliedUserAgent": "kubectl/v1.29.1"},
            **extra,
        },
    }


def _caller_ip_upper(entry: dict[str, Any]) -> dict[str, Any]:
    """The LogEntry with ``requestMetadata.callerIP``: the spelling GKE and exported records also use."""
    metadata = entry["protoPayload"]["requestMetadata"]
    metadata["callerIP"] = metadata.pop("callerIp")
    return entry


PLAIN_INGRESS = {"kind": "Ingress", "spec": {"rules": [{"host": "a.example", "http": {"paths": [{"path": "/"}]}}]}}
TLS_INGRESS = {"kind": "Ingress", "spec": {"tls": [{"hosts": ["a.example"], "secretName": "a-tls"}],
                                           "rules": [{"host": "a.example"}]}}  # fmt: skip
ADMIN_BINDING = {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                 "subjects": [{"kind": "User", "name": "mallory@example.com"}]}  # fmt: skip
ANONYMOUS = {"authoritySelector": "system:anonymous"}
RECORDS = [
    _event("ds-user", "create", "daemonsets", "mallory@example.com"),
    _event("ds-controller", "create", "daemonsets", "system:serviceaccount:kube-system:daemon-set-controller"),
    _aks(_event("ingress-plain", "create", "ingresses", "dev@example.com", requestObject=PLAIN_INGRESS)),
    _aks(_event("ingress-tls", "create", "ingresses", "dev@example.com", requestObject=TLS_INGRESS)),
    _event("secret-refused", "get", "secrets", "system:serviceaccount:default:web", code=403,
           responseStatus={"code": 403, "reason": "Forbidden"}),
    _event("secret-read", "get", "secrets", "dev@example.com", code=200),
    _aks(_event("csr-serving", "create", "certificatesigningrequests", "dev@example.com",
                requestObject={"spec": {"signerName": "kubernetes.io/kubelet-serving", "usages": ["server auth"]}})),
    _gke("binding-admin", "io.k8s.rbac.v1.clusterrolebindings.create", "203.0.113.50",
         {"principalEmail": "mallory@example.com"}, request=ADMIN_BINDING),
    _gke("anonymous-pods", "io.k8s.core.v1.pods.get", "203.0.113.51", ANONYMOUS),
    _gke("anonymous-readyz", "io.k8s.readyz", "203.0.113.51", {"principalEmail": "system:anonymous"}),
    _gke("anonymous-lb-check", "io.k8s.core.v1.componentstatuses.list", "35.191.0.1", ANONYMOUS),
    _caller_ip_upper(_gke("anonymous-lb-check-ip", "io.k8s.core.v1.componentstatuses.list", "130.211.0.9", ANONYMOUS)),
    _gke("webhook-patch", "io.k8s.admissionregistration.v1.validatingwebhookconfigurations.patch", "203.0.113.52",
         {"principalEmail": "mallory@example.com"}),
    _event("webhook-addon", "update", "mutatingwebhookconfigurations", "system:addon-manager"),
    _event("role-escalate", "create", "clusterroles", "mallory@example.com",
           requestObject={"rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                                     "verbs": ["escalate", "bind"]}]}),
    _event("role-reader", "create", "clusterroles", "dev@example.com",
           requestObject={"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}),
]  # fmt: skip
EXPECTED = {
    "ds-user/ResponseComplete": {"k8s-daemonset-created"},
    "ingress-plain/ResponseComplete": {"k8s-ingress-without-tls"},
    "secret-refused/ResponseComplete": {"k8s-secret-read-refused"},
    "binding-admin": {"k8s-cluster-admin-binding"},
    "anonymous-pods": {"k8s-anonymous-access"},
    "webhook-patch": {"k8s-admission-webhook"},
    "role-escalate/ResponseComplete": {"k8s-role-wildcard-or-node-proxy"},
}


def test_kubernetes_rules_on_every_audit_envelope(tmp_path: Path) -> None:
    assert rules_through_the_cli(tmp_path, RECORDS) == EXPECTED


PRIVILEGED = {"spec": {"template": {"spec": {"containers": [{"name": "x", "securityContext": {"privileged": True}}]}}}}
ADDS_SYS_ADMIN = {"spec": {"containers": [{"name": "x", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}}
ADMIN_ROLEBINDING = {"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
                     "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}  # fmt: skip
SAME_CALLS = [  # (case, EKS verb, resource, subresource, GKE method, request body, expected rule)
    ("exec", "create", "pods", "exec", "io.k8s.core.v1.pods.exec.create", None, "k8s-exec-in-pod"),
    ("statefulset", "create", "statefulsets", "", "io.k8s.apps.v1.statefulsets.create", PRIVILEGED,
     "k8s-privileged-pod"),
    ("capability", "create", "pods", "", "io.k8s.core.v1.pods.create", ADDS_SYS_ADMIN, "k8s-dangerous-capabilities"),
    ("rolebinding", "update", "rolebindings", "", "io.k8s.authorization.rbac.v1.rolebindings.update",
     ADMIN_ROLEBINDING, "k8s-cluster-admin-binding"),
    ("token", "create", "serviceaccounts", "token", "io.k8s.core.v1.serviceaccounts.token.create", None,
     "k8s-token-created"),
    ("events", "deletecollection", "events", "", "io.k8s.core.v1.events.deletecollection", None, "k8s-events-deleted"),
]  # fmt: skip


def test_each_kubernetes_rule_judges_the_same_call_on_eks_and_gke_alike(tmp_path: Path) -> None:
    """One call as EKS logs it (verb, objectRef) and as GKE does (methodName io.k8s.<group>.<version>.<resource>
    [.<subresource>].<verb>): the same rule names both. A method that is no resource call (a name with too many
    parts, a quote) stays as it is, named by no rule."""
    records = []
    for case, verb, resource, subresource, method, body, _ in SAME_CALLS:
        eks = _event(f"{case}-eks", verb, resource, "mallory@example.com", **({"requestObject": body} if body else {}))
        if subresource:
            eks["objectRef"]["subresource"] = subresource
        records.append(eks)
        records.append(_gke(f"{case}-gke", method, "203.0.113.60", {"principalEmail": "mallory@example.com"},
                            **({"request": body} if body else {})))  # fmt: skip
    records.append(_gke("odd-method", "io.k8s.core.v1.secrets.list.exec.create", "203.0.113.60",
                        {"principalEmail": "mallory@example.com"}))  # fmt: skip
    records.append(_gke("quoted", "io.k8s.core.v1.pods'.exec.create", "203.0.113.60",
                        {"principalEmail": "mallory@example.com"}))  # fmt: skip
    flagged = rules_through_the_cli(tmp_path, records)
    expected = {f"{case}-eks/ResponseComplete": {rule} for case, *_, rule in SAME_CALLS}
    expected |= {f"{case}-gke": {rule} for case, *_, rule in SAME_CALLS}
    assert flagged == expected
