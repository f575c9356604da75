"""Tests for the rotation Lambda handler against moto in server mode.

Each step runs through ``lambda_handler`` with boto3 clients that reach moto over HTTP,
because ``moto_endpoint_env`` sets ``AWS_ENDPOINT_URL``.

How rotation is started without running a Lambda: moto's RotateSecret invokes the
rotation function, and moto's default Lambda backend needs a container engine, which
these machines lack. The ``rotation_function`` fixture therefore switches moto to its
Docker-free Lambda backend (POST ``/moto-api/config`` with ``lambda.use_docker`` false),
whose invoke returns without running any code. RotateSecret then does what AWS does
before it calls createSecret: it turns RotationEnabled on and adds an empty version,
staged AWSPENDING, whose id is the ClientRequestToken. The tests then call the handler
for each step with that token. moto 5.2.5 also points its default version at the new
version, so every read in these tests names a VersionStage, as the handler does.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import uuid
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from lambdas.rotation import handler

ROTATION_DIR = Path(handler.__file__).parent
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
USER_ID = "popstack-test-cache"


@pytest.fixture
def secrets_client(moto_reset: None, moto_endpoint_env: str, aws_client: Callable[..., Any]) -> Any:
    return aws_client("secretsmanager")


@pytest.fixture
def rotation_function(
    moto_api: Callable[..., None], secrets_client: Any, aws_client: Callable[..., Any]
) -> Iterator[str]:
    """Create the rotation Lambda in moto's Docker-free backend and yield its ARN."""
    moto_api("/moto-api/config", {"lambda": {"use_docker": False}})
    role_arn = aws_client("iam").create_role(
        RoleName="popstack-test-rotation",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    function_arn = aws_client("lambda").create_function(
        FunctionName="popstack-test-rotation",
        Runtime="python3.12",
        Role=role_arn,
        Handler="handler.lambda_handler",
        Code={"ZipFile": _zip_rotation_folder()},
    )["FunctionArn"]
    yield function_arn
    moto_api("/moto-api/config", {"lambda": {"use_docker": True}})


def _zip_rotation_folder() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(ROTATION_DIR.glob("*.py")):
            archive.write(path, path.name)
    return buffer.getvalue()


def create_token_secret(client: Any, name: str = "popstack-test-token") -> tuple[str, str]:
    """Create a token secret and return its ARN and initial SecretString."""
    value = json.dumps({"kind": "token", "token": secrets.token_urlsafe(32)})
    arn = client.create_secret(
        Name=name,
        SecretString=value,
        Tags=[{"Key": handler.SECRET_KIND_TAG, "Value": handler.KIND_TOKEN}],
    )["ARN"]
    return arn, value


def create_cache_auth_secret(client: Any) -> tuple[str, dict[str, str]]:
    """Create a cache-auth secret and return its ARN and initial value."""
    value = {"userId": USER_ID, "username": USER_ID, "password": secrets.token_hex(24)}
    arn = client.create_secret(
        Name="popstack-test-cache-auth",
        SecretString=json.dumps(value),
        Tags=[{"Key": handler.SECRET_KIND_TAG, "Value": handler.KIND_CACHE_AUTH}],
    )["ARN"]
    return arn, value


def start_rotation(client: Any, secret_arn: str, function_arn: str) -> str:
    """Call RotateSecret and return the token of the empty AWSPENDING version."""
    response = client.rotate_secret(
        SecretId=secret_arn,
        RotationLambdaARN=function_arn,
        RotationRules={"AutomaticallyAfterDays": 7},
    )
    return response["VersionId"]


def run_step(step: str, secret_arn: str, token: str) -> None:
    event = {"Step": step, "SecretId": secret_arn, "ClientRequestToken": token}
    handler.lambda_handler(event, None)


def version_stages(client: Any, secret_arn: str) -> dict[str, list[str]]:
    """Return each version's staging labels, read with ListSecretVersionIds."""
    versions = client.list_secret_version_ids(SecretId=secret_arn)["Versions"]
    return {version["VersionId"]: sorted(version["VersionStages"]) for version in versions}


def described_stages(client: Any, secret_arn: str) -> dict[str, list[str]]:
    """Return each version's staging labels, read with DescribeSecret."""
    versions = client.describe_secret(SecretId=secret_arn)["VersionIdsToStages"]
    return {version_id: sorted(stages) for version_id, stages in versions.items()}


def secret_string(client: Any, secret_arn: str, stage: str) -> str:
    return client.get_secret_value(SecretId=secret_arn, VersionStage=stage)["SecretString"]


def current_version(client: Any, secret_arn: str) -> str:
    return client.get_secret_value(SecretId=secret_arn, VersionStage="AWSCURRENT")["VersionId"]


def stubbed_elasticache(monkeypatch: pytest.MonkeyPatch, aws_client: Callable[..., Any]) -> Stubber:
    """Route the handler's ElastiCache client through a botocore Stubber.

    moto 5.2.5 does not implement ElastiCache ModifyUser (the server raises
    NotImplementedError), so flows that need it stub this one client. Stubber checks
    every queued response against the output shape in botocore's service model.
    The Secrets Manager client still talks to moto.
    """
    elasticache = aws_client("elasticache")
    stubber = Stubber(elasticache)
    stubber.activate()

    def make_client(service_name: str) -> Any:
        if service_name == "elasticache":
            return elasticache
        return boto3.client(service_name)

    monkeypatch.setattr(handler, "make_client", make_client)
    return stubber


def user_response(status: str, password_count: int) -> dict[str, Any]:
    """Return a User structure as ModifyUser and DescribeUsers return it."""
    return {
        "UserId": USER_ID,
        "UserName": USER_ID,
        "Status": status,
        "Engine": "valkey",
        "MinimumEngineVersion": "7.2",
        "AccessString": "on ~* +@all",
        "UserGroupIds": ["popstack-test-cache-group"],
        "Authentication": {"Type": "password", "PasswordCount": password_count},
        "ARN": f"arn:aws:elasticache:us-east-1:123456789012:user:{USER_ID}",
    }


def test_token_rotation_full(secrets_client, rotation_function):
    arn, old_value = create_token_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    token = start_rotation(secrets_client, arn, rotation_function)
    started = {old_version: ["AWSCURRENT"], token: ["AWSPENDING"]}
    assert version_stages(secrets_client, arn) == started

    run_step("createSecret", arn, token)
    assert version_stages(secrets_client, arn) == started
    pending = json.loads(secret_string(secrets_client, arn, "AWSPENDING"))
    assert pending["kind"] == "token"
    assert handler.TOKEN_PATTERN.fullmatch(pending["token"])
    assert pending["token"] != json.loads(old_value)["token"]
    assert datetime.fromisoformat(pending["created_at"]).utcoffset() is not None

    run_step("setSecret", arn, token)
    assert version_stages(secrets_client, arn) == started

    run_step("testSecret", arn, token)
    assert version_stages(secrets_client, arn) == started

    run_step("finishSecret", arn, token)
    finished = {old_version: ["AWSPREVIOUS"], token: ["AWSCURRENT"]}
    assert version_stages(secrets_client, arn) == finished
    assert described_stages(secrets_client, arn) == finished
    assert json.loads(secret_string(secrets_client, arn, "AWSCURRENT")) == pending
    assert secret_string(secrets_client, arn, "AWSPREVIOUS") == old_value


def test_second_rotation_moves_previous(secrets_client, rotation_function):
    arn, _ = create_token_secret(secrets_client)
    first_version = current_version(secrets_client, arn)
    tokens = []
    for _ in range(2):
        token = start_rotation(secrets_client, arn, rotation_function)
        for step in STEPS:
            run_step(step, arn, token)
        tokens.append(token)

    assert version_stages(secrets_client, arn) == {
        first_version: [],
        tokens[0]: ["AWSPREVIOUS"],
        tokens[1]: ["AWSCURRENT"],
    }


def test_create_secret_retry_keeps_one_pending(secrets_client, rotation_function):
    arn, _ = create_token_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    token = start_rotation(secrets_client, arn, rotation_function)

    run_step("createSecret", arn, token)
    first_value = secret_string(secrets_client, arn, "AWSPENDING")
    run_step("createSecret", arn, token)
    run_step("createSecret", arn, token)

    assert version_stages(secrets_client, arn) == {
        old_version: ["AWSCURRENT"],
        token: ["AWSPENDING"],
    }
    assert secret_string(secrets_client, arn, "AWSPENDING") == first_value


def test_finish_secret_retry_is_noop(secrets_client, rotation_function):
    arn, _ = create_token_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    token = start_rotation(secrets_client, arn, rotation_function)
    for step in STEPS:
        run_step(step, arn, token)
    new_value = secret_string(secrets_client, arn, "AWSCURRENT")

    run_step("finishSecret", arn, token)
    run_step("finishSecret", arn, token)

    assert version_stages(secrets_client, arn) == {
        old_version: ["AWSPREVIOUS"],
        token: ["AWSCURRENT"],
    }
    assert secret_string(secrets_client, arn, "AWSCURRENT") == new_value


def test_finish_secret_resumes_interrupted(secrets_client, rotation_function):
    arn, _ = create_token_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    token = start_rotation(secrets_client, arn, rotation_function)
    for step in STEPS[:3]:
        run_step(step, arn, token)
    # An earlier finishSecret stopped after moving AWSCURRENT, before removing AWSPENDING.
    secrets_client.update_secret_version_stage(
        SecretId=arn,
        VersionStage="AWSCURRENT",
        MoveToVersionId=token,
        RemoveFromVersionId=old_version,
    )
    assert version_stages(secrets_client, arn)[token] == ["AWSCURRENT", "AWSPENDING"]

    run_step("finishSecret", arn, token)

    assert version_stages(secrets_client, arn) == {
        old_version: ["AWSPREVIOUS"],
        token: ["AWSCURRENT"],
    }


@pytest.mark.parametrize(
    "corrupted_value",
    [
        "not json at all",
        json.dumps(["a", "list"]),
        json.dumps({"kind": "token"}),
        json.dumps({"token": "too-short-1234"}),
        json.dumps({"token": "+" * 43}),
    ],
    ids=["not-json", "not-object", "missing-token", "short-token", "bad-characters"],
)
def test_corrupted_pending_fails_test_secret(secrets_client, rotation_function, corrupted_value):
    arn, old_value = create_token_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    start_rotation(secrets_client, arn, rotation_function)
    # A pending version written by something other than createSecret, with a bad value.
    token = str(uuid.uuid4())
    secrets_client.put_secret_value(
        SecretId=arn,
        ClientRequestToken=token,
        SecretString=corrupted_value,
        VersionStages=["AWSPENDING"],
    )
    run_step("createSecret", arn, token)
    run_step("setSecret", arn, token)

    with pytest.raises(handler.RotationError, match="secret") as raised:
        run_step("testSecret", arn, token)

    assert corrupted_value not in str(raised.value)
    assert current_version(secrets_client, arn) == old_version
    assert secret_string(secrets_client, arn, "AWSCURRENT") == old_value
    assert version_stages(secrets_client, arn)[token] == ["AWSPENDING"]


def test_token_not_a_version_rejected(secrets_client, rotation_function):
    arn, _ = create_token_secret(secrets_client)
    start_rotation(secrets_client, arn, rotation_function)
    before = version_stages(secrets_client, arn)
    unknown_token = str(uuid.uuid4())

    with pytest.raises(handler.RotationError, match="is not a version of secret") as raised:
        run_step("createSecret", arn, unknown_token)

    assert unknown_token in str(raised.value)
    assert version_stages(secrets_client, arn) == before


def test_version_not_pending_rejected(secrets_client, rotation_function):
    arn, _ = create_token_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    token = start_rotation(secrets_client, arn, rotation_function)
    for step in STEPS:
        run_step(step, arn, token)

    with pytest.raises(handler.RotationError, match="is not staged AWSPENDING"):
        run_step("createSecret", arn, old_version)


def test_rotation_never_configured_rejected(secrets_client):
    arn, _ = create_token_secret(secrets_client)
    token = current_version(secrets_client, arn)

    with pytest.raises(handler.RotationError, match="Rotation is not enabled"):
        run_step("createSecret", arn, token)


def test_rotation_cancelled_rejected(secrets_client, rotation_function):
    arn, _ = create_token_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    token = start_rotation(secrets_client, arn, rotation_function)
    secrets_client.cancel_rotate_secret(SecretId=arn)
    assert secrets_client.describe_secret(SecretId=arn)["RotationEnabled"] is False

    with pytest.raises(handler.RotationError, match="Rotation is not enabled"):
        run_step("createSecret", arn, token)

    assert version_stages(secrets_client, arn) == {
        old_version: ["AWSCURRENT"],
        token: ["AWSPENDING"],
    }


def test_unknown_kind_tag_rejected(secrets_client, rotation_function):
    arn, _ = create_token_secret(secrets_client)
    secrets_client.tag_resource(
        SecretId=arn, Tags=[{"Key": handler.SECRET_KIND_TAG, "Value": "api-key"}]
    )
    token = start_rotation(secrets_client, arn, rotation_function)

    with pytest.raises(handler.RotationError, match="Invalid tag popstack:secret-kind='api-key'"):
        run_step("createSecret", arn, token)


def test_missing_kind_tag_defaults_to_token(secrets_client, rotation_function):
    arn = secrets_client.create_secret(
        Name="popstack-test-untagged", SecretString=json.dumps({"token": "initial"})
    )["ARN"]
    token = start_rotation(secrets_client, arn, rotation_function)

    for step in STEPS:
        run_step(step, arn, token)

    current = json.loads(secret_string(secrets_client, arn, "AWSCURRENT"))
    assert current["kind"] == "token"
    assert handler.TOKEN_PATTERN.fullmatch(current["token"])


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"SecretId": "s", "ClientRequestToken": "t"}, "missing the string field 'Step'"),
        ({"Step": "createSecret", "ClientRequestToken": "t"}, "field 'SecretId'"),
        ({"SecretId": "s", "ClientRequestToken": "t", "Step": "dropSecret"}, "Invalid rotation"),
    ],
    ids=["missing-step", "missing-secret-id", "unknown-step"],
)
def test_malformed_event_rejected(event, message):
    with pytest.raises(handler.RotationError, match=message):
        handler.lambda_handler(event, None)


