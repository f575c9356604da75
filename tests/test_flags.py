"""`popstack flags show|set|sync` against moto, with botocore's Stubber for the calls moto lacks.

moto 5.2 stores hosted configuration versions (create, get, delete) but has no
ListHostedConfigurationVersions, environments or deployments, so those calls go to a
Stubber-backed client (``AppConfigControl`` in tests/deployed_event.py) that returns
responses in the real shapes. STS GetCallerIdentity, which names the operator's AWS
identity in the audit record, goes to moto.
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

from components.flag_schema import flag_document
from components.spec import load_stack_file
from lambdas.flagstore import (
    LABEL_FLAG,
    AuditRecord,
    FlagError,
    FlagStore,
    FlagTarget,
    HostedVersion,
    audit_log,
    set_flags,
)
from popstack import flag_commands, teardown_commands
from popstack.flags import check_reason, parse_assignments, schema_update
from teardown.aws import Clients
from tests.deployed_event import STACK, DeployedEvent, SqsClock, deploy_event

STARTED = datetime(2027, 6, 5, 12, 0, tzinfo=UTC)
ACTOR = "rita (arn:aws:sts::123456789012:user/moto)"
VALID = (
    "valid flags: checkout_enabled, elevated_sampling, inventory_read_only, "
    "location_kiosk_enabled, location_market_enabled, offline_receipts_allowed"
)


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
    monkeypatch.setenv("POPSTACK_OPERATOR", "rita")
    deployed = deploy_event(aws_client, moto_api, tmp_path / "project", clock)
    monkeypatch.setattr(teardown_commands, "make_engine", lambda: deployed.engine)
    monkeypatch.setattr(teardown_commands, "make_clients", lambda: Clients(deployed.clients))
    yield deployed
    deployed.control.stubber.deactivate()


def cli() -> typer.Typer:
    app = typer.Typer()
    flag_commands.register(app)
    return app


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli(), ["flags", *args])


def hosted(event: DeployedEvent, version: int) -> dict[str, Any]:
    response = event.clients["appconfig"].get_hosted_configuration_version(
        ApplicationId=event.control.application_id,
        ConfigurationProfileId=event.control.profile_id,
        VersionNumber=version,
    )
    return {
        "document": json.loads(response["Content"].read()),
        "label": response.get("VersionLabel"),
        "description": response.get("Description"),
    }


def changed_values(before: dict[str, Any], after: dict[str, Any]) -> dict[str, bool]:
    return {
        key: value["enabled"]
        for key, value in after["values"].items()
        if before["values"][key] != value
    }


def test_set_writes_audited_version(event: DeployedEvent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lambdas.flagstore.utc_now", lambda: STARTED)
    event.control.expect_flip(
        f"popstack-flag by {ACTOR}: checkout_enabled off", STARTED.replace(minute=1)
    )

    result = invoke(
        "set", STACK, "checkout_enabled=off", "--reason", "payment provider down", "--yes"
    )

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "checkout_enabled: on -> off",
        "version 2, deployment 2 DEPLOYING; the checkout service picks it up within 15 s",
    ]
    event.control.stubber.assert_no_pending_responses()
    before, after = hosted(event, 1), hosted(event, 2)
    assert changed_values(before["document"], after["document"]) == {"checkout_enabled": False}
    assert after["document"]["flags"] == before["document"]["flags"]
    assert after["label"] == LABEL_FLAG
    assert json.loads(after["description"]) == {
        "audit": 1,
        "actor": ACTOR,
        "at": "2027-06-05T12:00:00Z",
        "reason": "payment provider down",
        "changes": {"checkout_enabled": [True, False]},
    }


def test_set_several_flags_in_one_version(event: DeployedEvent) -> None:
    event.control.expect_flip(
        f"popstack-flag by {ACTOR}: inventory_read_only on, location_kiosk_enabled off", STARTED
    )

    result = invoke(
        "set", STACK, "location_kiosk_enabled=off", "inventory_read_only=true", "--yes", "--json"
    )

    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["changes"] == [
        {"flag": "inventory_read_only", "old": False, "new": True},
        {"flag": "location_kiosk_enabled", "old": True, "new": False},
    ]
    assert (payload["version"], payload["deployment"], payload["pollIntervalSeconds"]) == (2, 2, 15)
    after = hosted(event, 2)
    assert changed_values(hosted(event, 1)["document"], after["document"]) == {
        "inventory_read_only": True,
        "location_kiosk_enabled": False,
    }
    assert json.loads(after["description"])["reason"] == "no reason given"
    with pytest.raises(event.clients["appconfig"].exceptions.ClientError):
        hosted(event, 3)


def test_unknown_key_is_refused_with_the_valid_list(event: DeployedEvent) -> None:
    event.control._list_versions()

    result = invoke("set", STACK, "chekout_enabled=off", "location_lisbon_enabled=off", "--yes")

    assert result.exit_code == teardown_commands.EXIT_BAD_INPUT
    assert "'chekout_enabled' is not a flag of this stack (did you mean checkout_enabled?)" in (
        result.output
    )
    assert "'location_lisbon_enabled' is not a flag of this stack" in result.output
    assert VALID in result.output
    event.control.stubber.assert_no_pending_responses()
    with pytest.raises(event.clients["appconfig"].exceptions.ClientError):
        hosted(event, 2)


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (
            "checkout_enabled=maybe",
            "checkout_enabled=maybe: checkout_enabled is an on/off switch; write "
            "checkout_enabled=on or checkout_enabled=off",
        ),
        ("checkout_enabled=", "checkout_enabled=: checkout_enabled is an on/off switch"),
        ("checkout_enabled", "'checkout_enabled' is not KEY=VALUE"),
    ],
)
def test_wrong_value_is_refused_with_the_valid_list(
    event: DeployedEvent, argument: str, message: str
) -> None:
    event.control._list_versions()

    result = invoke("set", STACK, argument, "--yes")

    assert result.exit_code == teardown_commands.EXIT_BAD_INPUT
    assert message in result.output
    assert VALID in result.output
    with pytest.raises(event.clients["appconfig"].exceptions.ClientError):
        hosted(event, 2)


def test_flag_already_set_changes_nothing(event: DeployedEvent) -> None:
    event.control._list_versions()
    event.control._list_versions()
    event.control._list_deployments()

    result = invoke("set", STACK, "inventory_read_only=off", "--yes")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "inventory_read_only is already as requested; not changed",
        "nothing changed (version 1)",
    ]
    event.control.stubber.assert_no_pending_responses()


def test_deployment_conflict_reported(event: DeployedEvent) -> None:
    control = event.control
    control.expect_flip_conflict()

    result = invoke("set", STACK, "elevated_sampling=on", "--yes")

    assert result.exit_code == teardown_commands.EXIT_BAD_INPUT
    assert "another deployment to environment e1live1 is in progress" in result.output
    assert "Deployment 1 is in progress" in result.output


def test_emulator_stack_writes_without_deploying(event: DeployedEvent) -> None:
    outputs = {
        k: v for k, v in event.outputs.items() if k not in ("flagsEnvironmentId", "flagsStrategyId")
    }
    event.engine.seed(STACK, outputs)
    control = event.control
    control._list_versions()
    control._list_versions()
    control.add_version(LABEL_FLAG)
    control._list_versions()

    result = invoke("set", STACK, "offline_receipts_allowed=off", "--yes")

    assert result.exit_code == 0, result.output
    assert "version 2 written; not deployed: the stack has no AppConfig environment" in (
        result.output
    )
    assert hosted(event, 2)["document"]["values"]["offline_receipts_allowed"] == {"enabled": False}


def test_set_without_yes_needs_a_terminal(event: DeployedEvent) -> None:
    event.control._list_versions()
    event.control._list_versions()

    result = invoke("set", STACK, "checkout_enabled=off")

    assert result.exit_code == teardown_commands.EXIT_BAD_INPUT, result.output
    assert "rerun with --yes" in result.output
    with pytest.raises(event.clients["appconfig"].exceptions.ClientError):
        hosted(event, 2)


def test_set_retries_after_concurrent_write(event: DeployedEvent) -> None:
    """Another writer's version between the read and the write makes the change retry."""
    control = event.control
    store = FlagStore(
        FlagTarget.from_outputs(event.outputs), event.clients["appconfig"], control.client
    )
    real_create = store.create
    calls = []

    def create_after_another_writer(document: Any, label: str, description: str) -> int:
        if not calls:
            other = hosted(event, 1)["document"]
            other["values"]["inventory_read_only"] = {"enabled": True}
            calls.append(real_create(other, "console", "someone in the console"))
        number = real_create(document, label, description)
        calls.append(number)
        return number

    store.create = create_after_another_writer  # type: ignore[method-assign]
    control._list_versions()  # latest: version 1
    control.add_version("console")
    control.add_version(LABEL_FLAG)
    control._list_versions()  # versions 1, 2 (the other writer's), 3 (this change)
    control.versions.pop()  # this change's version 3 is deleted
    control._list_versions()  # latest: version 2
    control.add_version(LABEL_FLAG)  # moto 5.2 numbers it 3 again: max + 1
    control._list_versions()  # versions 1, 2, 3
    control._start_deployment(3, "popstack-flag by me: checkout_enabled off", STARTED)

    result = set_flags(store, {"checkout_enabled": False}, actor="me", reason="r", label=LABEL_FLAG)

    assert calls == [2, 3, 3]
    assert (result.base_version, result.version, result.deployment) == (2, 3, 2)
    latest = hosted(event, 3)["document"]["values"]
    assert latest["inventory_read_only"] == {"enabled": True}
    assert latest["checkout_enabled"] == {"enabled": False}
    control.stubber.assert_no_pending_responses()


