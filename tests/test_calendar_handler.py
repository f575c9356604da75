"""The calendar Lambda handler against moto, with botocore's Stubber for what moto lacks.

moto 5.2 stores AppConfig hosted configuration versions (create, get, delete), so the
flag documents the handler reads and writes live in the moto server and are read back
from it. It has no ListHostedConfigurationVersions, ListDeployments or StartDeployment,
and no X-Ray sampling rules, so those calls go to clients behind botocore's Stubber,
which checks each request's parameters and each queued response against the real
service model. ``Control`` keeps the stubbed version list and deployments in step with
what moto holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from components.flag_schema import PROFILE, PROFILE_TYPE, flag_document
from components.spec import load_stack_file
from lambdas.calendar import handler
from lambdas.flagstore import FlagError, FlagStore, FlagTarget, serialise

STACKS = Path(__file__).resolve().parent.parent / "stacks"
ENVIRONMENT_ID = "e1live1"
STRATEGY_ID = "s1once1"
RULE_NAME = "ps-lisbon-popup-27"
# The lisbon-popup window: doors open 10:00+00:00 on the 26th and close 19:00+01:00
# (18:00Z) on the 28th, after the spring-forward change.
OPENS = "2027-03-26T10:00:00+00:00"
CLOSES = "2027-03-28T19:00:00+01:00"
AT_OPEN = datetime(2027, 3, 26, 10, 0, 3, tzinfo=UTC)
AT_CLOSE = datetime(2027, 3, 28, 18, 0, 2, tzinfo=UTC)


@dataclass
class Control:
    """The stubbed AppConfig and X-Ray calls, and the versions and deployments they report."""

    appconfig: Any
    xray: Any
    application_id: str
    profile_id: str
    versions: list[int] = field(default_factory=lambda: [1])
    deployments: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stubber = Stubber(self.appconfig)
        self.stubber.activate()
        self.xray_stubber = Stubber(self.xray)
        self.xray_stubber.activate()
        self.deployments.append(self._deployment(1, 1, "COMPLETE"))

    def _deployment(self, number: int, version: int, state: str) -> dict[str, Any]:
        summary = {
            "DeploymentNumber": number,
            "ConfigurationProfileId": self.profile_id,
            "ConfigurationName": PROFILE,
            "ConfigurationVersion": str(version),
            "DeploymentDurationInMinutes": 0,
            "GrowthType": "LINEAR",
            "GrowthFactor": 100.0,
            "FinalBakeTimeInMinutes": 0,
            "State": state,
            "StartedAt": datetime(2027, 3, 20, 9, 0, tzinfo=UTC),
        }
        # The model requires PercentageComplete to be 1.0 or more when present.
        if state == "COMPLETE":
            summary["PercentageComplete"] = 100.0
        return summary

    def expect_versions(self) -> None:
        """Queue one ListHostedConfigurationVersions response with the current versions."""
        self.stubber.add_response(
            "list_hosted_configuration_versions",
            {
                "Items": [
                    {
                        "ApplicationId": self.application_id,
                        "ConfigurationProfileId": self.profile_id,
                        "VersionNumber": number,
                        "ContentType": "application/json",
                    }
                    for number in self.versions
                ]
            },
            {"ApplicationId": self.application_id, "ConfigurationProfileId": self.profile_id},
        )

    def expect_write(self) -> int:
        """Queue the two listings around a new version's write; return its number."""
        self.expect_versions()
        self.versions.append(self.versions[-1] + 1)
        self.expect_versions()
        return self.versions[-1]

    def expect_deployment(self, version: int, description: str) -> int:
        """Queue a StartDeployment of `version`; return the new deployment's number."""
        number = len(self.deployments) + 1
        self.stubber.add_response(
            "start_deployment",
            {
                "ApplicationId": self.application_id,
                "EnvironmentId": ENVIRONMENT_ID,
                "DeploymentStrategyId": STRATEGY_ID,
                "ConfigurationProfileId": self.profile_id,
                "DeploymentNumber": number,
                "ConfigurationName": PROFILE,
                "ConfigurationVersion": str(version),
                "State": "DEPLOYING",
            },
            {
                "ApplicationId": self.application_id,
                "EnvironmentId": ENVIRONMENT_ID,
                "DeploymentStrategyId": STRATEGY_ID,
                "ConfigurationProfileId": self.profile_id,
                "ConfigurationVersion": str(version),
                "Description": description,
            },
        )
        self.deployments.append(self._deployment(number, version, "DEPLOYING"))
        return number

    def expect_deployment_list(self) -> None:
        self.stubber.add_response(
            "list_deployments",
            {"Items": list(self.deployments)},
            {"ApplicationId": self.application_id, "EnvironmentId": ENVIRONMENT_ID},
        )

    def expect_sampling(self, rate: float, reservoir: int) -> None:
        update = {"RuleName": RULE_NAME, "FixedRate": rate, "ReservoirSize": reservoir}
        self.xray_stubber.add_response(
            "update_sampling_rule",
            {
                "SamplingRuleRecord": {
                    "SamplingRule": {
                        "RuleName": RULE_NAME,
                        "RuleARN": f"arn:aws:xray:us-east-1:123456789012:sampling-rule/{RULE_NAME}",
                        "ResourceARN": "*",
                        "Priority": 100,
                        "FixedRate": rate,
                        "ReservoirSize": reservoir,
                        "ServiceName": "ps-lisbon-popup-27-checkout",
                        "ServiceType": "*",
                        "Host": "*",
                        "HTTPMethod": "*",
                        "URLPath": "*",
                        "Version": 1,
                    }
                }
            },
            {"SamplingRuleUpdate": update},
        )

    def assert_all_used(self) -> None:
        self.stubber.assert_no_pending_responses()
        self.xray_stubber.assert_no_pending_responses()