def _freeze(monkeypatch: pytest.MonkeyPatch, current_time: datetime) -> None:
    # Doors open at 09:00 Lisbon summer time (08:00 UTC) and close at 18:00 UTC.
    monkeypatch.setenv(handler.FREEZE_START_ENV, "2025-06-01T09:00:00+01:00")
    monkeypatch.setenv(handler.FREEZE_END_ENV, "2025-06-01T18:00:00Z")
    monkeypatch.setattr(handler, "now", lambda: current_time)


@pytest.mark.parametrize(
    "current_time",
    [
        datetime(2025, 6, 1, 8, 0, tzinfo=UTC),
        datetime(2025, 6, 1, 8, 30, tzinfo=UTC),
        datetime(2025, 6, 1, 17, 59, 59, tzinfo=UTC),
    ],
    ids=["at-start", "after-start-offset", "before-end"],
)
def test_freeze_window_rejects_create(secrets_client, rotation_function, monkeypatch, current_time):
    arn, old_value = create_token_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    token = start_rotation(secrets_client, arn, rotation_function)
    _freeze(monkeypatch, current_time)

    with pytest.raises(handler.RotationFrozenError, match="rotation is frozen"):
        run_step("createSecret", arn, token)

    assert version_stages(secrets_client, arn) == {
        old_version: ["AWSCURRENT"],
        token: ["AWSPENDING"],
    }
    with pytest.raises(ClientError) as no_value:
        secrets_client.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")
    assert no_value.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert secret_string(secrets_client, arn, "AWSCURRENT") == old_value


