"""SNS delivery and Secrets Manager reads for notifications (cloudir.notify); every call recorded in the case."""

from __future__ import annotations

from typing import TYPE_CHECKING

from providers.aws.session import AwsClients

if TYPE_CHECKING:
    from cloudir.case import Case


class AwsNotifier:
    """Publishes to SNS topics and reads secrets with the ambient AWS credentials."""

    def __init__(self, case: Case | None) -> None:
        self.clients = AwsClients()
        self.clients.bind(case)

    def publish(self, topic_arn: str, region: str | None, subject: str, text: str) -> None:
        """Publish one message (SNS subjects: at most 100 printable ASCII characters, one line)."""
        subject = "".join(c for c in subject if 32 <= ord(c) < 127)[:100] or "cloudir notification"
        self.clients.client("sns", region).publish(TopicArn=topic_arn, Subject=subject, Message=text)

    def secret(self, secret_id: str, region: str | None) -> str:
        """The string value of a Secrets Manager secret."""
        return str(self.clients.client("secretsmanager", region).get_secret_value(SecretId=secret_id)["SecretString"])
