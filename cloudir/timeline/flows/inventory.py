"""Instance inventory beside the flow logs: which instance owns an interface or address, and what it is.

The flows collector saves the network's ``DescribeInstances`` pages (raw, as evidence); they become the
``instances`` table: instance id, network, subnet, image, launch template, Auto Scaling group, security groups,
tags, interfaces and private addresses. Flows without an instance id are joined to it by interface, then by
private address; the beacon analyzer builds its peer groups from it.
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
    source_file     VARCHAR NOT NULL
);
"""

DETECT_MARKER = '"Reservations"'

_SPEC = (
    '{"OwnerId":"VARCHAR","Instances":[{"InstanceId":"VARCHAR","ImageId":"VARCHAR","VpcId":"VARCHAR",'
    '"SubnetId":"VARCHAR","PrivateIpAddress":"VARCHAR","SecurityGroups":[{"GroupId":"VARCHAR"}],'
    '"Tags":[{"Key":"VARCHAR","Value":"VARCHAR"}],'
    '"NetworkInterfaces":[{"NetworkInterfaceId":"VARCHAR","PrivateIpAddresses":[{"PrivateIpAddress":"VARCHAR"}]}]}]}'
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
               list_distinct(list_filter(list_prepend(i.PrivateIpAddress, flatten(list_transform(
                   coalesce(i.NetworkInterfaces, []),
                   lambda n: list_transform(coalesce(n.PrivateIpAddresses, []), lambda a: a.PrivateIpAddress)))),
                   lambda a: a IS NOT NULL)) AS addresses,
               file_no
        FROM i WHERE i.InstanceId IS NOT NULL
    )
    SELECT cloud, account, instance, network, subnet, image, tags['aws:ec2launchtemplate:id'] AS template,
           tags['aws:autoscaling:groupName'] AS group_name, security_groups, tags, interfaces, addresses, file_no
    FROM rows
    QUALIFY row_number() OVER (PARTITION BY cloud, instance ORDER BY file_no DESC) = 1
    """