@pytest.mark.parametrize(
    "current_time",
    [datetime(2025, 6, 1, 7, 59, 59, tzinfo=UTC), datetime(2025, 6, 1, 18, 0, tzinfo=UTC)],
    ids=["before-start", "at-end"],
)
def test_freeze_window_allows_outside(secrets_client, rotation_function, monkeypatch, current_time):
    arn, _ = create_token_secret(secrets_client)
    token = start_rotation(secrets_client, arn, rotation_function)
    _freeze(monkeypatch, current_time)

    run_step("createSecret", arn, token)

    pending = json.loads(secret_string(secrets_client, arn, "AWSPENDING"))
    assert pending["created_at"] == current_time.isoformat()


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2025-06-01T09:00:00+01:00", "", "Only one of"),
        ("2025-06-01T09:00:00", "2025-06-01T18:00:00Z", "has no UTC offset"),
        ("1 June, 9am", "2025-06-01T18:00:00Z", "expected an ISO 8601 time"),
        ("2025-06-01T18:00:00Z", "2025-06-01T09:00:00Z", "is not later than"),
    ],
    ids=["end-missing", "no-offset", "not-iso", "end-before-start"],
)
def test_freeze_window_invalid_config_rejected(
    secrets_client, rotation_function, monkeypatch, start, end, message
):
    arn, _ = create_token_secret(secrets_client)
    token = start_rotation(secrets_client, arn, rotation_function)
    monkeypatch.setenv(handler.FREEZE_START_ENV, start)
    monkeypatch.setenv(handler.FREEZE_END_ENV, end)

    with pytest.raises(handler.RotationError, match=message):
        run_step("createSecret", arn, token)

    assert len(version_stages(secrets_client, arn)) == 2
    with pytest.raises(ClientError):
        secrets_client.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")


