"""`popstack exports list|get` on an export that teardown wrote into moto."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from components.spec import load_stack_file
from popstack import teardown_commands
from teardown.aws import Clients
from teardown.state import put_object
from teardown.steps import STEPS
from tests.deployed_event import (
    CLOSED_AT,
    EVENT_ID,
    EXPORTS_BUCKET,
    DeployedEvent,
    SqsClock,
    deploy_event,
    expect_control,
    make_teardown,
)

EXPECTED = Path(__file__).resolve().parent / "data" / "teardown" / "expected"
PREFIX = f"exports/{EVENT_ID}/"


@pytest.fixture
def exported(
    moto_reset: None,
    aws_client: Callable[..., Any],
    moto_api: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[DeployedEvent]:
    """A torn-down event whose verified export is in the exports bucket."""
    clock = SqsClock(CLOSED_AT.replace(hour=15))
    monkeypatch.setattr("moto.sqs.models.unix_time_millis", clock)
    event = deploy_event(aws_client, moto_api, tmp_path / "project", clock)
    expect_control(event, list(STEPS))
    make_teardown(event, tmp_path / "operator").run()
    monkeypatch.setattr(teardown_commands, "make_clients", lambda: Clients(event.clients))
    yield event
    event.control.stubber.deactivate()


def cli() -> typer.Typer:
    app = typer.Typer()
    teardown_commands.register(app)
    return app


def test_list_shows_verified_export(exported: DeployedEvent) -> None:
    result = CliRunner().invoke(cli(), ["exports", "list", "--bucket", EXPORTS_BUCKET, "--json"])

    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert len(listed) == 1
    entry = listed[0]
    assert entry["eventId"] == EVENT_ID
    assert entry["verified"] is True
    assert entry["window"] == {
        "opens": "2027-06-05T10:00:00+01:00",
        "closes": "2027-06-05T18:00:00+01:00",
        "timeZone": "Europe/Lisbon",
    }
    assert entry["totals"] == {"EUR": "28.90", "JPY": "5400", "KWD": "12.345", "USD": "15.00"}
    assert entry["files"] == 21


def test_list_table_marks_unverified(exported: DeployedEvent) -> None:
    s3 = exported.clients["s3"]
    # An export whose teardown never verified it: a manifest and no state.
    manifest = (EXPECTED / "manifest.json").read_bytes().replace(b'"tdemo"', b'"other"')
    put_object(s3, EXPORTS_BUCKET, "exports/other/manifest.json", manifest)

    result = CliRunner().invoke(
        cli(), ["exports", "list", "--bucket", EXPORTS_BUCKET], env={"COLUMNS": "250"}
    )

    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "yes" in rows[EVENT_ID]
    assert "EUR 28.90" in rows[EVENT_ID]
    assert "no" in rows["other"].split("│")[4]


def test_get_downloads_and_verifies(exported: DeployedEvent, tmp_path: Path) -> None:
    target = tmp_path / "download"

    result = CliRunner().invoke(
        cli(), ["exports", "get", EVENT_ID, "--to", str(target), "--bucket", EXPORTS_BUCKET]
    )

    assert result.exit_code == 0, result.output
    assert "every checksum matches" in result.output
    for path in EXPECTED.rglob("*"):
        if path.is_file():
            name = path.relative_to(EXPECTED).as_posix()
            assert (target / name).read_bytes() == path.read_bytes(), name


def test_get_reports_tampered_and_truncated(exported: DeployedEvent, tmp_path: Path) -> None:
    s3 = exported.clients["s3"]
    orders = s3.get_object(Bucket=EXPORTS_BUCKET, Key=PREFIX + "orders.csv")["Body"].read()
    put_object(s3, EXPORTS_BUCKET, PREFIX + "orders.csv", orders.replace(b"12.50", b"10.50"))
    report = s3.get_object(Bucket=EXPORTS_BUCKET, Key=PREFIX + "report.html")["Body"].read()
    put_object(s3, EXPORTS_BUCKET, PREFIX + "report.html", report[: len(report) // 2])

    result = CliRunner().invoke(
        cli(),
        ["exports", "get", EVENT_ID, "--to", str(tmp_path / "d"), "--bucket", EXPORTS_BUCKET],
    )

    assert result.exit_code == teardown_commands.EXIT_FAILED
    assert "orders.csv: sha256 is" in result.output
    assert f"report.html: size is {len(report) // 2}" in result.output
    assert "2 of 21 files do not match the manifest" in result.output


def test_get_reports_tampered_manifest(exported: DeployedEvent, tmp_path: Path) -> None:
    s3 = exported.clients["s3"]
    manifest = s3.get_object(Bucket=EXPORTS_BUCKET, Key=PREFIX + "manifest.json")["Body"].read()
    put_object(s3, EXPORTS_BUCKET, PREFIX + "manifest.json", manifest.replace(b"28.90", b"38.90"))

    result = CliRunner().invoke(
        cli(),
        ["exports", "get", EVENT_ID, "--to", str(tmp_path / "d"), "--bucket", EXPORTS_BUCKET],
    )

    assert result.exit_code == teardown_commands.EXIT_FAILED
    assert "manifest.json: sha256 is" in result.output
    listing = CliRunner().invoke(cli(), ["exports", "list", "--bucket", EXPORTS_BUCKET, "--json"])
    assert json.loads(listing.output)[0]["verified"] is False


def test_get_unknown_event(exported: DeployedEvent, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli(), ["exports", "get", "nope", "--to", str(tmp_path / "d"), "--bucket", EXPORTS_BUCKET]
    )

    assert result.exit_code == teardown_commands.EXIT_BAD_INPUT
    assert "no export of event 'nope'" in result.output


# pulumi_aws 7.51 warns about its own deprecated modules while the program imports them.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_commands_fit_finance_role(exported: DeployedEvent, tmp_path: Path) -> None:
    """Every S3 call of list and get is allowed by the finance role's policy."""
    from popstack.mockrun import record_program

    operations: list[str] = []
    s3 = exported.clients["s3"]
    s3.meta.events.register("before-call.s3", lambda model, **kwargs: operations.append(model.name))
    runner = CliRunner()
    runner.invoke(cli(), ["exports", "list", "--bucket", EXPORTS_BUCKET])
    runner.invoke(
        cli(), ["exports", "get", EVENT_ID, "--to", str(tmp_path / "d"), "--bucket", EXPORTS_BUCKET]
    )

    assert set(operations) == {"ListObjectsV2", "GetObject"}
    stack = Path(__file__).resolve().parent.parent / "stacks" / "Pulumi.lisbon-popup.yaml"
    recording = record_program(load_stack_file(stack))
    policy = next(
        r
        for r in recording.resources
        if r.type == "aws:iam/rolePolicy:RolePolicy" and r.name.endswith("finance-read")
    )
    statements = json.loads(policy.inputs["policy"])["Statement"]
    actions = {action for statement in statements for action in statement["Action"]}
    # ListObjectsV2 needs s3:ListBucket, GetObject needs s3:GetObject.
    assert {"s3:ListBucket", "s3:GetObject"} <= actions
    assert all(statement["Effect"] == "Allow" for statement in statements)
    assert all(not action.endswith("*") for action in actions)
