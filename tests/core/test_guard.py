"""The sandbox guard: fake credentials, and no connection may leave this machine."""

import os
import socket

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import HTTPClientError

from moto_fixtures.guard import FAKE_ENV, RealCloudAccessError, sandbox_environment


def test_tests_run_with_fake_credentials() -> None:
    assert os.environ["AWS_ACCESS_KEY_ID"] == FAKE_ENV["AWS_ACCESS_KEY_ID"]
    assert "AWS_PROFILE" not in os.environ


def test_a_connection_off_this_machine_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(RealCloudAccessError):
        sock.connect(("192.0.2.1", 443))


def test_a_real_aws_endpoint_is_refused_through_boto3() -> None:
    client = boto3.client("sts", region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
    with pytest.raises(HTTPClientError, match=r"blocked a name lookup of 'sts\.us-east-1\.amazonaws\.com'"):
        client.get_caller_identity()


def test_loopback_is_allowed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2):
            pass


def test_the_guard_is_lifted_and_env_restored_on_exit() -> None:
    original = socket.socket.connect
    os.environ["AWS_PROFILE"] = "outer"
    try:
        with sandbox_environment():
            assert "AWS_PROFILE" not in os.environ
            assert socket.socket.connect is not original
        assert os.environ["AWS_PROFILE"] == "outer"
    finally:
        os.environ.pop("AWS_PROFILE", None)
