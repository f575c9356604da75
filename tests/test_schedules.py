"""The event calendar under Pulumi mocks: every schedule, to the minute, in UTC.

Each case is a stack file whose window crosses a DST change (or, for one, whose
pre-sync starts in the hour a DST change repeats) in Europe/Lisbon, America/New_York,
Australia/Adelaide (UTC+09:30/+10:30) or Australia/Lord_Howe (a 30-minute DST shift).
The expected UTC times are worked out by hand in each case's comment from the
offsets the stack file writes, not by calling components.calendar. The policy
rules are checked on the new resources, and the rotation Lambda's freeze against
the calendar's own rotation times.
"""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pulumi
import pytest

from components import calendar
from components import schedules as schedules_module
from components.spec import Window, load_stack_file
from lambdas.rotation import handler as rotation_handler
from policies.rules import evaluate_recording
from popstack.mockrun import RecordedResource, Recording

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws.*")

REPO = Path(__file__).resolve().parent.parent
SCHEDULE = "aws:scheduler/schedule:Schedule"
GROUP = "aws:scheduler/scheduleGroup:ScheduleGroup"
CRON_JOB = "kubernetes:batch/v1:CronJob"
ROTATED_SECRET = "popstack:secrets:RotatedSecret"
ACCOUNT = "123456789012"
REGION = "eu-west-1"

STACK_FILE = """\
config:
  aws:region: eu-west-1
  popstack:id: {event_id}
  popstack:title: Calendar test event
  popstack:brand: Test brand
  popstack:owner: popstack-test
  popstack:costCentre: CC-0001
  popstack:currency: EUR
  popstack:window:
    opens: "{opens}"
    closes: "{closes}"
    timeZone: {zone}
    preSyncHours: {pre_sync_hours}
  popstack:graceHours: {grace_hours}
  popstack:locations:
    - id: shop
      name: Shop
  popstack:peakRps: 100
  popstack:checkout:
    image: ghcr.io/example/checkout:2.1.0
  popstack:secrets:
{secrets}
  popstack:alerts:
    email: oncall@example.com
  popstack:inventory:
    preSyncCommand: ["/app/bin/inventory-sync", "--all"]
{inventory_extra}
  popstack:escalation:
    - level: 1
      name: On-call
      role: Engineer on call
      when: Anything is wrong
      email: oncall@example.com
  popstack:cluster:
    oidcProviderArn: arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/T
    oidcIssuer: oidc.eks.eu-west-1.amazonaws.com/id/T
    vpcId: vpc-12345678
    subnetIds:
      - subnet-12345678
"""


@dataclass(frozen=True)
class Case:
    """One window, its secrets, and every calendar time expected for it, in UTC."""

    event_id: str
    opens: str
    closes: str
    zone: str
    pre_sync_hours: int
    grace_hours: int
    secrets: dict[str, int]
    pre_sync_cron: str
    at: dict[str, str]
    rotation_days: dict[str, list[int]]
    freeze: tuple[str, str]
    inventory_extra: str = ""
    times: dict[str, str] = field(default_factory=dict)

    def stack_text(self) -> str:
        secrets = "\n".join(
            f"    - name: {name}\n      rotationDays: {days}" for name, days in self.secrets.items()
        )
        return STACK_FILE.format(
            event_id=self.event_id,
            opens=self.opens,
            closes=self.closes,
            zone=self.zone,
            pre_sync_hours=self.pre_sync_hours,
            grace_hours=self.grace_hours,
            secrets=secrets,
            inventory_extra=self.inventory_extra,
        )


ODD_DAYS = list(range(1, 32, 2))

