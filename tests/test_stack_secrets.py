"""Stack tests under Pulumi mocks: rotated secrets, IAM least privilege, secret handling.

The rotation schedule is checked against a freeze computed here from the window
in the stack file, and against components.calendar. No value in the plan's
output may carry a generated password or a secure config value.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.runtime import rpc
from typer.testing import CliRunner

from components import calendar, program
from components.cache import AUTH_ROTATION_DAYS
from components.spec import load_stack_file
from popstack import mockrun
from popstack.cli import app
from popstack.mockrun import RecordedResource

# The CLI tests run the program in-process, and pulumi_aws submodules warn about
# their own deprecated classes on first import.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws.*")

REPO = Path(__file__).resolve().parent.parent
STACKS = REPO / "stacks"
ROTATED_SECRET = "popstack:secrets:RotatedSecret"
CRON = re.compile(r"^cron\(0 (?P<hour>\d+) (?P<days>[\d,]+) \* \? \*\)$")
KUBECONFIG_CIPHERTEXT = "v1:AAABAGt1YmVjb25maWctY2lwaGVydGV4dA=="


def only(resources: list[RecordedResource], description: str) -> RecordedResource:
    assert len(resources) == 1, f"expected one {description}, got {[r.urn for r in resources]}"
    return resources[0]


def child(recording: Any, parent: RecordedResource, type_token: str) -> RecordedResource:
    found = [r for r in recording.of_type(type_token) if r.parent == parent.urn]
    return only(found, f"{type_token} under {parent.urn}")


def rotated_secrets(recording: Any) -> dict[str, RecordedResource]:
    """Return each RotatedSecret component by secret name (the part after `ps-<id>-rot-`)."""
    found = {}
    for component in recording.of_type(ROTATED_SECRET):
        function = child(recording, component, "aws:lambda/function:Function")
        found[function.inputs["name"].split("-rot-", 1)[1]] = component
    return found


def secret_value(resource: RecordedResource, key: str) -> Any:
    """Return the plain value of a secret input, failing if it is not marked secret."""
    value = resource.inputs[key]
    assert rpc.is_rpc_secret(value), f"{resource.urn}: {key} is not marked secret"
    return rpc.unwrap_rpc_secret(value)


def generated_passwords(recording: Any) -> list[str]:
    results = [
        r.state["result"] for r in recording.of_type("random:index/randomPassword:RandomPassword")
    ]
    assert results, "no RandomPassword recorded"
    return results


def policy_statements(document: str) -> list[dict[str, Any]]:
    statements = json.loads(document)["Statement"]
    return statements if isinstance(statements, list) else [statements]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# --- rotation schedule ------------------------------------------------------------


def parse_schedule(rotation: RecordedResource) -> tuple[int, int, list[int]]:
    """Return (UTC hour, duration in hours, days of month) of a SecretRotation."""
    rules = rotation.inputs["rotationRules"]
    match = CRON.match(rules["scheduleExpression"])
    assert match, f"{rotation.urn}: unexpected schedule {rules['scheduleExpression']!r}"
    duration = re.fullmatch(r"(\d+)h", rules["duration"])
    assert duration, f"{rotation.urn}: unexpected duration {rules['duration']!r}"
    days = [int(day) for day in match["days"].split(",")]
    return int(match["hour"]), int(duration[1]), days


def days_overlapping(start: datetime, end: datetime, hour: int, hours: int) -> set[int]:
    """Return the days of the month whose window [hour, hour + hours) meets [start, end)."""
    days = set()
    day = datetime(start.year, start.month, start.day, tzinfo=UTC) - timedelta(days=1)
    while day <= end:
        window_start = day + timedelta(hours=hour)
        if window_start < end and window_start + timedelta(hours=hours) > start:
            days.add(day.day)
        day += timedelta(days=1)
    return days


# The lisbon-popup window: doors open 2027-03-26T10:00+00:00 after a 6 h pre-sync and
# close 2027-03-28T19:00+01:00, so no secret may rotate from 04:00Z on the 26th to
# 18:00Z on the 28th.
LISBON_FREEZE = (datetime(2027, 3, 26, 4, tzinfo=UTC), datetime(2027, 3, 28, 18, tzinfo=UTC))
# The flash-drop window: 2027-04-12T10:00-04:00 after a 12 h pre-sync, to 12:00-04:00.
FLASH_FREEZE = (datetime(2027, 4, 12, 2, tzinfo=UTC), datetime(2027, 4, 12, 16, tzinfo=UTC))


def test_lisbon_freeze_matches_calendar() -> None:
    window = load_stack_file(STACKS / "Pulumi.lisbon-popup.yaml").spec.window

    assert calendar.freeze_interval(window) == LISBON_FREEZE
    assert days_overlapping(*LISBON_FREEZE, hour=3, hours=3) == {26, 27, 28}
    assert calendar.frozen_days(window) == {26, 27, 28}


@pytest.mark.parametrize(
    ("stack", "freeze"), [("lisbon-popup", LISBON_FREEZE), ("flash-drop", FLASH_FREEZE)]
)
def test_rotation_days_avoid_freeze(recorded: Any, stack: str, freeze: tuple) -> None:
    recording = recorded(stack)

    for component in rotated_secrets(recording).values():
        rotation = child(recording, component, "aws:secretsmanager/secretRotation:SecretRotation")
        hour, hours, days = parse_schedule(rotation)
        frozen = days_overlapping(*freeze, hour=hour, hours=hours)
        assert frozen, f"{rotation.urn}: the freeze blocks no day"
        assert not frozen & set(days), (
            f"{rotation.urn}: rotates on frozen days {frozen & set(days)}"
        )


def test_daily_rotation_skips_only_frozen_days(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    component = rotated_secrets(recording)["inventory-api"]
    rotation = child(recording, component, "aws:secretsmanager/secretRotation:SecretRotation")

    hour, hours, days = parse_schedule(rotation)

    assert (hour, hours) == (3, 3), rotation.urn
    assert days == [day for day in range(1, 32) if day not in (26, 27, 28)], rotation.urn


def rotation_dates(days: list[int], year: int) -> list[date]:
    """Return every date of a year, plus the first of the next January, a cron day list hits."""
    current, end = date(year, 1, 1), date(year + 1, 1, 31)
    dates = []
    while current <= end:
        if current.day in days:
            dates.append(current)
        current += timedelta(days=1)
    return dates


@pytest.mark.parametrize(
    ("stack", "freeze"), [("lisbon-popup", LISBON_FREEZE), ("flash-drop", FLASH_FREEZE)]
)
def test_rotation_gap_within_interval(recorded: Any, stack: str, freeze: tuple) -> None:
    # A secret rotates at least every rotationDays. Only a gap across frozen days may
    # be longer, and by no more than the number of frozen days.
    recording = recorded(stack)
    spec = load_stack_file(STACKS / f"Pulumi.{stack}.yaml").spec
    intervals = {secret.name: secret.rotation_days for secret in spec.secrets}
    intervals["cache-auth"] = AUTH_ROTATION_DAYS

    for name, component in rotated_secrets(recording).items():
        rotation = child(recording, component, "aws:secretsmanager/secretRotation:SecretRotation")
        hour, hours, days = parse_schedule(rotation)
        frozen = days_overlapping(*freeze, hour=hour, hours=hours)
        dates = rotation_dates(days, 2027)
        for previous, following in itertools.pairwise(dates):
            between = {previous + timedelta(days=n) for n in range(1, (following - previous).days)}
            allowance = intervals[name] + (len(frozen) if {d.day for d in between} & frozen else 0)
            gap = (following - previous).days
            assert gap <= allowance, (
                f"{rotation.urn}: {gap} days from {previous} to {following}, "
                f"but {name} rotates every {intervals[name]} days"
            )


def test_rotation_lambda_knows_freeze(recorded: Any) -> None:
    recording = recorded("lisbon-popup")

    for component in rotated_secrets(recording).values():
        function = child(recording, component, "aws:lambda/function:Function")
        variables = function.inputs["environment"]["variables"]
        assert variables["ROTATION_FREEZE_START"] == "2027-03-26T04:00:00+00:00", function.urn
        assert variables["ROTATION_FREEZE_END"] == "2027-03-28T18:00:00+00:00", function.urn
        assert variables["POPSTACK_EVENT_ID"] == "lisbon-popup-27", function.urn


# --- rotation Lambda wiring and least privilege -----------------------------------


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_rotation_policy_scoped_to_own_secret(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    user = only(recording.of_type("aws:elasticache/user:User"), "cache user")

    for name, component in rotated_secrets(recording).items():
        secret = child(recording, component, "aws:secretsmanager/secret:Secret")
        log_group = child(recording, component, "aws:cloudwatch/logGroup:LogGroup")
        policy = child(recording, component, "aws:iam/rolePolicy:RolePolicy")
        statements = policy_statements(policy.inputs["policy"])

        granted: dict[str, set[str]] = {}
        for statement in statements:
            assert statement["Effect"] == "Allow", policy.urn
            for action in as_list(statement["Action"]):
                assert "*" not in action, f"{policy.urn}: wildcard action {action}"
                granted.setdefault(action.split(":")[0], set()).update(
                    as_list(statement["Resource"])
                )
        expected = {
            "secretsmanager": {secret.state["arn"]},
            "logs": {log_group.state["arn"] + ":*"},
        }
        if name == "cache-auth":
            expected["elasticache"] = {user.state["arn"]}
        assert granted == expected, policy.urn


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_rotation_lambda_wiring(recorded: Any, stack: str) -> None:
    recording = recorded(stack)

    for component in rotated_secrets(recording).values():
        secret = child(recording, component, "aws:secretsmanager/secret:Secret")
        role = child(recording, component, "aws:iam/role:Role")
        policy = child(recording, component, "aws:iam/rolePolicy:RolePolicy")
        function = child(recording, component, "aws:lambda/function:Function")
        log_group = child(recording, component, "aws:cloudwatch/logGroup:LogGroup")
        permission = child(recording, component, "aws:lambda/permission:Permission")
        rotation = child(recording, component, "aws:secretsmanager/secretRotation:SecretRotation")

        assert policy.inputs["role"] == role.id, policy.urn
        assert function.inputs["role"] == role.state["arn"], function.urn
        assert log_group.inputs["name"] == f"/aws/lambda/{function.inputs['name']}", log_group.urn
        assert permission.inputs["function"] == function.inputs["name"], permission.urn
        assert permission.inputs["principal"] == "secretsmanager.amazonaws.com", permission.urn
        assert permission.inputs["sourceArn"] == secret.state["arn"], permission.urn
        assert rotation.inputs["rotationLambdaArn"] == function.state["arn"], rotation.urn
        assert rotation.inputs["secretId"] == secret.id, rotation.urn
        assert rotation.inputs["rotateImmediately"] is False, rotation.urn


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_no_wildcard_allow_actions(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    documents = [
        (r.urn, r.inputs["policy"]) for r in recording.of_type("aws:iam/rolePolicy:RolePolicy")
    ]
    documents += [
        (r.urn, r.inputs["assumeRolePolicy"]) for r in recording.of_type("aws:iam/role:Role")
    ]
    documents += [
        (r.urn, r.inputs["policy"]) for r in recording.of_type("aws:s3/bucketPolicy:BucketPolicy")
    ]

    assert len(documents) >= 10
    for urn, document in documents:
        for statement in policy_statements(document):
            if statement["Effect"] != "Allow":
                # A Deny may be broad: the bucket policies deny s3:* over plain HTTP.
                continue
            for action in as_list(statement["Action"]):
                assert action != "*", f"{urn}: allows {action}"
                assert not action.endswith(":*"), f"{urn}: allows {action}"


def test_rotation_code_is_handler_module(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    functions = [
        child(recording, component, "aws:lambda/function:Function")
        for component in rotated_secrets(recording).values()
    ]

    # The calendar Lambda is the fourth; tests/test_schedules.py checks its archive.
    assert len(recording.of_type("aws:lambda/function:Function")) == 4
    assert len(functions) == 3
    for function in functions:
        archive = function.inputs["code"]
        assert isinstance(archive, pulumi.AssetArchive), function.urn
        assert set(archive.assets) == {"handler.py"}, function.urn
        source = Path(archive.assets["handler.py"].path)
        assert source == REPO / "lambdas" / "rotation" / "handler.py", function.urn
        assert function.inputs["handler"] == "handler.lambda_handler", function.urn
        assert function.inputs["runtime"] == "python3.12", function.urn


def test_handler_module_runs_alone() -> None:
    # The archive contains handler.py only, so it may import nothing but the standard
    # library and boto3/botocore, which the Lambda Python runtime provides.
    tree = ast.parse((REPO / "lambdas" / "rotation" / "handler.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    handlers = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "lambda_handler"
    ]

    assert imported - set(sys.stdlib_module_names) <= {"boto3", "botocore"}
    assert len(handlers) == 1
    assert [arg.arg for arg in handlers[0].args.args] == ["event", "context"]


# --- secret values ----------------------------------------------------------------


def test_initial_secret_versions_marked_secret(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    passwords = set(generated_passwords(recording))
    versions = recording.of_type("aws:secretsmanager/secretVersion:SecretVersion")

    assert len(versions) == 3
    for version in versions:
        value = json.loads(secret_value(version, "secretString"))
        assert (value.get("token") or value.get("password")) in passwords, version.urn
        assert set(version.ignore_changes) == {"secretString", "versionStages"}, version.urn


def test_cache_user_password_marked_secret(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    user = only(recording.of_type("aws:elasticache/user:User"), "cache user")

    mode = secret_value(user, "authenticationMode")

    assert mode["type"] == "password", user.urn
    assert len(mode["passwords"]) == 1, user.urn
    assert mode["passwords"][0] in generated_passwords(recording), user.urn


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_outputs_carry_no_password(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    text = json.dumps(recording.outputs)

    for password in generated_passwords(recording):
        assert password not in text
    assert recording.secret_outputs == []


@pytest.fixture
def secret_output_program(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the program also export a secret output, and return its plain value."""
    value = "probe-secret-value"
    run = program.run

    def run_with_secret() -> Any:
        event = run()
        pulumi.export("probeToken", pulumi.Output.secret(value))
        return event

    monkeypatch.setattr(program, "run", run_with_secret)
    return value


