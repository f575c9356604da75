"""The CrossGuard side of the rules: pulumi_policy policies that adapt the engine's requests.

Each rule becomes one ResourceValidationPolicy or StackValidationPolicy named by the
rule id. The event settings come from the stack config that the engine passes to
the pack process (PULUMI_CONFIG), overridden by the policy's own config.

Known violations are reported at the rule's level. Findings that wait for values
the preview does not know are raised as pulumi_policy's UnknownValueError, which the
SDK reports as an advisory "can't run policy ... during preview" diagnostic, so an
unknown input never blocks a preview and never passes silently. `pulumi up` analyzes
each resource again with its inputs resolved, so the same checks are enforced there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import pulumi.runtime
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import serialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from policies.rules import MANDATORY, RULES, Rule
from policies.settings import (
    POLICY_CONFIG_THRESHOLDS,
    EventSettings,
    Thresholds,
    settings_from_stack_config,
    with_policy_config,
)
from policies.view import Finding, ResourceView, to_plain

PACK_NAME = "popstack"

_THRESHOLD_DEFAULTS = {field.name: field.default for field in fields(Thresholds)}
# JSON schema of each policy config property; the engine checks values against it.
CONFIG_SCHEMA: dict[str, dict[str, Any]] = {
    "eventId": {"type": "string", "description": "Event id; default popstack:id"},
    "windowOpens": {
        "type": "string",
        "description": "When doors open, ISO 8601 with UTC offset; default popstack:window.opens",
    },
    "windowCloses": {
        "type": "string",
        "description": "When doors close, ISO 8601 with UTC offset; default popstack:window.closes",
    },
    "preSyncHours": {"type": "integer", "minimum": 0, "description": "Hours of pre-sync"},
    "graceHours": {"type": "integer", "minimum": 1, "description": "Hours from close to expiry"},
    "peakRps": {"type": "integer", "minimum": 1, "description": "Expected peak requests/s"},
    **{
        key: {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": _THRESHOLD_DEFAULTS[name],
            "description": f"Cost threshold {name}",
        }
        for key, name in POLICY_CONFIG_THRESHOLDS.items()
    },
}


class UnknownInputsError(UnknownValueError):
    """Findings that cannot be checked until the engine has resolved their inputs."""

    def __init__(self, findings: list[Finding]):
        super().__init__(UNKNOWN_STRING_VALUE, [])
        self.message = "; ".join(finding.message for finding in findings)


def plain_props(props: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the SDK's unknown-checking property proxy into plain values with UNKNOWN markers."""
    return to_plain(serialize_properties(props))


def view_from_args(args: ResourceValidationArgs) -> ResourceView:
    return ResourceView(
        type=args.resource_type, name=args.name, urn=args.urn, props=plain_props(args.props)
    )


def view_from_resource(resource: PolicyResource) -> ResourceView:
    return ResourceView(
        type=resource.resource_type,
        name=resource.name,
        urn=resource.urn,
        props=plain_props(resource.props),
        dependencies=tuple(dependency.urn for dependency in resource.dependencies),
        property_dependencies={
            prop: tuple(dependency.urn for dependency in dependencies)
            for prop, dependencies in resource.property_dependencies.items()
        },
    )


def event_settings(policy_config: Mapping[str, Any]) -> EventSettings:
    """Build the settings from the stack config in PULUMI_CONFIG and one policy's config."""
    stack = settings_from_stack_config(pulumi.runtime.get_config_env())
    return with_policy_config(stack, policy_config)


def report(findings: list[Finding], report_violation: ReportViolation) -> None:
    """Report known findings as violations, then raise UnknownInputsError for the others."""
    for finding in findings:
        if finding.known:
            report_violation(finding.message, finding.urn)
    waiting = [finding for finding in findings if not finding.known]
    if waiting:
        raise UnknownInputsError(waiting)


def _resource_validation(rule: Rule):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        assert rule.check_resource is not None
        settings = event_settings(args.get_config())
        report(rule.check_resource(view_from_args(args), settings), report_violation)

    return validate


def _stack_validation(rule: Rule):
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        assert rule.check_stack is not None
        views = [view_from_resource(resource) for resource in args.resources]
        report(rule.check_stack(views, event_settings(args.get_config())), report_violation)

    return validate


def build_policies() -> list[Policy]:
    """Return one CrossGuard policy per rule, named by the rule id."""
    policies: list[Policy] = []
    for rule in RULES:
        level = (
            EnforcementLevel.MANDATORY
            if rule.enforcement == MANDATORY
            else EnforcementLevel.ADVISORY
        )
        schema = (
            PolicyConfigSchema(properties={key: CONFIG_SCHEMA[key] for key in rule.config})
            if rule.config
            else None
        )
        if rule.check_resource is not None:
            policies.append(
                ResourceValidationPolicy(
                    name=rule.id,
                    description=rule.description,
                    validate=_resource_validation(rule),
                    enforcement_level=level,
                    config_schema=schema,
                )
            )
        else:
            policies.append(
                StackValidationPolicy(
                    name=rule.id,
                    description=rule.description,
                    validate=_stack_validation(rule),
                    enforcement_level=level,
                    config_schema=schema,
                )
            )
    return policies