CASES = [
    # Lisbon springs forward at 01:00Z on 2027-03-28 (+00:00 to +01:00). Doors open
    # 10:00+01:00 = 09:00Z and close 20:00+01:00 = 19:00Z. The 10 h pre-sync starts at
    # 23:00Z on the 27th: 23:00 local, 11 wall-clock hours before 10:00. Expiry is
    # 19:00Z + 72 h = 2027-03-31T19:00Z. The freeze 27th 23:00Z to 28th 19:00Z covers
    # the 03:00-06:00Z rotation window of the 28th only. So weekly-token (9 days: 1,
    # 10, 19, 28) swaps the 28th for the 27th and rotates after close, and daily-token
    # drops the 28th and rotates after close. monthly-token and cache-auth (30 days:
    # 1, 31) are untouched.
    Case(
        event_id="cal-lis-spring",
        opens="2027-03-28T10:00:00+01:00",
        closes="2027-03-28T20:00:00+01:00",
        zone="Europe/Lisbon",
        pre_sync_hours=10,
        grace_hours=72,
        secrets={"weekly-token": 9, "daily-token": 1, "monthly-token": 30},
        pre_sync_cron="0 23 27 3 *",
        at={
            "doors-open": "at(2027-03-28T09:00:00)",
            "doors-close": "at(2027-03-28T19:00:00)",
            "rotate-weekly-token": "at(2027-03-28T19:05:00)",
            "rotate-daily-token": "at(2027-03-28T19:05:00)",
            "teardown-24h": "at(2027-03-30T19:00:00)",
            "teardown-2h": "at(2027-03-31T17:00:00)",
            "teardown-due": "at(2027-03-31T19:00:00)",
        },
        rotation_days={
            "weekly-token": [1, 10, 19, 27],
            "daily-token": [day for day in range(1, 32) if day != 28],
            "monthly-token": [1, 31],
            "cache-auth": [1, 31],
        },
        freeze=("2027-03-27T23:00:00+00:00", "2027-03-28T19:00:00+00:00"),
    ),
    # Lisbon falls back at 01:00Z on 2027-10-31 (+01:00 to +00:00). Doors open
    # 18:00+01:00 = 17:00Z on the 30th and close 12:00+00:00 = 12:00Z on the 31st:
    # 18 wall-clock hours, 19 elapsed. The 6 h pre-sync starts at 11:00Z on the 30th.
    # Expiry is 2027-11-03T12:00Z. The freeze touches the 31st only (the 30th's window
    # ends at 06:00Z, before 11:00Z). weekly-token (10 days: 1, 11, 21, 31), and
    # monthly-token and cache-auth (30 days: 1, 31), swap the 31st for the 30th and
    # rotate after close.
    Case(
        event_id="cal-lis-autumn",
        opens="2027-10-30T18:00:00+01:00",
        closes="2027-10-31T12:00:00+00:00",
        zone="Europe/Lisbon",
        pre_sync_hours=6,
        grace_hours=72,
        secrets={"weekly-token": 10, "monthly-token": 30},
        pre_sync_cron="0 11 30 10 *",
        at={
            "doors-open": "at(2027-10-30T17:00:00)",
            "doors-close": "at(2027-10-31T12:00:00)",
            "rotate-weekly-token": "at(2027-10-31T12:05:00)",
            "rotate-monthly-token": "at(2027-10-31T12:05:00)",
            "rotate-cache-auth": "at(2027-10-31T12:05:00)",
            "teardown-24h": "at(2027-11-02T12:00:00)",
            "teardown-2h": "at(2027-11-03T10:00:00)",
            "teardown-due": "at(2027-11-03T12:00:00)",
        },
        rotation_days={
            "weekly-token": [1, 11, 21, 30],
            "monthly-token": [1, 30],
            "cache-auth": [1, 30],
        },
        freeze=("2027-10-30T11:00:00+00:00", "2027-10-31T12:00:00+00:00"),
    ),
    # The pre-sync starts in the hour Lisbon repeats on 2027-10-31: doors open at
    # 07:30+00:00 = 07:30Z, and 7 h earlier is 00:30Z, the first 01:30 on the local
    # clock (01:30+01:00); the second 01:30 local is 01:30Z. The UTC schedule names
    # 00:30 only. Doors close 18:00Z; expiry is 18:00Z + 24 h = 2027-11-01T18:00Z, so
    # the 24 h warning falls at close and is kept. The freeze touches the 31st only.
    Case(
        event_id="cal-lis-repeat",
        opens="2027-10-31T07:30:00+00:00",
        closes="2027-10-31T18:00:00+00:00",
        zone="Europe/Lisbon",
        pre_sync_hours=7,
        grace_hours=24,
        secrets={"daily-token": 1},
        pre_sync_cron="30 0 31 10 *",
        at={
            "doors-open": "at(2027-10-31T07:30:00)",
            "doors-close": "at(2027-10-31T18:00:00)",
            "rotate-daily-token": "at(2027-10-31T18:05:00)",
            "rotate-cache-auth": "at(2027-10-31T18:05:00)",
            "teardown-24h": "at(2027-10-31T18:00:00)",
            "teardown-2h": "at(2027-11-01T16:00:00)",
            "teardown-due": "at(2027-11-01T18:00:00)",
        },
        rotation_days={"daily-token": list(range(1, 31)), "cache-auth": [1, 30]},
        freeze=("2027-10-31T00:30:00+00:00", "2027-10-31T18:00:00+00:00"),
    ),
    # New York springs forward at 07:00Z on 2027-03-14 (-05:00 to -04:00). Doors open
    # 20:00-05:00 on the 13th = 01:00Z on the 14th and close 20:00-04:00 on the 14th =
    # 00:00Z on the 15th. The 12 h pre-sync starts at 13:00Z on the 13th. Expiry is
    # 00:00Z + 48 h = 2027-03-17T00:00Z. The freeze touches the 14th only (the 15th's
    # window starts at 03:00Z, after close). weekly-token (13 days: 1, 14, 27) swaps
    # the 14th for the 13th, whose window ends at 06:00Z, before the pre-sync.
    Case(
        event_id="cal-nyc-spring",
        opens="2027-03-13T20:00:00-05:00",
        closes="2027-03-14T20:00:00-04:00",
        zone="America/New_York",
        pre_sync_hours=12,
        grace_hours=48,
        secrets={"weekly-token": 13},
        pre_sync_cron="0 13 13 3 *",
        at={
            "doors-open": "at(2027-03-14T01:00:00)",
            "doors-close": "at(2027-03-15T00:00:00)",
            "rotate-weekly-token": "at(2027-03-15T00:05:00)",
            "teardown-24h": "at(2027-03-16T00:00:00)",
            "teardown-2h": "at(2027-03-16T22:00:00)",
            "teardown-due": "at(2027-03-17T00:00:00)",
        },
        rotation_days={"weekly-token": [1, 13, 27], "cache-auth": [1, 31]},
        freeze=("2027-03-13T13:00:00+00:00", "2027-03-15T00:00:00+00:00"),
    ),
    # New York falls back at 06:00Z on 2027-11-07 (-04:00 to -05:00). Doors open
    # 10:00-04:00 on the 6th = 14:00Z and close 10:00-05:00 on the 7th = 15:00Z. The
    # 6 h pre-sync starts at 08:00Z on the 6th. Expiry is 15:00Z + 24 h =
    # 2027-11-08T15:00Z. The freeze touches the 7th only. weekly-token (6 days: 1, 7,
    # 13, 19, 25, 31) swaps the 7th for the 6th.
    Case(
        event_id="cal-nyc-autumn",
        opens="2027-11-06T10:00:00-04:00",
        closes="2027-11-07T10:00:00-05:00",
        zone="America/New_York",
        pre_sync_hours=6,
        grace_hours=24,
        secrets={"weekly-token": 6},
        pre_sync_cron="0 8 6 11 *",
        at={
            "doors-open": "at(2027-11-06T14:00:00)",
            "doors-close": "at(2027-11-07T15:00:00)",
            "rotate-weekly-token": "at(2027-11-07T15:05:00)",
            "teardown-24h": "at(2027-11-07T15:00:00)",
            "teardown-2h": "at(2027-11-08T13:00:00)",
            "teardown-due": "at(2027-11-08T15:00:00)",
        },
        rotation_days={"weekly-token": [1, 6, 13, 19, 25, 31], "cache-auth": [1, 31]},
        freeze=("2027-11-06T08:00:00+00:00", "2027-11-07T15:00:00+00:00"),
    ),
    # Adelaide springs forward at 16:30Z on 2027-10-02 (+09:30 to +10:30). Doors open
    # 10:00+09:30 on the 2nd = 00:30Z and close 18:00+10:30 on the 3rd = 07:30Z. The
    # 6 h pre-sync starts at 18:30Z on the 1st. Expiry is 07:30Z + 72 h =
    # 2027-10-06T07:30Z. The freeze touches the 2nd and the 3rd. every-2-days (1, 3,
    # ..., 31) loses the 3rd; the nearest free day before the freeze is the 1st,
    # which it keeps.
    Case(
        event_id="cal-adl-spring",
        opens="2027-10-02T10:00:00+09:30",
        closes="2027-10-03T18:00:00+10:30",
        zone="Australia/Adelaide",
        pre_sync_hours=6,
        grace_hours=72,
        secrets={"every-2-days": 2},
        pre_sync_cron="30 18 1 10 *",
        at={
            "doors-open": "at(2027-10-02T00:30:00)",
            "doors-close": "at(2027-10-03T07:30:00)",
            "rotate-every-2-days": "at(2027-10-03T07:35:00)",
            "teardown-24h": "at(2027-10-05T07:30:00)",
            "teardown-2h": "at(2027-10-06T05:30:00)",
            "teardown-due": "at(2027-10-06T07:30:00)",
        },
        rotation_days={
            "every-2-days": [day for day in ODD_DAYS if day != 3],
            "cache-auth": [1, 31],
        },
        freeze=("2027-10-01T18:30:00+00:00", "2027-10-03T07:30:00+00:00"),
    ),
    # Lord Howe Island falls back by 30 minutes at 15:00Z on 2027-04-03 (+11:00 to
    # +10:30). Doors open 18:00+11:00 on the 3rd = 07:00Z and close 12:00+10:30 on
    # the 4th = 01:30Z. The 6 h pre-sync starts at 01:00Z on the 3rd. Expiry is
    # 01:30Z + 72 h = 2027-04-07T01:30Z, so the 2 h warning is at 23:30Z on the 6th.
    # The freeze touches the 3rd only (the 4th's window starts after close).
    # every-2-days loses the 3rd and gains the 2nd.
    Case(
        event_id="cal-lhi-autumn",
        opens="2027-04-03T18:00:00+11:00",
        closes="2027-04-04T12:00:00+10:30",
        zone="Australia/Lord_Howe",
        pre_sync_hours=6,
        grace_hours=72,
        secrets={"every-2-days": 2},
        pre_sync_cron="0 1 3 4 *",
        at={
            "doors-open": "at(2027-04-03T07:00:00)",
            "doors-close": "at(2027-04-04T01:30:00)",
            "rotate-every-2-days": "at(2027-04-04T01:35:00)",
            "teardown-24h": "at(2027-04-06T01:30:00)",
            "teardown-2h": "at(2027-04-06T23:30:00)",
            "teardown-due": "at(2027-04-07T01:30:00)",
        },
        rotation_days={
            "every-2-days": [1, 2, *[day for day in ODD_DAYS if day > 3]],
            "cache-auth": [1, 31],
        },
        freeze=("2027-04-03T01:00:00+00:00", "2027-04-04T01:30:00+00:00"),
    ),
]
CASE_IDS = [case.event_id for case in CASES]


