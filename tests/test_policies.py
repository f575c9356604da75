"""The policy rules over the recorded sample stacks, and over mutated copies of them.

Each mutation breaks one rule on one resource and checks the exact message, which
names the resource and the fix. The recordings come from the real program under
Pulumi mocks (the `recorded` fixture), so the rules read the same resources as
`popstack plan`.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import warnings
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulumi.output
import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE
from typer.testing import CliRunner

from components.spec import EventSpec, Window, load_stack_file
from policies.rules import ADVISORY, MANDATORY, RULES, RuleResult, evaluate, evaluate_recording
from policies.schedule import CronSchedule, ScheduleError, parse_schedule
from policies.settings import (
    DEFAULT_GRACE_HOURS,
    DEFAULT_PRE_SYNC_HOURS,
    EventSettings,
    settings_from_spec,
    settings_from_stack_config,
    with_policy_config,
)
from policies.tagging import TAGGABLE_AWS_TYPES, UNTAGGABLE_AWS_TYPES
from policies.view import UNKNOWN, ResourceView, to_plain
from popstack.mockrun import RecordedResource, Recording, flat_config

STACKS_DIR = Path(__file__).resolve().parent.parent / "stacks"
SAMPLES = ("lisbon-popup", "flash-drop", "demo")
RULE_IDS = [rule.id for rule in RULES]


def stack_file(stack: str):
    return load_stack_file(STACKS_DIR / f"Pulumi.{stack}.yaml")


def mutable(recording: Recording) -> Recording:
    """Return a deep copy, because the `recorded` fixture shares each recording."""
    return copy.deepcopy(recording)


def named(recording: Recording, name: str) -> RecordedResource:
    matches = [resource for resource in recording.resources if resource.name == name]
    assert len(matches) == 1, f"expected one resource named {name}, found {len(matches)}"
    return matches[0]


def drop(recording: Recording, name: str) -> None:
    recording.resources.remove(named(recording, name))


def results_by_rule(recording: Recording, stack: str, **kwargs: Any) -> dict[str, RuleResult]:
    results = evaluate_recording(recording, stack_file(stack).spec, **kwargs)
    return {result.rule: result for result in results}


def only_failure(results: dict[str, RuleResult]) -> RuleResult:
    """Return the one rule that did not pass; fail when none or several did not."""
    failed = [result.rule for result in results.values() if not result.passed]
    assert len(failed) == 1, f"expected exactly one failing rule, got {failed}"
    return results[failed[0]]


@pytest.fixture
def lisbon(recorded) -> Recording:
    return mutable(recorded("lisbon-popup"))


@pytest.fixture
def flash(recorded) -> Recording:
    return mutable(recorded("flash-drop"))


# --- the sample stacks -------------------------------------------------------------


@pytest.mark.parametrize("stack", SAMPLES)
def test_sample_passes_every_rule(recorded, stack: str) -> None:
    results = evaluate_recording(recorded(stack), stack_file(stack).spec)
    assert [result.rule for result in results] == RULE_IDS
    for result in results:
        assert result.messages == [], f"{stack}: {result.rule}"
        assert result.passed, f"{stack}: {result.rule}"
        assert result.verdict == "pass", f"{stack}: {result.rule}"
        assert result.enforcement == result.declared_enforcement


def test_rules_have_unique_ids_and_levels() -> None:
    assert len(set(RULE_IDS)) == len(RULE_IDS)
    assert {rule.enforcement for rule in RULES} == {MANDATORY, ADVISORY}
    advisory = [rule.id for rule in RULES if rule.enforcement == ADVISORY]
    assert advisory == ["cache-usage-limits", "hpa-max-replicas"]
    for rule in RULES:
        assert (rule.check_resource is None) != (rule.check_stack is None), rule.id
        assert rule.description.endswith("."), rule.id


def test_rule_result_json_shape(lisbon: Recording) -> None:
    named(lisbon, "lisbon-popup-27-queues-queue").inputs.pop("tags")
    result = results_by_rule(lisbon, "lisbon-popup")["event-tags"]
    payload = result.to_json()
    assert payload["rule"] == "event-tags"
    assert payload["enforcement"] == "mandatory"
    assert payload["declaredEnforcement"] == "mandatory"
    assert payload["passed"] is False
    assert payload["verdict"] == "fail"
    assert payload["messages"] == [f["message"] for f in payload["findings"]]
    assert payload["findings"][0]["urn"].endswith("::lisbon-popup-27-queues-queue")
    assert payload["findings"][0]["known"] is True


# --- event-tags ----------------------------------------------------------------------


def test_tags_dropped_from_queue(lisbon: Recording) -> None:
    named(lisbon, "lisbon-popup-27-queues-queue").inputs.pop("tags")
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "event-tags"
    assert result.enforcement == "mandatory"
    assert result.messages == [
        'Queue "lisbon-popup-27-queues-queue": has no tags; pass tags=context.tags '
        "(components.context.EventContext.tags)"
    ]


def test_tag_values_compared_with_event(lisbon: Recording) -> None:
    tags = named(lisbon, "lisbon-popup-27-orders-table").inputs["tags"]
    tags["popstack:event"] = "other-event"
    del tags["popstack:cost-centre"]
    result = results_by_rule(lisbon, "lisbon-popup")["event-tags"]
    assert result.messages == [
        'Table "lisbon-popup-27-orders-table": tag popstack:event is "other-event" but the '
        'event has "lisbon-popup-27"; pass tags=context.tags '
        "(components.context.EventContext.tags)",
        'Table "lisbon-popup-27-orders-table": tag popstack:cost-centre is missing; '
        "pass tags=context.tags (components.context.EventContext.tags)",
    ]


def test_expiry_after_close_plus_grace(lisbon: Recording) -> None:
    # Lisbon closes 2027-03-28T19:00+01:00 (18:00Z) with 72 h of grace: 2027-03-31T18:00Z.
    tags = named(lisbon, "lisbon-popup-27-cache-serverless").inputs["tags"]
    tags["popstack:expires-at"] = "2027-03-31T18:00:01Z"
    result = results_by_rule(lisbon, "lisbon-popup")["event-tags"]
    assert result.messages == [
        'ServerlessCache "lisbon-popup-27-cache-serverless": tag popstack:expires-at '
        "2027-03-31T18:00:01Z is after the window close plus 72 h of grace "
        "(2027-03-31T18:00:00Z); set it to 2027-03-31T18:00:00Z"
    ]


def test_expiry_before_close(lisbon: Recording) -> None:
    tags = named(lisbon, "lisbon-popup-27-cache-serverless").inputs["tags"]
    tags["popstack:expires-at"] = "2027-03-28T17:59:00Z"
    result = results_by_rule(lisbon, "lisbon-popup")["event-tags"]
    assert result.messages == [
        'ServerlessCache "lisbon-popup-27-cache-serverless": tag popstack:expires-at '
        "2027-03-28T17:59:00Z is before the window closes (2027-03-28T18:00:00Z); "
        "set it to 2027-03-31T18:00:00Z"
    ]


def test_expiry_not_a_time(lisbon: Recording) -> None:
    named(lisbon, "lisbon-popup-27-cache-serverless").inputs["tags"]["popstack:expires-at"] = "soon"
    result = results_by_rule(lisbon, "lisbon-popup")["event-tags"]
    assert result.messages == [
        'ServerlessCache "lisbon-popup-27-cache-serverless": tag popstack:expires-at "soon" '
        "is not a UTC time such as 2027-03-31T18:00:00Z"
    ]


def test_untaggable_types_need_no_tags(lisbon: Recording) -> None:
    # RolePolicy, SecretRotation and the bucket sub-resources take no tags in pulumi-aws.
    assert "tags" not in named(lisbon, "lisbon-popup-27-checkout-role-policy").inputs
    assert results_by_rule(lisbon, "lisbon-popup")["event-tags"].passed


def test_unclassified_aws_type_cannot_be_checked(lisbon: Recording) -> None:
    queue = named(lisbon, "lisbon-popup-27-queues-queue")
    inputs = {key: value for key, value in queue.inputs.items() if key != "tags"}
    extra = replace(
        queue, type="aws:sqs/madeUp:MadeUp", name="extra", urn=queue.urn + "-extra", inputs=inputs
    )
    lisbon.resources.append(extra)
    result = results_by_rule(lisbon, "lisbon-popup")["event-tags"]
    assert result.verdict == "unknown"
    assert result.enforcement == "advisory"
    assert result.messages == [
        'MadeUp "extra": cannot check until known: whether aws:sqs/madeUp:MadeUp takes tags is '
        "not recorded; add it to TAGGABLE_AWS_TYPES or UNTAGGABLE_AWS_TYPES in "
        "policies/tagging.py"
    ]


def _pulumi_aws_class(type_token: str) -> type:
    _, module, class_name = type_token.split(":")
    package = module.split("/")[0]
    package = "lambda_" if package == "lambda" else package
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pulumi_aws\.")
        return getattr(importlib.import_module(f"pulumi_aws.{package}"), class_name)


def _takes_tags(type_token: str) -> bool:
    return "tags" in inspect.signature(_pulumi_aws_class(type_token)._internal_init).parameters


@pytest.mark.parametrize("type_token", sorted(TAGGABLE_AWS_TYPES))
def test_taggable_list_matches_pulumi_aws(type_token: str) -> None:
    assert _takes_tags(type_token)


@pytest.mark.parametrize("type_token", sorted(UNTAGGABLE_AWS_TYPES))
def test_untaggable_list_matches_pulumi_aws(type_token: str) -> None:
    assert not _takes_tags(type_token)


@pytest.mark.parametrize("stack", SAMPLES)
def test_every_sample_aws_type_is_classified(recorded, stack: str) -> None:
    types = {r.type for r in recorded(stack).resources if r.type.startswith("aws:")}
    unclassified = types - TAGGABLE_AWS_TYPES - UNTAGGABLE_AWS_TYPES
    assert unclassified == set()


# --- kubernetes-event-label ----------------------------------------------------------


def test_kubernetes_label_missing(lisbon: Recording) -> None:
    del named(lisbon, "lisbon-popup-27-checkout-service").inputs["metadata"]["labels"][
        "popstack.io/event"
    ]
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "kubernetes-event-label"
    assert result.messages == [
        'Service "lisbon-popup-27-checkout-service": has no label popstack.io/event; '
        "add the labels of components.naming.k8s_labels"
    ]


# --- sqs-dead-letter-queue -----------------------------------------------------------


def test_queue_without_redrive(lisbon: Recording) -> None:
    named(lisbon, "lisbon-popup-27-queues-queue").inputs.pop("redrivePolicy")
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "sqs-dead-letter-queue"
    # Without the redrive policy the DLQ is no longer any queue's target, so it fails too.
    fix = (
        "has no redrive policy and is no queue's dead-letter queue; set redrive_policy with "
        "deadLetterTargetArn of a standard dead-letter queue and maxReceiveCount "
        "(components.queues.OrderQueues does)"
    )
    assert result.messages == [
        f'Queue "lisbon-popup-27-queues-dlq": {fix}',
        f'Queue "lisbon-popup-27-queues-queue": {fix}',
    ]


def test_fifo_queue_with_standard_dead_letter_queue(flash: Recording) -> None:
    dead_letters = named(flash, "kicks-drop-0412-queues-dlq")
    dead_letters.inputs.pop("fifoQueue")
    dead_letters.inputs["name"] = "ps-kicks-drop-0412-orders-dlq"
    result = only_failure(results_by_rule(flash, "flash-drop"))
    assert result.rule == "sqs-dead-letter-queue"
    assert result.messages == [
        'Queue "kicks-drop-0412-queues-queue": is FIFO but its dead-letter queue '
        'Queue "kicks-drop-0412-queues-dlq" is standard; SQS needs both of the same type, '
        "so use a FIFO dead-letter queue"
    ]


def test_separate_redrive_policy_resource(flash: Recording) -> None:
    queue = named(flash, "kicks-drop-0412-queues-queue")
    allow = named(flash, "kicks-drop-0412-queues-dlq-allow")
    separate = replace(
        allow,
        type="aws:sqs/redrivePolicy:RedrivePolicy",
        name="queue-redrive",
        urn=allow.urn + "-redrive",
        inputs={"queueUrl": queue.state["url"], "redrivePolicy": queue.inputs.pop("redrivePolicy")},
    )
    flash.resources.append(separate)
    assert results_by_rule(flash, "flash-drop")["sqs-dead-letter-queue"].passed
    dead_letters = named(flash, "kicks-drop-0412-queues-dlq")
    dead_letters.inputs.pop("fifoQueue")
    dead_letters.inputs["name"] = "ps-kicks-drop-0412-orders-dlq"
    result = results_by_rule(flash, "flash-drop")["sqs-dead-letter-queue"]
    assert result.messages == [
        'RedrivePolicy "queue-redrive": sets the redrive policy of Queue '
        '"kicks-drop-0412-queues-queue", which is FIFO but its dead-letter queue Queue '
        '"kicks-drop-0412-queues-dlq" is standard; SQS needs both of the same type, so use a '
        "FIFO dead-letter queue"
    ]


def test_redrive_without_receive_count(lisbon: Recording) -> None:
    queue = named(lisbon, "lisbon-popup-27-queues-queue")
    document = json.loads(queue.inputs["redrivePolicy"])
    del document["maxReceiveCount"]
    queue.inputs["redrivePolicy"] = json.dumps(document)
    result = results_by_rule(lisbon, "lisbon-popup")["sqs-dead-letter-queue"]
    assert result.messages == [
        'Queue "lisbon-popup-27-queues-queue": redrivePolicy has no maxReceiveCount; '
        "set it, for example to 5"
    ]


def test_unknown_redrive_resolved_through_dependencies(flash: Recording) -> None:
    queue = named(flash, "kicks-drop-0412-queues-queue")
    queue.inputs["redrivePolicy"] = pulumi.output.Unknown()
    assert results_by_rule(flash, "flash-drop")["sqs-dead-letter-queue"].passed
    # The dependency still finds the DLQ, so a type mismatch is caught in a preview.
    dead_letters = named(flash, "kicks-drop-0412-queues-dlq")
    dead_letters.inputs.pop("fifoQueue")
    dead_letters.inputs["name"] = "ps-kicks-drop-0412-orders-dlq"
    result = results_by_rule(flash, "flash-drop")["sqs-dead-letter-queue"]
    assert result.verdict == "fail"
    assert len(result.messages) == 1
    assert "is FIFO but its dead-letter queue" in result.messages[0]


def test_unresolvable_redrive_waits_for_values(lisbon: Recording) -> None:
    queue = named(lisbon, "lisbon-popup-27-queues-queue")
    queue.inputs["redrivePolicy"] = UNKNOWN_STRING_VALUE
    queue.dependencies.clear()
    result = results_by_rule(lisbon, "lisbon-popup")["sqs-dead-letter-queue"]
    assert result.verdict == "unknown"
    assert result.enforcement == "advisory"
    assert result.messages == [
        'Queue "lisbon-popup-27-queues-queue": cannot check until known: redrivePolicy is '
        "computed during the update",
        'Queue "lisbon-popup-27-queues-dlq": cannot check until known: it has no redrive '
        "policy, and it may be the dead-letter queue of a queue whose redrive policy is "
        "computed during the update",
    ]


# --- s3-private-encrypted and s3-export-retention ------------------------------------


def test_public_access_setting_off(lisbon: Recording) -> None:
    block = named(lisbon, "lisbon-popup-27-receipts-bucket-public-access")
    block.inputs["restrictPublicBuckets"] = False
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "s3-private-encrypted"
    assert result.messages == [
        'BucketPublicAccessBlock "lisbon-popup-27-receipts-bucket-public-access": leaves '
        'restrict_public_buckets of Bucket "lisbon-popup-27-receipts-bucket" off; set all four '
        "public access settings to True"
    ]


def test_bucket_without_public_access_block_or_encryption(lisbon: Recording) -> None:
    drop(lisbon, "lisbon-popup-27-receipts-bucket-public-access")
    drop(lisbon, "lisbon-popup-27-receipts-bucket-encryption")
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.messages == [
        'Bucket "lisbon-popup-27-receipts-bucket": has no BucketPublicAccessBlock; add one with '
        "all four settings True (components.buckets.private_bucket creates it)",
        'Bucket "lisbon-popup-27-receipts-bucket": has no default server-side encryption; add a '
        "BucketServerSideEncryptionConfiguration with sse_algorithm aws:kms or AES256 "
        "(components.buckets.private_bucket creates it)",
    ]


def test_export_location_needs_versioning_and_retention(lisbon: Recording) -> None:
    drop(lisbon, "lisbon-popup-27-exports-bucket-versioning")
    drop(lisbon, "lisbon-popup-27-exports-retention")
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "s3-export-retention"
    assert result.messages == [
        'Bucket "lisbon-popup-27-exports-bucket": is the export location (object lock on) but '
        'versioning is not enabled; add a BucketVersioning with status "Enabled" '
        "(components.buckets.private_bucket creates it)",
        'Bucket "lisbon-popup-27-exports-bucket": is the export location (object lock on) but '
        "has no default retention; add a BucketObjectLockConfiguration with "
        "rule.default_retention mode and days (components.exports.ExportLocation does)",
    ]


def test_receipts_bucket_needs_no_retention(lisbon: Recording) -> None:
    # Only the object-locked bucket is the export location.
    drop(lisbon, "lisbon-popup-27-receipts-bucket-versioning")
    assert results_by_rule(lisbon, "lisbon-popup")["s3-export-retention"].passed


def test_unknown_bucket_reference_uses_dependencies(lisbon: Recording) -> None:
    block = named(lisbon, "lisbon-popup-27-exports-bucket-public-access")
    block.inputs["bucket"] = UNKNOWN_STRING_VALUE
    block.inputs["ignorePublicAcls"] = False
    result = results_by_rule(lisbon, "lisbon-popup")["s3-private-encrypted"]
    assert result.messages == [
        'BucketPublicAccessBlock "lisbon-popup-27-exports-bucket-public-access": leaves '
        'ignore_public_acls of Bucket "lisbon-popup-27-exports-bucket" off; set all four '
        "public access settings to True"
    ]


# --- secret-rotation ------------------------------------------------------------------

ROTATION = "lisbon-popup-27-secrets-inventory-api-rotation"


def set_schedule(recording: Recording, expression: str) -> None:
    named(recording, ROTATION).inputs["rotationRules"]["scheduleExpression"] = expression


def test_rotation_day_inside_window(lisbon: Recording) -> None:
    # Lisbon's freeze runs from 2027-03-26T04:00Z (6 h pre-sync) to 2027-03-28T18:00Z.
    set_schedule(lisbon, "cron(0 3 1,27 * ? *)")
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "secret-rotation"
    assert result.messages == [
        f'SecretRotation "{ROTATION}": schedule cron(0 3 1,27 * ? *) rotates on 2027-03-27 '
        "(UTC), inside the freeze from the pre-sync start 2027-03-26T04:00:00Z to the close "
        "2027-03-28T18:00:00Z; drop day 27 from the schedule "
        "(components.calendar.rotation_schedule builds one that skips frozen days)"
    ]


def test_rotation_window_reaching_into_freeze(lisbon: Recording) -> None:
    # Starts at 03:00Z on the 26th; its 3 h window overlaps the pre-sync from 04:00Z.
    set_schedule(lisbon, "cron(0 3 20,26 * ? *)")
    message = results_by_rule(lisbon, "lisbon-popup")["secret-rotation"].messages[0]
    assert "rotates on 2027-03-26 (UTC)" in message
    # Two hours earlier it ends at 04:00Z, when the freeze starts, and passes.
    set_schedule(lisbon, "cron(0 1 20,26 * ? *)")
    assert results_by_rule(lisbon, "lisbon-popup")["secret-rotation"].passed


def test_rotation_without_duration_runs_to_day_end(lisbon: Recording) -> None:
    rules = named(lisbon, ROTATION).inputs["rotationRules"]
    rules.pop("duration")
    rules["scheduleExpression"] = "cron(0 0 20,25 * ? *)"
    # 2027-03-25 00:00Z with no duration runs to the end of that UTC day, before 26T04:00Z.
    assert results_by_rule(lisbon, "lisbon-popup")["secret-rotation"].passed


def test_secret_without_rotation(lisbon: Recording) -> None:
    drop(lisbon, ROTATION)
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.messages == [
        'Secret "lisbon-popup-27-secrets-inventory-api-secret": has no SecretRotation; rotate '
        "it with components.secrets.RotatedSecret"
    ]


def test_rate_schedule_floats(lisbon: Recording) -> None:
    set_schedule(lisbon, "rate(10 days)")
    result = results_by_rule(lisbon, "lisbon-popup")["secret-rotation"]
    assert result.messages == [
        f'SecretRotation "{ROTATION}": schedule rate(10 days) counts from the previous '
        "rotation, so its rotation days cannot be kept out of the freeze; use a cron() schedule "
        "listing days of the month (components.calendar.rotation_schedule builds one)"
    ]


def test_rotation_more_than_daily(lisbon: Recording) -> None:
    set_schedule(lisbon, "cron(0 3,15 1 * ? *)")
    result = results_by_rule(lisbon, "lisbon-popup")["secret-rotation"]
    assert result.messages == [
        f'SecretRotation "{ROTATION}": schedule cron(0 3,15 1 * ? *) rotates again after '
        "12:00:00; rotate at most once a day (1 to 1000 days apart)"
    ]


def test_rotation_too_rare(lisbon: Recording) -> None:
    # 2027-04-01 to 2030-04-01 is 1096 days, 2028 being a leap year.
    set_schedule(lisbon, "cron(0 3 1 4 ? 2027,2030)")
    result = results_by_rule(lisbon, "lisbon-popup")["secret-rotation"]
    assert result.messages == [
        f'SecretRotation "{ROTATION}": schedule cron(0 3 1 4 ? 2027,2030) leaves up to 1096 '
        "days between rotations; Secrets Manager allows 1 to 1000 days, so rotate more often"
    ]


def test_rotation_only_once(lisbon: Recording) -> None:
    # The horizon starts a day before the freeze, so 2027-01-01 is already past.
    set_schedule(lisbon, "cron(0 3 1 1 ? 2027,2030)")
    result = results_by_rule(lisbon, "lisbon-popup")["secret-rotation"]
    assert result.messages == [
        f'SecretRotation "{ROTATION}": schedule cron(0 3 1 1 ? 2027,2030) starts fewer than two '
        "rotations in the four years from 2027-03-25; list days of the month so that it "
        "rotates at least every 1000 days"
    ]


def test_rotation_after_days_out_of_range(lisbon: Recording) -> None:
    named(lisbon, ROTATION).inputs["rotationRules"] = {"automaticallyAfterDays": 1200}
    result = results_by_rule(lisbon, "lisbon-popup")["secret-rotation"]
    assert result.messages[0] == (
        f'SecretRotation "{ROTATION}": automatically_after_days 1200 leaves up to 1200 days '
        "between rotations; Secrets Manager allows 1 to 1000 days, so rotate more often"
    )
    assert len(result.messages) == 2
    assert "counts from the previous rotation" in result.messages[1]


def test_rotation_schedule_with_unsupported_syntax(lisbon: Recording) -> None:
    set_schedule(lisbon, "cron(0 3 L * ? *)")
    result = results_by_rule(lisbon, "lisbon-popup")["secret-rotation"]
    assert result.messages == [
        f"SecretRotation \"{ROTATION}\": rotation_rules are invalid: day-of-month 'L' uses L, "
        "W or #, which this check does not evaluate; list the values instead"
    ]


def test_cron_parser_fields() -> None:
    schedule = parse_schedule("cron(30 3 ? JAN-MAR MON,FRI *)")
    assert isinstance(schedule, CronSchedule)
    assert schedule.minutes == {30}
    assert schedule.hours == {3}
    assert schedule.days_of_month is None
    assert schedule.months == {1, 2, 3}
    assert schedule.days_of_week == {2, 6}
    # 2027-03-26 is a Friday, 2027-03-27 a Saturday, 2027-04-02 a Friday after March.
    assert schedule.runs_on(datetime(2027, 3, 26).date())
    assert not schedule.runs_on(datetime(2027, 3, 27).date())
    assert not schedule.runs_on(datetime(2027, 4, 2).date())
    assert parse_schedule("cron(0 3 */10 * ? *)").days_of_month == {1, 11, 21, 31}


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("cron(0 3 1 * *)", "has 5 fields"),
        ("cron(0 3 1 * 2 *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 25 1 * ? *)", "hours value 25 is outside 0..23"),
        ("every day", "is neither cron(...) nor rate(...)"),
    ],
)
def test_cron_parser_rejects(expression: str, problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_schedule(expression)


# --- iam-least-privilege ---------------------------------------------------------------

CHECKOUT_POLICY = "lisbon-popup-27-checkout-role-policy"


def add_statement(recording: Recording, statement: dict) -> None:
    policy = named(recording, CHECKOUT_POLICY)
    document = json.loads(policy.inputs["policy"])
    document["Statement"].append(statement)
    policy.inputs["policy"] = json.dumps(document)


def test_service_wildcard_action(lisbon: Recording) -> None:
    add_statement(
        lisbon,
        {
            "Sid": "Everything",
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": "arn:aws:s3:::ps-lisbon-popup-27-receipts-123456789012/*",
        },
    )
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "iam-least-privilege"
    assert result.messages == [
        f'RolePolicy "{CHECKOUT_POLICY}": policy statement Everything allows action "s3:*"; '
        "list only the actions it needs"
    ]


def test_wildcard_resource_for_data_service(lisbon: Recording) -> None:
    add_statement(
        lisbon,
        {"Sid": "ReadAll", "Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": "*"},
    )
    result = results_by_rule(lisbon, "lisbon-popup")["iam-least-privilege"]
    assert result.messages == [
        f'RolePolicy "{CHECKOUT_POLICY}": policy statement ReadAll allows dynamodb:GetItem on '
        "every resource; name the ARNs of the tables, queues, buckets or secrets under Resource"
    ]


def test_star_action_and_not_action(lisbon: Recording) -> None:
    add_statement(lisbon, {"Effect": "Allow", "Action": "*", "Resource": "*"})
    add_statement(
        lisbon, {"Sid": "AllBut", "Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}
    )
    result = results_by_rule(lisbon, "lisbon-popup")["iam-least-privilege"]
    # The checkout policy has eight statements, so the added ones are 9 and AllBut.
    assert result.messages == [
        f'RolePolicy "{CHECKOUT_POLICY}": policy statement 9 allows action "*"; '
        "list only the actions it needs",
        f'RolePolicy "{CHECKOUT_POLICY}": policy statement AllBut allows NotAction, which '
        "grants every action it does not list; list the allowed actions under Action instead",
    ]


def test_deny_statement_and_metric_wildcard_allowed(lisbon: Recording) -> None:
    # The sample's checkout policy already allows xray and cloudwatch:PutMetricData on "*".
    add_statement(lisbon, {"Effect": "Deny", "Action": "s3:*", "Resource": "*"})
    assert results_by_rule(lisbon, "lisbon-popup")["iam-least-privilege"].passed


ALERT_KEY = "lisbon-popup-27-dashboards-alerts-key"


def add_key_statement(recording: Recording, statement: dict) -> None:
    key = named(recording, ALERT_KEY)
    document = json.loads(key.inputs["policy"])
    document["Statement"].append(statement)
    key.inputs["policy"] = json.dumps(document)


def test_key_policy_star_resource_is_the_key(lisbon: Recording) -> None:
    # Every statement of the sample's key policy has the "*" resource, which there
    # means the key itself, and KMS is a data service.
    statements = json.loads(named(lisbon, ALERT_KEY).inputs["policy"])["Statement"]
    assert [statement["Resource"] for statement in statements] == [["*"], ["*"], ["*"]]
    assert results_by_rule(lisbon, "lisbon-popup")["iam-least-privilege"].passed


def test_key_policy_service_wildcard(lisbon: Recording) -> None:
    add_key_statement(
        lisbon,
        {
            "Sid": "EnableIamUserPermissions",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
    )
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "iam-least-privilege"
    assert result.messages == [
        f'Key "{ALERT_KEY}": policy statement EnableIamUserPermissions allows action "kms:*"; '
        "list only the actions it needs"
    ]


def test_kms_star_resource_outside_key_policy(lisbon: Recording) -> None:
    add_statement(
        lisbon,
        {"Sid": "DecryptAll", "Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": "*"},
    )
    result = results_by_rule(lisbon, "lisbon-popup")["iam-least-privilege"]
    assert result.messages == [
        f'RolePolicy "{CHECKOUT_POLICY}": policy statement DecryptAll allows kms:Decrypt on '
        "every resource; name the ARNs of the tables, queues, buckets or secrets under Resource"
    ]


def test_topic_policy_checked(lisbon: Recording) -> None:
    policy = named(lisbon, "lisbon-popup-27-dashboards-alerts-policy")
    document = json.loads(policy.inputs["policy"])
    document["Statement"][0]["Action"] = ["sns:*"]
    policy.inputs["policy"] = json.dumps(document)

    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "iam-least-privilege"
    assert result.messages == [
        'TopicPolicy "lisbon-popup-27-dashboards-alerts-policy": policy statement '
        'CloudWatchAlarmsPublish allows action "sns:*"; list only the actions it needs'
    ]


def test_role_inline_policy_checked(lisbon: Recording) -> None:
    role = named(lisbon, "lisbon-popup-27-checkout-role")
    role.inputs["inlinePolicies"] = [
        {
            "name": "extra",
            "policy": json.dumps(
                {"Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}
            ),
        }
    ]
    result = results_by_rule(lisbon, "lisbon-popup")["iam-least-privilege"]
    assert result.messages == [
        'Role "lisbon-popup-27-checkout-role": inline policy extra statement 1 allows action '
        '"sqs:*"; list only the actions it needs',
        'Role "lisbon-popup-27-checkout-role": inline policy extra statement 1 allows sqs:* on '
        "every resource; name the ARNs of the tables, queues, buckets or secrets under Resource",
    ]


# --- dynamodb-recovery -----------------------------------------------------------------

TABLE = "lisbon-popup-27-orders-table"


def test_table_without_pitr(lisbon: Recording) -> None:
    named(lisbon, TABLE).inputs["pointInTimeRecovery"] = {"enabled": False}
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "dynamodb-recovery"
    assert result.messages == [
        f'Table "{TABLE}": point-in-time recovery is off; set '
        "point_in_time_recovery={'enabled': True}"
    ]


def test_table_without_deletion_protection(lisbon: Recording) -> None:
    named(lisbon, TABLE).inputs.pop("deletionProtectionEnabled")
    result = results_by_rule(lisbon, "lisbon-popup")["dynamodb-recovery"]
    assert result.messages == [
        f'Table "{TABLE}": deletion protection is off but no verified export exists; set '
        "deletion_protection_enabled=True until teardown has verified the export"
    ]
    # Teardown turns protection off only after it has verified the export.
    verified = results_by_rule(lisbon, "lisbon-popup", export_verified=True)
    assert verified["dynamodb-recovery"].passed


# --- cache-tls and cache-usage-limits ----------------------------------------------------


def test_replication_group_without_tls(lisbon: Recording) -> None:
    cache = named(lisbon, "lisbon-popup-27-cache-serverless")
    group = replace(
        cache,
        type="aws:elasticache/replicationGroup:ReplicationGroup",
        name="legacy-cache",
        urn=cache.urn + "-legacy",
        inputs={"tags": cache.inputs["tags"], "transitEncryptionEnabled": False},
    )
    lisbon.resources.append(group)
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "cache-tls"
    assert result.messages == [
        'ReplicationGroup "legacy-cache": transit encryption is off; set '
        "transit_encryption_enabled=True and transit_encryption_mode='required', or use "
        "ElastiCache Serverless, which accepts TLS only"
    ]
    group.inputs.update(transitEncryptionEnabled=True, transitEncryptionMode="preferred")
    result = results_by_rule(lisbon, "lisbon-popup")["cache-tls"]
    assert result.messages[0].startswith(
        'ReplicationGroup "legacy-cache": transit_encryption_mode is "preferred", which allows '
        "plain text"
    )


def test_cache_limits_above_threshold_are_advice(lisbon: Recording) -> None:
    limits = named(lisbon, "lisbon-popup-27-cache-serverless").inputs["cacheUsageLimits"]
    limits["ecpuPerSeconds"] = [{"maximum": 2_000_000}]
    limits["dataStorage"]["maximum"] = 51
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "cache-usage-limits"
    assert result.enforcement == "advisory"
    assert result.verdict == "advice"
    assert result.messages == [
        'ServerlessCache "lisbon-popup-27-cache-serverless": data storage maximum 51 GB is above '
        "the 50 GB cost threshold; lower cache.maxDataStorageGb, or raise maxDataStorageGb in "
        "the policy config if the event needs it",
        'ServerlessCache "lisbon-popup-27-cache-serverless": ECPU per second maximum 2000000 is '
        "above the 1000000 cost threshold; lower cache.maxEcpuPerSecond, or raise "
        "maxEcpuPerSecond in the policy config if the event needs it",
    ]


def test_cache_without_limits(lisbon: Recording) -> None:
    named(lisbon, "lisbon-popup-27-cache-serverless").inputs.pop("cacheUsageLimits")
    result = results_by_rule(lisbon, "lisbon-popup")["cache-usage-limits"]
    assert result.messages == [
        'ServerlessCache "lisbon-popup-27-cache-serverless": has no cache_usage_limits, so its '
        "ECPU and storage and the bill are unbounded; set cache.maxEcpuPerSecond and "
        "cache.maxDataStorageGb in the stack file"
    ]


# --- pdb-allows-eviction ------------------------------------------------------------------

PDB = "lisbon-popup-27-checkout-pdb"


def test_pdb_min_available_equals_min_replicas(lisbon: Recording) -> None:
    spec = named(lisbon, PDB).inputs["spec"]
    del spec["maxUnavailable"]
    spec["minAvailable"] = 2
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "pdb-allows-eviction"
    assert result.messages == [
        f'PodDisruptionBudget "{PDB}": minAvailable 2 keeps all 2 pods of Deployment '
        '"lisbon-popup-27-checkout-deployment" (minReplicas of HorizontalPodAutoscaler '
        '"lisbon-popup-27-checkout-hpa"), so no pod can be evicted and node drains block; use '
        "maxUnavailable: 1 (components.checkout.CheckoutService does), or set minAvailable "
        "below that"
    ]


@pytest.mark.parametrize(("min_available", "passes"), [(1, True), ("50%", True), ("100%", False)])
def test_pdb_min_available_below_floor(lisbon: Recording, min_available: Any, passes: bool) -> None:
    spec = named(lisbon, PDB).inputs["spec"]
    del spec["maxUnavailable"]
    spec["minAvailable"] = min_available
    assert results_by_rule(lisbon, "lisbon-popup")["pdb-allows-eviction"].passed is passes


@pytest.mark.parametrize(("max_unavailable", "passes"), [(0, False), ("0%", False), ("10%", True)])
def test_pdb_max_unavailable(lisbon: Recording, max_unavailable: Any, passes: bool) -> None:
    named(lisbon, PDB).inputs["spec"]["maxUnavailable"] = max_unavailable
    result = results_by_rule(lisbon, "lisbon-popup")["pdb-allows-eviction"]
    assert result.passed is passes
    if not passes:
        assert result.messages == [
            f'PodDisruptionBudget "{PDB}": maxUnavailable {max_unavailable} allows no eviction; '
            "use maxUnavailable: 1 (components.checkout.CheckoutService does)"
        ]


# --- container rules ------------------------------------------------------------------------

DEPLOYMENT = "lisbon-popup-27-checkout-deployment"


def pod(recording: Recording) -> dict:
    return named(recording, DEPLOYMENT).inputs["spec"]["template"]["spec"]


def test_run_as_non_root_false(lisbon: Recording) -> None:
    pod(lisbon)["securityContext"]["runAsNonRoot"] = False
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "container-non-root"
    assert result.messages == [
        f'Deployment "{DEPLOYMENT}": container "checkout" sets runAsNonRoot false; set '
        "securityContext.runAsNonRoot: true on the pod or the container"
    ]


def test_container_overrides_pod_user(lisbon: Recording) -> None:
    pod(lisbon)["containers"][0]["securityContext"]["runAsUser"] = 0
    result = results_by_rule(lisbon, "lisbon-popup")["container-non-root"]
    assert result.messages == [
        f'Deployment "{DEPLOYMENT}": container "checkout" runs as user 0 (root); set runAsUser '
        "to a non-zero id"
    ]


def test_no_security_context_may_run_as_root(lisbon: Recording) -> None:
    del pod(lisbon)["securityContext"]
    result = results_by_rule(lisbon, "lisbon-popup")["container-non-root"]
    assert result.messages == [
        f'Deployment "{DEPLOYMENT}": container "checkout" may run as root: neither runAsNonRoot: '
        "true nor a non-zero runAsUser is set on the pod or the container; set runAsNonRoot: true"
    ]


def test_container_without_memory_limit(lisbon: Recording) -> None:
    del pod(lisbon)["containers"][0]["resources"]["limits"]["memory"]
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "container-resources"
    assert result.messages == [
        f'Deployment "{DEPLOYMENT}": container "checkout" sets no resources limits.memory; set '
        "requests and limits for cpu and memory (checkout.cpuRequest, cpuLimit, memoryRequest "
        "and memoryLimit in the stack file)"
    ]


def test_init_container_checked(lisbon: Recording) -> None:
    pod(lisbon)["initContainers"] = [{"name": "migrate", "image": "ghcr.io/sardinha/migrate"}]
    results = results_by_rule(lisbon, "lisbon-popup")
    assert results["container-resources"].messages == [
        f'Deployment "{DEPLOYMENT}": init container "migrate" sets no resources requests.cpu, '
        "requests.memory, limits.cpu, limits.memory; set requests and limits for cpu and "
        "memory (checkout.cpuRequest, cpuLimit, memoryRequest and memoryLimit in the stack file)"
    ]
    assert results["image-pinned"].messages == [
        f'Deployment "{DEPLOYMENT}": init container "migrate" image "ghcr.io/sardinha/migrate" '
        "has no tag or digest; pin it as ghcr.io/sardinha/migrate:1.4.2 or @sha256:<digest> "
        "(checkout.image in the stack file)"
    ]


def test_latest_image(lisbon: Recording) -> None:
    pod(lisbon)["containers"][0]["image"] = "ghcr.io/sardinha/checkout:latest"
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "image-pinned"
    assert result.messages == [
        f'Deployment "{DEPLOYMENT}": container "checkout" image '
        '"ghcr.io/sardinha/checkout:latest" uses the tag latest; pin a version tag or '
        "@sha256:<digest> (checkout.image in the stack file)"
    ]


@pytest.mark.parametrize(
    ("image", "passes"),
    [
        ("registry.example.com:5000/checkout", False),
        ("registry.example.com:5000/checkout:2.0", True),
        ("checkout:latest@sha256:" + "a" * 64, True),
    ],
)
def test_image_reference_forms(lisbon: Recording, image: str, passes: bool) -> None:
    pod(lisbon)["containers"][0]["image"] = image
    assert results_by_rule(lisbon, "lisbon-popup")["image-pinned"].passed is passes


# --- hpa-max-replicas -----------------------------------------------------------------------


def test_hpa_far_above_peak_is_advice(lisbon: Recording) -> None:
    # peakRps 120 at 50 requests/s per replica needs 3 replicas; 4 x 3 = 12 is the limit.
    named(lisbon, "lisbon-popup-27-checkout-hpa").inputs["spec"]["maxReplicas"] = 13
    results = results_by_rule(lisbon, "lisbon-popup")
    result = only_failure(results)
    assert result.rule == "hpa-max-replicas"
    assert result.verdict == "advice"
    assert result.messages == [
        'HorizontalPodAutoscaler "lisbon-popup-27-checkout-hpa": maxReplicas 13 is more than 4 '
        "times the 3 replicas that peakRps 120 needs at 50 requests/s per replica; lower "
        "checkout.maxReplicas, or set rpsPerReplica in the policy config to the load-tested rate"
    ]


def test_hpa_below_peak_is_advice(lisbon: Recording) -> None:
    # peakRps 120 at 50 requests/s per replica needs 3 replicas.
    named(lisbon, "lisbon-popup-27-checkout-hpa").inputs["spec"]["maxReplicas"] = 2
    result = only_failure(results_by_rule(lisbon, "lisbon-popup"))
    assert result.rule == "hpa-max-replicas"
    assert result.verdict == "advice"
    assert result.messages == [
        'HorizontalPodAutoscaler "lisbon-popup-27-checkout-hpa": maxReplicas 2 is below the 3 '
        "replicas that peakRps 120 needs at 50 requests/s per replica, so checkout cannot "
        "scale to the expected peak; raise checkout.maxReplicas, or set rpsPerReplica in the "
        "policy config to the load-tested rate"
    ]


# --- unknown values -------------------------------------------------------------------------


def test_unknown_policy_is_advisory(lisbon: Recording) -> None:
    named(lisbon, CHECKOUT_POLICY).inputs["policy"] = pulumi.output.Unknown()
    result = results_by_rule(lisbon, "lisbon-popup")["iam-least-privilege"]
    assert result.passed is False
    assert result.verdict == "unknown"
    assert result.enforcement == "advisory"
    assert result.declared_enforcement == "mandatory"
    assert result.messages == [
        f'RolePolicy "{CHECKOUT_POLICY}": cannot check until known: policy is computed during '
        "the update"
    ]


def test_known_violation_beside_unknown_stays_mandatory(lisbon: Recording) -> None:
    named(lisbon, CHECKOUT_POLICY).inputs["policy"] = UNKNOWN_STRING_VALUE
    finance = named(lisbon, "lisbon-popup-27-exports-finance-read")
    finance.inputs["policy"] = json.dumps(
        {"Statement": [{"Sid": "All", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    )
    result = results_by_rule(lisbon, "lisbon-popup")["iam-least-privilege"]
    assert result.verdict == "fail"
    assert result.enforcement == "mandatory"
    # The finance policy registers before the checkout policy.
    assert [finding.known for finding in result.findings] == [True, True, False]
    assert result.messages[2].startswith(f'RolePolicy "{CHECKOUT_POLICY}": cannot check until')


def test_unknown_window_waits(lisbon: Recording) -> None:
    from policies.rules import views_from_recording

    inputs, outputs = views_from_recording(lisbon)
    results = {
        r.rule: r for r in evaluate(inputs, outputs, EventSettings(event_id="lisbon-popup-27"))
    }
    tags = results["event-tags"]
    assert tags.verdict == "unknown"
    # Registration order varies between runs, so look the message up rather than index it.
    assert (
        'Queue "lisbon-popup-27-queues-dlq": cannot check until known: tag popstack:expires-at: '
        "the event window is unknown (set popstack:window in the stack file, or windowOpens and "
        "windowCloses in the policy config)"
    ) in tags.messages
    rotation = results["secret-rotation"]
    assert rotation.verdict == "unknown"
    # Three SecretRotations and the calendar's after-close rotation of inventory-api.
    assert len(rotation.messages) == 4
    assert results["hpa-max-replicas"].verdict == "unknown"


def test_to_plain_converts_unknowns_and_secrets() -> None:
    secret = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": "x"}
    plain = to_plain(
        {"a": [UNKNOWN_STRING_VALUE, pulumi.output.Unknown()], "s": secret, "n": [2.0, 2.5]}
    )
    assert plain == {"a": [UNKNOWN, UNKNOWN], "s": "x", "n": [2, 2.5]}
    # The engine sends every number as a double; whole ones become ints again.
    assert isinstance(plain["n"][0], int)
    view = ResourceView("t", "n", "u", {"a": {"b": UNKNOWN}})
    assert view.get("a", "b", "c") is UNKNOWN
    assert view.get("a", "missing") is None


# --- settings ------------------------------------------------------------------------------


def test_defaults_match_event_spec() -> None:
    assert Window.model_fields["pre_sync_hours"].default == DEFAULT_PRE_SYNC_HOURS
    assert EventSpec.model_fields["grace_hours"].default == DEFAULT_GRACE_HOURS


@pytest.mark.parametrize("stack", SAMPLES)
def test_stack_config_gives_spec_settings(stack: str) -> None:
    # The pack reads the stack config the engine passes in PULUMI_CONFIG; flat_config
    # renders a stack file the same way.
    parsed = stack_file(stack)
    config, _ = flat_config(parsed)
    assert settings_from_stack_config(config) == settings_from_spec(parsed.spec)


def test_stack_config_problems_are_listed() -> None:
    settings = settings_from_stack_config(
        {"popstack:window": '{"opens": "2027-03-26T10:00:00+00:00"}', "popstack:graceHours": "x"}
    )
    assert settings.opens is None
    assert settings.grace_hours == DEFAULT_GRACE_HOURS
    assert settings.problems == (
        "popstack:window has no closes",
        "popstack:graceHours is not an integer",
    )
    assert "popstack:window has no closes" in settings.missing_window()


def test_policy_config_overrides() -> None:
    base = settings_from_spec(stack_file("demo").spec)
    changed = with_policy_config(
        base,
        {"windowCloses": "2027-06-05T20:00:00+01:00", "graceHours": 2.0, "rpsPerReplica": 10.0},
    )
    assert changed.closes == datetime(2027, 6, 5, 19, 0, tzinfo=UTC)
    assert changed.grace_hours == 2
    assert isinstance(changed.grace_hours, int)
    assert changed.thresholds.rps_per_replica == 10
    assert changed.latest_expiry == datetime(2027, 6, 5, 21, 0, tzinfo=UTC)
    broken = with_policy_config(base, {"windowOpens": "2027-06-05T09:00:00"})
    assert broken.opens == base.opens
    assert broken.problems == (
        "policy config windowOpens is invalid: 2027-06-05T09:00:00 has no UTC offset; write it "
        "as 2027-06-05T09:00:00+00:00",
    )


# --- popstack plan ----------------------------------------------------------------------------


def invoke_plan(*args: str) -> Any:
    from popstack.cli import app

    # pulumi_aws 7 warns about its deprecated classes when a submodule is first imported,
    # which `filterwarnings = error` would turn into a failed run.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pulumi_aws\.")
        return CliRunner().invoke(app, ["plan", *args])


def test_plan_exits_3_on_mandatory_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    import popstack.plan

    real = popstack.plan.evaluate_recording

    def without_queue_tags(recording: Recording, spec: Any, **kwargs: Any) -> list[RuleResult]:
        changed = mutable(recording)
        named(changed, "lisbon-popup-27-queues-queue").inputs.pop("tags")
        return real(changed, spec, **kwargs)

    monkeypatch.setattr(popstack.plan, "evaluate_recording", without_queue_tags)
    path = str(STACKS_DIR / "Pulumi.lisbon-popup.yaml")
    result = invoke_plan(path, "--json")
    assert result.exit_code == 3
    policies = {entry["rule"]: entry for entry in json.loads(result.stdout)["policies"]}
    assert policies["event-tags"]["verdict"] == "fail"
    assert policies["event-tags"]["messages"] == [
        'Queue "lisbon-popup-27-queues-queue": has no tags; pass tags=context.tags '
        "(components.context.EventContext.tags)"
    ]
    table = invoke_plan(path)
    assert table.exit_code == 3
    assert "FAIL" in table.stdout


def test_plan_exits_0_for_sample() -> None:
    result = invoke_plan(str(STACKS_DIR / "Pulumi.flash-drop.yaml"), "--json")
    assert result.exit_code == 0
    policies = json.loads(result.stdout)["policies"]
    assert [entry["rule"] for entry in policies] == RULE_IDS
    assert {entry["verdict"] for entry in policies} == {"pass"}


def test_plan_table_keeps_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    import popstack.plan

    real = popstack.plan.evaluate_recording

    def with_bracket_tag(recording: Recording, spec: Any, **kwargs: Any) -> list[RuleResult]:
        changed = mutable(recording)
        named(changed, "lisbon-popup-27-queues-queue").inputs["tags"]["popstack:owner"] = "[red]x"
        return real(changed, spec, **kwargs)

    monkeypatch.setattr(popstack.plan, "evaluate_recording", with_bracket_tag)
    result = invoke_plan(str(STACKS_DIR / "Pulumi.lisbon-popup.yaml"))
    assert result.exit_code == 3
    # Rich would read an unescaped "[red]" as a style and drop it from the output.
    assert '"[red]x"' in result.stdout
