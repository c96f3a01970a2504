"""Instance inventory beside the flow logs: which instance owns an interface or address, and what it is.

The flows collectors save the network's inventory (raw, as evidence): AWS ``DescribeInstances`` pages, Azure
network interfaces, public IP addresses and virtual machines as ARM lists them, GCP instances as
``instances.aggregatedList`` returns them. They become the ``instances`` table: instance id (the VM's resource id
on Azure, the instance name on GCP, as flow logs name it), network, subnet, image, launch template (GCP: the
instance template), Auto Scaling group (Azure: the scale set, GCP: the managed instance group), security groups
(Azure: the NIC's NSG, GCP: the network tags), tags (GCP: labels), interfaces (Azure: MAC addresses as flow logs
write them), addresses (private, then public: AWS's public and associated Elastic IPs, Azure's public IP
resources, GCP's external NAT IPs) and the identities the instance's code calls APIs with (Azure: the managed
identities' principal ids, client ids and resource ids; GCP: the attached service accounts' emails; AWS: none, its
role sessions are named after the instance). Flows without an instance
id are joined to it by interface, then by private address; the beacon analyzer builds its peer groups from it and
names the API calls of its identities.
"""

from __future__ import annotations

INSTANCES_DDL = """
CREATE TABLE IF NOT EXISTS instances (
    cloud           VARCHAR NOT NULL,
    account         VARCHAR,
    instance        VARCHAR NOT NULL,     -- EC2 instance id
    network         VARCHAR,              -- VPC id
    subnet          VARCHAR,
    image           VARCHAR,
    template        VARCHAR,              -- launch template id
    group_name      VARCHAR,              -- Auto Scaling group
    security_groups VARCHAR[],
    tags            MAP(VARCHAR, VARCHAR),
    interfaces      VARCHAR[],
    addresses       VARCHAR[],
    source_file     VARCHAR NOT NULL,
    identities      VARCHAR[]             -- lower case: Azure managed identities, GCP service account emails
);
ALTER TABLE instances ADD COLUMN IF NOT EXISTS identities VARCHAR[];
"""

DETECT_MARKER = '"Reservations"'

_SPEC = (
    '{"OwnerId":"VARCHAR","Instances":[{"InstanceId":"VARCHAR","ImageId":"VARCHAR","VpcId":"VARCHAR",'
    '"SubnetId":"VARCHAR","PrivateIpAddress":"VARCHAR","PublicIpAddress":"VARCHAR",'
    '"SecurityGroups":[{"GroupId":"VARCHAR"}],"Tags":[{"Key":"VARCHAR","Value":"VARCHAR"}],'
    '"NetworkInterfaces":[{"NetworkInterfaceId":"VARCHAR","Association":{"PublicIp":"VARCHAR"},'
    '"PrivateIpAddresses":[{"PrivateIpAddress":"VARCHAR","Association":{"PublicIp":"VARCHAR"}}]}]}]}'
)


def load_sql(documents: str) -> str:
    """Rows of ``instances`` from DescribeInstances pages in (file_no, doc) ``documents``; newest file wins."""
    return f"""
    WITH r AS (
        SELECT file_no, json_transform(rec, '{_SPEC}') AS r
        FROM (SELECT file_no, unnest(json_extract(doc, '$.Reservations[*]')) AS rec FROM ({documents}))
    ),
    i AS (SELECT file_no, r.OwnerId AS account, unnest(r.Instances) AS i FROM r),
    rows AS (
        SELECT 'aws' AS cloud, account, i.InstanceId AS instance, i.VpcId AS network, i.SubnetId AS subnet,
               i.ImageId AS image,
               map_from_entries(list_transform(coalesce(i.Tags, []), lambda t: {{'k': t.Key, 'v': t.Value}})) AS tags,
               list_transform(coalesce(i.SecurityGroups, []), lambda g: g.GroupId) AS security_groups,
               list_transform(coalesce(i.NetworkInterfaces, []), lambda n: n.NetworkInterfaceId) AS interfaces,
               -- private, then public: the instance's own, each interface's and each private address's (an
               -- Elastic IP is one of these once associated)
               list_distinct(list_filter(list_concat([i.PrivateIpAddress], flatten(list_transform(
                   coalesce(i.NetworkInterfaces, []),
                   lambda n: list_transform(coalesce(n.PrivateIpAddresses, []), lambda a: a.PrivateIpAddress))),
                   [i.PublicIpAddress], flatten(list_transform(coalesce(i.NetworkInterfaces, []),
                   lambda n: list_prepend(n.Association.PublicIp, list_transform(coalesce(n.PrivateIpAddresses, []),
                                                                                 lambda a: a.Association.PublicIp))))),
                   lambda a: a IS NOT NULL)) AS addresses,
               file_no
        FROM i WHERE i.InstanceId IS NOT NULL
    )
    SELECT cloud, account, instance, network, subnet, image, tags['aws:ec2launchtemplate:id'] AS template,
           tags['aws:autoscaling:groupName'] AS group_name, security_groups, tags, interfaces, addresses,
           []::VARCHAR[] AS identities, file_no
    FROM rows
    QUALIFY row_number() OVER (PARTITION BY cloud, instance ORDER BY file_no DESC) = 1
    """