def test_secret_output_masked_in_recording(secret_output_program: str) -> None:
    recording = mockrun.record_program(load_stack_file(STACKS / "Pulumi.lisbon-popup.yaml"))

    assert recording.secret_outputs == ["probeToken"]
    assert recording.outputs["probeToken"] == mockrun.SECRET_MASK
    assert recording.outputs["eventId"] == "lisbon-popup-27"
    assert secret_output_program not in json.dumps(recording.outputs)


def test_secret_output_masked_in_plan_json(
    secret_output_program: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)

    result = CliRunner().invoke(app, ["plan", "lisbon-popup", "--json"])

    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["secretOutputs"] == ["probeToken"]
    assert plan["outputs"]["probeToken"] == mockrun.SECRET_MASK
    assert secret_output_program not in result.stdout


# --- the kubeconfig secure value --------------------------------------------------


@pytest.fixture(scope="module")
def kubeconfig_stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write lisbon-popup plus `popstack:kubeconfig` as `pulumi config set --secret` does."""
    text = (STACKS / "Pulumi.lisbon-popup.yaml").read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("kubeconfig") / "Pulumi.lisbon-kube.yaml"
    path.write_text(
        text + f"  popstack:kubeconfig:\n    secure: {KUBECONFIG_CIPHERTEXT}\n", encoding="utf-8"
    )
    return path


def test_kubeconfig_reaches_provider_as_secret(recorded: Any, kubeconfig_stack: Path) -> None:
    recording = recorded(kubeconfig_stack)
    provider = only(recording.of_type("pulumi:providers:kubernetes"), "cluster provider")

    assert secret_value(provider, "kubeconfig") == mockrun.SECRET_MASK


def test_kubeconfig_masked_in_plan_json(recorded: Any, kubeconfig_stack: Path) -> None:
    passwords = generated_passwords(recorded(kubeconfig_stack))

    result = CliRunner().invoke(app, ["plan", str(kubeconfig_stack), "--json"])

    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["config"]["popstack:kubeconfig"] == mockrun.SECRET_MASK
    assert KUBECONFIG_CIPHERTEXT not in result.stdout
    assert KUBECONFIG_CIPHERTEXT.removeprefix("v1:") not in result.stdout
    for password in passwords:
        assert password not in result.stdout
    assert "plan-placeholder" not in result.stdout


def test_kubeconfig_masked_in_plan_text(recorded: Any, kubeconfig_stack: Path) -> None:
    passwords = generated_passwords(recorded(kubeconfig_stack))

    result = CliRunner().invoke(app, ["plan", str(kubeconfig_stack)])

    assert result.exit_code == 0, result.output
    assert "secret config (masked): popstack:kubeconfig" in result.stdout
    assert KUBECONFIG_CIPHERTEXT.removeprefix("v1:") not in result.stdout
    for password in passwords:
        assert password not in result.stdout