def test_cache_auth_full_rotation(secrets_client, rotation_function, aws_client, monkeypatch):
    arn, old_value = create_cache_auth_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    token = start_rotation(secrets_client, arn, rotation_function)
    stubber = stubbed_elasticache(monkeypatch, aws_client)

    run_step("createSecret", arn, token)
    pending = json.loads(secret_string(secrets_client, arn, "AWSPENDING"))
    assert pending["kind"] == "cache-auth"
    assert pending["userId"] == old_value["userId"]
    assert pending["username"] == old_value["username"]
    assert len(pending["password"]) == handler.GENERATED_PASSWORD_LENGTH
    assert pending["password"].isalnum()
    assert pending["password"] != old_value["password"]

    stubber.add_response(
        "modify_user",
        user_response("modifying", 2),
        {"UserId": USER_ID, "Passwords": [pending["password"], old_value["password"]]},
    )
    run_step("setSecret", arn, token)
    assert version_stages(secrets_client, arn) == {
        old_version: ["AWSCURRENT"],
        token: ["AWSPENDING"],
    }

    stubber.add_response(
        "describe_users", {"Users": [user_response("active", 2)]}, {"UserId": USER_ID}
    )
    run_step("testSecret", arn, token)
    run_step("finishSecret", arn, token)

    stubber.assert_no_pending_responses()
    assert version_stages(secrets_client, arn) == {
        old_version: ["AWSPREVIOUS"],
        token: ["AWSCURRENT"],
    }
    assert json.loads(secret_string(secrets_client, arn, "AWSCURRENT")) == pending