_AZURE_SPEC = (
    '{"subscription":"VARCHAR","networkInterfaces":[{"id":"VARCHAR","properties":{"macAddress":"VARCHAR",'
    '"networkSecurityGroup":{"id":"VARCHAR"},"virtualMachine":{"id":"VARCHAR"},'
    '"ipConfigurations":[{"id":"VARCHAR","properties":{"privateIPAddress":"VARCHAR","subnet":{"id":"VARCHAR"}}}]}}],'
    '"publicIPAddresses":[{"properties":{"ipAddress":"VARCHAR","ipConfiguration":{"id":"VARCHAR"}}}],'
    '"virtualMachines":[{"id":"VARCHAR","tags":"MAP(VARCHAR, VARCHAR)",'
    '"identity":{"principalId":"VARCHAR","userAssignedIdentities":"MAP(VARCHAR, STRUCT(principalId VARCHAR, '
    'clientId VARCHAR))"},"properties":{'
    '"virtualMachineScaleSet":{"id":"VARCHAR"},"storageProfile":{"imageReference":{"id":"VARCHAR",'
    '"publisher":"VARCHAR","offer":"VARCHAR","sku":"VARCHAR"}}}}]}'
)


def load_azure_sql(documents: str) -> str:
    """Rows of ``instances`` from the Azure inventory files in (file_no, doc) ``documents``; newest file wins."""
    return f"""
    WITH inv AS (SELECT file_no, json_transform(doc, '{_AZURE_SPEC}') AS d FROM ({documents})),
    nics AS (
        SELECT file_no, d.subscription AS account, unnest(d.networkInterfaces).properties AS p FROM inv
    ),
    vms AS (SELECT file_no, unnest(d.virtualMachines) AS vm FROM inv),
    per_vm AS (
        SELECT file_no, any_value(account) AS account, lower(p.virtualMachine.id) AS vm_key,
               any_value(p.ipConfigurations[1].properties.subnet.id) AS subnet,
               list_distinct(list(p.networkSecurityGroup.id) FILTER (WHERE p.networkSecurityGroup.id IS NOT NULL))
                   AS security_groups,
               list(upper(replace(p.macAddress, '-', ''))) FILTER (WHERE p.macAddress IS NOT NULL) AS interfaces,
               flatten(list(list_transform(p.ipConfigurations, lambda c: c.properties.privateIPAddress))) AS addresses
        FROM nics WHERE p.virtualMachine.id IS NOT NULL GROUP BY file_no, vm_key
    ),
    configs AS (
        SELECT file_no, lower(p.virtualMachine.id) AS vm_key,
               unnest(list_transform(p.ipConfigurations, lambda c: lower(c.id))) AS config
        FROM nics WHERE p.virtualMachine.id IS NOT NULL
    ),
    pips AS (SELECT file_no, unnest(d.publicIPAddresses).properties AS p FROM inv),
    public AS (  -- a NIC names its public IP by resource id only: the address is on the public IP's own resource
        SELECT c.file_no, c.vm_key, list(DISTINCT pips.p.ipAddress) AS addresses
        FROM configs c JOIN pips ON pips.file_no = c.file_no AND lower(pips.p.ipConfiguration.id) = c.config
        WHERE pips.p.ipAddress IS NOT NULL GROUP BY c.file_no, c.vm_key
    )
    SELECT 'azure' AS cloud, n.account, coalesce(v.vm.id, n.vm_key) AS instance,
           regexp_replace(n.subnet, '/subnets/[^/]*$', '') AS network, n.subnet,
           coalesce(v.vm.properties.storageProfile.imageReference.id,
                    nullif(concat_ws(':', v.vm.properties.storageProfile.imageReference.publisher,
                                     v.vm.properties.storageProfile.imageReference.offer,
                                     v.vm.properties.storageProfile.imageReference.sku), '')) AS image,
           NULL::VARCHAR AS template, v.vm.properties.virtualMachineScaleSet.id AS group_name,
           n.security_groups, coalesce(v.vm.tags, MAP {{}}::MAP(VARCHAR, VARCHAR)) AS tags, n.interfaces,
           list_distinct(list_filter(list_concat(n.addresses, coalesce(pub.addresses, [])), lambda a: a IS NOT NULL))
               AS addresses,
           list_sort(list_distinct(list_transform(list_filter(list_concat(
               [v.vm.identity.principalId, CASE WHEN v.vm.identity.principalId IS NOT NULL THEN v.vm.id END],
               map_keys(coalesce(v.vm.identity.userAssignedIdentities, MAP {{}})),
               flatten(list_transform(map_values(coalesce(v.vm.identity.userAssignedIdentities, MAP {{}})),
                                      lambda u: [u.principalId, u.clientId]))), lambda k: k IS NOT NULL),
               lambda k: lower(k)))) AS identities, n.file_no
    FROM per_vm n LEFT JOIN vms v ON v.file_no = n.file_no AND lower(v.vm.id) = n.vm_key
    LEFT JOIN public pub ON pub.file_no = n.file_no AND pub.vm_key = n.vm_key
    QUALIFY row_number() OVER (PARTITION BY n.vm_key ORDER BY n.file_no DESC) = 1
    """