def test_show_lists_live_values_and_the_audit_log(event: DeployedEvent) -> None:
    control = event.control
    control.expect_flip(f"popstack-flag by {ACTOR}: checkout_enabled off", STARTED)
    assert (
        invoke("set", STACK, "checkout_enabled=off", "--reason", "till queue", "--yes").exit_code
        == 0
    )
    control.deployments[-1]["started"] = STARTED  # the stub lists it as COMPLETE
    control.expect_read()

    result = invoke("show", STACK, "--json")

    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert (payload["liveVersion"], payload["liveDeployment"], payload["latestVersion"]) == (
        2,
        2,
        2,
    )
    assert payload["pollIntervalSeconds"] == 15
    flags = {flag["flag"]: (flag["live"], flag["name"]) for flag in payload["flags"]}
    assert flags["checkout_enabled"] == (False, "Checkout enabled")
    assert flags["location_kiosk_enabled"] == (True, "Station kiosk enabled")
    assert payload["changes"][-1] == {
        "version": 2,
        "at": payload["changes"][-1]["at"],
        "actor": ACTOR,
        "reason": "till queue",
        "flag": "checkout_enabled",
        "old": True,
        "new": False,
        "deployment": 2,
        "deploymentState": "COMPLETE",
    }
    assert payload["changes"][0]["actor"] == "pulumi up"
    assert payload["changes"][0]["old"] is None
    event.control.stubber.assert_no_pending_responses()