def test_cache_auth_waits_while_modifying(
    secrets_client, rotation_function, aws_client, monkeypatch
):
    arn, _ = create_cache_auth_secret(secrets_client)
    token = start_rotation(secrets_client, arn, rotation_function)
    run_step("createSecret", arn, token)
    stubber = stubbed_elasticache(monkeypatch, aws_client)
    monkeypatch.setattr(handler, "USER_POLL_INTERVAL_SECONDS", 0)
    for status in ("modifying", "modifying", "active"):
        stubber.add_response(
            "describe_users", {"Users": [user_response(status, 2)]}, {"UserId": USER_ID}
        )

    run_step("testSecret", arn, token)

    stubber.assert_no_pending_responses()


def test_cache_auth_stuck_modifying_fails(
    secrets_client, rotation_function, aws_client, monkeypatch
):
    arn, _ = create_cache_auth_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    token = start_rotation(secrets_client, arn, rotation_function)
    run_step("createSecret", arn, token)
    stubber = stubbed_elasticache(monkeypatch, aws_client)
    monkeypatch.setattr(handler, "USER_POLL_INTERVAL_SECONDS", 0)
    for _ in range(handler.USER_POLL_ATTEMPTS):
        stubber.add_response(
            "describe_users", {"Users": [user_response("modifying", 2)]}, {"UserId": USER_ID}
        )

    with pytest.raises(handler.RotationError, match="status 'modifying'"):
        run_step("testSecret", arn, token)

    assert current_version(secrets_client, arn) == old_version


def test_cache_auth_one_password_fails(secrets_client, rotation_function):
    # moto implements CreateUser and DescribeUsers, so this test uses no stub. The user
    # still has only its initial password, as if setSecret never reached ElastiCache.
    arn, old_value = create_cache_auth_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    elasticache = boto3.client("elasticache")
    elasticache.create_user(
        UserId=USER_ID,
        UserName=USER_ID,
        Engine="redis",
        Passwords=[old_value["password"]],
        AccessString="on ~* +@all",
    )
    token = start_rotation(secrets_client, arn, rotation_function)
    run_step("createSecret", arn, token)

    with pytest.raises(handler.RotationError, match="'active' and 1 passwords"):
        run_step("testSecret", arn, token)

    assert version_stages(secrets_client, arn) == {
        old_version: ["AWSCURRENT"],
        token: ["AWSPENDING"],
    }
    assert json.loads(secret_string(secrets_client, arn, "AWSCURRENT")) == old_value


