"""Physical names and tags for every resource of an event stack.

Each name is derived from the event id, so two events never share a physical
name, and each stays inside its service's length and character rules. The
limits below are the documented AWS and Kubernetes limits for each name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "ps"


@dataclass(frozen=True)
class NameRule:
    """Length and character rule for one kind of physical name."""

    service: str
    max_length: int
    pattern: re.Pattern[str]


_LOWER_DNS = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_AWS_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

RULES: dict[str, NameRule] = {
    "sqs": NameRule("SQS queue", 80, re.compile(r"^[A-Za-z0-9_-]+(\.fifo)?$")),
    "dynamodb": NameRule("DynamoDB table", 255, _AWS_NAME),
    "s3": NameRule("S3 bucket", 63, _LOWER_DNS),
    "elasticache": NameRule("ElastiCache serverless cache", 40, _LOWER_DNS),
    "iam": NameRule("IAM role", 64, re.compile(r"^[A-Za-z0-9+=,.@_-]+$")),
    "lambda": NameRule("Lambda function", 64, re.compile(r"^[A-Za-z0-9_-]+$")),
    "secretsmanager": NameRule("Secrets Manager secret", 512, re.compile(r"^[A-Za-z0-9/_+=.@-]+$")),
    "appconfig": NameRule("AppConfig name", 64, _AWS_NAME),
    "sns": NameRule("SNS topic", 256, re.compile(r"^[A-Za-z0-9_-]+$")),
    "cloudwatch": NameRule("CloudWatch dashboard", 255, re.compile(r"^[A-Za-z0-9_-]+$")),
    "alarm": NameRule("CloudWatch alarm", 255, _AWS_NAME),
    "xray": NameRule("X-Ray sampling rule", 32, re.compile(r"^[A-Za-z0-9_-]+$")),
    "scheduler": NameRule("EventBridge Scheduler schedule or group", 64, _AWS_NAME),
    "ec2sg": NameRule("EC2 security group", 255, _AWS_NAME),
    "k8s": NameRule("Kubernetes object", 63, _LOWER_DNS),
    # The CronJob controller appends an 11-character suffix to name each Job, so the
    # API server rejects CronJob names over 52 characters.
    "cronjob": NameRule("Kubernetes CronJob", 52, _LOWER_DNS),
    "cacheuser": NameRule("ElastiCache user or user group id", 40, _LOWER_DNS),
    # KMS accepts alias names of up to 256 characters including the "alias/" prefix,
    # which this rule leaves out (kms_alias adds it).
    "kms": NameRule("KMS alias", 256 - len("alias/"), re.compile(r"^[A-Za-z0-9/_-]+$")),
}

# The maximum secret name length the spec accepts; rotation Lambdas and roles carry the name.
MAX_SECRET_NAME = 20
_MAX_LENGTH_SECRET = "s" * MAX_SECRET_NAME

# Every suffix the components use, by rule. The spec checks an event id against
# these, so an id whose longest derived name breaks a limit fails before registration.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "sqs": ("orders-dlq.fifo", "orders.fifo"),
    "dynamodb": ("orders",),
    "s3": ("receipts", "exports"),
    "elasticache": ("cache",),
    "iam": (
        "checkout-role",
        "finance-reader",
        f"rot-{_MAX_LENGTH_SECRET}",
        "calendar",
        "calendar-scheduler",
    ),
    "lambda": (f"rot-{_MAX_LENGTH_SECRET}", "calendar"),
    "secretsmanager": (f"{_MAX_LENGTH_SECRET}-",),
    "appconfig": ("flags", "all-at-once"),
    "sns": ("alerts",),
    "cloudwatch": ("board",),
    "alarm": (
        "dead-letters",
        "queue-age",
        "cache-throttling",
        "checkout-errors",
        "calendar-errors",
    ),
    "xray": ("",),
    "scheduler": (
        "",
        "doors-open",
        "doors-close",
        f"rotate-{_MAX_LENGTH_SECRET}",
        "teardown-24h",
        "teardown-2h",
        "teardown-due",
    ),
    "ec2sg": ("checkout", "cache"),
    "k8s": ("checkout", "board"),
    "cronjob": ("pre-sync",),
    "cacheuser": ("checkout", "users"),
    "kms": ("alerts",),
}


def physical_name(event_id: str, rule: str, suffix: str = "") -> str:
    """Build the physical name of one resource, checked against its rule.

    Raises ValueError when the name breaks the service's length or
    character rule. The event spec checks ids against SUFFIXES up front, so
    this fires only for a suffix missing there.
    """
    name = f"{PREFIX}-{event_id}" + (f"-{suffix}" if suffix else "")
    if suffix.endswith(".fifo") and not name.endswith(".fifo"):
        name += ".fifo"
    check = RULES[rule]
    if len(name) > check.max_length:
        raise ValueError(
            f"{check.service} name {name!r} is {len(name)} characters; "
            f"the limit is {check.max_length}"
        )
    if not check.pattern.match(name):
        raise ValueError(f"{check.service} name {name!r} has characters the service rejects")
    return name


def kms_alias(event_id: str, suffix: str) -> str:
    """Build the name of one KMS alias, `alias/` followed by the checked physical name."""
    return "alias/" + physical_name(event_id, "kms", suffix)


def longest_name_problem(event_id: str) -> str | None:
    """Return a description of the first derived name that breaks its limit, or None."""
    for rule, suffixes in SUFFIXES.items():
        for suffix in suffixes:
            try:
                physical_name(event_id, rule, suffix)
            except ValueError as error:
                return str(error)
    return None


def max_event_id_length() -> int:
    """Return the longest event id for which every derived name fits its limit."""
    overhead = {
        rule: max(len(PREFIX) + 1 + (len(s) + 1 if s else 0) for s in suffixes)
        for rule, suffixes in SUFFIXES.items()
    }
    return min(RULES[rule].max_length - extra for rule, extra in overhead.items())


def event_tags(event_id: str, owner: str, cost_centre: str, expires_at: str) -> dict[str, str]:
    """Return the tags every taggable resource of the event carries."""
    return {
        "popstack:event": event_id,
        "popstack:owner": owner,
        "popstack:cost-centre": cost_centre,
        "popstack:expires-at": expires_at,
        "managed-by": "popstack",
    }


def k8s_labels(event_id: str, component: str) -> dict[str, str]:
    """Return the Kubernetes labels for one component of the event."""
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": event_id,
        "app.kubernetes.io/managed-by": "popstack",
        "popstack.io/event": event_id,
    }
