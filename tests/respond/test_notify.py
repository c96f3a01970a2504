"""Notifications arrive: SNS (sandboxed), Slack, Teams and generic JSON webhooks, and SMTP, on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records
from cloudir.notify import Channel, Message, deliver
from tests.respond.conftest import AwsIncident

runner = CliRunner()
SLACK_TOKEN = "T0SECRET/B0SECRET/slack-token-4f1c9e"  # a test secret that must never reach the case
TEAMS_TOKEN = "teams-sig-77aa31"
SMTP_PASSWORD = "smtp-pass-0b9d2e"


@dataclass
class Inbox:
    """What the local servers received."""

    http: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    mail: list[tuple[Envelope, bytes]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int, int]]:
    """An HTTP server and an SMTP server (with AUTH) on 127.0.0.1; yields the inbox and both ports."""
    box = Inbox()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            box.http.append((self.path, json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            del args

    class Mail:
        async def handle_DATA(self, server: object, session: Session, envelope: Envelope) -> str:
            del server, session
            box.mail.append((envelope, bytes(envelope.content or b"")))
            return "250 OK"

    def authenticate(server: object, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        del server, session, envelope, mechanism
        assert isinstance(data, LoginPassword)
        box.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password.decode() == SMTP_PASSWORD)

    http = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    smtp_port = _free_port()
    smtp = Controller(Mail(), hostname="127.0.0.1", port=smtp_port, authenticator=authenticate, auth_require_tls=False)
    smtp.start()
    try:
        yield box, http.server_address[1], smtp_port
    finally:
        smtp.stop()
        http.shutdown()
        http.server_close()


def test_pending_approval_reaches_every_channel_and_no_secret_reaches_the_case(
    aws_incident: AwsIncident, inbox: tuple[Inbox, int, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box, http_port, smtp_port = inbox
    sandbox = aws_incident.sandbox
    sqs, sns = sandbox.client("sqs"), sandbox.client("sns")
    queue = sqs.create_queue(QueueName="soc-pager")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name="cloudir-alerts")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    secret = sandbox.client("secretsmanager").create_secret(
        Name="cloudir/slack-webhook", SecretString=f"http://127.0.0.1:{http_port}/slack/{SLACK_TOKEN}"
    )["ARN"]
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[notify.pager]
type = "sns"
topic_arn = "{topic}"

[notify.soc-slack]
type = "slack"
url_secret = "{secret}"

[notify.soc-teams]
type = "teams"
url = "http://127.0.0.1:{http_port}/teams?sig={TEAMS_TOKEN}"

[notify.siem]
type = "webhook"
url = "http://127.0.0.1:{http_port}/siem"

[notify.soc-mail]
type = "email"
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
username = "cloudir"
password = "{SMTP_PASSWORD}"
sender = "cloudir@example.org"
to = ["soc@example.org", "counsel@example.org"]
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("CLOUDIR_CONFIG", str(config))
    finding = tmp_path / "finding.json"
    finding.write_text(json.dumps(aws_incident.finding))
    case_dir = tmp_path / "case"
    params = [arg for key, value in aws_incident.params.items() for arg in ("--param", f"{key}={value}")]
    result = runner.invoke(app, ["respond", "--trigger", str(finding), "--case", str(case_dir), *params])
    assert result.exit_code == 0, result.output
    assert "awaiting-approval" in result.output
    approve = f"cloudir respond --case {case_dir} --approve"

    paths = sorted(path for path, _ in box.http)
    assert [p.split("/")[1].split("?")[0] for p in paths] == ["siem", "slack", "teams"]
    bodies = {path.split("/")[1].split("?")[0]: body for path, body in box.http}
    assert approve in bodies["slack"]["text"]
    card = bodies["teams"]["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard"
    assert str(case_dir).replace("_", "\\_") in card["body"][1]["text"]
    assert bodies["siem"]["approve_command"] == approve
    assert bodies["siem"]["summary"]["actions_taken"]["containment"] == "awaiting approval"

    [(envelope, raw)] = box.mail
    assert envelope.rcpt_tos == ["soc@example.org", "counsel@example.org"]
    assert box.logins == [("cloudir", SMTP_PASSWORD)]
    mail = message_from_bytes(raw)
    assert str(mail["Subject"]).startswith("cloudir case ")
    assert approve in mail.get_payload(decode=True).decode()

    [delivered] = sqs.receive_message(QueueUrl=queue)["Messages"]
    assert approve in json.loads(delivered["Body"])["Message"]

    calls = [
        (call["service"], call["operation"], call["outcome"])
        for record in read_records(case_dir / "custody.jsonl")
        for call in record["api_calls"]
    ]
    assert ("sns", "Publish", "ok") in calls
    assert ("secretsmanager", "GetSecretValue", "ok") in calls
    for path in case_dir.rglob("*"):  # no secret anywhere in the case (custody log, step results, reports)
        if path.is_file():
            data = path.read_bytes()
            for token in (SLACK_TOKEN, TEAMS_TOKEN, SMTP_PASSWORD):
                assert token.encode() not in data, path


def test_attacker_text_cannot_mention_or_link_in_slack_and_a_failure_is_masked(
    inbox: tuple[Inbox, int, int],
) -> None:
    box, http_port, _ = inbox
    hostile = Message("x", "<!channel> <https://evil.example|open the case> & more", "/case")
    url = f"http://127.0.0.1:{http_port}/slack"
    sent = deliver(Channel("s", "slack", {"type": "slack", "url": url}), hostile, case=None)
    assert sent == {"channel": "s", "type": "slack", "outcome": "sent"}
    assert box.http[-1][1]["text"] == "&lt;!channel&gt; &lt;https://evil.example|open the case&gt; &amp; more"
    secret_url = f"http://127.0.0.1:{_free_port()}/hook/{SLACK_TOKEN}"  # nothing listens there
    failed = deliver(Channel("s", "webhook", {"type": "webhook", "url": secret_url}), hostile, case=None)
    assert failed["outcome"] == "failed"
    assert SLACK_TOKEN not in json.dumps(failed)
    refused = deliver(
        Channel("s", "webhook", {"type": "webhook", "url": "http://hooks.example.org/x"}),
        hostile,
        case=None,
    )
    assert refused["outcome"] == "failed"
    assert "must be https://" in refused["error"]