_GCP_SPEC = (
    '{"project":"VARCHAR","instances":[{"name":"VARCHAR","zone":"VARCHAR","labels":"MAP(VARCHAR, VARCHAR)",'
    '"tags":{"items":["VARCHAR"]},"metadata":{"items":[{"key":"VARCHAR","value":"VARCHAR"}]},'
    '"disks":[{"boot":"BOOLEAN","source":"VARCHAR"}],"serviceAccounts":[{"email":"VARCHAR"}],'
    '"networkInterfaces":[{"network":"VARCHAR","subnetwork":"VARCHAR","networkIP":"VARCHAR",'
    '"accessConfigs":[{"natIP":"VARCHAR"}]}]}]}'
)


def load_gcp_sql(documents: str) -> str:
    """Rows of ``instances`` from the GCP inventory files in (file_no, doc) ``documents``; newest file wins.

    The managed instance group is the ``created-by`` metadata value, the template ``instance-template``, as
    Compute Engine sets them; the image is the boot disk (an instance names no image)."""
    return f"""
    WITH inv AS (SELECT file_no, json_transform(doc, '{_GCP_SPEC}') AS d FROM ({documents})),
    i AS (SELECT file_no, d.project AS account, unnest(d.instances) AS i FROM inv),
    rows AS (
        SELECT file_no, account, i.name AS instance,
               map_from_entries(list_transform(coalesce(i.metadata.items, []),
                                               lambda m: {{'k': m.key, 'v': m.value}})) AS meta,
               i.networkInterfaces[1] AS nic, i
        FROM i WHERE i.name IS NOT NULL
    )
    SELECT 'gcp' AS cloud, account, instance, regexp_extract(nic.network, '[^/]*$') AS network,
           regexp_extract(nic.subnetwork, '[^/]*$') AS subnet,
           list_filter(i.disks, lambda d: d.boot)[1].source AS image, meta['instance-template'] AS template,
           meta['created-by'] AS group_name, coalesce(i.tags.items, []) AS security_groups,
           coalesce(i.labels, MAP {{}}::MAP(VARCHAR, VARCHAR)) AS tags, []::VARCHAR[] AS interfaces,
           list_distinct(list_filter(flatten(list_transform(coalesce(i.networkInterfaces, []),
               lambda n: list_prepend(n.networkIP, list_transform(coalesce(n.accessConfigs, []), lambda a: a.natIP)))),
               lambda a: a IS NOT NULL)) AS addresses,
           list_sort(list_distinct(list_transform(list_filter(coalesce(i.serviceAccounts, []),
                                                              lambda s: s.email IS NOT NULL),
                                                  lambda s: lower(s.email)))) AS identities,
           file_no
    FROM rows
    QUALIFY row_number() OVER (PARTITION BY instance ORDER BY file_no DESC) = 1
    """