def test_show_marks_a_version_that_is_not_live(event: DeployedEvent) -> None:
    control = event.control
    other = hosted(event, 1)["document"]
    other["values"]["elevated_sampling"] = {"enabled": True}
    event.clients["appconfig"].create_hosted_configuration_version(
        ApplicationId=control.application_id,
        ConfigurationProfileId=control.profile_id,
        Content=json.dumps(other).encode(),
        ContentType="application/json",
        Description="edited in the console",
    )
    control.add_version(None)
    control.expect_read()
    control.expect_read()

    result = invoke("show", STACK)
    as_json = json.loads(invoke("show", STACK, "--json").output)

    assert result.exit_code == 0, result.output
    assert "version 2 (not live)" in result.output
    assert "live: version 1 (deployment 1)" in result.output
    assert "version 2 is newer than the live version and not deployed" in result.output
    sampling = next(f for f in as_json["flags"] if f["flag"] == "elevated_sampling")
    assert (sampling["live"], sampling["latest"]) == (False, True)
    assert as_json["changes"][-1]["actor"] == "unknown (not made with popstack)"
    assert as_json["changes"][-1]["reason"] == "edited in the console"


def test_missing_outputs_named() -> None:
    with pytest.raises(FlagError, match="flagsApplicationId, flagsProfileId is missing"):
        FlagTarget.from_outputs({"eventId": "x"})