@pytest.fixture
def control(
    moto_reset: None, aws_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Control]:
    """Create lisbon-popup's flag profile in moto and route the handler to it."""
    spec = load_stack_file(STACKS / "Pulumi.lisbon-popup.yaml").spec
    content = aws_client("appconfig")
    application_id = content.create_application(Name="ps-lisbon-popup-27-flags")["Id"]
    profile_id = content.create_configuration_profile(
        ApplicationId=application_id, Name=PROFILE, LocationUri="hosted", Type=PROFILE_TYPE
    )["Id"]
    content.create_hosted_configuration_version(
        ApplicationId=application_id,
        ConfigurationProfileId=profile_id,
        Content=serialise(flag_document(spec)),
        ContentType="application/json",
        Description="Initial flag values from the stack file",
    )

    stubbed = Control(aws_client("appconfig"), aws_client("xray"), application_id, profile_id)
    monkeypatch.setattr(
        handler,
        "make_flag_store",
        lambda target: FlagStore(target, content, stubbed.appconfig),
    )
    monkeypatch.setattr(handler, "make_client", {"xray": stubbed.xray}.__getitem__)

    environment = {
        "POPSTACK_EVENT_ID": "lisbon-popup-27",
        "WINDOW_OPENS": OPENS,
        "WINDOW_CLOSES": CLOSES,
        "FLAGS_APPLICATION_ID": application_id,
        "FLAGS_PROFILE_ID": profile_id,
        "FLAGS_ENVIRONMENT_ID": ENVIRONMENT_ID,
        "FLAGS_STRATEGY_ID": STRATEGY_ID,
        "SAMPLING_RULE_NAME": RULE_NAME,
        "SAMPLING_BASE_RATE": "0.05",
        "SAMPLING_BASE_RESERVOIR": "5",
        "SAMPLING_ELEVATED_RATE": "1.0",
        "SAMPLING_ELEVATED_RESERVOIR": "50",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    yield stubbed
    stubbed.stubber.deactivate()
    stubbed.xray_stubber.deactivate()


def at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    monkeypatch.setattr(handler, "now", lambda: moment)


def hosted(control: Control, aws_client: Callable[..., Any], number: int) -> dict[str, Any]:
    """Read one hosted version from moto: its label, audit record and flag values."""
    response = aws_client("appconfig").get_hosted_configuration_version(
        ApplicationId=control.application_id,
        ConfigurationProfileId=control.profile_id,
        VersionNumber=number,
    )
    document = json.loads(response["Content"].read())
    return {
        "label": response.get("VersionLabel"),
        "audit": json.loads(response["Description"]) if number > 1 else None,
        "values": {flag: value["enabled"] for flag, value in document["values"].items()},
    }


def version_exists(control: Control, aws_client: Callable[..., Any], number: int) -> bool:
    client = aws_client("appconfig")
    try:
        client.get_hosted_configuration_version(
            ApplicationId=control.application_id,
            ConfigurationProfileId=control.profile_id,
            VersionNumber=number,
        )
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


INITIAL = {
    "checkout_enabled": True,
    "inventory_read_only": False,
    "offline_receipts_allowed": True,
    "elevated_sampling": False,
    "location_chiado_enabled": True,
    "location_lx_factory_enabled": True,
    "location_alfama_enabled": True,
}
CLOSE_DEPLOYMENT = "popstack-calendar by popstack calendar: checkout_enabled off"


# --- open and close -------------------------------------------------------------------------


def test_open_raises_sampling(control: Control, aws_client, monkeypatch) -> None:
    at(monkeypatch, AT_OPEN)
    version = control.expect_write()
    deployment = control.expect_deployment(
        version, "popstack-calendar by popstack calendar: elevated_sampling on"
    )
    control.expect_sampling(1.0, 50)

    summary = handler.handle({"action": "open"}, None)

    control.assert_all_used()
    assert hosted(control, aws_client, 2) == {
        "label": "popstack-calendar",
        "audit": {
            "audit": 1,
            "actor": "popstack calendar",
            "at": "2027-03-26T10:00:03Z",
            "reason": "doors open at 2027-03-26T10:00:00+00:00",
            "changes": {"elevated_sampling": [False, True]},
        },
        "values": {**INITIAL, "elevated_sampling": True},
    }
    assert summary == {
        "event": "lisbon-popup-27",
        "action": "open",
        "flags": {"elevated_sampling": [False, True]},
        "unchanged": [],
        "version": 2,
        "deployment": deployment,
        "sampling": {"RuleName": RULE_NAME, "FixedRate": 1.0, "ReservoirSize": 50},
    }


def test_close_turns_checkout_off(control: Control, aws_client, monkeypatch) -> None:
    at(monkeypatch, AT_CLOSE)
    version = control.expect_write()
    control.expect_deployment(version, CLOSE_DEPLOYMENT)
    control.expect_sampling(0.05, 5)

    summary = handler.handle({"action": "close"}, None)

    control.assert_all_used()
    written = hosted(control, aws_client, 2)
    assert written["values"] == {**INITIAL, "checkout_enabled": False}
    assert written["audit"]["reason"] == "doors close at 2027-03-28T19:00:00+01:00"
    assert written["audit"]["changes"] == {"checkout_enabled": [True, False]}
    # elevated_sampling was already off, so the record leaves it out.
    assert summary["unchanged"] == ["elevated_sampling"]
    assert summary["sampling"] == {"RuleName": RULE_NAME, "FixedRate": 0.05, "ReservoirSize": 5}


def test_open_then_close(control: Control, aws_client, monkeypatch) -> None:
    at(monkeypatch, AT_OPEN)
    opened = control.expect_write()
    control.expect_deployment(
        opened, "popstack-calendar by popstack calendar: elevated_sampling on"
    )
    control.expect_sampling(1.0, 50)
    handler.handle({"action": "open"}, None)

    at(monkeypatch, AT_CLOSE)
    closed = control.expect_write()
    control.expect_deployment(
        closed,
        "popstack-calendar by popstack calendar: checkout_enabled off, elevated_sampling off",
    )
    control.expect_sampling(0.05, 5)
    handler.handle({"action": "close"}, None)

    control.assert_all_used()
    assert closed == 3
    assert hosted(control, aws_client, 3)["values"] == {
        **INITIAL,
        "checkout_enabled": False,
        "elevated_sampling": False,
    }
    assert hosted(control, aws_client, 3)["audit"]["changes"] == {
        "checkout_enabled": [True, False],
        "elevated_sampling": [True, False],
    }


# --- retries ---------------------------------------------------------------------------------


def test_close_retry_changes_nothing(control: Control, aws_client, monkeypatch) -> None:
    at(monkeypatch, AT_CLOSE)
    version = control.expect_write()
    deployment = control.expect_deployment(version, CLOSE_DEPLOYMENT)
    control.expect_sampling(0.05, 5)
    handler.handle({"action": "close"}, None)

    # The retry reads version 2, finds both flags off and its deployment started.
    control.expect_versions()
    control.expect_deployment_list()
    control.expect_sampling(0.05, 5)
    summary = handler.handle({"action": "close"}, None)

    control.assert_all_used()
    assert not version_exists(control, aws_client, 3)
    assert summary["flags"] == {}
    assert summary["unchanged"] == ["checkout_enabled", "elevated_sampling"]
    assert summary["version"] == 2
    assert summary["deployment"] == deployment


def test_retry_deploys_undeployed_version(control: Control, aws_client, monkeypatch) -> None:
    # The first close writes version 2, but AppConfig rejects its deployment because
    # another one is in progress; the invocation fails and Lambda retries it.
    at(monkeypatch, AT_CLOSE)
    control.expect_write()
    control.stubber.add_client_error(
        "start_deployment",
        service_error_code="ConflictException",
        service_message="Deployment #2 is in progress",
        http_status_code=409,
    )
    with pytest.raises(FlagError, match="another deployment to environment e1live1"):
        handler.handle({"action": "close"}, None)

    control.expect_versions()
    control.expect_deployment_list()
    deployment = control.expect_deployment(
        2, "popstack-calendar by popstack calendar: deploy version 2, never deployed"
    )
    control.expect_sampling(0.05, 5)
    summary = handler.handle({"action": "close"}, None)

    control.assert_all_used()
    assert not version_exists(control, aws_client, 3)
    assert hosted(control, aws_client, 2)["values"]["checkout_enabled"] is False
    assert summary["deployment"] == deployment == 2


def test_open_after_close_is_skipped(control: Control, aws_client, monkeypatch) -> None:
    # A retried open that arrives after close must not raise sampling again. No
    # response is queued, so any AppConfig or X-Ray call would fail the test.
    at(monkeypatch, datetime(2027, 3, 28, 18, 0, tzinfo=UTC))

    summary = handler.handle({"action": "open"}, None)

    control.assert_all_used()
    assert summary == {
        "event": "lisbon-popup-27",
        "action": "open",
        "skipped": "doors already closed",
    }
    assert not version_exists(control, aws_client, 2)


# --- an emulator stack ------------------------------------------------------------------------


def test_without_environment_or_sampling_rule(control: Control, aws_client, monkeypatch) -> None:
    # An emulator stack has no AppConfig environment and no sampling rule, so the
    # handler writes the version and neither deploys it nor calls X-Ray.
    for name in (
        "FLAGS_ENVIRONMENT_ID",
        "FLAGS_STRATEGY_ID",
        "SAMPLING_RULE_NAME",
        *handler.SAMPLING_SETTINGS,
    ):
        monkeypatch.delenv(name)
    at(monkeypatch, AT_CLOSE)
    control.expect_write()

    summary = handler.handle({"action": "close"}, None)

    control.assert_all_used()
    assert hosted(control, aws_client, 2)["values"]["checkout_enabled"] is False
    assert summary["deployment"] is None
    assert "sampling" not in summary


# --- invalid input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [{"action": "reopen"}, {}, "open", None],
    ids=["unknown-action", "no-action", "text", "none"],
)
def test_invalid_event_rejected(control: Control, event: Any) -> None:
    with pytest.raises(handler.CalendarError, match="invalid calendar event"):
        handler.handle(event, None)

    control.assert_all_used()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FLAGS_PROFILE_ID", None, "FLAGS_PROFILE_ID is missing"),
        ("WINDOW_CLOSES", "2027-03-28T19:00:00", "is not an ISO 8601 time with a UTC offset"),
        ("SAMPLING_ELEVATED_RATE", "all", "SAMPLING_ELEVATED_RATE='all' is not a float"),
        ("SAMPLING_BASE_RATE", "nan", "SAMPLING_BASE_RATE=nan is not a rate from 0 to 1"),
        ("SAMPLING_ELEVATED_RATE", "7", "SAMPLING_ELEVATED_RATE=7.0 is not a rate from 0 to 1"),
        ("SAMPLING_BASE_RESERVOIR", "-5", "SAMPLING_BASE_RESERVOIR=-5 is negative"),
        (
            "SAMPLING_RULE_NAME",
            None,
            "SAMPLING_RULE_NAME is missing but SAMPLING_BASE_RATE, SAMPLING_BASE_RESERVOIR, "
            "SAMPLING_ELEVATED_RATE, SAMPLING_ELEVATED_RESERVOIR is set",
        ),
        (
            "FLAGS_STRATEGY_ID",
            None,
            "FLAGS_ENVIRONMENT_ID and FLAGS_STRATEGY_ID must be set together",
        ),
        ("WINDOW_OPENS", "2027-03-29T10:00:00+01:00", "WINDOW_OPENS is not before WINDOW_CLOSES"),
    ],
    ids=[
        "missing",
        "no-offset",
        "not-a-number",
        "rate-nan",
        "rate-above-one",
        "negative-reservoir",
        "settings-without-rule",
        "environment-without-strategy",
        "opens-after-closes",
    ],
)
def test_invalid_environment_rejected(
    control: Control, monkeypatch: pytest.MonkeyPatch, name: str, value: str | None, message: str
) -> None:
    if value is None:
        monkeypatch.delenv(name)
    else:
        monkeypatch.setenv(name, value)

    with pytest.raises(handler.CalendarError, match=message):
        handler.handle({"action": "close"}, None)

    control.assert_all_used()


