"""Detection coverage against the public catalogs: one documented-format event per catalog rule, analyzed with defaults.

Usage: ``uv run python benchmarks/catalog_coverage.py [--work DIR] [--json FILE] [--elastic DIR]``

* SigmaHQ AWS CloudTrail rules (``../shared/sigma-rules/aws/cloudtrail``, read at run time): for each rule, the
  CloudTrail record its detection selects (the selections its condition requires, the first alternative of a
  ``1 of``, filters left out) over a documented-format envelope (userIdentity, sourceIPAddress, userAgent,
  eventTime, requestParameters, ...).
* ``--elastic DIR``: a checkout of elastic/detection-rules; each rule of ``rules/integrations/{aws,azure,gcp,
  google_workspace,kubernetes}`` is read for the call its query selects (``event.action``, ``event.provider``,
  ``service.name``, the Activity / Entra audit ``operation_name``, the Kubernetes ``verb`` and ``objectRef``) and
  its data stream (``ELASTIC_FORMS``), and the record is built in that stream's documented form: a CloudTrail
  record, an Azure Activity or Entra audit / sign-in diagnostic record, a Cloud Audit LogEntry (GKE's ``io.k8s.*``
  methods as ``elastic:gke_audit``), an Admin SDK Reports activity, an ``audit.k8s.io`` Event - without the other
  fields a query may read (parameters, identity, user agent, geography, sign-in properties) or the history a
  new-terms, threshold, machine-learning or ES|QL aggregation judges: such a rule not flagged is listed under
  ``gaps_needing_parameters`` (its record lacks what the rule selects on), not under ``gaps``. Data streams
  cloudir does not read (Graph activity, Azure platform logs, Identity Protection, Workspace alerts) are
  ``elastic:unread``, not buildable.
* SigmaHQ Azure, Entra and Google rules (``azure/activity_logs``, ``audit_logs``, ``signin_logs``,
  ``identity_protection``, ``privileged_identity_management``, ``gcp/audit``, ``gcp/gworkspace``): the record their
  selection describes in the provider's documented export form (``CLOUD_FORMATS``): Azure Activity and Entra
  diagnostic-settings records (Sigma's field names, the Log Analytics columns, mapped onto them), sign-ins carrying
  ``riskEventTypes_v2`` for the ID Protection risk detections, Cloud Audit LogEntry records (Workspace audit as
  Cloud Logging exports it: ``admin.googleapis.com``, ``protoPayload.metadata.event``).
* All records go into one timeline through ``cloudir timeline ingest``, each from an identity of its own, and
  ``cloudir analyze`` runs twice: with defaults, and with ``--min-score 0`` to see what scores below the default.
* Per catalog rule: ``flagged`` (a rule-based finding - the YAML catalog or a correlation rule - names its event at
  the default minimum score), ``below-min`` (only below it), ``not-flagged``; or ``routine`` where the catalog rule
  is deliberately not a default finding (``ROUTINE`` says why). Sigma's own rules are not loaded (not a default);
  ``sigma_self_check`` runs them over the same timeline: every built record should be matched by its own rule.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import json
import re
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.session
import duckdb
import yaml

REPO = Path(__file__).resolve().parents[1]
SIGMA_AWS = REPO.parent / "shared" / "sigma-rules" / "aws" / "cloudtrail"
SIGMA = REPO.parent / "shared" / "sigma-rules"
RULE_BASED = ("sensitive_actions", "correlation")
ACCOUNT = "111122223333"
START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

ROUTINE: dict[str, str] = {
    "aws_sts_assumerole_misuse": "every AssumeRole session's call (sessionIssuer.type Role): routine alone",
    "aws_sts_getsessiontoken_misuse": "GetSessionToken by an IAM user: routine (MFA CLI sessions)",
    "aws_cloudtrail_imds_malicious_usage": "any call by an assumed-role session named aws:*: instance credentials "
    "are judged by where they are used (off-instance), not by the name",
    "aws_enum_buckets": "ListBuckets alone: routine; bursts of enumeration are the recon analyzer's",
    "aws_cloudtrail_console_login_failed_authentication": "one failed console login: routine; repeated failures "
    "are the brute-force correlation's",
    "aws_eks_cluster_created_or_deleted": "EKS cluster creation/deletion: routine infrastructure change",
    "aws_cloudtrail_new_route_added": "CreateRoute: routine network change",
    "aws_cloudtrail_new_acl_entries": "CreateNetworkAclEntry: routine network change (exposure is judged by CIDR)",
    "aws_rds_dbcluster_actions": "RDS cluster created/modified: routine infrastructure change",
    "aws_efs_fileshare_mount_modified_or_deleted": "EFS mount target deleted: routine infrastructure change",
    "aws_elasticache_security_group_created": "ElastiCache security group created: routine",
    "aws_elasticache_security_group_modified_or_deleted": "ElastiCache security group rules changed: routine",
    "aws_cloudtrail_security_group_change_ingress_egress": "any security group rule change: routine; ingress "
    "opened to the internet (0.0.0.0/0, ::/0) is flagged",
    "aws_cloudtrail_security_group_change_loadbalancer": "load balancer security groups set: routine",
    "aws_susp_saml_activity": "AssumeRoleWithSAML is every federated sign-in; UpdateSAMLProvider (its other "
    "selection) is flagged",
}
"""Catalog rules that are deliberately not a default finding, and why."""

EVENT_SOURCES = {
    "AssumeRoleWithWebIdentity": "sts.amazonaws.com",
    "AttachUserPolicy": "iam.amazonaws.com",
    "ConsoleLogin": "signin.amazonaws.com",
    "DeleteBucket": "s3.amazonaws.com",
    "DeleteFlowLogs": "ec2.amazonaws.com",
    "ModifySnapshotAttribute": "ec2.amazonaws.com",
    "PutBucketLifecycle": "s3.amazonaws.com",
    "PutBucketReplication": "s3.amazonaws.com",
}
"""The eventSource of the operations a catalog rule names without one (the service's endpoint, AWS API references)."""

ROUTINE |= {
    "azure_application_gateway_modified_or_deleted": "infrastructure write (networking): routine alone",
    "azure_application_security_group_modified_or_deleted": "infrastructure write (networking): routine alone",
    "azure_container_registry_created_or_deleted": "infrastructure write: routine alone",
    "azure_dns_zone_modified_or_deleted": "infrastructure write (DNS): routine alone",
    "azure_kubernetes_cluster_created_or_deleted": "cluster created or deleted: routine infrastructure change",
    "azure_network_p2s_vpn_modified_or_deleted": "infrastructure write (networking): routine alone",
    "azure_network_virtual_device_modified_or_deleted": "infrastructure write (networking): routine alone",
    "azure_virtual_network_modified_or_deleted": "infrastructure write (networking): routine alone",
    "azure_vpn_connection_modified_or_deleted": "infrastructure write (networking): routine alone",
    "azure_new_cloudshell_created": "Cloud Shell console opened: routine for administrators",
    "gcp_bucket_enumeration": "storage.buckets.list alone: routine; enumeration bursts are the recon analyzer's",
    "gcp_sql_database_modified_or_deleted": "Cloud SQL instance created (the selection's first method): routine; "
    "its update / delete / user changes are flagged",
    "gcp_vpn_tunnel_modified_or_deleted": "VPN tunnel inserted: routine infrastructure change",
    "gcp_full_network_traffic_packet_capture": "a packet mirroring read (Get): routine; insert/patch is the capture",
    "gcp_service_account_modified": "a service account's display name or description patched: routine",
    "gcp_dns_zone_modified_or_deleted": "a managed DNS zone changed or deleted: routine infrastructure change",
    "gcp_gworkspace_application_access_levels_modified": "an application setting changed: routine administration",
    "gcp_gworkspace_application_removed": "an application removed: routine administration",
    "gcp_gworkspace_role_modified_or_deleted": "an admin role edited or deleted: routine; a role granted is flagged",
    "gcp_gworkspace_role_privilege_deleted": "a privilege removed from a role: narrows access, routine",
    "azure_ad_sign_ins_from_unknown_devices": "a sign-in from a device not registered: routine alone (BYOD)",
    "azure_ad_sign_ins_from_noncompliant_devices": "a non-compliant device: routine alone",
    "azure_ad_only_single_factor_auth_required": "single-factor sign-in allowed by policy: routine alone",
    "gcp_kubernetes_rolebinding": "a role binding of any role: routine; one binding cluster-admin, admin or a "
    "control-plane role (or system:masters) is flagged",
    "gcp_kubernetes_secrets_modified_or_deleted": "a secret created, changed or deleted: routine for deployments; "
    "secrets listed or reads refused are flagged",
    "azure_kubernetes_pods_deleted": "a pod deleted: routine (rollouts, scaling)",
}
"""Azure, Entra and GCP catalog rules deliberately not a default finding, and why."""

ELASTIC_ROUTINE: dict[str, str] = {
    "collection_gcp_pub_sub_subscription_creation": "a Pub/Sub subscription created: routine application plumbing",
    "collection_gcp_pub_sub_topic_creation": "a Pub/Sub topic created: routine application plumbing",
    "defense_evasion_gcp_pub_sub_subscription_deletion": "a Pub/Sub subscription deleted: routine alone; a log "
    "sink changed or deleted is flagged (gcp-log-sink-changed)",
    "defense_evasion_gcp_pub_sub_topic_deletion": "a Pub/Sub topic deleted: routine alone; a log sink changed or "
    "deleted is flagged (gcp-log-sink-changed)",
    "defense_evasion_gcp_firewall_rule_created": "a firewall rule created: routine; one opened to the internet "
    "(0.0.0.0/0) is flagged",
    "persistence_gcp_iam_service_account_key_deletion": "a service-account key deleted: key rotation, routine; a "
    "key created is flagged",
    "credential_access_azure_vm_boot_diagnostics_retrieved_unusual_principal": "boot diagnostics read: routine "
    "troubleshooting alone; Elastic judges a principal new to it (history)",
    "impact_kubernetes_pod_deleted": "a pod deleted: routine (rollouts, scaling)",
    "impact_google_workspace_admin_role_deletion": "an admin role deleted: narrows access, routine",
    "persistence_google_workspace_custom_admin_role_created": "a role created grants nothing until assigned; "
    "an assignment (ASSIGN_ROLE) is flagged",
    "execution_forbidden_creation_request": "one refused create: routine alone (RBAC misconfiguration); refused "
    "secret reads are flagged",
    "collection_cloudtrail_logging_created": "a trail created adds logging: routine; a trail stopped, deleted or "
    "narrowed is flagged",
    "credential_access_iam_user_addition_to_group": "a user added to a group: routine; to an administrators group "
    "is flagged (aws-admin-group-member)",
    "persistence_iam_group_creation": "a group created grants nothing until a policy or member is added; an "
    "administrator policy attached is flagged",
    "impact_iam_group_deletion": "a group deleted narrows access: routine",
    "persistence_ec2_network_acl_creation": "a network ACL created denies all until entries are added; an entry "
    "opened to the internet is flagged (aws-network-acl-open)",
    "defense_evasion_ec2_network_acl_deletion": "a network ACL deleted: routine network change (a default ACL "
    "cannot be deleted; its subnets fall back to it)",
    "defense_evasion_rds_instance_restored": "a database restored from a snapshot: routine recovery; restored "
    "publicly accessible is flagged (aws-db-restored-public), a snapshot shared out is flagged",
    "defense_evasion_s3_bucket_configuration_deletion": "a bucket's policy, CORS, lifecycle or encryption "
    "configuration removed: routine (S3 keeps SSE-S3 by default); replication removed and logging disabled are "
    "flagged",
    "impact_aws_eventbridge_rule_disabled_or_deleted": "an EventBridge rule disabled or deleted: routine "
    "application plumbing; the monitoring services themselves turned off are flagged",
    "impact_lambda_function_deleted": "a function deleted: routine deployment",
    "persistence_route_53_hosted_zone_associated_with_a_vpc": "a private hosted zone associated with a VPC: "
    "routine network change",
}
"""Elastic rules deliberately not a default finding (by file stem), and why."""
ELASTIC_ROUTINE |= {
    "persistence_entra_id_service_principal_created": "a service principal created: every app added or consented "
    "to creates one (Elastic rates it low); credentials, owners and grants added to one are flagged",
    "persistence_google_workspace_user_organizational_unit_changed": "a user moved to another organizational unit: "
    "routine administration (Elastic rates it low)",
}
ROUTINE |= {
    "azure_service_principal_created": "a service principal created: every app added or consented to creates one",
}


def _entra_change(name: str, old: str, new: str) -> dict[str, Any]:
    return {"displayName": name, "oldValue": old, "newValue": new}


def _workspace_parameters(**values: str) -> dict[str, Any]:
    return {"parameters": [{"name": name, "value": value} for name, value in values.items()]}


ELASTIC_CHANGES: dict[str, dict[str, Any]] = {
    "initial_access_entra_id_temporary_access_pass_created": {"properties": {
        "resultReason": "User registered temporary access pass method"}},
    "persistence_entra_id_conditional_access_policy_modified": {"properties": {"targetResources": [{
        "type": "Policy", "modifiedProperties": [_entra_change("ConditionalAccessPolicy",
            '{"state":"enabled","grantControls":{"operator":"OR","builtInControls":["mfa"]}}',
            '{"state":"enabledForReportingButNotEnforced","grantControls":{"operator":"OR","builtInControls":["mfa"]}}')]}]}},
    "persistence_entra_id_guest_account_promoted_to_member": {"properties": {"targetResources": [{
        "type": "User", "modifiedProperties": [_entra_change("UserType", '["Guest"]', '["Member"]')]}]}},
    "persistence_entra_id_oauth_app_redirect_uri_modified": {"properties": {"targetResources": [{
        "type": "Application", "modifiedProperties": [_entra_change("AppAddress", "[]",
            '[{"AddressType":0,"Address":"https://attacker.example/callback"}]')]}]}},
    "persistence_entra_id_phishing_kit_default_os_build_device_registration": {"properties": {"targetResources": [{
        "type": "Device", "modifiedProperties": [_entra_change("CloudDeviceOSVersion", "[]", '["10.0.19045.2006"]'),
                                                 _entra_change("CloudDisplayName", "[]", '["DESKTOP-3F9K2LQ"]')]}]}},
    "persistence_entra_id_roadtools_default_device_registration": {"properties": {"targetResources": [{
        "type": "Device", "modifiedProperties": [_entra_change("CloudDeviceOSVersion", "[]", '["10.0.19041.928"]'),
                                                 _entra_change("CloudDisplayName", "[]", '["DESKTOP-8XK2QW1"]')]}]}},
    "persistence_entra_id_pim_user_added_global_admin": {"operationName":
        "Add eligible member to role in PIM completed (permanent)", "properties": {"category": "RoleManagement",
        "targetResources": [{"displayName": "Global Administrator", "type": "Role"},
                            {"displayName": "target", "type": "User"}]}},
    "persistence_entra_id_service_principal_federated_issuer_modified": {"properties": {"targetResources": [{
        "type": "Application", "modifiedProperties": [_entra_change("FederatedIdentityCredentials",
            '[{"Name":"ci","Issuer":"https://login.microsoftonline.com/t1/v2.0","Subject":"app"}]',
            '[{"Name":"ci","Issuer":"https://token.actions.githubusercontent.com","Subject":"repo:x/y"}]')]}]}},
    "collection_google_drive_ownership_transferred_via_google_workspace": _workspace_parameters(
        USER_EMAIL="target@example.com", DESTINATION_USER_EMAIL="other@example.com", APPLICATION_NAME="Drive and Docs"),
    "collection_google_workspace_custom_gmail_route_created_or_modified": _workspace_parameters(
        SETTING_NAME="EMAIL_ROUTE", ORG_UNIT_NAME="Sales"),
    "defense_evasion_application_removed_from_blocklist_in_google_workspace": _workspace_parameters(
        APPLICATION_NAME="Google Workspace Marketplace", SETTING_NAME="Apps Access Setting Allowlist",
        OLD_VALUE='{"allowed":false}', NEW_VALUE='{"allowed":true}'),
    "defense_evasion_google_workspace_bitlocker_setting_disabled": _workspace_parameters(
        SETTING_NAME="BitLocker Encryption", OLD_VALUE="Enabled", NEW_VALUE="Disabled"),
    "defense_evasion_restrictions_for_marketplace_modified_to_allow_any_app": _workspace_parameters(
        APPLICATION_NAME="Google Workspace Marketplace", SETTING_NAME="Apps Access Setting Allowlist access",
        OLD_VALUE="ALLOW_LISTED_APPS", NEW_VALUE="ALLOW_ALL"),
    "impact_google_workspace_mfa_enforcement_disabled": _workspace_parameters(
        ORG_UNIT_NAME="Sales", OLD_VALUE="true", NEW_VALUE="false"),
    "persistence_mfa_disabled_for_google_workspace_organization": _workspace_parameters(
        ORG_UNIT_NAME="Sales", OLD_VALUE="true", NEW_VALUE="false"),
    "persistence_google_workspace_password_policy_modified": _workspace_parameters(
        SETTING_NAME="Password Management - Minimum password length", OLD_VALUE="12", NEW_VALUE="8"),
}  # fmt: skip
"""Elastic rules whose query selects on what changed (Entra modified properties and result reason, Workspace
setting parameters; an Entra activity named among quoted alternatives): the record carries it in its documented
form (the Entra directoryAudit resource, the Admin audit activity events reference), as ``ELASTIC_DOCUMENTED`` does
for the AWS rules' request parameters."""


DOCUMENTED: dict[str, dict[str, Any]] = {
    "aws_disable_bucket_versioning": {"requestParameters": {"bucketName": "data", "versioning": "",
                                      "VersioningConfiguration": {"Status": "Suspended"}}},
    "aws_iam_s3browser_templated_s3_bucket_policy_creation": {"requestParameters": {"userName": "u1",
        "policyName": "s3-access", "policyDocument": '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::<YOUR-BUCKET-NAME>/*"]}]}'}},
    "aws_ecs_task_definition_cred_endpoint_query": {"eventName": "RegisterTaskDefinition", "requestParameters": {
        "family": "web", "containerDefinitions": [{"name": "c", "image": "alpine", "command": [
            "sh", "-c", "wget -qO- 169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]}]}},
    "aws_snapshot_backup_exfiltration": {"requestParameters": {"snapshotId": "snap-0a1b", "attributeType":
        "CREATE_VOLUME_PERMISSION", "createVolumePermission": {"add": {"items": [{"userId": "444455556666"}]}}}},
    "aws_lambda_function_url": {"requestParameters": {"functionName": "f", "authType": "NONE"}},
    "aws_s3_data_management_tampering": {"requestParameters": {"bucketName": "data", "logging": "",
                                         "BucketLoggingStatus": {}}},
    "aws_securityhub_finding_evasion": {"requestParameters": {"FindingIdentifiers": [{"Id": "f1"}],
                                        "Workflow": {"Status": "SUPPRESSED"}}},
}  # fmt: skip
"""Catalog rules whose selection reads a whole object (``requestParameters|contains``) or is broader than the
behaviour it is named for: the record carries the behaviour in its documented form (the API references)."""
OTHER_ACCOUNT = "444455556666"
ELASTIC_DOCUMENTED: dict[str, dict[str, Any]] = {
    "collection_s3_bucket_acl_public_access_new_identity": {"bucketName": "data", "acl": "", "x-amz-acl":
        ["public-read"]},
    "credential_access_iam_compromisedkeyquarantine_policy_attached_to_user": {"userName": "ci",
        "policyArn": "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"},
    "credential_access_retrieve_secure_string_parameters_via_ssm": {"names": ["/prod/db/password"],
        "withDecryption": True},
    "defense_evasion_cloudtrail_management_events_disabled_via_eventselectors": {"trailName": "main",
        "eventSelectors": [{"readWriteType": "All", "includeManagementEvents": False, "dataResources": []}]},
    "defense_evasion_eks_control_plane_logging_disabled": {"name": "prod", "logging": {"clusterLogging": [
        {"types": ["api", "audit", "authenticator"], "enabled": False}]}},
    "defense_evasion_s3_bucket_lifecycle_expiration_added": {"bucketName": "trail-logs", "lifecycle": "",
        "LifecycleConfiguration": {"Rule": {"ID": "r", "Status": "Enabled", "Filter": {"Prefix": ""},
                                            "Expiration": {"Days": 1}}}},
    "defense_evasion_s3_bucket_server_access_logging_disabled": {"bucketName": "data", "logging": "",
        "BucketLoggingStatus": {}},
    "defense_evasion_vpc_security_group_ingress_rule_added_for_remote_connections": {"groupId": "sg-0a1b",
        "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22,
                                     "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}},
    "defense_evasion_ec2_nacl_all_traffic_allowed_new_identity": {"networkAclId": "acl-0a1b", "ruleNumber": 100,
        "egress": False, "ruleAction": "allow", "icmpTypeCode": {}, "aclProtocol": "-1", "portRange": {},
        "cidrBlock": "0.0.0.0/0"},
    "discovery_ec2_userdata_request_for_ec2_instance": {"instanceId": "i-0a1b", "attribute": "userData"},
    "exfiltration_ec2_ami_shared_with_separate_account": {"imageId": "ami-0a1b", "launchPermission": {"add": {
        "items": [{"userId": OTHER_ACCOUNT}]}}, "attributeType": "launchPermission"},
    "exfiltration_ec2_ebs_snapshot_shared_with_another_account": {"snapshotId": "snap-0a1b", "attributeType":
        "CREATE_VOLUME_PERMISSION", "createVolumePermission": {"add": {"items": [{"userId": OTHER_ACCOUNT}]}}},
    "exfiltration_rds_snapshot_shared_with_another_account": {"dBSnapshotIdentifier": "prod-snap",
        "attributeName": "restore", "valuesToAdd": [OTHER_ACCOUNT]},
    "exfiltration_s3_bucket_policy_added_for_external_account_access": {"bucketName": "data", "policy": "",
        "bucketPolicy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
            "AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}, "Action": "s3:GetObject", "Resource":
            "arn:aws:s3:::data/*"}]}},
    "exfiltration_s3_bucket_policy_added_for_public_access": {"bucketName": "data", "policy": "", "bucketPolicy": {
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                "Resource": "arn:aws:s3:::data/*"}]}},
    "exfiltration_ecr_repository_policy_granted_public_access": {"repositoryName": "app", "policyText":
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":["ecr:BatchGetImage",'
        '"ecr:GetDownloadUrlForLayer"]}]}'},
    "impact_rds_instance_cluster_deletion_protection_disabled": {"dBInstanceIdentifier": "prod-db",
        "deletionProtection": False, "applyImmediately": True},
    "impact_s3_excessive_object_encryption_with_sse_c": {"bucketName": "data", "key": "reports/q1.csv",
        "x-amz-server-side-encryption-customer-algorithm": "AES256"},
    "impact_s3_unusual_object_encryption_with_sse_c": {"bucketName": "data", "key": "reports/q1.csv",
        "x-amz-server-side-encryption-customer-algorithm": "AES256"},
    "impact_s3_object_encryption_with_external_key": {"bucketName": "data", "key": "reports/q1.csv",
        "x-amz-copy-source": "data/reports/q1.csv", "x-amz-server-side-encryption": "aws:kms",
        "x-amz-server-side-encryption-aws-kms-key-id": f"arn:aws:kms:us-east-1:{OTHER_ACCOUNT}:key/1234abcd"},
    "impact_s3_object_versioning_disabled": {"bucketName": "data", "versioning": "",
        "VersioningConfiguration": {"Status": "Suspended"}},
    "impact_s3_bucket_object_uploaded_with_ransom_keyword": {"bucketName": "data",
        "key": "HOW_TO_DECRYPT_FILES.txt"},
    "persistence_eks_access_entry_modified": {"clusterName": "prod", "principalArn":
        f"arn:aws:iam::{OTHER_ACCOUNT}:role/ops", "type": "STANDARD"},
    "privilege_escalation_iam_permissions_boundary_modified": {"roleName": "app",
        "permissionsBoundary": "arn:aws:iam::aws:policy/AdministratorAccess"},
    "persistence_rds_db_instance_password_modified": {"dBInstanceIdentifier": "prod-db",
        "masterUserPassword": "****", "applyImmediately": True},
    "persistence_rds_instance_made_public": {"dBInstanceIdentifier": "prod-db", "publiclyAccessible": True},
    "privilege_escalation_eks_access_entry_granted_cluster_admin_policy": {"clusterName": "prod", "principalArn":
        f"arn:aws:iam::{ACCOUNT}:role/dev", "policyArn":
        "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy", "accessScope": {"type": "cluster"}},
    "privilege_escalation_iam_administratoraccess_policy_attached_to_group": {"groupName": "dev",
        "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
    "privilege_escalation_iam_administratoraccess_policy_attached_to_role": {"roleName": "app",
        "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
    "privilege_escalation_iam_administratoraccess_policy_attached_to_user": {"userName": "ci",
        "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
}  # fmt: skip
"""Elastic AWS rules whose query selects on request parameters: the ``requestParameters`` the selected call carries
in its documented form (the services' API references), so the record holds the behaviour the rule is named for."""
NEUTRAL = {"eventSource": "s3.amazonaws.com", "eventName": "ListBuckets"}
"""The call of a record whose catalog rule selects on the caller only (userIdentity, userAgent)."""


def envelope(index: int, event_source: str, event_name: str) -> dict[str, Any]:
    """A CloudTrail record (AWS CloudTrail record contents reference) from an IAM user of its own."""
    user = f"catalog-{index:03d}"
    return {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": f"AIDA{index:016d}",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/{user}",
            "accountId": ACCOUNT,
            "accessKeyId": f"AKIA{index:016d}",
            "userName": user,
        },
        "eventTime": (START + timedelta(minutes=7 * index)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": event_source,
        "eventName": event_name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.23",
        "userAgent": "aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0 exe/x86_64.ubuntu.22",
        "requestParameters": {},
        "responseElements": None,
        "requestID": f"{index:08d}-0000-4000-8000-000000000000",
        "eventID": f"catalog-{index:03d}",
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }


PREFERRED_SERVICES = ("ec2", "iam", "s3", "sts", "lambda", "rds", "kms", "cloudtrail", "logs", "ssm")


@functools.cache
def _operations() -> dict[str, str]:
    """API operation name -> the CloudTrail eventSource of the service defining it (botocore's service models;
    where several do, the commonest service first)."""
    session = botocore.session.get_session()
    names = sorted(session.get_available_services(), key=lambda n: (n not in PREFERRED_SERVICES, n))
    found: dict[str, str] = {}
    for name in names:
        model = session.get_service_model(name)
        prefix = "s3" if name == "s3control" else model.endpoint_prefix
        for operation in model.operation_names:
            found.setdefault(operation, f"{prefix}.amazonaws.com")
    return found


def event_source(event_name: str) -> str:
    """The eventSource of a record whose catalog rule names only its eventName."""
    return _operations().get(event_name, "") if event_name else ""


def _regex_example(pattern: str) -> str | None:
    """A string the regex matches, for the simple patterns the catalogs use; None when not found."""
    text = re.sub(r"\.[+*]\??", "x", pattern.strip("^$"))
    text = re.sub(r"\\(.)", r"\1", text.replace("(?i)", ""))
    return text if re.search(pattern, text) else None


def field_value(modifiers: list[str], values: list[Any]) -> Any:
    """A value satisfying ``field|modifiers: values`` (the first alternative; every one under ``all``)."""
    if not values or values[0] is None:
        return None
    if "re" in modifiers:
        return _regex_example(str(values[0]))
    if "cidr" in modifiers:
        return str(next(ipaddress.ip_network(str(values[0]), strict=False).hosts()))
    if "all" in modifiers:
        return " ".join(str(v) for v in values)
    value = values[0]
    return value if isinstance(value, bool | int | float) or not modifiers else str(value)


def _set(record: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = record
    for key in keys[:-1]:
        child = node.get(key)
        node[key] = child = child if isinstance(child, dict) else {}
        node = child
    node[keys[-1]] = value


def _apply(record: dict[str, Any], selection: Any) -> bool:
    """Set ``selection``'s fields on ``record`` (a list of maps: its first); False when one cannot be built."""
    if isinstance(selection, list):
        selection = selection[0] if selection and isinstance(selection[0], dict) else {}
    for key, raw in selection.items():
        name, *modifiers = str(key).split("|")
        if name == "errorCode" and raw == "Success":
            continue  # a successful call's record has no errorCode (CloudTrail record contents)
        value = field_value(modifiers, raw if isinstance(raw, list) else [raw])
        if value is None and raw is not None:
            return False
        if value is not None:
            _set(record, name, value)
    return True


def _values(selection: Any) -> list[Any]:
    maps = selection if isinstance(selection, list) else [selection]
    return [v for m in maps if isinstance(m, dict) for v in m.values()]


def required_selections(detection: dict[str, Any]) -> list[str]:
    """The selections the condition requires: not negated; a ``1 of X*`` its first match, ``all of`` each."""
    tokens = str(detection["condition"]).replace("(", " ").replace(")", " ").split()
    names = [k for k in detection if k != "condition"]
    chosen: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        negated = i > 0 and tokens[i - 1] == "not"
        if token in ("1", "all") and i + 2 < len(tokens) and tokens[i + 1] == "of":
            pattern = re.compile(re.escape(tokens[i + 2]).replace(r"\*", ".*") + "$")
            matched = [n for n in names if pattern.match(n)]
            if not negated:  # of alternatives, the one an unremarkable record satisfies: a field absent (null)
                plain = sorted(matched, key=lambda n: None not in _values(detection[n]))
                chosen += plain[:1] if token == "1" else matched
            i += 3
            continue
        if token in names and not negated:
            chosen.append(token)
        i += 1
    return chosen


def _sourced(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its eventSource filled in from ``EVENT_SOURCES`` when the catalog rule names none."""
    record["eventSource"] = record["eventSource"] or EVENT_SOURCES.get(record["eventName"], "")
    return record


def sigma_cases() -> list[dict[str, Any]]:
    """One case per SigmaHQ AWS CloudTrail rule: its file, title, and the record (None: not buildable)."""
    cases = []
    for index, path in enumerate(sorted(SIGMA_AWS.glob("*.yml"))):
        doc = yaml.safe_load(path.read_text())
        record = envelope(index, "", "")
        built = all(_apply(record, doc["detection"][name]) for name in required_selections(doc["detection"]))
        record["eventID"] = f"sigma-{path.stem}"
        record |= DOCUMENTED.get(path.stem, {}) if record["eventName"] else NEUTRAL
        record["eventSource"] = record["eventSource"] or event_source(record["eventName"])
        built = built and all(isinstance(record[k], dict) for k in ("requestParameters", "userIdentity"))
        cases.append({"catalog": "sigma", "rule": path.stem, "title": doc["title"], "id": doc["id"],
                      "record": record if built else None,
                      "documented": path.stem in DOCUMENTED})  # fmt: skip
    return cases


CLOUD_DIRS = {
    "azure/activity_logs": "azure_activity",
    "azure/audit_logs": "entra_audit",
    "azure/signin_logs": "entra_signin",
    "azure/identity_protection": "entra_signin",
    "azure/privileged_identity_management": "entra_signin",
    "gcp/audit": "gcp_audit",
    "gcp/gworkspace": "gcp_audit",
}
"""SigmaHQ folders under ``../shared/sigma-rules`` -> the documented export form their records are built in."""

CLOUD_FIELDS: dict[str, dict[str, str]] = {
    "azure_activity": {
        "operationname": "operationName",
        "operationnamevalue": "operationName",
        "categoryvalue": "category",
        "resourceid": "resourceId",
        "resourceprovidervalue": "",
    },
    "entra_audit": {
        "operationname": "operationName",
        "properties.message": "operationName",
        "activitydisplayname": "operationName",
        "category": "properties.category",
        "status": "properties.result",
        "properties.result": "properties.result",
        "loggedbyservice": "properties.loggedByService",
        "initiatedby": "properties.initiatedBy",
        "activitytype": "operationName",
        "targetresources": "properties.targetResources",
        "target": "properties.targetResources",
        "properties.targetresources": "properties.targetResources",
        "targetresources.type": "properties.targetResources.type",
    },
    "entra_signin": {
        "resulttype": "resultType",
        "resultdescription": "resultDescription",
        "status": "properties.status.failureReason",
        "username": "properties.userPrincipalName",
        "clientapp": "properties.clientAppUsed",
        "useragent": "properties.userAgent",
        "riskeventtype": "properties.riskEventTypes_v2",
        "properties.message": "resultDescription",
    },
    "gcp_audit": {
        "gcp.audit.method_name": "protoPayload.methodName",
        "eventname": "protoPayload.methodName",
        "eventservice": "protoPayload.serviceName",
        "protopayload.metadata.event.eventname": "protoPayload.methodName",
        "protopayload.servicename": "protoPayload.serviceName",
        "data.protopayload.logname": "logName",
    },
}
"""Sigma's field names (and the Log Analytics columns some rules use), lower case -> the path in the documented
record ("" : a column the export form has no counterpart for, left out); unlisted names go under ``properties``
(Azure, Entra, camel-cased) or drop their ``data.`` prefix (GCP)."""

WORKSPACE_METHODS = {"admin.googleapis.com": "google.admin.AdminService.", "login.googleapis.com":
                     "google.login.LoginService."}  # fmt: skip
"""Workspace audit in Cloud Logging: methodName is the service's prefix and the event name (Workspace audit logs
in Cloud Logging reference), the event also in ``protoPayload.metadata.event[].eventName``."""


def cloud_envelope(form: str, index: int) -> dict[str, Any]:
    """A documented-format record of ``form`` from an identity of its own (diagnostic-settings schemas for Azure
    Activity, Entra audit and sign-in; the Cloud Audit LogEntry)."""
    user = f"catalog-{index:03d}@example.com"
    time = (START + timedelta(minutes=7 * index)).strftime("%Y-%m-%dT%H:%M:%SZ")
    record_id = f"catalog-{index:03d}"
    if form == "gcp_audit":
        return {"insertId": record_id, "logName": "projects/web-prod/logs/cloudaudit.googleapis.com%2Factivity",
                "timestamp": time, "resource": {"type": "project", "labels": {"project_id": "web-prod"}},
                "protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog", "serviceName": "",
                                 "methodName": "", "authenticationInfo": {"principalEmail": user},
                                 "requestMetadata": {"callerIp": "198.51.100.23",
                                                     "callerSuppliedUserAgent": "google-cloud-sdk gcloud/467.0.0"},
                                 "resourceName": "projects/web-prod"}}  # fmt: skip
    if form == "azure_activity":
        return {"time": time, "eventDataId": record_id, "category": "Administrative", "operationName": "",
                "resultType": "Success", "callerIpAddress": "198.51.100.23", "correlationId": record_id,
                "resourceId": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
                "identity": {"claims": {"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": user}},
                "properties": {}}  # fmt: skip
    properties: dict[str, Any] = {"id": record_id, "correlationId": record_id}
    if form == "entra_audit":
        properties |= {"activityDateTime": time, "activityDisplayName": "", "category": "UserManagement",
                       "result": "success", "loggedByService": "Core Directory",
                       "initiatedBy": {"user": {"userPrincipalName": user, "ipAddress": "198.51.100.23"}},
                       "targetResources": [{"displayName": "target", "type": "User"}]}  # fmt: skip
        return {"time": time, "category": "AuditLogs", "operationName": "", "properties": properties}
    properties |= {"createdDateTime": time, "userPrincipalName": user, "appDisplayName": "Azure Portal",
                   "ipAddress": "198.51.100.23", "status": {"errorCode": 0}, "clientAppUsed": "Browser"}  # fmt: skip
    return {"time": time, "category": "SignInLogs", "operationName": "Sign-in activity", "resultType": "0",
            "properties": properties}  # fmt: skip


def _cloud_path(form: str, name: str) -> str:
    mapped = CLOUD_FIELDS[form].get(name.lower())
    if mapped is not None:
        return mapped
    if form == "gcp_audit":
        return name.removeprefix("data.")
    return "properties." + ".".join(part[:1].lower() + part[1:] for part in name.split("."))


def _cloud_apply(record: dict[str, Any], form: str, selection: Any) -> bool:
    """Set a Sigma selection's fields on a documented-form record; False when a value cannot be built."""
    if isinstance(selection, list):
        selection = selection[0] if selection and isinstance(selection[0], dict) else None
    if not isinstance(selection, dict):
        return False  # keywords: free text, no field to build
    for key, raw in selection.items():
        name, *modifiers = str(key).split("|")
        value = field_value(modifiers, raw if isinstance(raw, list) else [raw])
        if isinstance(value, str):  # a Sigma wildcard (v*.compute...) stands for the documented value (v1....)
            value = value.replace("*", "1")
            value = ("google.iam.admin.v1" + value) if value.startswith(".") and form == "gcp_audit" else value
        path = _cloud_path(form, name)
        if value is None or not path:
            continue
        if path == "properties.riskEventTypes_v2":
            value = [value]
        elif path == "resultType":
            record.setdefault("properties", {})["status"] = {"errorCode": value, "failureReason": "Failure"}
        _set(record, path, value)
    return True


def _documented_gcp(record: dict[str, Any]) -> None:
    """The serviceName a method belongs to, and Workspace events in their Cloud Logging form."""
    payload = record["protoPayload"]
    method = payload["methodName"]
    prefix = WORKSPACE_METHODS.get(payload["serviceName"])
    if prefix and method and not method.startswith(prefix):
        payload["metadata"] = {"@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                               "event": [{"eventName": method, "eventType": "SETTINGS"}]}  # fmt: skip
        payload["methodName"] = prefix + method
    elif method.startswith("io.k8s."):  # GKE's Kubernetes API audit (serviceName k8s.io, resource k8s_cluster)
        payload["serviceName"] = "k8s.io"
        record["resource"] = {"type": "k8s_cluster", "labels": {"project_id": "web-prod", "cluster_name": "c1"}}
    elif not payload["serviceName"] and method:
        first = method.split(".")[1] if method.startswith(("google.", "v1.", "beta.")) else method.split(".")[0]
        payload["serviceName"] = f"{first}.googleapis.com"


def _operation_of(form: str, record: dict[str, Any]) -> str:
    if form == "gcp_audit":
        return str(record["protoPayload"]["methodName"])
    if form == "entra_signin":
        return f"sign-in {record.get('resultType')} {record['properties'].get('riskEventTypes_v2', '')}".strip()
    return str(record["operationName"])


def cloud_sigma_cases(first_index: int) -> list[dict[str, Any]]:
    """One case per SigmaHQ Azure / Entra / GCP / Workspace rule (``CLOUD_DIRS``), built in its documented form."""
    cases = []
    paths = [
        (folder, form, path) for folder, form in CLOUD_DIRS.items() for path in sorted((SIGMA / folder).rglob("*.yml"))
    ]
    for index, (folder, form, path) in enumerate(paths, start=first_index):
        doc = yaml.safe_load(path.read_text())
        record = cloud_envelope(form, index)
        built = all(_cloud_apply(record, form, doc["detection"][n]) for n in required_selections(doc["detection"]))
        if form == "gcp_audit":
            _documented_gcp(record)
        elif form == "entra_audit":
            record["properties"] |= {
                "activityDisplayName": record["operationName"],
                "operationName": record["operationName"],
            }
        operation = _operation_of(form, record)
        built = built and bool(operation)
        cases.append({"catalog": f"sigma:{folder}", "rule": path.stem, "title": doc["title"], "id": doc["id"],
                      "form": form, "event_id": f"catalog-{index:03d}", "operation": operation,
                      "record": record if built else None})  # fmt: skip
    return cases


_ELASTIC_QUERY_FIELD = re.compile(r"(?<![\w.@-])([a-z_]+(?:\.(?:[a-z_0-9]+|\*))+)(?![\w.@-])", re.I)
_ELASTIC_CALL_FIELDS = {"data_stream.dataset", "event.dataset", "event.provider", "event.action", "event.outcome",
                        "event.type", "event.category", "cloud.provider"}  # fmt: skip
"""What a record built from event.action/provider carries; a query reading any other field (request parameters,
the identity, the user agent, the source's geography), or a rule type judging history (new terms, threshold,
machine learning), selects on what the built record lacks."""
_ELASTIC_HISTORY_TYPES = {"new_terms", "threshold", "machine_learning"}


_ELASTIC_FIELDS = {
    "event.action": "action",
    "event.provider": "provider",
    "azure.activitylogs.operation_name": "action",
    "azure.auditlogs.operation_name": "action",
    "service.name": "provider",
    "data_stream.dataset": "dataset",
    "event.dataset": "dataset",
    "kubernetes.audit.verb": "verb",
    "kubernetes.audit.objectref.resource": "resource",
    "kubernetes.audit.objectref.subresource": "subresource",
    "kubernetes.audit.objectref.name": "name",
}
"""Query fields naming the call (lower case) -> what the built record carries from them."""
_ELASTIC_CALL_FIELDS |= set(_ELASTIC_FIELDS) | {
    "kubernetes.audit.stage",
    "kubernetes.audit.annotations.authorization_k8s_io",
}
_ELASTIC_FIELD = re.compile(
    r"(?<![\w.])(not\s+)?`?(" + "|".join(re.escape(f) for f in _ELASTIC_FIELDS) + r")`?\s*(?::|==|\bin\b)\s*"
    r'(\(([^)]*)\)|"[^"]*"|[\w.:*/-]+)',
    re.I,
)


def _needs_more_than_the_call(rule: dict[str, Any]) -> bool:
    query = _ELASTIC_FIELD.sub(" ", str(rule.get("query", "")))  # the call's selections, values and all
    query = re.sub(r'"[^"]*"|\'[^\']*\'', " ", query)  # values, not fields
    fields = {f.lower() for f in _ELASTIC_QUERY_FIELD.findall(query) if "amazonaws" not in f.lower()}
    return rule.get("type") in _ELASTIC_HISTORY_TYPES or bool(fields - _ELASTIC_CALL_FIELDS)


ELASTIC_FORMS = {
    "azure.activitylogs": "azure_activity",
    "azure.auditlogs": "entra_audit",
    "azure.signinlogs": "entra_signin",
    "gcp.audit": "gcp_audit",
    "google_workspace.admin": "workspace",
    "google_workspace.login": "workspace",
    "google_workspace.token": "workspace",
    "google_workspace.drive": "workspace",
    "google_workspace.user_accounts": "workspace",
    "google_workspace.device": "workspace",
    "kubernetes.audit_logs": "k8s_audit",
}
"""Elastic integration data streams -> the documented export form their records are built in. Not here (counted
``not-buildable``): Graph and AAD Graph activity logs, Azure platform (resource diagnostic) logs, Identity
Protection risk detections, the Workspace Alert Center and Microsoft 365 unified audit - forms cloudir does not
read."""
WORKSPACE_APPLICATIONS = {"device": "mobile"}
"""Elastic's Workspace data stream -> the Reports API applicationName when they differ (Device audit is ``mobile``)."""
GCP_WILDCARDS = (("ConfigServiceV*", "ConfigServiceV2"), ("logging.v*.", "logging.v2."), (".v*.", ".v1."),
                 ("v*.compute.", "v1.compute."), ("*.compute.", "v1.compute."))  # fmt: skip
"""A GCP method pattern's wildcard -> the version the service's audit logging reference documents."""


def _elastic_values(text: str) -> list[str]:
    return [v for v in re.findall(r'"([^"]+)"|([\w.:*/-]+)', text) for v in v if v and v.lower() not in ("or", "and")]


def _elastic_call(query: str) -> dict[str, list[str]]:
    """The values a query selects for each call field (``_ELASTIC_FIELDS``), negated selections left out."""
    found: dict[str, list[str]] = {k: [] for k in set(_ELASTIC_FIELDS.values())}
    for negated, name, whole, group in _ELASTIC_FIELD.findall(query):
        if not negated:
            found[_ELASTIC_FIELDS[name.lower()]] += _elastic_values(group or whole)
    return found


def _gcp_method(pattern: str) -> str:
    for wildcard, version in GCP_WILDCARDS:
        pattern = pattern.replace(wildcard, version)
    return pattern


def _elastic_form(folder: str, query: str, datasets: list[str]) -> str | None:
    if folder == "aws":
        return "cloudtrail"
    forms = [ELASTIC_FORMS.get(d) for d in datasets]
    if not datasets:  # a query naming no data stream: its fields' prefix says it
        forms = [f for prefix, f in (("azure.activitylogs.", "azure_activity"), ("azure.auditlogs.", "entra_audit"),
                                     ("kubernetes.audit.", "k8s_audit"))
                 if prefix in query]  # fmt: skip
    return forms[0] if forms else None


def _elastic_record(form: str, index: int, call: dict[str, list[str]], query: str) -> dict[str, Any] | None:
    """The documented-form record of an Elastic rule's call; None when its query names no concrete call."""

    def first(key: str) -> str:
        return next((v for v in call[key] if "*" not in v), "")

    action = first("action")
    if form == "k8s_audit":
        return k8s_event(index, first("verb") or action, first("resource"), first("subresource"), first("name"))
    if form == "workspace":
        stream = next((d for d in call["dataset"] if d.startswith("google_workspace.")), "google_workspace.admin")
        application = stream.removeprefix("google_workspace.")
        return workspace_activity(index, WORKSPACE_APPLICATIONS.get(application, application), action)
    if form == "gcp_audit":
        action = _gcp_method(next(iter(call["action"]), ""))
        if not action or "*" in action:
            return None
        record = cloud_envelope(form, index)
        record["protoPayload"] |= {"methodName": action, "serviceName": first("provider")}
        _documented_gcp(record)
        return record
    if not action and form != "entra_signin":
        return None
    record = cloud_envelope(form, index)
    if form == "entra_signin":
        return record
    record["operationName"] = action
    if form == "entra_audit":
        record["properties"] |= {"activityDisplayName": action, "operationName": action}
    return record


def k8s_event(index: int, verb: str, resource: str, subresource: str, name: str) -> dict[str, Any] | None:
    """An ``audit.k8s.io/v1`` Event (Kubernetes Auditing reference) at stage ResponseComplete, allowed."""
    if not verb:
        return None
    time = (START + timedelta(minutes=7 * index)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    ref = {k: v for k, v in (("resource", resource), ("subresource", subresource), ("name", name),
                             ("namespace", "default" if resource else ""), ("apiVersion", "v1")) if v}  # fmt: skip
    uri = "/api/v1/namespaces/default/" + "/".join(v for v in (resource, name, subresource) if v)
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"catalog-{index:03d}",
            "stage": "ResponseComplete", "requestURI": uri, "verb": verb,
            "user": {"username": f"catalog-{index:03d}@example.com", "groups": ["system:authenticated"]},
            "sourceIPs": ["198.51.100.23"], "userAgent": "kubectl/v1.29.2 (linux/amd64) kubernetes/4b8e819",
            "objectRef": ref, "responseStatus": {"metadata": {}, "code": 201 if verb == "create" else 200},
            "requestReceivedTimestamp": time, "stageTimestamp": time,
            "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}}  # fmt: skip


def workspace_activity(index: int, application: str, event: str) -> dict[str, Any] | None:
    """An Admin SDK Reports ``activities`` item (Reports API activity resource) of ``application``."""
    if not event:
        return None
    time = (START + timedelta(minutes=7 * index)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"kind": "admin#reports#activity",
            "id": {"time": time, "uniqueQualifier": f"catalog-{index:03d}", "applicationName": application,
                   "customerId": "C03az79cb"},
            "actor": {"callerType": "USER", "email": f"catalog-{index:03d}@example.com", "profileId": f"1{index:08d}"},
            "ipAddress": "198.51.100.23",
            "events": [{"type": "USER_SETTINGS" if application == "admin" else application, "name": event,
                        "parameters": [{"name": "USER_EMAIL", "value": "target@example.com"}]}]}  # fmt: skip


ELASTIC_PLATFORMS = {"cloudtrail": "aws"}
"""A form -> the platform its Elastic rules are counted under, where the names differ."""
ELASTIC_DIRS = ("aws", "azure", "gcp", "google_workspace", "kubernetes")
"""The ``rules/integrations`` folders of elastic/detection-rules that are measured."""


def _event_id(form: str, record: dict[str, Any]) -> str:
    if form == "cloudtrail":
        return str(record["eventID"])
    if form == "k8s_audit":
        return f"{record['auditID']}/{record['stage']}"
    if form == "workspace":
        return str(record["id"]["uniqueQualifier"])
    return str(record.get("insertId") or record.get("eventDataId") or record["properties"]["id"])


def elastic_cases(checkout: Path, first_index: int) -> list[dict[str, Any]]:
    """One case per elastic/detection-rules rule of ``ELASTIC_DIRS``, built in its data stream's documented form
    from the call its query names (``event.action`` and the integration's operation fields)."""
    cases = []
    paths = [(d, p) for d in ELASTIC_DIRS for p in sorted((checkout / "rules" / "integrations" / d).glob("*.toml"))]
    for index, (folder, path) in enumerate(paths, start=first_index):
        rule = tomllib.loads(path.read_text()).get("rule", {})
        query = str(rule.get("query", ""))
        call = _elastic_call(query)
        form = _elastic_form(folder, query, call["dataset"])
        record: dict[str, Any] | None = None
        if form == "cloudtrail":
            actions = [a for a in call["action"] if "*" not in a]
            providers = [p for p in call["provider"] if "*" not in p]
            action = actions[0] if actions else ""
            record = envelope(index, providers[0] if providers else event_source(action), action) if actions else None
            if record:
                record["eventID"] = f"elastic-{path.stem}"
                record["requestParameters"] = ELASTIC_DOCUMENTED.get(path.stem, {})
        elif form:
            record = _elastic_record(form, index, call, query)
            _documented_elastic(path.stem, form, record)
        gke = form == "gcp_audit" and record is not None and record["protoPayload"]["serviceName"] == "k8s.io"
        platform = "gke_audit" if gke else ELASTIC_PLATFORMS.get(form or "", form or "unread")
        cases.append({"catalog": f"elastic:{platform}", "rule": path.stem, "title": rule.get("name"),
                      "id": rule.get("rule_id"), "form": form, "record": record,
                      "event_id": _event_id(form, record) if form and record else None,
                      "operation": _elastic_operation(form, record),
                      "needs_parameters": _needs_more_than_the_call(rule)})  # fmt: skip
    return cases


def _documented_elastic(rule: str, form: str, record: dict[str, Any] | None) -> None:
    """``record`` given what the rule's query selects on (``ELASTIC_CHANGES``), in its form's documented place."""
    documented = ELASTIC_CHANGES.get(rule)
    if record is None or documented is None:
        return
    if form == "workspace":
        record["events"][0] |= documented
    else:  # the activity too where the query's quoted alternatives are more than the builder reads
        record["operationName"] = documented.get("operationName", record["operationName"])
        record["properties"] |= documented["properties"] | {"activityDisplayName": record["operationName"]}


def _elastic_operation(form: str | None, record: dict[str, Any] | None) -> str:
    if not form or not record:
        return ""
    if form == "cloudtrail":
        return str(record["eventName"])
    if form == "k8s_audit":
        ref = record["objectRef"]
        resource = "/".join(v for v in (ref.get("resource"), ref.get("subresource")) if v)
        return f"{record['verb']} {resource}".strip()
    if form == "workspace":
        return str(record["events"][0]["name"])
    return _operation_of(form, record)


def _cloudir(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cloudir", *args], check=True, capture_output=True, cwd=REPO)


def _findings(db: Path) -> dict[str, dict[str, Any]]:
    """Event id -> the best rule-based finding naming it (score, rule), and whether any analyzer names it."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            """
            WITH f AS (SELECT analyzer, rule, score, unnest(event_ids) AS event_id FROM findings)
            SELECT event_id, max(score) FILTER (WHERE analyzer IN $rb),
                   arg_max(rule, score) FILTER (WHERE analyzer IN $rb), list(DISTINCT analyzer ORDER BY analyzer)
            FROM f GROUP BY event_id
            """,
            {"rb": list(RULE_BASED)},
        ).fetchall()
    return {str(r[0]): {"score": r[1], "rule": r[2], "analyzers": list(r[3])} for r in rows}


def measure(work: Path, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Ingest the buildable cases in one timeline, analyze with defaults and at --min-score 0, classify each."""
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "catalog-events.json"
    trail = [c["record"] for c in cases if c["record"] and c.get("form", "cloudtrail") == "cloudtrail"]
    logs.write_text(json.dumps({"Records": trail}))
    for form in sorted({c["form"] for c in cases if c.get("form") not in (None, "cloudtrail")}):  # one file a form
        lines = [json.dumps(c["record"]) for c in cases if c.get("form") == form and c["record"]]
        if form == "workspace":  # as activities.list answers: one page (Reports API activities resource)
            lines = [json.dumps({"kind": "admin#reports#activities", "items": [json.loads(x) for x in lines]})]
        (work / f"catalog-{form}.jsonl").write_text("\n".join(lines) + "\n")
    db = work / "catalog.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    _cloudir("timeline", "ingest", "--db", str(db), *(str(p) for p in sorted(work.glob("catalog-*.json*"))))
    _cloudir("analyze", str(db), "--format", "json")
    default = _findings(db)
    _cloudir("analyze", str(db), "--format", "json", "--min-score", "0")
    everything = _findings(db)
    sigma_self = _sigma_self_check(db, cases)
    per_rule = []
    for case in cases:
        event_id = (case.get("event_id") or case["record"]["eventID"]) if case["record"] else None
        hit, low = default.get(event_id or "", {}), everything.get(event_id or "", {})
        reason = ROUTINE.get(case["rule"]) or ELASTIC_ROUTINE.get(case["rule"])
        if case["record"] is None:
            status = "not-buildable"
        elif hit.get("score") is not None:
            status = "flagged"
        elif reason:
            status = "routine"
        else:
            status = "below-min" if low.get("score") is not None else "not-flagged"
        per_rule.append({"catalog": case["catalog"], "rule": case["rule"], "title": case["title"], "status": status,
                         "operation": case.get("operation") or (case["record"] or {}).get("eventName"),
                         "score": low.get("score"), "by": low.get("rule"), "routine": reason,
                         "documented_form": case.get("documented", False),
                         "needs_parameters": case.get("needs_parameters", False)})  # fmt: skip
    return {"rules": per_rule, "summary": _summary(per_rule), "sigma_self_check": sigma_self}


def _sigma_self_check(db: Path, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """How many built Sigma records their own Sigma rule matches, and the others (checks the builder, not cloudir's
    catalog: a documented-form record may differ from the selection's literal fields, e.g. a list for a map)."""
    _cloudir("analyze", str(db), "--format", "json", "--min-score", "0", "--sigma-rules", str(SIGMA_AWS))
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT rule, unnest(event_ids) FROM findings WHERE analyzer = 'sigma'").fetchall()
    hits = {(str(r[0]), str(r[1])) for r in rows}
    built = [c for c in cases if c["catalog"] == "sigma" and c["record"]]
    missed = [c["rule"] for c in built if (c["id"], c["record"]["eventID"]) not in hits]
    return {"matched": f"{len(built) - len(missed)}/{len(built)}", "not_matched": missed}


def _summary(per_rule: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for catalog in sorted({r["catalog"] for r in per_rule}):
        rows = [r for r in per_rule if r["catalog"] == catalog]
        gaps = [r for r in rows if r["status"] in ("below-min", "not-flagged")]
        counts = {s: sum(r["status"] == s for r in rows)
                  for s in ("flagged", "below-min", "not-flagged", "routine", "not-buildable")}  # fmt: skip
        judged = len(rows) - counts["routine"] - counts["not-buildable"]
        out[catalog] = {
            "rules": len(rows),
            **counts,
            "coverage_pct": round(100 * counts["flagged"] / judged, 1) if judged else 0.0,
            "gaps": [f"{r['rule']} ({r['operation']})" for r in gaps if not r["needs_parameters"]],
        }
        if any(r["needs_parameters"] for r in gaps):  # a miss that says nothing: the record lacks what it reads
            out[catalog]["gaps_needing_parameters"] = [
                f"{r['rule']} ({r['operation']})" for r in gaps if r["needs_parameters"]
            ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cloudir-catalog-coverage"))
    parser.add_argument("--json", type=Path, help="write the per-rule results here")
    parser.add_argument("--elastic", type=Path, help="a checkout of elastic/detection-rules")
    args = parser.parse_args()
    cases = sigma_cases()
    cases += cloud_sigma_cases(len(cases))
    if args.elastic:
        cases += elastic_cases(args.elastic, len(cases))
    result = measure(args.work, cases)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"] | {"sigma_self_check": result["sigma_self_check"]}, indent=2))


if __name__ == "__main__":
    main()
