"""The alert topic, its KMS key and its access policy, under Pulumi mocks and in moto.

CloudWatch alarms cannot publish to a topic encrypted with the AWS managed key
alias/aws/sns, so each event's topic gets a customer managed key whose policy lets
cloudwatch.amazonaws.com and the calendar's Scheduler role use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from components.spec import EMULATOR_SERVICES
from popstack.mockrun import RecordedResource, Recording

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws.*")

ACCOUNT = "123456789012"
REGION = "eu-west-1"
EVENT = "lisbon-popup-27"
KEY = "aws:kms/key:Key"
ALIAS = "aws:kms/alias:Alias"
TOPIC = "aws:sns/topic:Topic"
TOPIC_POLICY = "aws:sns/topicPolicy:TopicPolicy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
LISBON_TAGS = {
    "popstack:event": EVENT,
    "popstack:owner": "retail-platform",
    "popstack:cost-centre": "CC-4410",
    "popstack:expires-at": "2027-03-31T18:00:00Z",
    "managed-by": "popstack",
}
ACCOUNT_ROOT = f"arn:aws:iam::{ACCOUNT}:root"
SCHEDULER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ps-{EVENT}-calendar-scheduler"
ADMIN_ACTIONS = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
]
ALARM_ARNS = [
    f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:ps-{EVENT}-{suffix}"
    for suffix in (
        "cache-throttling",
        "calendar-errors",
        "checkout-errors",
        "dead-letters",
        "queue-age",
    )
]


def one(recording: Recording, type_token: str) -> RecordedResource:
    found = recording.of_type(type_token)
    assert len(found) == 1, f"expected one {type_token}, got {[r.urn for r in found]}"
    return found[0]


def statements(document: str) -> list[dict[str, Any]]:
    parsed = json.loads(document)
    assert parsed["Version"] == "2012-10-17"
    return parsed["Statement"]


@pytest.fixture(scope="module")
def lisbon(recorded: Callable[..., Recording]) -> Recording:
    return recorded("lisbon-popup")


# --- the key ----------------------------------------------------------------------


def test_key_policy_statements(lisbon: Recording) -> None:
    key = one(lisbon, KEY)

    assert statements(key.inputs["policy"]) == [
        {
            "Sid": "AdministerKey",
            "Effect": "Allow",
            "Principal": {"AWS": ACCOUNT_ROOT},
            "Action": ADMIN_ACTIONS,
            "Resource": ["*"],
        },
        {
            "Sid": "CloudWatchAlarmsPublish",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": ["*"],
            "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
        },
        {
            "Sid": "SchedulerPublishesWarnings",
            "Effect": "Allow",
            "Principal": {"AWS": ACCOUNT_ROOT},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": ["*"],
            "Condition": {"ArnEquals": {"aws:PrincipalArn": SCHEDULER_ROLE}},
        },
    ]


def test_key_policy_names_recorded_scheduler_role(lisbon: Recording) -> None:
    roles = [r for r in lisbon.of_type("aws:iam/role:Role") if r.name.endswith("scheduler-role")]
    [statement] = [
        s
        for s in statements(one(lisbon, KEY).inputs["policy"])
        if s["Sid"] == "SchedulerPublishesWarnings"
    ]

    assert len(roles) == 1
    assert statement["Condition"]["ArnEquals"]["aws:PrincipalArn"] == roles[0].state["arn"]


def test_key_rotation_deletion_window_tags(lisbon: Recording) -> None:
    key = one(lisbon, KEY)

    assert key.inputs["enableKeyRotation"] is True
    assert key.inputs["deletionWindowInDays"] == 7
    assert key.inputs["tags"] == LISBON_TAGS
    assert key.inputs["description"] == f"Encrypts the alert topic of event {EVENT}"
    assert "bypassPolicyLockoutSafetyCheck" not in key.inputs


def test_key_alias_from_event_id(lisbon: Recording) -> None:
    alias = one(lisbon, ALIAS)

    assert alias.inputs["name"] == f"alias/ps-{EVENT}-alerts"
    assert alias.inputs["targetKeyId"] == one(lisbon, KEY).id


# --- the topic --------------------------------------------------------------------


def test_topic_encrypted_with_event_key(lisbon: Recording) -> None:
    key = one(lisbon, KEY)
    topic = one(lisbon, TOPIC)

    assert topic.inputs["kmsMasterKeyId"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key.id}"
    assert topic.inputs["kmsMasterKeyId"] != "alias/aws/sns"


def test_topic_policy_lets_alarms_publish(lisbon: Recording) -> None:
    topic = one(lisbon, TOPIC).state["arn"]
    policy = one(lisbon, TOPIC_POLICY)

    assert topic == f"arn:aws:sns:{REGION}:{ACCOUNT}:ps-{EVENT}-alerts"
    assert policy.inputs["arn"] == topic
    assert statements(policy.inputs["policy"]) == [
        {
            "Sid": "CloudWatchAlarmsPublish",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": ["sns:Publish"],
            "Resource": [topic],
            "Condition": {
                "StringEquals": {"aws:SourceAccount": ACCOUNT},
                "ArnLike": {"aws:SourceArn": ALARM_ARNS},
            },
        }
    ]


@pytest.mark.parametrize("stack", ["lisbon-popup", "demo"])
def test_topic_policy_covers_every_alarm(recorded: Callable[..., Recording], stack: str) -> None:
    # The topic policy would reject an alarm whose name suffix is missing from
    # components.naming.SUFFIXES.
    recording = recorded(stack)
    topic = one(recording, TOPIC).state["arn"]
    [statement] = statements(one(recording, TOPIC_POLICY).inputs["policy"])
    notifying = sorted(
        alarm.state["arn"]
        for alarm in recording.of_type(ALARM)
        if topic in alarm.inputs["alarmActions"]
    )

    assert len(notifying) == 5
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == notifying


def test_emulator_topic_key_follows_endpoints(recorded: Callable[..., Recording]) -> None:
    # The demo sends only EMULATOR_SERVICES to moto. Without kms among them, a key
    # would be created in AWS itself, so the demo's topic stays unencrypted.
    recording = recorded("demo")
    topic = one(recording, TOPIC)

    if "kms" in EMULATOR_SERVICES:
        assert topic.inputs["kmsMasterKeyId"].endswith(one(recording, KEY).id)
    else:
        assert recording.of_type(KEY) == []
        assert recording.of_type(ALIAS) == []
        assert "kmsMasterKeyId" not in topic.inputs
    assert len(recording.of_type(TOPIC_POLICY)) == 1


def test_existing_topic_gets_no_key_or_policy(recorded: Callable[..., Recording]) -> None:
    recording = recorded("flash-drop")
    [policy] = [
        r
        for r in recording.of_type("aws:iam/rolePolicy:RolePolicy")
        if r.name.endswith("scheduler-policy")
    ]

    assert recording.of_type(TOPIC) == []
    assert recording.of_type(TOPIC_POLICY) == []
    assert recording.of_type(KEY) == []
    assert recording.of_type(ALIAS) == []
    assert [s["Sid"] for s in statements(policy.inputs["policy"])] == [
        "InvokeCalendar",
        "WarnBeforeTeardown",
    ]


# --- the same documents in moto ---------------------------------------------------


def test_moto_accepts_key_and_topic(
    lisbon: Recording, aws_client: Callable[..., Any], moto_reset: None
) -> None:
    """Create the recorded key, alias, topic and topic policy in moto, as the demo would."""
    key_inputs = one(lisbon, KEY).inputs
    kms = aws_client("kms")
    sns = aws_client("sns")

    key_id = kms.create_key(
        Description=key_inputs["description"],
        Policy=key_inputs["policy"],
        Tags=[{"TagKey": k, "TagValue": v} for k, v in sorted(key_inputs["tags"].items())],
    )["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key_id)
    kms.create_alias(AliasName=one(lisbon, ALIAS).inputs["name"], TargetKeyId=key_id)
    key_arn = kms.describe_key(KeyId=f"alias/ps-{EVENT}-alerts")["KeyMetadata"]["Arn"]
    topic_arn = sns.create_topic(
        Name=one(lisbon, TOPIC).inputs["name"], Attributes={"KmsMasterKeyId": key_arn}
    )["TopicArn"]
    sns.set_topic_attributes(
        TopicArn=topic_arn,
        AttributeName="Policy",
        AttributeValue=one(lisbon, TOPIC_POLICY).inputs["policy"],
    )
    attributes = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=key_inputs["deletionWindowInDays"])
    deleted = kms.describe_key(KeyId=key_id)["KeyMetadata"]

    assert key_arn.endswith(f":key/{key_id}")
    assert json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]) == (
        json.loads(key_inputs["policy"])
    )
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    assert attributes["KmsMasterKeyId"] == key_arn
    assert json.loads(attributes["Policy"]) == json.loads(
        one(lisbon, TOPIC_POLICY).inputs["policy"]
    )
    assert deleted["KeyState"] == "PendingDeletion"
