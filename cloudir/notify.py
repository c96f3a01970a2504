"""Notifications that reach people: SNS, HTTPS webhooks (Slack, Microsoft Teams, generic JSON) and SMTP e-mail.

Channels are named tables of the configuration (``[notify.NAME]``). Secrets (webhook URLs, SMTP passwords) come
from the configuration or from AWS Secrets Manager (``url_secret`` / ``password_secret``); they are never written
to the case: a delivery is recorded by channel name, type and outcome only, and an error message has every
secret value masked. Message text comes from the case, which attackers partly wrote: it is escaped for each
channel's markup (Slack mrkdwn control characters, Teams Markdown) and e-mail headers are single lines.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cloudir.errors import CloudirError

if TYPE_CHECKING:
    from cloudir.case import Case

TYPES = ("sns", "slack", "teams", "webhook", "email")
_KEYS = {
    "sns": {"type", "topic_arn", "region"},
    "slack": {"type", "url", "url_secret", "secret_region"},
    "teams": {"type", "url", "url_secret", "secret_region"},
    "webhook": {"type", "url", "url_secret", "secret_region"},
    "email": {
        "type",
        "host",
        "port",
        "tls",
        "username",
        "password",
        "password_secret",
        "secret_region",
        "sender",
        "to",
    },
}
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
MAX_TEXT = 3500
TIMEOUT = 20.0


@dataclass(frozen=True)
class Message:
    """What every channel delivers: a one-line subject, a plain-text body, where the case is."""

    subject: str
    text: str
    case: str
    approve_command: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # the incident summary, for the generic JSON webhook


@dataclass(frozen=True)
class Channel:
    """A configured channel (secrets not yet resolved)."""

    name: str
    type: str
    settings: dict[str, Any]


def channels_from_config(tables: dict[str, dict[str, Any]], names: list[str] | None = None) -> list[Channel]:
    """The configured channels (all, or those ``names`` picks), each checked for its type's settings."""
    if names is not None and (missing := [n for n in names if n not in tables]):
        raise CloudirError(
            f"notification channel(s) {', '.join(missing)} not configured",
            hint="add a [notify.NAME] table to the configuration (cloudir config show prints where it is)",
        )
    channels = []
    for name in names if names is not None else sorted(tables):
        table = tables[name]
        kind = table.get("type")
        if kind not in TYPES:
            raise CloudirError(f"[notify.{name}]: type must be one of {', '.join(TYPES)}")
        if unknown := set(table) - _KEYS[kind]:
            raise CloudirError(f"[notify.{name}]: unknown key(s) {', '.join(sorted(unknown))} for type {kind}")
        required = {
            "sns": ("topic_arn",),
            "email": ("host", "sender", "to"),
        }.get(kind, ())
        if missing_keys := [key for key in required if not table.get(key)]:
            raise CloudirError(f"[notify.{name}]: {', '.join(missing_keys)} required for type {kind}")
        if kind in {"slack", "teams", "webhook"} and not (table.get("url") or table.get("url_secret")):
            raise CloudirError(f"[notify.{name}]: url or url_secret required for type {kind}")
        channels.append(Channel(name, kind, dict(table)))
    return channels


def message_for(summary: dict[str, Any], case_dir: str) -> Message:
    """The notification for a case from its incident summary; a pending containment names the approve command."""
    pending = summary["actions_taken"]["awaiting_approval"]
    approve = f"cloudir respond --case {case_dir} --approve" if pending else None
    incidents = summary["affected"]["incidents"]
    headline = str(incidents[0]["title"]) if incidents else "no incident found yet"
    subject = _one_line(f"cloudir case {summary['case_id']}: {headline}")[:100]
    lines = [subject, ""]
    for section in summary["narrative"]:
        if section["section"] in {"access", "data", "persistence", "response"}:
            lines += [f"- {_one_line(s)}" for s in section["sentences"][:6]]
    accounts = summary["impact"]["external_accounts"]
    lines += ["", f"Accounts outside the organisation: {', '.join(accounts) or 'none seen'}"]
    lines += [f"Containment: {summary['actions_taken']['containment']}"]
    if approve:
        lines += [f"Containment awaits approval for {', '.join(pending)}. Approve with:", approve]
    lines += [f"Case: {case_dir}", f"Report: {case_dir}/reports/report.html"]
    text = "\n".join(lines)
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 40] + "\n[truncated: see the case report]\n" + (approve or "")
    return Message(subject, text, case_dir, approve, summary)