def test_parse_assignments_collects_every_problem() -> None:
    valid = ["checkout_enabled", "elevated_sampling"]

    assert parse_assignments(["checkout_enabled=OFF", "elevated_sampling= yes "], valid) == {
        "checkout_enabled": False,
        "elevated_sampling": True,
    }
    with pytest.raises(FlagError) as raised:
        parse_assignments(["checkout_enabled=off", "checkout_enabled=on", "=on"], valid)
    assert str(raised.value).splitlines() == [
        "checkout_enabled is given more than once; give each flag once",
        "'=on' is not KEY=VALUE; write for example checkout_enabled=off",
        "valid flags: checkout_enabled, elevated_sampling",
    ]


def test_reason_is_bounded() -> None:
    assert check_reason("  payment\n provider   down ") == "payment provider down"
    assert check_reason(None) == "no reason given"
    with pytest.raises(FlagError, match="--reason is 501 characters; keep it to 500"):
        check_reason("x" * 501)


def test_audit_record_over_limit() -> None:
    record = AuditRecord(actor="a", at="t", reason="x" * 1000, changes={"f": (True, False)})
    with pytest.raises(FlagError, match=r"over AppConfig's 1024-character limit"):
        record.description()


def test_audit_log_diffs_versions() -> None:
    def version(number: int, values: dict[str, bool], description: str) -> HostedVersion:
        document = {
            "flags": {key: {} for key in values},
            "values": {key: {"enabled": value} for key, value in values.items()},
        }
        return HostedVersion(
            number, "popstack-flag" if number == 2 else None, description, document
        )

    flip = AuditRecord("rita", "2027-06-05T12:00:00Z", "terminals slow", {"a": (True, False)})
    versions = [
        version(1, {"a": True, "b": False}, "Initial flag values from the stack file"),
        version(2, {"a": False, "b": False}, flip.description()),
        version(3, {"a": False, "b": True}, "console edit"),
    ]
    deployments = [{"DeploymentNumber": 7, "ConfigurationVersion": "2", "State": "COMPLETE"}]

    entries = [
        (e.version, e.actor, e.reason, e.flag, e.old, e.new, e.deployment)
        for e in audit_log(versions, deployments)
    ]

    assert entries == [
        (1, "pulumi up", "Initial flag values from the stack file", "a", None, True, None),
        (1, "pulumi up", "Initial flag values from the stack file", "b", None, False, None),
        (2, "rita", "terminals slow", "a", True, False, 7),
        (3, "unknown (not made with popstack)", "console edit", "b", False, True, None),
    ]


# --- who owns which values: the program the schema, operators the live values ----------


def test_schema_update_keeps_live_values() -> None:
    spec = load_stack_file(Path("stacks/Pulumi.lisbon-popup.yaml")).spec
    program = flag_document(spec)
    live = json.loads(json.dumps(program))
    live["values"]["checkout_enabled"] = {"enabled": False}
    del live["flags"]["location_alfama_enabled"]
    del live["values"]["location_alfama_enabled"]
    live["flags"]["location_belem_enabled"] = {"name": "Belem enabled"}
    live["values"]["location_belem_enabled"] = {"enabled": False}

    document, added, removed = schema_update(live, program) or ({}, [], [])

    assert (added, removed) == (["location_alfama_enabled"], ["location_belem_enabled"])
    assert document["flags"] == program["flags"]
    assert document["values"]["checkout_enabled"] == {"enabled": False}
    assert document["values"]["location_alfama_enabled"] == {"enabled": True}
    assert schema_update(program, program) is None


def test_program_never_rewrites_or_redeploys_the_flag_values(recorded: Callable[..., Any]) -> None:
    recording = recorded("lisbon-popup")
    [version] = recording.of_type(
        "aws:appconfig/hostedConfigurationVersion:HostedConfigurationVersion"
    )
    [deployment] = recording.of_type("aws:appconfig/deployment:Deployment")

    assert version.ignore_changes == ["content", "description"]
    assert deployment.ignore_changes == ["configurationVersion", "description"]


def test_checkout_polls_at_the_configured_interval(recorded: Callable[..., Any]) -> None:
    recording = recorded("lisbon-popup")
    [deployment] = recording.of_type("kubernetes:apps/v1:Deployment")
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}

    assert env["APPCONFIG_POLL_INTERVAL_SECONDS"] == "15"