@pytest.fixture(scope="module")
def case_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("calendar")
    paths = {}
    for case in CASES:
        path = directory / f"Pulumi.{case.event_id}.yaml"
        path.write_text(case.stack_text(), encoding="utf-8")
        paths[case.event_id] = path
    return paths


@pytest.fixture
def record_case(recorded: Any, case_files: dict[str, Path]) -> Any:
    return lambda case: recorded(case_files[case.event_id])


def only(resources: list[RecordedResource], description: str) -> RecordedResource:
    assert len(resources) == 1, f"expected one {description}, got {[r.urn for r in resources]}"
    return resources[0]


def one(recording: Recording, type_token: str) -> RecordedResource:
    return only(recording.of_type(type_token), type_token)


def named(recording: Recording, logical_name: str) -> RecordedResource:
    return only([r for r in recording.resources if r.name == logical_name], logical_name)


def schedules(recording: Recording, event_id: str) -> dict[str, RecordedResource]:
    """Return each schedule by the part of its name after `ps-<event id>-`."""
    prefix = f"ps-{event_id}-"
    found = {}
    for schedule in recording.of_type(SCHEDULE):
        name = schedule.inputs["name"]
        assert name.startswith(prefix), schedule.urn
        found[name.removeprefix(prefix)] = schedule
    return found


def rotation_components(recording: Recording) -> dict[str, RecordedResource]:
    """Return each RotatedSecret component by secret name (the part after `-rot-`)."""
    found = {}
    for component in recording.of_type(ROTATED_SECRET):
        function = only(
            [
                r
                for r in recording.of_type("aws:lambda/function:Function")
                if r.parent == component.urn
            ],
            "rotation function",
        )
        found[function.inputs["name"].split("-rot-", 1)[1]] = component
    return found


def child(recording: Recording, parent: RecordedResource, type_token: str) -> RecordedResource:
    return only(
        [r for r in recording.of_type(type_token) if r.parent == parent.urn],
        f"{type_token} under {parent.urn}",
    )


def statements(document: str) -> list[dict[str, Any]]:
    return json.loads(document)["Statement"]