def deliver(channel: Channel, message: Message, *, case: Case | None) -> dict[str, Any]:
    """Send ``message`` on ``channel``; the result names the channel and the outcome, never a secret.

    Cloud API calls (SNS Publish, Secrets Manager reads) are recorded in ``case``'s custody log.
    """
    secrets = _Secrets(channel, case)
    try:
        _SENDERS[channel.type](channel, message, secrets)
    except Exception as exc:  # noqa: BLE001 - any failure (network, SMTP, AWS) is reported, masked, not raised
        error = f"{type(exc).__name__}: {exc}"
        for secret in secrets.seen:
            error = error.replace(secret, "***")
        return {"channel": channel.name, "type": channel.type, "outcome": "failed", "error": error[:500]}
    return {"channel": channel.name, "type": channel.type, "outcome": "sent"}


def _region(arn: str) -> str | None:
    return arn.split(":")[3] or None if arn.startswith("arn:") and arn.count(":") >= 5 else None


class _Secrets:
    """Resolves a setting or its ``*_secret`` from AWS Secrets Manager, remembering values to mask them."""

    def __init__(self, channel: Channel, case: Case | None) -> None:
        self.channel, self.case = channel, case
        self.seen: list[str] = []
        self._aws: Any = None

    @property
    def aws(self) -> Any:
        """The registered AWS notifier (SNS publish, Secrets Manager read), bound to the case."""
        if self._aws is None:
            from cloudir.registry import notifier_class

            self._aws = notifier_class("aws")(self.case)
        return self._aws

    def get(self, key: str) -> str | None:
        settings = self.channel.settings
        value = settings.get(key)
        if value is None and settings.get(f"{key}_secret"):
            secret_id = str(settings[f"{key}_secret"])
            value = self.aws.secret(secret_id, settings.get("secret_region") or _region(secret_id))
        if value is not None:
            self.seen.append(str(value))
        return None if value is None else str(value)


def _send_sns(channel: Channel, message: Message, secrets: _Secrets) -> None:
    topic = str(channel.settings["topic_arn"])
    secrets.aws.publish(topic, channel.settings.get("region") or _region(topic), message.subject, message.text)


def _slack_escape(text: str) -> str:
    """Slack mrkdwn: &, < and > are its control characters (links, mentions such as <!channel>)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _teams_escape(text: str) -> str:
    for char in "\\`*_[]<>#|~":
        text = text.replace(char, "\\" + char)
    return text


def _payload(channel: Channel, message: Message) -> dict[str, Any]:
    if channel.type == "slack":
        return {"text": _slack_escape(message.text)}
    if channel.type == "teams":  # an Adaptive Card, as Teams workflows ("when a webhook request is received") take
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {"type": "TextBlock", "text": _teams_escape(message.subject), "weight": "Bolder", "wrap": True},
                {"type": "TextBlock", "text": _teams_escape(message.text), "wrap": True},
            ],
        }
        return {
            "type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
        }
    return {
        "subject": message.subject,
        "text": message.text,
        "case": message.case,
        "approve_command": message.approve_command,
        "summary": message.facts,
    }


def _send_webhook(channel: Channel, message: Message, secrets: _Secrets) -> None:
    url = secrets.get("url") or ""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        raise CloudirError(f"[notify.{channel.name}]: the webhook URL must be https:// (http only to loopback)")
    body = json.dumps(_payload(channel, message), default=str).encode()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "cloudir"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT, context=ssl.create_default_context()) as response:  # noqa: S310
        if response.status >= 300:
            raise CloudirError(f"webhook answered HTTP {response.status}")


def _send_email(channel: Channel, message: Message, secrets: _Secrets) -> None:
    settings = channel.settings
    tls = str(settings.get("tls", "starttls"))
    if tls not in {"starttls", "ssl", "none"}:
        raise CloudirError(f"[notify.{channel.name}]: tls must be starttls, ssl or none")
    host = str(settings["host"])
    if tls == "none" and host not in _LOOPBACK:
        raise CloudirError(f"[notify.{channel.name}]: tls = none only to a loopback SMTP server")
    port = int(settings.get("port", 465 if tls == "ssl" else 587))
    email = EmailMessage()
    email["Subject"] = _one_line(message.subject)
    email["From"] = str(settings["sender"])
    recipients = settings["to"] if isinstance(settings["to"], list) else [settings["to"]]
    email["To"] = ", ".join(map(str, recipients))
    email.set_content(message.text)
    context = ssl.create_default_context()
    smtp = (
        smtplib.SMTP_SSL(host, port, timeout=TIMEOUT, context=context)
        if tls == "ssl"
        else smtplib.SMTP(host, port, timeout=TIMEOUT)
    )
    with smtp:
        if tls == "starttls":
            smtp.starttls(context=context)
        username = settings.get("username")
        if username:
            smtp.login(str(username), secrets.get("password") or "")
        smtp.send_message(email)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


_SENDERS: dict[str, Callable[[Channel, Message, _Secrets], None]] = {
    "sns": _send_sns,
    "slack": _send_webhook,
    "teams": _send_webhook,
    "webhook": _send_webhook,
    "email": _send_email,
}