def test_sync_adds_new_location(event: DeployedEvent) -> None:
    control = event.control
    control.expect_flip(f"popstack-flag by {ACTOR}: checkout_enabled off", STARTED)
    assert invoke("set", STACK, "checkout_enabled=off", "--yes").exit_code == 0
    stack_file = event.work_dir / "stacks" / f"Pulumi.{STACK}.yaml"
    text = stack_file.read_text()
    stack_file.write_text(
        text.replace(
            "    - id: kiosk\n      name: Station kiosk\n",
            "    - id: kiosk\n      name: Station kiosk\n    - id: pier\n      name: Pier cart\n",
        )
    )
    control._list_versions()
    number = control.add_version("popstack-schema")
    control._start_deployment(number, "popstack-schema: added location_pier_enabled", STARTED)

    result = invoke("sync", STACK, "--yes")

    assert result.exit_code == 0, result.output
    assert "version 3: added location_pier_enabled, removed none" in result.output
    document = hosted(event, 3)["document"]
    assert document["values"]["location_pier_enabled"] == {"enabled": True}
    assert document["values"]["checkout_enabled"] == {"enabled": False}
    assert json.loads(hosted(event, 3)["description"])["reason"] == (
        "flag schema of the stack file changed: added location_pier_enabled"
    )
    event.control.stubber.assert_no_pending_responses()


# --- odd documents and descriptions ------------------------------------------------------


@pytest.mark.parametrize(
    "description",
    [
        '{"audit": 1, "actor": "console", "changes": ["checkout_enabled"]}',
        '{"audit": 1, "actor": "console", "changes": "abc"}',
        '{"audit": 1, "actor": "console", "changes": 5}',
    ],
)
def test_malformed_audit_record_is_no_record(description: str) -> None:
    assert AuditRecord.parse(description) is None


def test_audit_record_needs_popstack_label() -> None:
    forged = AuditRecord("rita", "2027-06-05T12:00:00Z", "approved", {"a": (True, False)})
    document = {"flags": {"a": {}}, "values": {"a": {"enabled": True}}}
    changed = {"flags": {"a": {}}, "values": {"a": {"enabled": False}}}
    versions = [
        HostedVersion(1, None, "initial", document),
        HostedVersion(2, "console", forged.description(), changed),
    ]

    [_, entry] = audit_log(versions, [])

    assert (entry.actor, entry.reason) == ("unknown (not made with popstack)", forged.description())


def test_audit_log_survives_odd_documents() -> None:
    document = {"flags": {"a": {}, "b": {}}, "values": {"a": {"enabled": True}}}
    versions = [
        HostedVersion(1, None, "initial", document),
        HostedVersion(2, None, "text", {"flags": {"a": {}}, "values": {"a": {"enabled": "false"}}}),
        HostedVersion(3, None, "list", {"flags": {"a": {}}, "values": ["x"]}),
        HostedVersion(4, None, "flags", {"flags": "a"}),
    ]

    entries = [(e.version, e.flag, e.old, e.new) for e in audit_log(versions, [])]

    assert entries == [
        (1, "a", None, True),
        (1, "b", None, False),
        (2, "a", True, None),
        (3, "a", None, False),
    ]


def test_set_rejects_text_boolean(event: DeployedEvent) -> None:
    control = event.control
    document = hosted(event, 1)["document"]
    document["values"]["checkout_enabled"] = {"enabled": "false"}
    event.clients["appconfig"].create_hosted_configuration_version(
        ApplicationId=control.application_id,
        ConfigurationProfileId=control.profile_id,
        Content=json.dumps(document).encode(),
        ContentType="application/json",
    )
    control.add_version(None)
    control._list_versions()

    result = invoke("set", STACK, "checkout_enabled=on", "--yes")

    assert result.exit_code == teardown_commands.EXIT_BAD_INPUT
    assert (
        "hosted configuration version 2 is not a valid feature-flag document (enabled is "
        "not true or false for checkout_enabled); correct it in the AppConfig console"
    ) in result.output
    with pytest.raises(event.clients["appconfig"].exceptions.ClientError):
        hosted(event, 3)