# --- every schedule, to the minute ----------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_schedule_times_in_utc(record_case: Any, case: Case) -> None:
    recording = record_case(case)

    expressions = {
        suffix: schedule.inputs["scheduleExpression"]
        for suffix, schedule in schedules(recording, case.event_id).items()
    }

    assert expressions == case.at


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_schedules_fire_exactly_once(record_case: Any, case: Case) -> None:
    recording = record_case(case)
    group = one(recording, GROUP)

    assert group.inputs["name"] == f"ps-{case.event_id}"
    for schedule in schedules(recording, case.event_id).values():
        inputs = schedule.inputs
        assert inputs["groupName"] == group.inputs["name"], schedule.urn
        assert inputs["scheduleExpressionTimezone"] == "UTC", schedule.urn
        assert inputs["flexibleTimeWindow"] == {"mode": "OFF"}, schedule.urn
        assert inputs["actionAfterCompletion"] == "NONE", schedule.urn
        assert inputs["state"] == "ENABLED", schedule.urn


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_pre_sync_cron_job_schedule(record_case: Any, case: Case) -> None:
    spec = one(record_case(case), CRON_JOB).inputs["spec"]

    assert spec["schedule"] == case.pre_sync_cron
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["startingDeadlineSeconds"] == case.pre_sync_hours * 3600
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == case.pre_sync_hours * 3600
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 3


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_rotation_days_skip_freeze(record_case: Any, case: Case) -> None:
    recording = record_case(case)

    days = {}
    for name, component in rotation_components(recording).items():
        rotation = child(recording, component, "aws:secretsmanager/secretRotation:SecretRotation")
        expression = rotation.inputs["rotationRules"]["scheduleExpression"]
        assert expression.startswith("cron(0 3 "), expression
        assert expression.endswith(" * ? *)"), expression
        days[name] = [int(day) for day in expression.split()[2].split(",")]

    assert days == case.rotation_days


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_rotation_lambda_freeze_matches_case(record_case: Any, case: Case) -> None:
    recording = record_case(case)

    for component in rotation_components(recording).values():
        function = child(recording, component, "aws:lambda/function:Function")
        variables = function.inputs["environment"]["variables"]
        assert variables["ROTATION_FREEZE_START"] == case.freeze[0], function.urn
        assert variables["ROTATION_FREEZE_END"] == case.freeze[1], function.urn


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_calendar_times_output(record_case: Any, case: Case) -> None:
    outputs = record_case(case).outputs
    expected = {
        "pre-sync": case.freeze[0].replace("+00:00", "Z"),
        **{suffix: text[3:-1] + "Z" for suffix, text in case.at.items()},
    }
    rotate = {suffix for suffix in expected if suffix.startswith("rotate-")}
    expected["rotate-after-close"] = expected[min(rotate)]
    for suffix in rotate:
        del expected[suffix]

    assert outputs["calendarTimes"] == expected
    assert outputs["scheduleGroup"] == f"ps-{case.event_id}"
    assert outputs["preSyncCronJob"] == f"ps-{case.event_id}-pre-sync"
    assert outputs["calendarFunction"] == f"ps-{case.event_id}-calendar"


# --- what each schedule calls -----------------------------------------------------------

SPRING = CASES[0]


def test_doors_schedules_invoke_calendar(record_case: Any) -> None:
    recording = record_case(SPRING)
    found = schedules(recording, SPRING.event_id)
    function = named(recording, f"{SPRING.event_id}-calendar-function")
    role = named(recording, f"{SPRING.event_id}-calendar-scheduler-role")

    for suffix, action, age in (("doors-open", "open", 36000), ("doors-close", "close", 86400)):
        target = found[suffix].inputs["target"]
        assert target["arn"] == function.state["arn"], suffix
        assert target["roleArn"] == role.state["arn"], suffix
        assert json.loads(target["input"]) == {"action": action}, suffix
        # Doors are open for 10 h, so a failed open is not retried after close.
        assert target["retryPolicy"] == {
            "maximumEventAgeInSeconds": age,
            "maximumRetryAttempts": 185,
        }, suffix


def test_rotation_schedules_call_rotate_secret(record_case: Any) -> None:
    recording = record_case(SPRING)
    found = schedules(recording, SPRING.event_id)
    components = rotation_components(recording)

    for name in ("weekly-token", "daily-token"):
        secret = child(recording, components[name], "aws:secretsmanager/secret:Secret")
        target = found[f"rotate-{name}"].inputs["target"]
        assert target["arn"] == "arn:aws:scheduler:::aws-sdk:secretsmanager:rotateSecret"
        assert json.loads(target["input"]) == {"SecretId": secret.state["arn"]}, name
        assert target["retryPolicy"]["maximumEventAgeInSeconds"] == 86400, name


def test_teardown_warnings_publish_to_alert_topic(record_case: Any) -> None:
    recording = record_case(SPRING)
    found = schedules(recording, SPRING.event_id)
    topic = one(recording, "aws:sns/topic:Topic").state["arn"]
    stack = SPRING.event_id
    run = f"Run: popstack teardown {stack} --settlements REPORT.csv\n"

    messages = {}
    for suffix in ("teardown-24h", "teardown-2h", "teardown-due"):
        target = found[suffix].inputs["target"]
        assert target["arn"] == "arn:aws:scheduler:::aws-sdk:sns:publish", suffix
        assert target["retryPolicy"]["maximumEventAgeInSeconds"] == 3600, suffix
        messages[suffix] = json.loads(target["input"])

    assert messages["teardown-24h"] == {
        "TopicArn": topic,
        "Subject": f"popstack: tear down stack {stack} within 24 hours",
        "Message": f"Stack {stack} (event {stack}) must be torn down by "
        f"2027-03-31T19:00:00Z, in 24 hours.\n{run}",
    }
    assert messages["teardown-2h"]["Subject"] == f"popstack: tear down stack {stack} within 2 hours"
    assert messages["teardown-due"] == {
        "TopicArn": topic,
        "Subject": f"popstack: stack {stack} is past its teardown deadline",
        "Message": f"Stack {stack} (event {stack}) reached its teardown deadline "
        f"2027-03-31T19:00:00Z.\n{run}",
    }


def test_lisbon_sample_calendar(recorded: Any) -> None:
    # The sample: doors open 2027-03-26T10:00+00:00 and close 2027-03-28T19:00+01:00
    # (18:00Z) after a 6 h pre-sync from 04:00Z; expiry is 2027-03-31T18:00Z. Only the
    # daily inventory-api token has a nominal day (26, 27, 28) in the freeze.
    recording = recorded("lisbon-popup")

    expressions = {
        suffix: schedule.inputs["scheduleExpression"]
        for suffix, schedule in schedules(recording, "lisbon-popup-27").items()
    }
    pre_sync = one(recording, CRON_JOB).inputs["spec"]["schedule"]

    assert expressions == {
        "doors-open": "at(2027-03-26T10:00:00)",
        "doors-close": "at(2027-03-28T18:00:00)",
        "rotate-inventory-api": "at(2027-03-28T18:05:00)",
        "teardown-24h": "at(2027-03-30T18:00:00)",
        "teardown-2h": "at(2027-03-31T16:00:00)",
        "teardown-due": "at(2027-03-31T18:00:00)",
    }
    assert pre_sync == "0 4 26 3 *"


