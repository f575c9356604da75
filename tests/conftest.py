"""Shared fixtures for tests that call AWS through moto in server mode.

``moto_server`` starts one moto server on 127.0.0.1 for the whole session, and every
client built by these fixtures talks to it over HTTP. ``aws_env`` replaces the AWS
environment with fake credentials first, so no request can reach a real AWS account.

Typical use::

    def test_queue(aws_client, moto_reset):
        sqs = aws_client("sqs")
        ...

Code under test that builds its own boto3 clients reaches the server through
``moto_endpoint_env``, which sets ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Start moto in server mode on a free port of 127.0.0.1 and yield its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def moto_api(moto_server: str) -> Callable[..., None]:
    """Return a function that POSTs JSON to moto's control API.

    ``moto_api("/moto-api/reset")`` deletes every resource, and
    ``moto_api("/moto-api/config", {"lambda": {"use_docker": False}})`` changes the
    server's configuration.
    """

    def post(path: str, body: dict[str, Any] | None = None) -> None:
        request = urllib.request.Request(
            moto_server + path,
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    return post


@pytest.fixture
def moto_reset(moto_api: Callable[..., None]) -> Iterator[None]:
    """Delete every resource in the moto server before and after the test."""
    moto_api("/moto-api/reset")
    yield
    moto_api("/moto-api/reset")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Replace the AWS environment with fake credentials in region us-east-1.

    Removes profiles, session tokens, role and container credential settings and
    endpoint overrides, points the config and credentials files at missing paths, turns
    off the EC2 instance metadata lookup, and drops boto3's cached default session.
    """
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


@pytest.fixture
def moto_endpoint_env(aws_env: None, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Set ``AWS_ENDPOINT_URL`` to the moto server, so every new boto3 client uses it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def aws_client(aws_env: None, moto_server: str) -> Callable[..., Any]:
    """Return a factory: ``aws_client("s3")`` is a boto3 client for the moto server."""

    def make(service_name: str, **kwargs: Any) -> Any:
        return boto3.client(service_name, endpoint_url=moto_server, region_name=REGION, **kwargs)

    return make


# ---------------------------------------------------------------------------
# Recorded plans: the real program run under Pulumi mocks, once per stack file
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def recorded() -> Callable[..., Any]:
    """Return a factory that records the program for a stack file, once per session.

    ``recorded("lisbon-popup")`` runs ``stacks/Pulumi.lisbon-popup.yaml`` under Pulumi
    mocks and returns its ``popstack.mockrun.Recording``; ``recorded(path)`` does the
    same for any stack file. Tests share each recording, so they must not change it.
    """
    import warnings
    from pathlib import Path

    from components.spec import load_stack_file
    from popstack.mockrun import record_program

    stacks_dir = Path(__file__).resolve().parent.parent / "stacks"
    recordings: dict[Path, Any] = {}

    def record(stack: str | Path) -> Any:
        path = stack if isinstance(stack, Path) else stacks_dir / f"Pulumi.{stack}.yaml"
        if path not in recordings:
            # pulumi_aws 7 warns about its deprecated resource classes when one of its
            # submodules is first imported, and `filterwarnings = error` would fail the
            # test. NOTE: an ignore entry for pulumi_aws in pyproject's filterwarnings
            # would make this filter unnecessary.
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", category=DeprecationWarning, module=r"pulumi_aws\."
                )
                recordings[path] = record_program(load_stack_file(path))
        return recordings[path]

    return record