def test_cache_auth_two_passwords_pass(secrets_client, rotation_function):
    # moto has no ModifyUser, so the user is created with the two passwords that
    # setSecret would have set, and testSecret reads them back through DescribeUsers.
    arn, old_value = create_cache_auth_secret(secrets_client)
    old_version = current_version(secrets_client, arn)
    token = start_rotation(secrets_client, arn, rotation_function)
    run_step("createSecret", arn, token)
    pending = json.loads(secret_string(secrets_client, arn, "AWSPENDING"))
    boto3.client("elasticache").create_user(
        UserId=USER_ID,
        UserName=USER_ID,
        Engine="redis",
        Passwords=[pending["password"], old_value["password"]],
        AccessString="on ~* +@all",
    )

    run_step("testSecret", arn, token)
    run_step("finishSecret", arn, token)

    assert version_stages(secrets_client, arn) == {
        old_version: ["AWSPREVIOUS"],
        token: ["AWSCURRENT"],
    }


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("a" * 31, "has 31 characters"),
        ("a" * 129, "has 129 characters"),
        ("a" * 31 + "@", "characters that ElastiCache rejects"),
        ("a" * 31 + "_", "characters that ElastiCache rejects"),
    ],
    ids=["too-short", "too-long", "at-sign", "underscore"],
)
def test_cache_auth_invalid_password_fails(secrets_client, rotation_function, password, message):
    arn, old_value = create_cache_auth_secret(secrets_client)
    start_rotation(secrets_client, arn, rotation_function)
    token = str(uuid.uuid4())
    secrets_client.put_secret_value(
        SecretId=arn,
        ClientRequestToken=token,
        SecretString=json.dumps({**old_value, "password": password}),
        VersionStages=["AWSPENDING"],
    )

    with pytest.raises(handler.RotationError, match=message) as raised:
        run_step("testSecret", arn, token)

    assert password not in str(raised.value)


def test_cache_auth_user_mismatch_fails(secrets_client, rotation_function, aws_client, monkeypatch):
    arn, old_value = create_cache_auth_secret(secrets_client)
    start_rotation(secrets_client, arn, rotation_function)
    token = str(uuid.uuid4())
    secrets_client.put_secret_value(
        SecretId=arn,
        ClientRequestToken=token,
        SecretString=json.dumps({**old_value, "userId": "other-user", "password": "b" * 40}),
        VersionStages=["AWSPENDING"],
    )
    stubber = stubbed_elasticache(monkeypatch, aws_client)

    with pytest.raises(handler.RotationError, match="names ElastiCache user other-user"):
        run_step("setSecret", arn, token)

    stubber.assert_no_pending_responses()


@pytest.fixture
def info_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    yield caplog


def _handler_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == handler.logger.name]


def test_token_logs_omit_values(secrets_client, rotation_function, info_logs):
    arn, old_value = create_token_secret(secrets_client)
    token = start_rotation(secrets_client, arn, rotation_function)

    for step in STEPS:
        run_step(step, arn, token)

    messages = _handler_messages(info_logs)
    assert len(messages) == len(STEPS)
    for step, message in zip(STEPS, messages, strict=True):
        assert message.startswith(f"{step}: ")
        assert arn in message
        assert token in message
    new_value = secret_string(secrets_client, arn, "AWSCURRENT")
    for value in (old_value, new_value):
        assert json.loads(value)["token"] not in info_logs.text


def test_cache_auth_logs_omit_passwords(
    secrets_client, rotation_function, aws_client, monkeypatch, info_logs
):
    arn, old_value = create_cache_auth_secret(secrets_client)
    token = start_rotation(secrets_client, arn, rotation_function)
    stubber = stubbed_elasticache(monkeypatch, aws_client)
    run_step("createSecret", arn, token)
    pending = json.loads(secret_string(secrets_client, arn, "AWSPENDING"))
    stubber.add_response("modify_user", user_response("modifying", 2))
    stubber.add_response("describe_users", {"Users": [user_response("active", 2)]})

    for step in STEPS[1:]:
        run_step(step, arn, token)

    messages = _handler_messages(info_logs)
    assert len(messages) == len(STEPS)
    assert all(arn in message and token in message for message in messages)
    assert pending["password"] not in info_logs.text
    assert old_value["password"] not in info_logs.text
