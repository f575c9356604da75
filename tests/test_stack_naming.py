"""Stack tests under Pulumi mocks: tags and physical names.

Every taggable AWS resource carries the event's tags. Every physical name stays
inside its service's rule (components.naming.RULES) and belongs to one event only.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pulumi_aws
import pytest

from components.naming import RULES, NameRule, kms_alias
from popstack.mockrun import RecordedResource
from popstack.plan import physical_name

STACKS = Path(__file__).resolve().parent.parent / "stacks"

# closes 2027-03-28T19:00+01:00 is 18:00Z, and the grace is 72 h.
LISBON_TAGS = {
    "popstack:event": "lisbon-popup-27",
    "popstack:owner": "retail-platform",
    "popstack:cost-centre": "CC-4410",
    "popstack:expires-at": "2027-03-31T18:00:00Z",
    "managed-by": "popstack",
}
# closes 2027-04-12T12:00-04:00 is 16:00Z, and the grace is 48 h.
FLASH_TAGS = {
    "popstack:event": "kicks-drop-0412",
    "popstack:owner": "drops-team",
    "popstack:cost-centre": "CC-9120",
    "popstack:expires-at": "2027-04-14T16:00:00Z",
    "managed-by": "popstack",
}

# CloudWatch Logs accepts log group names of up to 512 characters from this set.
# components.naming.RULES has no entry, because the name derives from the Lambda's.
LOG_GROUP_RULE = NameRule("CloudWatch log group", 512, re.compile(r"^[A-Za-z0-9_./#-]+$"))
# The Terraform AWS provider appends a 26-character unique suffix to a name prefix.
NAME_PREFIX_SUFFIX = "0" * 26

# The rule each named AWS resource type follows. Kubernetes objects follow "k8s".
AWS_NAME_RULES: dict[str, NameRule] = {
    "aws:sqs/queue:Queue": RULES["sqs"],
    "aws:dynamodb/table:Table": RULES["dynamodb"],
    "aws:s3/bucket:Bucket": RULES["s3"],
    "aws:elasticache/serverlessCache:ServerlessCache": RULES["elasticache"],
    "aws:elasticache/user:User": RULES["cacheuser"],
    "aws:elasticache/userGroup:UserGroup": RULES["cacheuser"],
    "aws:iam/role:Role": RULES["iam"],
    "aws:lambda/function:Function": RULES["lambda"],
    "aws:secretsmanager/secret:Secret": RULES["secretsmanager"],
    "aws:appconfig/application:Application": RULES["appconfig"],
    "aws:appconfig/environment:Environment": RULES["appconfig"],
    "aws:appconfig/configurationProfile:ConfigurationProfile": RULES["appconfig"],
    "aws:appconfig/deploymentStrategy:DeploymentStrategy": RULES["appconfig"],
    "aws:sns/topic:Topic": RULES["sns"],
    "aws:cloudwatch/dashboard:Dashboard": RULES["cloudwatch"],
    "aws:cloudwatch/metricAlarm:MetricAlarm": RULES["alarm"],
    "aws:xray/samplingRule:SamplingRule": RULES["xray"],
    "aws:scheduler/scheduleGroup:ScheduleGroup": RULES["scheduler"],
    "aws:scheduler/schedule:Schedule": RULES["scheduler"],
    "aws:ec2/securityGroup:SecurityGroup": RULES["ec2sg"],
    "aws:cloudwatch/logGroup:LogGroup": LOG_GROUP_RULE,
    # The rule covers the part after "alias/".
    "aws:kms/alias:Alias": RULES["kms"],
}
KMS_ALIAS = "aws:kms/alias:Alias"
# AppConfig environment and profile names are unique only within their application.
APPCONFIG_CHILDREN = (
    "aws:appconfig/environment:Environment",
    "aws:appconfig/configurationProfile:ConfigurationProfile",
)
NAME_INPUTS = ("name", "namePrefix", "ruleName", "dashboardName", "userId", "userGroupId")


def has_tags_input(type_token: str) -> bool:
    """Return whether the pulumi_aws resource type takes a `tags` input."""
    _, module_path, class_name = type_token.split(":")
    module_name = module_path.split("/")[0]
    module = getattr(pulumi_aws, "lambda_" if module_name == "lambda" else module_name)
    arguments = getattr(module, f"{class_name}Args")
    return "tags" in inspect.signature(arguments.__init__).parameters


def is_kubernetes_object(resource: RecordedResource) -> bool:
    return resource.type.startswith("kubernetes:")


def named(recording: Any) -> list[RecordedResource]:
    """Return every resource that has a physical name of its own."""
    return [r for r in recording.resources if r.type in AWS_NAME_RULES or is_kubernetes_object(r)]


def scoped_name(recording: Any, resource: RecordedResource) -> str:
    """Return the name as unique as its service requires: namespaced or per application."""
    if is_kubernetes_object(resource):
        metadata = resource.inputs["metadata"]
        return f"{metadata.get('namespace', '')}/{metadata['name']}"
    if resource.type in APPCONFIG_CHILDREN:
        owners = [
            r
            for r in recording.of_type("aws:appconfig/application:Application")
            if r.id == resource.inputs["applicationId"]
        ]
        assert len(owners) == 1, resource.urn
        return f"{owners[0].inputs['name']}/{resource.inputs['name']}"
    return physical_name(resource)


def name_keys(recording: Any) -> set[tuple[str, str]]:
    return {(r.type, scoped_name(recording, r)) for r in named(recording)}


# --- tags ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "tags"), [("lisbon-popup", LISBON_TAGS), ("flash-drop", FLASH_TAGS)]
)
def test_taggable_resources_carry_event_tags(recorded: Any, stack: str, tags: dict) -> None:
    recording = recorded(stack)
    aws_resources = [r for r in recording.resources if r.type.startswith("aws:")]
    taggable = [r for r in aws_resources if has_tags_input(r.type)]

    # The check must separate the two kinds: a CloudWatch dashboard takes no tags.
    assert len(taggable) > 30
    assert any(r.type == "aws:cloudwatch/dashboard:Dashboard" for r in aws_resources)
    assert not has_tags_input("aws:cloudwatch/dashboard:Dashboard")
    for resource in taggable:
        actual = resource.inputs.get("tags")
        assert actual is not None, f"{resource.urn} has no tags"
        assert {key: actual.get(key) for key in tags} == tags, resource.urn


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_kubernetes_objects_labelled_with_event(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    event_id = recording.outputs["eventId"]
    objects = [r for r in recording.resources if is_kubernetes_object(r)]

    assert len(objects) >= 7
    for resource in objects:
        labels = resource.inputs["metadata"]["labels"]
        assert labels["popstack.io/event"] == event_id, resource.urn
        assert labels["app.kubernetes.io/managed-by"] == "popstack", resource.urn


# --- physical names -----------------------------------------------------------------


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop", "demo"])
def test_every_name_has_rule(recorded: Any, stack: str) -> None:
    # A new named resource type must be added to AWS_NAME_RULES, or its limit goes unchecked.
    for resource in recorded(stack).resources:
        if any(key in resource.inputs for key in NAME_INPUTS) and not is_kubernetes_object(
            resource
        ):
            assert resource.type in AWS_NAME_RULES, f"{resource.urn} has a name but no rule"


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop", "demo"])
def test_names_within_service_limits(recorded: Any, stack: str) -> None:
    resources = named(recorded(stack))

    assert len(resources) > 20
    for resource in resources:
        if resource.type == "kubernetes:batch/v1:CronJob":
            rule, name = RULES["cronjob"], resource.inputs["metadata"]["name"]
        elif is_kubernetes_object(resource):
            rule, name = RULES["k8s"], resource.inputs["metadata"]["name"]
        elif resource.type == KMS_ALIAS:
            alias = physical_name(resource)
            assert alias.startswith("alias/ps-"), f"{resource.urn}: alias {alias!r}"
            rule, name = RULES["kms"], alias.removeprefix("alias/")
        else:
            rule, name = AWS_NAME_RULES[resource.type], physical_name(resource)
        if "namePrefix" in resource.inputs:
            name = resource.inputs["namePrefix"] + NAME_PREFIX_SUFFIX
        assert name, f"{resource.urn} has no physical name"
        assert len(name) <= rule.max_length, (
            f"{resource.urn}: {rule.service} name {name!r} is {len(name)} characters, "
            f"over {rule.max_length}"
        )
        assert rule.pattern.match(name), f"{resource.urn}: {rule.service} name {name!r}"


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop", "demo"])
def test_names_unique_within_stack(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    seen: dict[tuple[str, str], str] = {}

    for resource in named(recording):
        key = (resource.type, scoped_name(recording, resource))
        assert key not in seen, f"{resource.urn} and {seen[key]} share the name {key[1]!r}"
        seen[key] = resource.urn


def test_sample_events_share_no_name(recorded: Any) -> None:
    lisbon = name_keys(recorded("lisbon-popup"))
    flash = name_keys(recorded("flash-drop"))

    assert len(lisbon) > 40
    assert len(flash) > 30
    assert lisbon & flash == set()


@pytest.fixture(scope="module")
def same_event_twice(recorded: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """Record lisbon-popup twice, changing only the event id to one that extends the other."""
    text = (STACKS / "Pulumi.lisbon-popup.yaml").read_text(encoding="utf-8")
    directory = tmp_path_factory.mktemp("ids")
    recordings = []
    for event_id in ("spring", "spring-orders"):
        path = directory / f"Pulumi.{event_id}.yaml"
        path.write_text(
            text.replace("popstack:id: lisbon-popup-27", f"popstack:id: {event_id}"),
            encoding="utf-8",
        )
        recordings.append(recorded(path))
    return recordings[0], recordings[1]


def test_events_differing_in_id_share_no_name(same_event_twice: tuple[Any, Any]) -> None:
    first, second = same_event_twice
    first_names, second_names = name_keys(first), name_keys(second)

    assert first.outputs["eventId"] == "spring"
    assert second.outputs["eventId"] == "spring-orders"
    assert len(first_names) == len(second_names) > 40
    assert first_names & second_names == set()


def test_kms_alias_name_and_limit() -> None:
    # KMS takes alias names of up to 256 characters, "alias/" included.
    assert kms_alias("lisbon-popup-27", "alerts") == "alias/ps-lisbon-popup-27-alerts"
    assert len(kms_alias("e", "a" * 245)) == 256
    with pytest.raises(ValueError, match="KMS alias name 'ps-e-a+' is 251 characters"):
        kms_alias("e", "a" * 246)
