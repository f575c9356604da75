"""The popstack policy rules, and their evaluation over a recorded or previewed stack.

Each `Rule` has an id, a one-line description, an enforcement level and one check:
a resource check reads one resource's inputs at a time (a CrossGuard
ResourceValidationPolicy), and a stack check reads every resource's outputs at once (a
StackValidationPolicy). `evaluate_recording` runs all of them over a mock run for
`popstack plan`, and `policies/__main__.py` serves the same rules to the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from policies.data_stores import check_cache_tls, check_cache_usage_limits, check_table_recovery
from policies.iam import check_least_privilege
from policies.kubernetes import (
    check_autoscaler_headroom,
    check_container_resources,
    check_disruption_budgets,
    check_event_label,
    check_image_pinned,
    check_non_root,
)
from policies.queues import check_dead_letter_queues
from policies.rotation import check_secret_rotation
from policies.scheduling import check_cronjob_time_zone, check_exact_schedules
from policies.settings import EventSettings, settings_from_spec
from policies.storage import check_export_location, check_private_encrypted
from policies.tagging import check_event_tags
from policies.view import Finding, ResourceView, to_plain

MANDATORY = "mandatory"
ADVISORY = "advisory"

ResourceCheck = Callable[[ResourceView, EventSettings], list[Finding]]
StackCheck = Callable[[list[ResourceView], EventSettings], list[Finding]]


@dataclass(frozen=True)
class Rule:
    """One policy: an id, what it requires, how strictly, and the check that enforces it.

    Exactly one of `check_resource` and `check_stack` is set. `config` lists the
    policy config properties the rule reads (see policies.settings).
    """

    id: str
    description: str
    enforcement: str
    check_resource: ResourceCheck | None = None
    check_stack: StackCheck | None = None
    config: tuple[str, ...] = ()

    def findings(
        self,
        resource_views: Iterable[ResourceView],
        stack_views: list[ResourceView],
        settings: EventSettings,
    ) -> list[Finding]:
        """Run the check: a resource check over each input view, a stack check over all outputs."""
        if self.check_resource is not None:
            found: list[Finding] = []
            for view in resource_views:
                found.extend(self.check_resource(view, settings))
            return found
        assert self.check_stack is not None, f"rule {self.id} has no check"
        return self.check_stack(stack_views, settings)


WINDOW_CONFIG = ("eventId", "windowOpens", "windowCloses", "preSyncHours", "graceHours")

RULES: tuple[Rule, ...] = (
    Rule(
        "event-tags",
        "Every taggable AWS resource carries the event tags and an expiry no later than "
        "window close plus grace.",
        MANDATORY,
        check_resource=check_event_tags,
        config=WINDOW_CONFIG,
    ),
    Rule(
        "kubernetes-event-label",
        "Every Kubernetes object carries the popstack.io/event label of the event.",
        MANDATORY,
        check_resource=check_event_label,
        config=("eventId",),
    ),
    Rule(
        "sqs-dead-letter-queue",
        "Every SQS queue that is no dead-letter queue redrives to a dead-letter queue of "
        "its own type.",
        MANDATORY,
        check_stack=check_dead_letter_queues,
    ),
    Rule(
        "s3-private-encrypted",
        "Every S3 bucket blocks all public access and encrypts objects by default.",
        MANDATORY,
        check_stack=check_private_encrypted,
    ),
    Rule(
        "s3-export-retention",
        "The export location (a bucket with object lock) is versioned and has a default retention.",
        MANDATORY,
        check_stack=check_export_location,
    ),
    Rule(
        "secret-rotation",
        "Every Secrets Manager secret rotates every 1 to 1000 days, and neither its rotation "
        "schedule nor a Scheduler schedule calling RotateSecret runs inside the event's "
        "freeze (pre-sync start to close, UTC).",
        MANDATORY,
        check_stack=check_secret_rotation,
        config=WINDOW_CONFIG,
    ),
    Rule(
        "scheduler-exact-time",
        "Every EventBridge Scheduler schedule has no flexible time window, and a one-time "
        "schedule is in UTC and kept after it fires.",
        MANDATORY,
        check_resource=check_exact_schedules,
    ),
    Rule(
        "cronjob-time-zone",
        "Every CronJob names the time zone its schedule is read in.",
        MANDATORY,
        check_resource=check_cronjob_time_zone,
    ),
    Rule(
        "iam-least-privilege",
        "No IAM Allow statement grants * or service:* actions, or * resources for data services.",
        MANDATORY,
        check_resource=check_least_privilege,
    ),
    Rule(
        "dynamodb-recovery",
        "Every DynamoDB table has point-in-time recovery and deletion protection.",
        MANDATORY,
        check_resource=check_table_recovery,
    ),
    Rule(
        "cache-tls",
        "Every ElastiCache cache accepts TLS connections only.",
        MANDATORY,
        check_resource=check_cache_tls,
    ),
    Rule(
        "pdb-allows-eviction",
        "Every PodDisruptionBudget lets at least one pod be evicted.",
        MANDATORY,
        check_stack=check_disruption_budgets,
    ),
    Rule(
        "container-resources",
        "Every container sets cpu and memory requests and limits.",
        MANDATORY,
        check_resource=check_container_resources,
    ),
    Rule(
        "container-non-root",
        "No container runs as root.",
        MANDATORY,
        check_resource=check_non_root,
    ),
    Rule(
        "image-pinned",
        "Every container image is pinned to a version tag other than latest, or a digest.",
        MANDATORY,
        check_resource=check_image_pinned,
    ),
    Rule(
        "cache-usage-limits",
        "Serverless caches cap ECPU per second and data storage below the cost thresholds.",
        ADVISORY,
        check_resource=check_cache_usage_limits,
        config=("maxEcpuPerSecond", "maxDataStorageGb"),
    ),
    Rule(
        "hpa-max-replicas",
        "An HPA's maxReplicas covers the replicas peakRps needs, within a multiple of them.",
        ADVISORY,
        check_resource=check_autoscaler_headroom,
        config=("peakRps", "rpsPerReplica", "maxReplicaHeadroom"),
    ),
)


@dataclass(frozen=True)
class RuleResult:
    """The verdict of one rule over one stack, with every finding.

    `enforcement` is the rule's level, except that a rule whose only findings wait
    for unknown values reports "advisory", so `Plan.mandatory_failures` skips it.
    """

    rule: str
    description: str
    declared_enforcement: str
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return not self.findings

    @property
    def unknown_only(self) -> bool:
        return bool(self.findings) and not any(finding.known for finding in self.findings)

    @property
    def enforcement(self) -> str:
        return ADVISORY if self.unknown_only else self.declared_enforcement

    @property
    def messages(self) -> list[str]:
        return [finding.message for finding in self.findings]

    @property
    def verdict(self) -> str:
        """Return pass, fail (a mandatory violation), advice, or unknown (only unknown inputs)."""
        if self.passed:
            return "pass"
        if self.unknown_only:
            return "unknown"
        return "fail" if self.enforcement == MANDATORY else "advice"

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "description": self.description,
            "enforcement": self.enforcement,
            "declaredEnforcement": self.declared_enforcement,
            "passed": self.passed,
            "verdict": self.verdict,
            "messages": self.messages,
            "findings": [
                {"urn": finding.urn, "message": finding.message, "known": finding.known}
                for finding in self.findings
            ],
        }


def evaluate(
    resource_views: list[ResourceView],
    stack_views: list[ResourceView],
    settings: EventSettings,
    rules: Iterable[Rule] = RULES,
) -> list[RuleResult]:
    """Run each rule and return one result per rule, in the order of `rules`."""
    return [
        RuleResult(
            rule.id,
            rule.description,
            rule.enforcement,
            tuple(rule.findings(resource_views, stack_views, settings)),
        )
        for rule in rules
    ]


# Outputs that stack rules match references against: a redrive policy names a queue
# by ARN, a RedrivePolicy by URL, a SecretRotation its secret by ARN (the id).
JOIN_OUTPUTS = ("arn", "url", "id")


def views_from_recording(recording: Any) -> tuple[list[ResourceView], list[ResourceView]]:
    """Build the input views and output views of a `popstack.mockrun.Recording`.

    Only custom resources are kept, as the engine analyzes those. An output view is
    the inputs plus the outputs that rules join resources on (JOIN_OUTPUTS), so that
    a test that changes `inputs` changes what both kinds of rule see.
    """
    resource_views: list[ResourceView] = []
    stack_views: list[ResourceView] = []
    for resource in recording.resources:
        if not resource.custom:
            continue
        inputs = to_plain(resource.inputs)
        state = to_plain(resource.state)
        outputs = {key: state[key] for key in JOIN_OUTPUTS if key in state}
        if resource.id:
            outputs.setdefault("id", resource.id)
        common = {
            "type": resource.type,
            "name": resource.name,
            "urn": resource.urn,
            "dependencies": tuple(resource.dependencies),
        }
        resource_views.append(ResourceView(props=inputs, **common))
        stack_views.append(ResourceView(props={**outputs, **inputs}, **common))
    return resource_views, stack_views


def evaluate_recording(
    recording: Any, spec: Any, export_verified: bool = False
) -> list[RuleResult]:
    """Run every rule over a mock run of the program for the event `spec`.

    `export_verified` is whether the stack config contains a verified teardown export,
    which lets the orders table drop deletion protection.
    """
    resource_views, stack_views = views_from_recording(recording)
    return evaluate(resource_views, stack_views, settings_from_spec(spec, export_verified))
