"""The per-event context every part of the stack is built from: spec, names, tags, account."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi

from components import naming
from components.spec import EventSpec


@dataclass(frozen=True)
class EventContext:
    """The event spec plus the account, region and partition the stack deploys into."""

    spec: EventSpec
    account_id: str
    region: str
    partition: str = "aws"
    # Set once teardown has verified the export; stateful resources stay protected until then.
    export_verified: bool = False

    @property
    def event_id(self) -> str:
        return self.spec.id

    @property
    def tags(self) -> dict[str, str]:
        return naming.event_tags(
            self.spec.id,
            self.spec.owner,
            self.spec.cost_centre,
            self.spec.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    def name(self, rule: str, suffix: str = "") -> str:
        return naming.physical_name(self.spec.id, rule, suffix)

    def arn(self, service: str, resource: str, region: bool = True, account: bool = True) -> str:
        """Build an ARN in this stack's partition, region and account."""
        return ":".join(
            [
                "arn",
                self.partition,
                service,
                self.region if region else "",
                self.account_id if account else "",
                resource,
            ]
        )

    def stateful(self, parent: pulumi.Resource) -> pulumi.ResourceOptions:
        """Options for resources that hold event data: protected until the export is verified."""
        return pulumi.ResourceOptions(parent=parent, protect=not self.export_verified)


def policy_document(*statements: dict[str, Any]) -> str:
    """Render an IAM policy document with a stable key order."""
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, sort_keys=True)


def allow(actions: list[str], resources: list[str], sid: str, **extra: Any) -> dict[str, Any]:
    """Build one Allow statement; raise ValueError on a wildcard action."""
    wildcards = [action for action in actions if "*" in action]
    if wildcards:
        raise ValueError(f"statement {sid} allows wildcard actions {wildcards}; list each action")
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(actions),
        "Resource": sorted(resources),
    }
    statement.update(extra)
    return statement
