"""AutomationEngine against the real Pulumi CLI, a local file backend and moto server.

These tests need the `pulumi` CLI on PATH and skip without it; the integration
workflow (.github/workflows/integration.yml) installs the CLI and runs them.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from popstack.engine import SECRET_MASK, AutomationEngine

pytestmark = pytest.mark.skipif(
    shutil.which("pulumi") is None,
    reason="the Pulumi CLI is not on PATH; .github/workflows/integration.yml installs it "
    "and runs these tests",
)

# A made-up placeholder for a secret. The tests check that it never appears in plain
# text in the stack file, the exported state or the outputs.
PLAIN_TOKEN = "not-a-real-token-4f1c"

PROGRAM = """\
import pulumi

config = pulumi.Config()
greeting = config.require("greeting")
if greeting == "fail":
    raise pulumi.RunError("greeting 'fail' makes this program fail on purpose")
pulumi.export("greeting", greeting)
token = config.get_secret("token")
if token is not None:
    pulumi.export("token", token)
"""

BUCKET_PROGRAM = """\
import pulumi
import pulumi_aws as aws

bucket = aws.s3.Bucket("checkpoints", bucket="popstack-cli-check", force_destroy=True)
pulumi.export("bucket", bucket.bucket)
"""


def write_project(directory: Path, name: str, program: str, stack_config: str) -> None:
    directory.mkdir(parents=True)
    (directory / "Pulumi.yaml").write_text(
        f"name: {name}\n"
        "runtime:\n"
        "  name: python\n"
        "  options:\n"
        "    toolchain: pip\n"
        f"    virtualenv: {sys.prefix}\n"
        "stackConfigDir: stacks\n"
    )
    (directory / "__main__.py").write_text(program)
    (directory / "stacks").mkdir()
    (directory / "stacks" / "Pulumi.dev.yaml").write_text(stack_config)


@pytest.fixture
def file_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{state}")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "test-only-passphrase")
    monkeypatch.setenv("PULUMI_SKIP_UPDATE_CHECK", "true")
    return state


def test_engine_lifecycle_on_file_backend(tmp_path: Path, file_backend: Path) -> None:
    project = tmp_path / "project"
    write_project(project, "engine-check", PROGRAM, "config:\n  engine-check:greeting: hello\n")
    engine = AutomationEngine(project)
    lines: list[str] = []

    created = engine.up("dev", on_output=lines.append)
    assert created.ok is True, created.message
    assert created.outputs == {"greeting": "hello"}
    assert created.summary.get("create", 0) >= 1
    assert lines, "up printed no output"
    assert engine.exists("dev") is True
    assert "dev" in engine.stack_names()

    engine.set_config("dev", "engine-check:token", PLAIN_TOKEN, secret=True)
    stack_file = (project / "stacks" / "Pulumi.dev.yaml").read_text()
    assert PLAIN_TOKEN not in stack_file
    config = engine.get_config("dev")
    assert config["engine-check:token"].secret is True
    assert config["engine-check:token"].value != PLAIN_TOKEN
    assert config["engine-check:greeting"].value == "hello"

    updated = engine.up("dev")
    assert updated.ok is True, updated.message
    assert updated.outputs == {"greeting": "hello", "token": SECRET_MASK}
    assert engine.outputs("dev") == {"greeting": "hello", "token": SECRET_MASK}

    state = engine.export_state("dev")
    assert state["version"] == 3
    assert PLAIN_TOKEN not in json.dumps(state)
    assert "ciphertext" in json.dumps(state)

    preview = engine.preview("dev")
    assert preview.ok is True, preview.message
    assert preview.summary.get("same", 0) >= 1

    engine.set_config("dev", "engine-check:greeting", "fail")
    failed = engine.up("dev")
    assert failed.ok is False
    assert "greeting 'fail' makes this program fail on purpose" in failed.message

    engine.import_state("dev", state)
    assert engine.outputs("dev") == {"greeting": "hello", "token": SECRET_MASK}

    engine.set_config("dev", "engine-check:greeting", "hello")
    engine.remove_config("dev", "engine-check:token")
    assert "engine-check:token" not in engine.get_config("dev")

    destroyed = engine.destroy("dev")
    assert destroyed.ok is True, destroyed.message
    assert engine.outputs("dev") == {}


def test_engine_deploys_to_moto(
    tmp_path: Path,
    file_backend: Path,
    moto_server: str,
    aws_client: Callable[..., Any],
    moto_reset: None,
) -> None:
    project = tmp_path / "bucket-project"
    stack_config = (
        "config:\n"
        "  aws:region: us-east-1\n"
        "  aws:skipCredentialsValidation: true\n"
        "  aws:skipRequestingAccountId: true\n"
        "  aws:skipMetadataApiCheck: true\n"
        "  aws:s3UsePathStyle: true\n"
        "  aws:endpoints:\n"
        f"    - s3: {moto_server}\n"
        f"      sts: {moto_server}\n"
    )
    write_project(project, "bucket-check", BUCKET_PROGRAM, stack_config)
    engine = AutomationEngine(project)
    s3 = aws_client("s3")

    result = engine.up("dev")
    assert result.ok is True, result.message
    assert result.outputs == {"bucket": "popstack-cli-check"}
    assert s3.head_bucket(Bucket="popstack-cli-check")["ResponseMetadata"]["HTTPStatusCode"] == 200

    destroyed = engine.destroy("dev")
    assert destroyed.ok is True, destroyed.message
    names = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    assert "popstack-cli-check" not in names
