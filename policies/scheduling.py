"""Rules for the event calendar's timed actions: Scheduler schedules and Kubernetes CronJobs.

A calendar action must fire at the minute the window gives, whatever the venue's
time zone does. So an EventBridge Scheduler schedule has no flexible time window,
a one-time schedule names its time in UTC and keeps ActionAfterCompletion NONE,
and a CronJob names the time zone its schedule is read in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from policies.settings import EventSettings
from policies.view import UNKNOWN, Finding, ResourceView, cannot_check, violation

SCHEDULE = "aws:scheduler/schedule:Schedule"
CRON_JOB = "kubernetes:batch/v1:CronJob"
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
SCHEDULE_FIX = "components.schedules.EventCalendar builds one"


class AtExpressionError(ValueError):
    """A one-time schedule expression that is not at(yyyy-mm-ddThh:mm:ss)."""


def is_one_time(expression: str) -> bool:
    return expression.strip().startswith("at(")


def parse_at(expression: str) -> datetime:
    """Parse a one-time `at(yyyy-mm-ddThh:mm:ss)` expression as a UTC time.

    Raises AtExpressionError naming the expected form.
    """
    match = _AT.match(expression.strip())
    if not match:
        raise AtExpressionError(f"{expression!r} is not at(yyyy-mm-ddThh:mm:ss)")
    try:
        return datetime.fromisoformat(match[1]).replace(tzinfo=UTC)
    except ValueError as error:
        raise AtExpressionError(f"{expression!r} is not a valid time: {error}") from None


def schedule_time_zone(view: ResourceView) -> str:
    """Return the zone a Scheduler schedule is read in; Scheduler's default is UTC."""
    return view.get("scheduleExpressionTimezone") or "UTC"


def check_exact_schedules(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check that a Scheduler schedule fires at its exact time, once, in UTC when one-time."""
    if view.type != SCHEDULE:
        return []
    mode = view.get("flexibleTimeWindow", "mode")
    expression = view.get("scheduleExpression")
    zone = view.get("scheduleExpressionTimezone")
    after = view.get("actionAfterCompletion")
    if UNKNOWN in (mode, expression, zone, after):
        return [cannot_check(view, "its schedule settings are computed during the update")]

    findings: list[Finding] = []
    if mode != "OFF":
        findings.append(
            violation(
                view,
                f'flexible_time_window mode is "{mode}", so it may fire up to its maximum window '
                f"late; set mode OFF ({SCHEDULE_FIX})",
            )
        )
    if not isinstance(expression, str) or not is_one_time(expression):
        return findings

    try:
        parse_at(expression)
    except AtExpressionError as error:
        findings.append(violation(view, f"schedule_expression is invalid: {error}"))
    if schedule_time_zone(view) != "UTC":
        findings.append(
            violation(
                view,
                f'{expression} is read in "{zone}", where a wall-clock time can be skipped or '
                "repeated by a DST change; write the time in UTC and set "
                f'schedule_expression_timezone "UTC" ({SCHEDULE_FIX})',
            )
        )
    if after not in (None, "NONE"):
        findings.append(
            violation(
                view,
                f'action_after_completion is "{after}": Scheduler deletes the schedule once it '
                "fires, and the next `pulumi up` creates it again, so it fires again; set NONE",
            )
        )
    return findings


def check_cronjob_time_zone(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check that a CronJob names the time zone its schedule is read in."""
    if view.type != CRON_JOB:
        return []
    zone = view.get("spec", "timeZone")
    if zone is UNKNOWN:
        return [cannot_check(view, "spec.timeZone is computed during the update")]
    if not zone:
        return [
            violation(
                view,
                "sets no spec.timeZone, so its schedule is read in the time zone of the "
                "cluster's kube-controller-manager; set timeZone: Etc/UTC and write the "
                "schedule in UTC (components.checkout.CheckoutService does)",
            )
        ]
    return []
