"""The event tags every taggable AWS resource carries, and which AWS types take tags."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from policies.settings import EventSettings
from policies.view import UNKNOWN, Finding, ResourceView, cannot_check, violation

# AWS types with a `tags` input in pulumi-aws 7, and types without one. A test
# checks both lists against the installed pulumi-aws. A type in neither list is
# checked when it carries tags and reported as unclassified when it does not.
TAGGABLE_AWS_TYPES = frozenset(
    {
        "aws:appconfig/application:Application",
        "aws:appconfig/configurationProfile:ConfigurationProfile",
        "aws:appconfig/deployment:Deployment",
        "aws:appconfig/deploymentStrategy:DeploymentStrategy",
        "aws:appconfig/environment:Environment",
        "aws:cloudwatch/logGroup:LogGroup",
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        "aws:dynamodb/table:Table",
        "aws:ec2/securityGroup:SecurityGroup",
        "aws:elasticache/cluster:Cluster",
        "aws:elasticache/replicationGroup:ReplicationGroup",
        "aws:elasticache/serverlessCache:ServerlessCache",
        "aws:elasticache/user:User",
        "aws:elasticache/userGroup:UserGroup",
        "aws:iam/policy:Policy",
        "aws:iam/role:Role",
        "aws:iam/user:User",
        "aws:kms/key:Key",
        "aws:lambda/function:Function",
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketV2:BucketV2",
        "aws:scheduler/scheduleGroup:ScheduleGroup",
        "aws:secretsmanager/secret:Secret",
        "aws:sns/topic:Topic",
        "aws:sqs/queue:Queue",
        "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        "aws:xray/samplingRule:SamplingRule",
    }
)
UNTAGGABLE_AWS_TYPES = frozenset(
    {
        "aws:appconfig/hostedConfigurationVersion:HostedConfigurationVersion",
        "aws:cloudwatch/dashboard:Dashboard",
        "aws:iam/policyAttachment:PolicyAttachment",
        "aws:iam/rolePolicy:RolePolicy",
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "aws:kms/alias:Alias",
        "aws:kms/keyPolicy:KeyPolicy",
        "aws:lambda/permission:Permission",
        "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration",
        "aws:s3/bucketObjectLockConfigurationV2:BucketObjectLockConfigurationV2",
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
        "aws:s3/bucketVersioning:BucketVersioning",
        "aws:s3/bucketVersioningV2:BucketVersioningV2",
        "aws:scheduler/schedule:Schedule",
        "aws:secretsmanager/secretRotation:SecretRotation",
        "aws:secretsmanager/secretVersion:SecretVersion",
        "aws:sns/topicPolicy:TopicPolicy",
        "aws:sns/topicSubscription:TopicSubscription",
        "aws:sqs/queuePolicy:QueuePolicy",
        "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy",
        "aws:sqs/redrivePolicy:RedrivePolicy",
    }
)

EVENT_TAG = "popstack:event"
OWNER_TAG = "popstack:owner"
COST_CENTRE_TAG = "popstack:cost-centre"
EXPIRES_TAG = "popstack:expires-at"
TAG_FIX = "pass tags=context.tags (components.context.EventContext.tags)"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_event_tags(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check that a taggable AWS resource carries the event tags and a bounded expiry."""
    if not view.type.startswith("aws:"):
        return []
    tags = view.get("tags")
    if view.type not in TAGGABLE_AWS_TYPES and tags is None:
        if view.type in UNTAGGABLE_AWS_TYPES:
            return []
        return [
            cannot_check(
                view,
                f"whether {view.type} takes tags is not recorded; add it to TAGGABLE_AWS_TYPES "
                "or UNTAGGABLE_AWS_TYPES in policies/tagging.py",
            )
        ]
    if tags is UNKNOWN:
        return [cannot_check(view, "tags are computed during the update")]
    if not isinstance(tags, dict) or not tags:
        return [violation(view, f"has no tags; {TAG_FIX}")]

    findings: list[Finding] = []
    event_values = {
        EVENT_TAG: settings.event_id,
        OWNER_TAG: settings.owner,
        COST_CENTRE_TAG: settings.cost_centre,
    }
    for key, event_value in event_values.items():
        value = tags.get(key)
        if value is UNKNOWN:
            findings.append(cannot_check(view, f"tag {key} is computed during the update"))
        elif not value:
            findings.append(violation(view, f"tag {key} is missing; {TAG_FIX}"))
        elif event_value is not None and value != event_value:
            problem = f'tag {key} is "{value}" but the event has "{event_value}"; {TAG_FIX}'
            findings.append(violation(view, problem))
    findings.extend(_expiry_findings(view, tags.get(EXPIRES_TAG), settings))
    return findings


def _expiry_findings(view: ResourceView, value: Any, settings: EventSettings) -> list[Finding]:
    if value is UNKNOWN:
        return [cannot_check(view, f"tag {EXPIRES_TAG} is computed during the update")]
    if not value:
        return [violation(view, f"tag {EXPIRES_TAG} is missing; {TAG_FIX}")]
    try:
        expires = datetime.fromisoformat(str(value))
        if expires.tzinfo is None:
            raise ValueError("no UTC offset")
    except ValueError:
        return [
            violation(
                view, f'tag {EXPIRES_TAG} "{value}" is not a UTC time such as 2027-03-31T18:00:00Z'
            )
        ]
    latest = settings.latest_expiry
    if latest is None or settings.closes is None:
        return [cannot_check(view, f"tag {EXPIRES_TAG}: {settings.missing_window()}")]
    if expires > latest:
        return [
            violation(
                view,
                f"tag {EXPIRES_TAG} {_utc(expires)} is after the window close plus "
                f"{settings.grace_hours} h of grace ({_utc(latest)}); set it to {_utc(latest)}",
            )
        ]
    if expires < settings.closes:
        return [
            violation(
                view,
                f"tag {EXPIRES_TAG} {_utc(expires)} is before the window closes "
                f"({_utc(settings.closes)}); set it to {_utc(latest)}",
            )
        ]
    return []