def test_set_deploys_a_version_whose_deployment_failed(event: DeployedEvent) -> None:
    control = event.control
    control.expect_flip_conflict()
    assert invoke("set", STACK, "elevated_sampling=on", "--yes").exit_code == 2
    control._list_versions()
    control._list_versions()
    control._list_deployments()
    control._start_deployment(
        2, f"popstack-flag by {ACTOR}: deploy version 2, never deployed", STARTED
    )

    result = invoke("set", STACK, "elevated_sampling=on", "--yes", "--json")

    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert (payload["changed"], payload["redeployed"]) == (False, True)
    assert (payload["version"], payload["deployment"]) == (2, 2)
    control.stubber.assert_no_pending_responses()


def test_reason_and_operator_drop_control_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    from popstack.flags import operator_name

    with pytest.raises(FlagError, match="--reason contains a control character"):
        check_reason("till\x1b[2J queue")
    assert operator_name({"POPSTACK_OPERATOR": "rita\n\x1b[31m sousa"}) == "rita [31m sousa"
    assert operator_name({"POPSTACK_OPERATOR": "r" * 300}) == "r" * 100


def test_unknown_key_given_twice_is_reported_once() -> None:
    with pytest.raises(FlagError) as raised:
        parse_assignments(["nope=1", "nope=1"], ["checkout_enabled"])

    assert str(raised.value).splitlines() == [
        "'nope' is not a flag of this stack",
        "valid flags: checkout_enabled",
    ]


def use_moto_for_up(event: DeployedEvent, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give `popstack up`'s schema sync the event's moto and Stubber clients."""
    from popstack import lifecycle_commands

    monkeypatch.setattr(
        lifecycle_commands,
        "make_flag_store",
        lambda outputs: FlagStore(
            FlagTarget.from_outputs(outputs), event.clients["appconfig"], event.control.client
        ),
    )


def test_up_syncs_flag_schema(event: DeployedEvent, monkeypatch: pytest.MonkeyPatch) -> None:
    from components.spec import spec_from_config
    from popstack import lifecycle_commands
    from popstack.engine import OperationResult
    from popstack.lifecycle import DeployOutcome
    from tests.test_lifecycle import make_checkpoint

    control = event.control
    use_moto_for_up(event, monkeypatch)
    config = {
        key: entry.value if isinstance(entry.value, str) else json.dumps(entry.value)
        for key, entry in event.engine.get_config(STACK).items()
    }
    locations = json.loads(config["popstack:locations"])
    config["popstack:locations"] = json.dumps([*locations, {"id": "pier", "name": "Pier cart"}])
    spec = spec_from_config(config, "test")
    outcome = DeployOutcome(
        make_checkpoint(STACK), OperationResult(True, "update", {}, "", event.outputs)
    )
    control._list_versions()
    number = control.add_version("popstack-schema")
    control._start_deployment(number, "popstack-schema: added location_pier_enabled", STARTED)

    synced = lifecycle_commands._sync_flag_schema(STACK, outcome, spec)

    assert synced == {
        "synced": True,
        "version": 2,
        "added": ["location_pier_enabled"],
        "removed": [],
    }
    assert json.loads(hosted(event, 2)["description"])["actor"] == "popstack up (rita)"
    assert outcome.warnings == []
    control.stubber.assert_no_pending_responses()


def test_up_warns_on_failed_sync(event: DeployedEvent, monkeypatch: pytest.MonkeyPatch) -> None:
    from popstack import lifecycle_commands
    from popstack.engine import OperationResult
    from popstack.lifecycle import DeployOutcome
    from tests.test_lifecycle import make_checkpoint

    control = event.control
    use_moto_for_up(event, monkeypatch)
    control.stubber.add_client_error(
        "list_hosted_configuration_versions",
        service_error_code="AccessDeniedException",
        service_message="not allowed",
        http_status_code=403,
    )
    outcome = DeployOutcome(
        make_checkpoint(STACK), OperationResult(True, "update", {}, "", event.outputs)
    )
    spec = load_stack_file(Path("stacks/Pulumi.lisbon-popup.yaml")).spec

    synced = lifecycle_commands._sync_flag_schema(STACK, outcome, spec)

    assert synced == {"synced": False}
    [warning] = outcome.warnings
    assert warning.startswith("the flag schema was not brought up to date (")
    assert "AccessDeniedException" in warning
    assert warning.endswith(f"run `popstack flags sync {STACK}`")