def test_handler_reads_config_as_deployed() -> None:
    # The variable names the program sets (components/schedules.py) are the ones read here.
    config = handler.CalendarConfig.from_environment(
        {
            "POPSTACK_EVENT_ID": "e",
            "WINDOW_OPENS": OPENS,
            "WINDOW_CLOSES": CLOSES,
            "FLAGS_APPLICATION_ID": "a",
            "FLAGS_PROFILE_ID": "p",
        }
    )

    assert config.target == FlagTarget("a", "p", None, None)
    assert config.closes == datetime(2027, 3, 28, 18, 0, tzinfo=UTC)
    assert config.sampling is None


def test_close_with_missing_flag(
    control: Control, aws_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A console edit dropped elevated_sampling. Close must still turn checkout off and
    # lower sampling, then fail so that the Lambda's error alarm fires.
    appconfig = aws_client("appconfig")
    target = {"ApplicationId": control.application_id, "ConfigurationProfileId": control.profile_id}
    document = json.loads(
        appconfig.get_hosted_configuration_version(**target, VersionNumber=1)["Content"].read()
    )
    del document["flags"]["elevated_sampling"]
    del document["values"]["elevated_sampling"]
    appconfig.create_hosted_configuration_version(
        **target, Content=json.dumps(document).encode(), ContentType="application/json"
    )
    control.versions.append(2)
    at(monkeypatch, AT_CLOSE)
    version = control.expect_write()
    control.expect_deployment(version, CLOSE_DEPLOYMENT)
    control.expect_sampling(0.05, 5)

    with pytest.raises(handler.CalendarError) as raised:
        handler.handle({"action": "close"}, None)

    control.assert_all_used()
    assert str(raised.value) == (
        "event lisbon-popup-27: close could not set elevated_sampling, missing from the "
        "AppConfig flag profile; set them by hand with `popstack flags set`, or run "
        "`popstack flags sync` to restore the schema"
    )
    assert hosted(control, aws_client, 3)["values"]["checkout_enabled"] is False
