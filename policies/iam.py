"""Least privilege for every IAM policy document the stack writes.

An Allow statement may not grant `*` or `service:*` actions, nor use NotAction, which
allows everything it does not list. It may not pair an action of a data service with
the `*` resource (or with NotResource). Services without resource-level permissions,
such as `xray:PutTraceSegments` and `cloudwatch:PutMetricData`, may keep `*` resources.
In a KMS key policy the `*` resource is the key that the policy belongs to, so it is
allowed there.
"""

from __future__ import annotations

from typing import Any

from policies.settings import EventSettings
from policies.view import UNKNOWN, Finding, ResourceView, cannot_check, parse_json, violation

# Services whose data a `*` resource would open to the whole account.
DATA_SERVICES = frozenset(
    {"dynamodb", "sqs", "s3", "secretsmanager", "elasticache", "kms", "appconfig"}
)

# Properties that hold a policy document, by resource type: identity policies, trust
# policies and resource policies alike. Role inline policies are read separately.
POLICY_PROPERTIES: dict[str, tuple[str, ...]] = {
    "aws:iam/rolePolicy:RolePolicy": ("policy",),
    "aws:iam/policy:Policy": ("policy",),
    "aws:iam/userPolicy:UserPolicy": ("policy",),
    "aws:iam/groupPolicy:GroupPolicy": ("policy",),
    "aws:iam/role:Role": ("assumeRolePolicy",),
    "aws:s3/bucketPolicy:BucketPolicy": ("policy",),
    "aws:s3/bucket:Bucket": ("policy",),
    "aws:s3/bucketV2:BucketV2": ("policy",),
    "aws:sqs/queuePolicy:QueuePolicy": ("policy",),
    "aws:sqs/queue:Queue": ("policy",),
    "aws:sns/topicPolicy:TopicPolicy": ("policy",),
    "aws:sns/topic:Topic": ("policy",),
    "aws:secretsmanager/secretPolicy:SecretPolicy": ("policy",),
    "aws:secretsmanager/secret:Secret": ("policy",),
    "aws:kms/key:Key": ("policy",),
    "aws:kms/keyPolicy:KeyPolicy": ("policy",),
}
# Resource types whose policy is a KMS key policy.
KEY_POLICY_TYPES = frozenset({"aws:kms/key:Key", "aws:kms/keyPolicy:KeyPolicy"})


def check_least_privilege(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check every policy document of one resource."""
    documents: list[tuple[str, Any]] = [
        (prop, view.get(prop)) for prop in POLICY_PROPERTIES.get(view.type, ())
    ]
    if view.type == "aws:iam/role:Role":
        inline = view.get("inlinePolicies")
        if inline is UNKNOWN:
            return [cannot_check(view, "inlinePolicies are computed during the update")]
        for index, entry in enumerate(inline if isinstance(inline, list) else []):
            label = entry.get("name") if isinstance(entry, dict) else None
            documents.append(
                (f"inline policy {label or index}", view.get("inlinePolicies", index, "policy"))
            )

    findings: list[Finding] = []
    for location, value in documents:
        if value is None:
            continue
        if value is UNKNOWN:
            findings.append(cannot_check(view, f"{location} is computed during the update"))
            continue
        try:
            document = parse_json(value)
        except ValueError as error:
            findings.append(violation(view, f"{location} is not a policy document: {error}"))
            continue
        findings.extend(_document_findings(view, location, document))
    return findings


def _document_findings(view: ResourceView, location: str, document: Any) -> list[Finding]:
    statements = document.get("Statement") if isinstance(document, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return [violation(view, f"{location} has no Statement list; write a policy document")]
    findings: list[Finding] = []
    for index, statement in enumerate(statements, 1):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        name = f"{location} statement {statement.get('Sid') or index}"
        findings.extend(_statement_findings(view, name, statement))
    return findings


def _statement_findings(view: ResourceView, name: str, statement: dict) -> list[Finding]:
    findings: list[Finding] = []
    if "NotAction" in statement:
        findings.append(
            violation(
                view,
                f"{name} allows NotAction, which grants every action it does not list; "
                "list the allowed actions under Action instead",
            )
        )
    actions = _as_list(statement.get("Action"))
    resources = _as_list(statement.get("Resource"))
    if actions is UNKNOWN or resources is UNKNOWN:
        return findings + [cannot_check(view, f"{name} has computed actions or resources")]

    for action in actions:
        if not isinstance(action, str):
            findings.append(cannot_check(view, f"{name} has a computed action"))
        elif _is_wildcard_action(action):
            findings.append(
                violation(
                    view,
                    f'{name} allows action "{action}"; list only the actions it needs',
                )
            )

    in_key_policy = view.type in KEY_POLICY_TYPES
    open_resources = ("*" in resources and not in_key_policy) or "NotResource" in statement
    if open_resources:
        data_actions = sorted(
            action
            for action in actions
            if isinstance(action, str) and _service(action) in DATA_SERVICES
        )
        if data_actions:
            findings.append(
                violation(
                    view,
                    f"{name} allows {', '.join(data_actions)} on every resource; "
                    "name the ARNs of the tables, queues, buckets or secrets under Resource",
                )
            )
    return findings


def _as_list(value: Any) -> Any:
    if value is UNKNOWN:
        return UNKNOWN
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _service(action: str) -> str:
    return action.split(":", 1)[0].lower() if ":" in action else action.lower()


def _is_wildcard_action(action: str) -> bool:
    """Return whether the action is `*` or grants every action of one service."""
    return action.strip() == "*" or action.split(":", 1)[-1].strip() == "*"