# --- roles ------------------------------------------------------------------------------


def test_scheduler_role_statements(record_case: Any) -> None:
    recording = record_case(SPRING)
    event = SPRING.event_id
    role = named(recording, f"{event}-calendar-scheduler-role")
    policy = named(recording, f"{event}-calendar-scheduler-policy")
    components = rotation_components(recording)
    secret_arns = sorted(
        child(recording, components[name], "aws:secretsmanager/secret:Secret").state["arn"]
        for name in ("weekly-token", "daily-token")
    )
    rotation_functions = sorted(
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ps-{event}-rot-{name}"
        for name in ("weekly-token", "daily-token")
    )
    topic = one(recording, "aws:sns/topic:Topic").state["arn"]

    scheduler = f"arn:aws:scheduler:{REGION}:{ACCOUNT}"

    assert policy.inputs["role"] == role.id
    assert statements(role.inputs["assumeRolePolicy"]) == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "scheduler.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": ACCOUNT},
                "ArnLike": {
                    "aws:SourceArn": [
                        f"{scheduler}:schedule-group/ps-{event}",
                        f"{scheduler}:schedule/ps-{event}/*",
                    ]
                },
            },
        }
    ]
    assert statements(policy.inputs["policy"]) == [
        {
            "Sid": "InvokeCalendar",
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": [f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ps-{event}-calendar"],
        },
        {
            "Sid": "WarnBeforeTeardown",
            "Effect": "Allow",
            "Action": ["sns:Publish"],
            "Resource": [topic],
        },
        {
            "Sid": "EncryptTeardownWarnings",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": [
                f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{one(recording, 'aws:kms/key:Key').id}"
            ],
        },
        {
            "Sid": "RotateAfterClose",
            "Effect": "Allow",
            "Action": ["secretsmanager:RotateSecret"],
            "Resource": secret_arns,
        },
        {
            "Sid": "InvokeRotationFunctions",
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": rotation_functions,
        },
    ]


def test_scheduler_role_without_held_back_rotation(record_case: Any) -> None:
    # In the New York spring case only weekly-token is held back; cache-auth is not.
    recording = record_case(CASES[3])
    policy = named(recording, f"{CASES[3].event_id}-calendar-scheduler-policy")
    by_sid = {statement["Sid"]: statement for statement in statements(policy.inputs["policy"])}

    assert by_sid["RotateAfterClose"]["Resource"] == [
        child(
            recording,
            rotation_components(recording)["weekly-token"],
            "aws:secretsmanager/secret:Secret",
        ).state["arn"]
    ]


def test_scheduler_statements_with_topic_key() -> None:
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:ps-spring-alerts"
    calendar_function = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ps-spring-calendar"
    arns = {
        "calendar": calendar_function,
        "topic": topic,
        "topic_key": key,
        "secrets": [],
        "rotation_functions": [],
    }

    assert schedules_module.scheduler_statements(arns) == [
        {
            "Sid": "InvokeCalendar",
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": [calendar_function],
        },
        {
            "Sid": "WarnBeforeTeardown",
            "Effect": "Allow",
            "Action": ["sns:Publish"],
            "Resource": [topic],
        },
        {
            "Sid": "EncryptTeardownWarnings",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": [key],
        },
    ]


def test_scheduler_statements_without_topic_key() -> None:
    arns = {
        "calendar": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ps-spring-calendar",
        "topic": "arn:aws:sns:us-east-1:444455556666:drops-oncall",
        "topic_key": None,
        "secrets": [],
        "rotation_functions": [],
    }

    sids = [statement["Sid"] for statement in schedules_module.scheduler_statements(arns)]
    assert sids == ["InvokeCalendar", "WarnBeforeTeardown"]


def test_scheduler_role_uses_alert_topic_key(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    key = one(recording, "aws:kms/key:Key")
    policy = named(recording, "lisbon-popup-27-calendar-scheduler-policy")
    by_sid = {statement["Sid"]: statement for statement in statements(policy.inputs["policy"])}

    assert by_sid.get("EncryptTeardownWarnings") == {
        "Sid": "EncryptTeardownWarnings",
        "Effect": "Allow",
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Resource": [f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key.id}"],
    }


def test_calendar_lambda_role_statements(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    event = "lisbon-popup-27"
    role = named(recording, f"{event}-calendar-function-role")
    policy = named(recording, f"{event}-calendar-function-policy")
    application = one(recording, "aws:appconfig/application:Application").id
    profile = one(recording, "aws:appconfig/configurationProfile:ConfigurationProfile").state[
        "configurationProfileId"
    ]
    environment = one(recording, "aws:appconfig/environment:Environment").state["environmentId"]
    strategy = one(recording, "aws:appconfig/deploymentStrategy:DeploymentStrategy").id
    app_arn = f"arn:aws:appconfig:{REGION}:{ACCOUNT}:application/{application}"
    profile_arn = f"{app_arn}/configurationprofile/{profile}"

    assert statements(role.inputs["assumeRolePolicy"]) == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    assert statements(policy.inputs["policy"]) == [
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [
                f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/ps-{event}-calendar:*"
            ],
        },
        {
            "Sid": "WriteFlagVersions",
            "Effect": "Allow",
            "Action": [
                "appconfig:CreateHostedConfigurationVersion",
                "appconfig:DeleteHostedConfigurationVersion",
                "appconfig:GetHostedConfigurationVersion",
                "appconfig:ListHostedConfigurationVersions",
            ],
            "Resource": sorted(
                [app_arn, profile_arn, f"{profile_arn}/hostedconfigurationversion/*"]
            ),
        },
        {
            "Sid": "DeployFlags",
            "Effect": "Allow",
            "Action": ["appconfig:ListDeployments", "appconfig:StartDeployment"],
            "Resource": sorted(
                [
                    app_arn,
                    profile_arn,
                    f"{app_arn}/environment/{environment}",
                    f"arn:aws:appconfig:{REGION}:{ACCOUNT}:deploymentstrategy/{strategy}",
                ]
            ),
        },
        {
            "Sid": "SetSamplingRate",
            "Effect": "Allow",
            "Action": ["xray:UpdateSamplingRule"],
            "Resource": [f"arn:aws:xray:{REGION}:{ACCOUNT}:sampling-rule/ps-{event}"],
        },
    ]


