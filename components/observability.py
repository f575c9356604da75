"""X-Ray sampling scoped to the event's checkout service.

The stack file's `flags.elevatedSampling` sets the rule's rate when it is created.
After that the event calendar owns the rate: its Lambda raises it when doors open
and lowers it when they close (components/schedules.py). The rule ignores changes
to the rate, so a later `pulumi up` leaves it alone, even when `elevatedSampling`
in the stack file has changed.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.context import EventContext

# Share of requests traced, normally and with the elevated-sampling flag on.
BASE_RATE = 0.05
ELEVATED_RATE = 1.0
# Requests per second traced before the fixed rate applies, normally and elevated.
BASE_RESERVOIR = 5
ELEVATED_RESERVOIR = 50


def checkout_service_name(context: EventContext) -> str:
    """Return the X-Ray service name the checkout service reports, which scopes the rule."""
    return context.name("k8s", "checkout")


class Tracing(pulumi.ComponentResource):
    """An X-Ray sampling rule that matches only this event's checkout traces."""

    def __init__(
        self, name: str, context: EventContext, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("popstack:observability:Tracing", name, None, opts)
        elevated = context.spec.flags.elevated_sampling

        self.sampling_rule = aws.xray.SamplingRule(
            f"{name}-sampling",
            rule_name=context.name("xray"),
            priority=100,
            version=1,
            reservoir_size=ELEVATED_RESERVOIR if elevated else BASE_RESERVOIR,
            fixed_rate=ELEVATED_RATE if elevated else BASE_RATE,
            service_name=checkout_service_name(context),
            service_type="*",
            host="*",
            http_method="*",
            url_path="*",
            resource_arn="*",
            attributes={"event": context.event_id},
            tags=context.tags,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["fixedRate", "reservoirSize"]),
        )

        self.register_outputs(
            {
                "samplingRuleName": self.sampling_rule.rule_name,
                "samplingRuleArn": self.sampling_rule.arn,
            }
        )
