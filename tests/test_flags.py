"""`popstack flag` against moto, with botocore's Stubber for the calls moto lacks.

moto 5.2 stores hosted configuration versions (create, get, delete) but has no
ListHostedConfigurationVersions, environments or deployments, so those calls go to a
Stubber-backed client (``AppConfigControl``) that returns responses in the real shapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from popstack import teardown_commands
from popstack.flags import FlagError, FlagStore, FlagTarget, flag_names, parse_state
from teardown.aws import Clients
from tests.deployed_event import STACK, DeployedEvent, SqsClock, deploy_event

STARTED = datetime(2027, 6, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def event(
    moto_reset: None,
    aws_client: Callable[..., Any],
    moto_api: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[DeployedEvent]:
    clock = SqsClock(STARTED)
    monkeypatch.setattr("moto.sqs.models.unix_time_millis", clock)
    deployed = deploy_event(aws_client, moto_api, tmp_path / "project", clock)
    monkeypatch.setattr(teardown_commands, "make_engine", lambda: deployed.engine)
    monkeypatch.setattr(teardown_commands, "make_clients", lambda: Clients(deployed.clients))
    yield deployed
    deployed.control.stubber.deactivate()


def cli() -> typer.Typer:
    app = typer.Typer()
    teardown_commands.register(app)
    return app


def hosted_document(event: DeployedEvent, version: int) -> dict[str, Any]:
    response = event.clients["appconfig"].get_hosted_configuration_version(
        ApplicationId=event.control.application_id,
        ConfigurationProfileId=event.control.profile_id,
        VersionNumber=version,
    )
    return json.loads(response["Content"].read())


def test_flag_off_creates_and_deploys(event: DeployedEvent) -> None:
    event.control.expect_flip("checkout_enabled on -> off", STARTED)

    result = CliRunner().invoke(cli(), ["flag", STACK, "checkout_enabled", "off", "--yes"])

    assert result.exit_code == 0, result.output
    assert "checkout_enabled: on → off (version 2, deployment 2 DEPLOYING)" in result.output
    event.control.stubber.assert_no_pending_responses()
    before, after = hosted_document(event, 1), hosted_document(event, 2)
    assert after["values"]["checkout_enabled"] == {"enabled": False}
    changed = {k for k in before["values"] if before["values"][k] != after["values"][k]}
    assert changed == {"checkout_enabled"}
    assert after["flags"] == before["flags"]


def test_location_flag_off(event: DeployedEvent) -> None:
    event.control.expect_flip("location_kiosk_enabled on -> off", STARTED)

    result = CliRunner().invoke(cli(), ["flag", STACK, "location_kiosk_enabled", "off", "--yes"])

    assert result.exit_code == 0, result.output
    assert hosted_document(event, 2)["values"]["location_kiosk_enabled"] == {"enabled": False}
    assert hosted_document(event, 2)["values"]["location_market_enabled"] == {"enabled": True}


def test_unknown_flag_lists_known_names(event: DeployedEvent) -> None:
    event.control._list_versions()

    result = CliRunner().invoke(cli(), ["flag", STACK, "location_lisbon_enabled", "off", "--yes"])

    assert result.exit_code == teardown_commands.EXIT_BAD_INPUT
    assert "flag 'location_lisbon_enabled' is not in the stack's flag document" in result.output
    assert "location_kiosk_enabled, location_market_enabled" in result.output
    event.control.stubber.assert_no_pending_responses()
    with pytest.raises(event.clients["appconfig"].exceptions.ClientError):
        hosted_document(event, 2)


def test_flag_already_set_changes_nothing(event: DeployedEvent) -> None:
    event.control._list_versions()

    result = CliRunner().invoke(cli(), ["flag", STACK, "inventory_read_only", "off", "--yes"])

    assert result.exit_code == 0, result.output
    assert "inventory_read_only is already off in version 1; nothing changed" in result.output
    event.control.stubber.assert_no_pending_responses()


def test_invalid_state_rejected(event: DeployedEvent) -> None:
    result = CliRunner().invoke(cli(), ["flag", STACK, "checkout_enabled", "disabled"])

    assert result.exit_code == teardown_commands.EXIT_BAD_INPUT
    assert "flag state 'disabled' is invalid; use on or off" in result.output


def test_deployment_conflict_reported(event: DeployedEvent) -> None:
    control = event.control
    control._list_versions()
    control.stubber.add_client_error(
        "start_deployment",
        service_error_code="ConflictException",
        service_message="Deployment 1 is in progress",
        http_status_code=409,
    )

    result = CliRunner().invoke(cli(), ["flag", STACK, "elevated_sampling", "on", "--yes"])

    assert result.exit_code == teardown_commands.EXIT_BAD_INPUT
    assert "another deployment to environment e1live1 is in progress" in result.output
    assert "Deployment 1 is in progress" in result.output


def test_emulator_stack_creates_without_deploying(event: DeployedEvent) -> None:
    outputs = {k: v for k, v in event.outputs.items() if k not in ("flagsEnvironmentId",)}
    outputs.pop("flagsStrategyId")
    event.engine.seed(STACK, outputs)
    event.control._list_versions()

    result = CliRunner().invoke(cli(), ["flag", STACK, "offline_receipts_allowed", "off", "--yes"])

    assert result.exit_code == 0, result.output
    assert "not deployed: the stack has no AppConfig environment" in result.output
    assert hosted_document(event, 2)["values"]["offline_receipts_allowed"] == {"enabled": False}


def test_missing_outputs_named() -> None:
    with pytest.raises(FlagError, match="flagsApplicationId, flagsProfileId is missing"):
        FlagTarget.from_outputs({"eventId": "x"})


def test_flag_names_and_states() -> None:
    document = {"flags": {"b": {}, "a": {}}, "values": {"a": {"enabled": True}}}
    assert flag_names(document) == ["a", "b"]
    assert parse_state(" ON ") is True
    assert parse_state("off") is False


def test_store_reads_latest_version(event: DeployedEvent) -> None:
    control = event.control
    store = FlagStore(
        FlagTarget.from_outputs(event.outputs), event.clients["appconfig"], control.client
    )
    control._list_versions()

    latest = store.latest()

    assert latest.number == 1
    assert latest.document["values"]["checkout_enabled"] == {"enabled": True}


def test_flag_without_yes_needs_terminal(event: DeployedEvent) -> None:
    result = CliRunner().invoke(cli(), ["flag", STACK, "checkout_enabled", "off"])

    assert result.exit_code == teardown_commands.EXIT_BAD_INPUT, result.output
    assert "rerun with --yes" in result.output
    assert "checkout_enabled: on → off" not in result.output