def test_emulator_calendar_has_no_schedules(recorded: Any) -> None:
    # moto stores Scheduler schedules but never runs them, and has no AppConfig
    # environment or X-Ray sampling rule, so the demo keeps only the Lambda.
    recording = recorded("demo")
    policy = named(recording, "demo-calendar-function-policy")
    function = named(recording, "demo-calendar-function")
    variables = function.inputs["environment"]["variables"]

    assert recording.of_type(SCHEDULE) == []
    assert recording.of_type(GROUP) == []
    assert [r.name for r in recording.of_type("aws:iam/role:Role") if "scheduler" in r.name] == []
    assert [s["Sid"] for s in statements(policy.inputs["policy"])] == [
        "WriteOwnLogs",
        "WriteFlagVersions",
    ]
    assert "FLAGS_ENVIRONMENT_ID" not in variables
    assert "SAMPLING_RULE_NAME" not in variables
    assert "scheduleGroup" not in recording.outputs
    assert any("EventBridge Scheduler group, schedules and role" in line for line in recording.logs)


# --- the calendar Lambda ------------------------------------------------------------------


def test_calendar_lambda_package_and_environment(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    function = named(recording, "lisbon-popup-27-calendar-function")
    archive = function.inputs["code"]
    rule = one(recording, "aws:xray/samplingRule:SamplingRule")
    environment = one(recording, "aws:appconfig/environment:Environment")
    strategy = one(recording, "aws:appconfig/deploymentStrategy:DeploymentStrategy")

    assert isinstance(archive, pulumi.AssetArchive)
    assert {key: Path(asset.path) for key, asset in archive.assets.items()} == {
        "lambdas/__init__.py": REPO / "lambdas" / "__init__.py",
        "lambdas/flagstore.py": REPO / "lambdas" / "flagstore.py",
        "lambdas/calendar/__init__.py": REPO / "lambdas" / "calendar" / "__init__.py",
        "lambdas/calendar/handler.py": REPO / "lambdas" / "calendar" / "handler.py",
    }
    assert function.inputs["handler"] == "lambdas.calendar.handler.handle"
    assert function.inputs["runtime"] == "python3.12"
    variables = function.inputs["environment"]["variables"]
    assert variables == {
        "POPSTACK_EVENT_ID": "lisbon-popup-27",
        "WINDOW_OPENS": "2027-03-26T10:00:00+00:00",
        "WINDOW_CLOSES": "2027-03-28T19:00:00+01:00",
        "FLAGS_APPLICATION_ID": one(recording, "aws:appconfig/application:Application").id,
        "FLAGS_PROFILE_ID": one(
            recording, "aws:appconfig/configurationProfile:ConfigurationProfile"
        ).state["configurationProfileId"],
        "FLAGS_ENVIRONMENT_ID": environment.state["environmentId"],
        "FLAGS_STRATEGY_ID": strategy.id,
        "SAMPLING_RULE_NAME": rule.inputs["ruleName"],
        "SAMPLING_BASE_RATE": "0.05",
        "SAMPLING_BASE_RESERVOIR": "5",
        "SAMPLING_ELEVATED_RATE": "1.0",
        "SAMPLING_ELEVATED_RESERVOIR": "50",
    }


def test_calendar_archive_imports_alone(recorded: Any, tmp_path: Path) -> None:
    # The Lambda runtime has the standard library and boto3, plus the archive's files.
    function = named(recorded("lisbon-popup"), "lisbon-popup-27-calendar-function")
    archive = function.inputs["code"]
    archived = set(archive.assets)
    for key, asset in archive.assets.items():
        target = tmp_path / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(asset.path).read_bytes())
        for node in ast.walk(ast.parse(target.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                inside = name.replace(".", "/") + ".py" in archived or (
                    name.replace(".", "/") + "/__init__.py" in archived
                )
                assert top in sys.stdlib_module_names | {"boto3", "botocore"} or inside, (
                    f"{key} imports {name}, which the Lambda archive does not contain"
                )

    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import lambdas.calendar.handler as h; print(h.__file__); print(callable(h.handle))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        str(tmp_path / "lambdas" / "calendar" / "handler.py"),
        "True",
    ]


def test_sampling_rule_keeps_calendar_rate(recorded: Any) -> None:
    # The calendar Lambda changes the rate; `pulumi up` must not set it back.
    rule = one(recorded("lisbon-popup"), "aws:xray/samplingRule:SamplingRule")

    assert sorted(rule.ignore_changes) == ["fixedRate", "reservoirSize"]


# --- the pre-sync CronJob -----------------------------------------------------------------


def cron_job_manifest(resource: RecordedResource) -> dict[str, Any]:
    document = {"apiVersion": "batch/v1", "kind": "CronJob"}
    document.update(copy.deepcopy({k: resource.inputs[k] for k in ("metadata", "spec")}))
    return document


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cron_job_matches_schema(record_case: Any, case: Case) -> None:
    document = cron_job_manifest(one(record_case(case), CRON_JOB))

    assert kubernetes_validate.validate(document, "1.31", strict=True) == "1.31"


def test_cron_job_runs_like_checkout(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    cron_job = one(recording, CRON_JOB).inputs
    deployment = one(recording, "kubernetes:apps/v1:Deployment").inputs
    account = one(recording, "kubernetes:core/v1:ServiceAccount").inputs
    job_pod = cron_job["spec"]["jobTemplate"]["spec"]["template"]
    checkout_pod = deployment["spec"]["template"]
    job_container = only(job_pod["spec"]["containers"], "pre-sync container")
    checkout_container = only(checkout_pod["spec"]["containers"], "checkout container")

    assert cron_job["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert job_pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert job_pod["spec"]["securityContext"] == checkout_pod["spec"]["securityContext"]
    assert job_pod["spec"]["restartPolicy"] == "Never"
    assert job_container["env"] == checkout_container["env"]
    assert job_container["resources"] == checkout_container["resources"]
    assert job_container["securityContext"] == checkout_container["securityContext"]
    assert job_container["image"] == "ghcr.io/sardinha/checkout:1.4.2"
    assert job_container["command"] == [
        "/app/bin/inventory-sync",
        "--all-locations",
        "--source",
        "shopify",
    ]
    assert job_pod["metadata"]["labels"]["app.kubernetes.io/name"] == "inventory-pre-sync"
    # The checkout Service, HPA and PDB select by the checkout labels only.
    assert job_pod["metadata"]["labels"] != checkout_pod["metadata"]["labels"]


@pytest.fixture(scope="module")
def own_image_and_no_pre_sync(
    recorded: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Recording, Recording]:
    """Record SPRING with its own pre-sync image, and again with preSyncHours 0."""
    directory = tmp_path_factory.mktemp("pre-sync")
    image = Case(
        **{
            **SPRING.__dict__,
            "event_id": "cal-own-image",
            "inventory_extra": "    preSyncImage: ghcr.io/example/inventory-sync@sha256:"
            + "b" * 64,
        }
    )
    none = Case(**{**SPRING.__dict__, "event_id": "cal-no-pre-sync", "pre_sync_hours": 0})
    recordings = []
    for case in (image, none):
        path = directory / f"Pulumi.{case.event_id}.yaml"
        path.write_text(case.stack_text(), encoding="utf-8")
        recordings.append(recorded(path))
    return recordings[0], recordings[1]


def test_pre_sync_image_override(own_image_and_no_pre_sync: tuple[Recording, Recording]) -> None:
    recording, _ = own_image_and_no_pre_sync
    pod = one(recording, CRON_JOB).inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]

    assert pod["containers"][0]["image"] == "ghcr.io/example/inventory-sync@sha256:" + "b" * 64


def test_zero_pre_sync_hours_skips_job(
    own_image_and_no_pre_sync: tuple[Recording, Recording],
) -> None:
    _, recording = own_image_and_no_pre_sync

    assert recording.of_type(CRON_JOB) == []
    assert "preSyncCronJob" not in recording.outputs
    assert "pre-sync" not in recording.outputs["calendarTimes"]
    assert any("preSyncHours is 0" in line for line in recording.logs)


# --- policy rules on the calendar's resources -----------------------------------------------


def failures(recording: Recording, path: Path) -> dict[str, list[str]]:
    """Return the messages of every rule that did not pass, by rule id."""
    results = evaluate_recording(recording, load_stack_file(path).spec)
    return {result.rule: result.messages for result in results if not result.passed}


@pytest.fixture
def spring(record_case: Any, case_files: dict[str, Path]) -> tuple[Recording, Path]:
    return copy.deepcopy(record_case(SPRING)), case_files[SPRING.event_id]


def test_calendar_cases_pass_every_rule(record_case: Any, case_files: dict[str, Path]) -> None:
    for case in CASES:
        path = case_files[case.event_id]
        assert failures(record_case(case), path) == {}, case.event_id


def test_rotation_schedule_inside_freeze(spring: tuple[Recording, Path]) -> None:
    recording, path = spring
    schedule = named(recording, f"{SPRING.event_id}-calendar-rotate-daily-token")
    # 18:55Z is five minutes before the close.
    schedule.inputs["scheduleExpression"] = "at(2027-03-28T18:55:00)"

    assert failures(recording, path) == {
        "secret-rotation": [
            f'Schedule "{schedule.name}": changes a secret at 2027-03-28T18:55:00Z, and a '
            "rotation started then may run 3 h, into the freeze from the pre-sync start "
            "2027-03-27T23:00:00Z to the close 2027-03-28T19:00:00Z; schedule one at() "
            "rotation after the close (components.schedules.EventCalendar does)"
        ]
    }


@pytest.mark.parametrize(
    ("target", "expression"),
    [
        # One minute before the pre-sync start: the rotation would run into the freeze.
        ("arn:aws:scheduler:::aws-sdk:secretsmanager:rotateSecret", "at(2027-03-27T22:59:00)"),
        ("arn:aws:scheduler:::aws-sdk:secretsmanager:RotateSecret", "at(2027-03-28T12:00:00)"),
        ("arn:aws:scheduler:::aws-sdk:secretsmanager:putSecretValue", "at(2027-03-28T12:00:00)"),
        ("arn:aws:scheduler:::aws-sdk:secretsmanager:updateSecret", "at(2027-03-28T12:00:00)"),
    ],
    ids=["just-before-freeze", "capitalised", "put-secret-value", "update-secret"],
)
def test_secret_writes_near_the_freeze_are_rejected(
    spring: tuple[Recording, Path], target: str, expression: str
) -> None:
    recording, path = spring
    schedule = named(recording, f"{SPRING.event_id}-calendar-rotate-daily-token")
    schedule.inputs["target"]["arn"] = target
    schedule.inputs["scheduleExpression"] = expression

    [message] = failures(recording, path)["secret-rotation"]

    assert message.startswith(f'Schedule "{schedule.name}": changes a secret at ')


def test_recurring_rotate_secret_schedule(spring: tuple[Recording, Path]) -> None:
    recording, path = spring
    schedule = named(recording, f"{SPRING.event_id}-calendar-rotate-daily-token")
    schedule.inputs["scheduleExpression"] = "rate(1 day)"

    assert failures(recording, path)["secret-rotation"] == [
        f'Schedule "{schedule.name}": calls RotateSecret on the recurring schedule rate(1 day), '
        "which this check cannot keep out of the freeze; schedule one at() rotation after the "
        "close (components.schedules.EventCalendar does)"
    ]


def test_flexible_window_and_venue_zone(spring: tuple[Recording, Path]) -> None:
    recording, path = spring
    schedule = named(recording, f"{SPRING.event_id}-calendar-doors-open")
    schedule.inputs["flexibleTimeWindow"] = {"mode": "FLEXIBLE", "maximumWindowInMinutes": 15}
    schedule.inputs["scheduleExpression"] = "at(2027-03-28T10:00:00)"
    schedule.inputs["scheduleExpressionTimezone"] = "Europe/Lisbon"
    schedule.inputs["actionAfterCompletion"] = "DELETE"

    assert failures(recording, path) == {
        "scheduler-exact-time": [
            f'Schedule "{schedule.name}": flexible_time_window mode is "FLEXIBLE", so it may '
            "fire up to its maximum window late; set mode OFF "
            "(components.schedules.EventCalendar builds one)",
            f'Schedule "{schedule.name}": at(2027-03-28T10:00:00) is read in "Europe/Lisbon", '
            "where a wall-clock time can be skipped or repeated by a DST change; write the "
            'time in UTC and set schedule_expression_timezone "UTC" '
            "(components.schedules.EventCalendar builds one)",
            f'Schedule "{schedule.name}": action_after_completion is "DELETE": Scheduler '
            "deletes the schedule once it fires, and the next `pulumi up` creates it again, so "
            "it fires again; set NONE",
        ]
    }


def test_cron_job_without_time_zone(spring: tuple[Recording, Path]) -> None:
    recording, path = spring
    cron_job = one(recording, CRON_JOB)
    del cron_job.inputs["spec"]["timeZone"]

    assert failures(recording, path) == {
        "cronjob-time-zone": [
            f'CronJob "{cron_job.name}": sets no spec.timeZone, so its schedule is read in the '
            "time zone of the cluster's kube-controller-manager; set timeZone: Etc/UTC and "
            "write the schedule in UTC (components.checkout.CheckoutService does)"
        ]
    }


def test_cron_job_container_rules(spring: tuple[Recording, Path]) -> None:
    recording, path = spring
    cron_job = one(recording, CRON_JOB)
    pod = cron_job.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    del container["resources"]["limits"]
    container["image"] = "ghcr.io/example/inventory-sync:latest"
    pod["securityContext"]["runAsNonRoot"] = False

    found = failures(recording, path)

    label = f'CronJob "{cron_job.name}": container "pre-sync"'
    assert found == {
        "container-resources": [
            f"{label} sets no resources limits.cpu, limits.memory; set requests and limits "
            "for cpu and memory (checkout.cpuRequest, cpuLimit, memoryRequest and memoryLimit "
            "in the stack file)"
        ],
        "container-non-root": [
            f"{label} sets runAsNonRoot false; set securityContext.runAsNonRoot: true on the "
            "pod or the container"
        ],
        "image-pinned": [
            f'{label} image "ghcr.io/example/inventory-sync:latest" uses the tag latest; pin '
            "a version tag or @sha256:<digest> (checkout.image in the stack file)"
        ],
    }


# --- the rotation Lambda's freeze and the calendar's rotation times -------------------------


@pytest.mark.parametrize(
    ("moment", "frozen"),
    [
        # The daily token's nominal 28th: its 03:00Z start is inside the freeze.
        (datetime(2027, 3, 28, 3, 0, tzinfo=UTC), True),
        # The held-back rotation five minutes after close is outside it.
        (datetime(2027, 3, 28, 19, 5, tzinfo=UTC), False),
        # The weekly token's replacement day, the 27th at 03:00Z, is before the pre-sync.
        (datetime(2027, 3, 27, 3, 0, tzinfo=UTC), False),
    ],
    ids=["nominal-day", "after-close", "day-before"],
)
def test_rotation_handler_freeze_agrees(
    record_case: Any, monkeypatch: pytest.MonkeyPatch, moment: datetime, frozen: bool
) -> None:
    recording = record_case(SPRING)
    component = rotation_components(recording)["daily-token"]
    variables = child(recording, component, "aws:lambda/function:Function").inputs["environment"][
        "variables"
    ]
    monkeypatch.setenv(rotation_handler.FREEZE_START_ENV, variables["ROTATION_FREEZE_START"])
    monkeypatch.setenv(rotation_handler.FREEZE_END_ENV, variables["ROTATION_FREEZE_END"])
    monkeypatch.setattr(rotation_handler, "now", lambda: moment)

    if frozen:
        with pytest.raises(rotation_handler.RotationFrozenError):
            rotation_handler._check_freeze_window("arn:test", "token")
    else:
        rotation_handler._check_freeze_window("arn:test", "token")


# --- rotation days at the edges of the month ----------------------------------------------


def test_freeze_on_first_uses_next_day() -> None:
    # Doors open 10:00+01:00 (09:00Z) on 1 May after a 6 h pre-sync from 03:00Z, so the
    # freeze touches the 1st only. A 31-day secret rotates on the 1st alone, and no day
    # before it is left in the month, so it moves to the 2nd.
    window = Window.model_validate(
        {
            "opens": "2027-05-01T10:00:00+01:00",
            "closes": "2027-05-01T18:00:00+01:00",
            "timeZone": "Europe/Lisbon",
            "preSyncHours": 6,
        }
    )

    schedule = calendar.rotation_schedule(window, 31)

    assert schedule.expression == "cron(0 3 2 * ? *)"
    assert calendar.rotates_after_close(window, 31)


def test_freeze_over_whole_month_rejected() -> None:
    # The spec rejects a freeze over 28 days; built without validation, the calendar
    # still refuses to write a schedule with no free day.
    window = Window.model_construct(
        opens=datetime(2027, 5, 1, tzinfo=UTC),
        closes=datetime(2027, 6, 2, tzinfo=UTC),
        time_zone="UTC",
        pre_sync_hours=0,
    )

    with pytest.raises(ValueError, match="touches every day of the month"):
        calendar.rotation_schedule(window, 7)
